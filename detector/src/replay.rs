//! Captures through the project's own flow meter ([`flow_meter::meter`]) into the
//! engine, as a gateway and detector would see them: records are grouped into one
//! batch per export pass and processed at the pass's capture time.

use std::path::Path;

use flow_meter::meter::{self, MeterError, MeterOptions, TimedRecord};

use crate::engine::{Engine, Output};

/// Gateway id used for replayed captures.
pub const REPLAY_GATEWAY: &str = "replay";

/// Records of one capture, in export order.
pub fn records(path: &Path) -> Result<Vec<TimedRecord>, MeterError> {
    meter::records_from_pcap(path, &MeterOptions::default())
}

/// Runs timed records through `engine`, one batch per export pass; returns every
/// output with the capture time (ns) of the pass that produced it.
pub fn run(engine: &mut Engine, recs: &[TimedRecord]) -> Vec<(u64, Output)> {
    let gw: tad_wire::NodeId = REPLAY_GATEWAY.parse().expect("a valid node id");
    let mut outs = Vec::new();
    let mut i = 0;
    while i < recs.len() {
        let at = recs[i].at_ns;
        let mut j = i;
        while j < recs.len() && recs[j].at_ns == at {
            j += 1;
        }
        let batch: Vec<_> = recs[i..j].iter().map(|t| t.record.clone()).collect();
        let out = engine.records(&gw, &batch, at / 1_000_000);
        if !out.alerts.is_empty() || !out.verdicts.is_empty() || !out.trust.is_empty() {
            outs.push((at, out));
        }
        i = j;
    }
    outs
}

/// A capture through a fresh engine: all outputs merged.
pub fn replay_pcap(engine: &mut Engine, path: &Path) -> Result<Output, MeterError> {
    let recs = records(path)?;
    let mut all = Output::default();
    for (_, o) in run(engine, &recs) {
        all.append(o);
    }
    Ok(all)
}
