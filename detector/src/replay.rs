//! Captures through the project's own flow meter ([`flow_meter::meter`]) into the
//! engine, as a gateway and detector would see them: records are grouped into one
//! batch per export pass and processed at the pass's capture time, and the meter's
//! kernel-equivalent evidence (its evidence tables read every export pass and at
//! once on a report or quarantine event, as the gateway daemon does) goes through
//! [`Engine::evidence`] in the same capture-time order.

use std::path::Path;

use flow_meter::meter::{self, MeterError, MeterOptions, TimedEvidence, TimedRecord};

use crate::engine::{Engine, Output};

/// Gateway id used for replayed captures.
pub const REPLAY_GATEWAY: &str = "replay";

/// Records of one capture, in export order.
pub fn records(path: &Path) -> Result<Vec<TimedRecord>, MeterError> {
    meter::records_from_pcap(path, &MeterOptions::default())
}

/// Flow records and evidence of one capture, each in capture-time order, metered
/// with the gateway's default configuration (provisional quarantine on).
pub fn records_and_evidence(
    path: &Path,
) -> Result<(Vec<TimedRecord>, Vec<TimedEvidence>), MeterError> {
    let (mut recs, mut ev) = (Vec::new(), Vec::new());
    meter::for_each_output(
        path,
        &MeterOptions::default(),
        |r| recs.push(r),
        |e| ev.push(e),
    )?;
    Ok((recs, ev))
}

/// Runs timed records through `engine`, one batch per export pass; returns every
/// output with the capture time (ns) of the pass that produced it.
pub fn run(engine: &mut Engine, recs: &[TimedRecord]) -> Vec<(u64, Output)> {
    run_with_evidence(engine, recs, &[])
}

/// [`run`] with the meter's evidence: flow batches and evidence batches in
/// capture-time order (evidence first at equal times: the gateway publishes it
/// on the event, before the export pass that follows).
pub fn run_with_evidence(
    engine: &mut Engine,
    recs: &[TimedRecord],
    evidence: &[TimedEvidence],
) -> Vec<(u64, Output)> {
    let gw: tad_wire::NodeId = REPLAY_GATEWAY.parse().expect("a valid node id");
    let mut outs = Vec::new();
    let keep = |outs: &mut Vec<(u64, Output)>, at: u64, out: Output| {
        if !out.alerts.is_empty() || !out.verdicts.is_empty() || !out.trust.is_empty() {
            outs.push((at, out));
        }
    };
    let (mut i, mut k, mut seq) = (0, 0, 0u64);
    while i < recs.len() || k < evidence.len() {
        if k < evidence.len() && (i >= recs.len() || evidence[k].at_ns <= recs[i].at_ns) {
            let e = &evidence[k];
            let batch = tad_wire::EvidenceBatch {
                v: tad_wire::SCHEMA_VERSION,
                gateway_id: gw.clone(),
                seq,
                partition: 0,
                sent_at_ms: e.at_ns / 1_000_000,
                records: e.records.clone(),
                events: e.events.clone(),
            };
            seq += 1;
            let out = engine.evidence(&batch, e.at_ns / 1_000_000);
            keep(&mut outs, e.at_ns, out);
            k += 1;
            continue;
        }
        let at = recs[i].at_ns;
        let mut j = i;
        while j < recs.len() && recs[j].at_ns == at {
            j += 1;
        }
        let batch: Vec<_> = recs[i..j].iter().map(|t| t.record.clone()).collect();
        let out = engine.records(&gw, &batch, at / 1_000_000);
        keep(&mut outs, at, out);
        i = j;
    }
    outs
}

/// A capture through a fresh engine, flow records and evidence: all outputs merged.
pub fn replay_pcap(engine: &mut Engine, path: &Path) -> Result<Output, MeterError> {
    let (recs, ev) = records_and_evidence(path)?;
    let mut all = Output::default();
    for (_, o) in run_with_evidence(engine, &recs, &ev) {
        all.append(o);
    }
    Ok(all)
}
