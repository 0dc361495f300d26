//! `cargo xtask bench pipeline`: flow records per second from the gateway to the
//! detector over MQTT/TLS ([`run`]), on the bed of [`super::flows`] (shared with the
//! `footprint` benchmark). Runs as root; never part of the tests.
use std::{
    path::Path,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use tad_bus::client::Received;

use super::flows::{Bed, build_bin, burst, round2, write_json};
use crate::{
    testbed::{
        daemons::Subscriber,
        netns,
        nodes::{DETECTOR_ID, GATEWAY_ID, RECORDER_ID},
    },
    util,
};

/// Flows per round of the `pipeline` run.
const PIPELINE_FLOWS: u32 = 100_000;
/// Rounds of the `pipeline` run (median reported).
const PIPELINE_ROUNDS: usize = 3;
/// Arrival time and size of every flow batch seen by the measuring subscriber.
type Arrivals = Arc<Mutex<Vec<(Instant, usize)>>>;

/// Subscribes to every gateway's flow batches from the bed's gateway namespace as
/// [`RECORDER_ID`] (queue of 100,000 batches); returns once subscribed, stops when
/// dropped.
fn start_recorder(bed: &Bed, arrivals: Arrivals) -> anyhow::Result<Subscriber> {
    let mut cfg = bed.bus().config(RECORDER_ID);
    cfg.subscription_capacity = 100_000;
    Subscriber::start(
        &bed.gw,
        cfg,
        "tad/v1/gw/+/flows/+",
        move |m: Received<tad_wire::FlowBatch>| {
            arrivals
                .lock()
                .expect("arrivals lock")
                .push((Instant::now(), m.message.records.len()))
        },
    )
    .context("measuring subscriber")
}

/// Records the detector says it processed: `detector run` prints its counters as
/// one JSON line on stderr when it stops (`{"batches": .., "engine": {"records": N,
/// ..}}`).
fn detector_records(log: &Path) -> Option<u64> {
    let text = std::fs::read_to_string(log).ok()?;
    text.lines().rev().find_map(|l| {
        let v: serde_json::Value = serde_json::from_str(l.trim()).ok()?;
        v["engine"]["records"].as_u64()
    })
}

/// `cargo xtask bench pipeline`: flow records per second end to end, gateway to
/// detector over MQTT/TLS. Runs as root; never part of the tests.
///
/// Method: the bed, broker and binaries of the footprint benchmark
/// ([`super::flows::Bed`]). The XDP program is
/// loaded and the detector and a measuring subscriber (same flow-topic subscription
/// as the detector, dashboard role) connect. Each of [`PIPELINE_ROUNDS`] rounds then
/// sends [`PIPELINE_FLOWS`] distinct UDP flows (one datagram each) through the
/// program with no gateway daemon running, waits until the 1 s idle timeout has
/// passed for all of them, and starts `fw-ctl run`: its first poll finds every flow
/// due, and it exports, batches (500 records) and publishes them all; the daemon is
/// stopped once they have arrived. Per round, `records_per_s` = records received by
/// the subscriber after its first batch over the time from the first to the last
/// batch; `records_per_s_from_start` = all records over the time from the daemon's
/// start to the last batch (process start, TLS connection, the first poll interval
/// and the export pass included). Medians are reported. `detector_records` is what
/// the detector reports having processed when stopped: it must equal
/// `records_received_total` for the rate to hold gateway-to-detector.
pub fn run(json_out: &Path) -> anyhow::Result<()> {
    netns::install_interrupt_handler();
    anyhow::ensure!(
        util::is_root(),
        "pipeline loads an XDP program and creates namespaces: run as root"
    );
    anyhow::ensure!(
        build_bin("pipeline", "fw-ctl"),
        "fw-ctl must build for this benchmark"
    );
    anyhow::ensure!(
        build_bin("pipeline", "detector"),
        "the detector must build for this benchmark"
    );
    let mut bed = Bed::up("pipeline", "pl", &[GATEWAY_ID, DETECTOR_ID, RECORDER_ID])?;
    // Flows are due 1 s after their packet; every one of a round fits the map and
    // the daemon's queue.
    let mut gw = bed.gateway()?;
    gw.export.poll_interval_ms = 250;
    gw.export.idle_timeout_s = 1.0;
    gw.export.active_timeout_s = 60.0;
    gw.export.queue_capacity = 400_000;
    gw.maps.flows_max_entries = 262_144;
    let gw_conf = bed.load_xdp(&gw)?;
    bed.spawn_detector()?;
    let arrivals: Arrivals = Arc::default();
    let recorder = start_recorder(&bed, arrivals.clone())?;
    netns::sleep(Duration::from_secs(2))?;
    bed.daemons.check_alive()?;

    let mut rates = Vec::new();
    let mut rates_from_start = Vec::new();
    let mut flows_total = 0u64;
    let mut received_total = 0usize;
    let mut dropped_total = 0u64;
    for round in 1..=PIPELINE_ROUNDS {
        // Flows first, with no daemon running; all idle 2 s later.
        let sent = burst(&bed.gen_ns, PIPELINE_FLOWS)?;
        netns::sleep(Duration::from_secs(2))?;
        let in_map = bed.map_flows().context("reading the flow map fill")?;
        arrivals.lock().expect("arrivals lock").clear();
        let _ = std::fs::remove_file(bed.dir.join("fw-status.json"));
        let started = Instant::now();
        bed.spawn_fw_ctl(&gw_conf)?;
        let limit = Duration::from_secs(120);
        let mut quiet_since = Instant::now();
        let mut last_total = 0usize;
        loop {
            netns::sleep(Duration::from_millis(100))?;
            let total: usize = arrivals
                .lock()
                .expect("arrivals lock")
                .iter()
                .map(|a| a.1)
                .sum();
            if total != last_total {
                last_total = total;
                quiet_since = Instant::now();
            }
            if total as u64 >= in_map {
                break;
            }
            // Nothing new for 5 s after records started: some were lost; report what came.
            if total > 0 && quiet_since.elapsed() > Duration::from_secs(5) {
                break;
            }
            if started.elapsed() > limit {
                bed.daemons.check_alive()?;
                bail!("only {total} of {in_map} records arrived within {limit:?}");
            }
        }
        // Stop the daemon (its status file holds the drop counter).
        netns::sleep(Duration::from_millis(1500))?;
        let dropped = std::fs::read_to_string(bed.dir.join("fw-status.json"))
            .ok()
            .and_then(|s| serde_json::from_str::<serde_json::Value>(&s).ok())
            .and_then(|s| s["records_dropped_total"].as_u64())
            .unwrap_or(0);
        bed.daemons.stop("fw_ctl");
        let a = arrivals.lock().expect("arrivals lock").clone();
        anyhow::ensure!(a.len() >= 2, "fewer than two flow batches arrived");
        let total: usize = a.iter().map(|x| x.1).sum();
        let span = a[a.len() - 1].0 - a[0].0;
        let rate = (total - a[0].1) as f64 / span.as_secs_f64();
        let from_start = total as f64 / (a[a.len() - 1].0 - started).as_secs_f64();
        eprintln!(
            "pipeline: round {round}: {sent} datagrams, {in_map} flows, {total} records in {} \
             batches: {rate:.0} records/s first to last batch, {from_start:.0} from daemon start, \
             {dropped} dropped at the gateway",
            a.len()
        );
        rates.push(rate);
        rates_from_start.push(from_start);
        flows_total += in_map;
        received_total += total;
        dropped_total += dropped;
    }
    // Let the detector finish, then stop it for its counters.
    netns::sleep(Duration::from_secs(2))?;
    drop(recorder);
    bed.daemons.stop("detector");
    let det_records = detector_records(&bed.dir.join("detector.log"));
    let median = |mut v: Vec<f64>| {
        v.sort_by(|a, b| a.total_cmp(b));
        v[v.len() / 2]
    };
    let (rate, from_start) = (median(rates.clone()), median(rates_from_start.clone()));
    println!(
        "pipeline: median of {PIPELINE_ROUNDS} rounds: {rate:.0} records/s first to last batch, \
         {from_start:.0} records/s from daemon start; records received {received_total} of \
         {flows_total} flows; detector processed {}; gateway dropped {dropped_total}",
        det_records.map_or("?".into(), |n| n.to_string()),
    );
    let j = serde_json::json!({
        "bench": "pipeline",
        "rounds": PIPELINE_ROUNDS,
        "flows_per_round": PIPELINE_FLOWS,
        "records_per_s": round2(rate),
        "records_per_s_from_start": round2(from_start),
        "records_per_s_rounds": rates.iter().map(|r| round2(*r)).collect::<Vec<_>>(),
        "flows_in_map_total": flows_total,
        "records_received_total": received_total,
        "detector_records": det_records,
        "gateway_records_dropped": dropped_total,
    });
    write_json(json_out, &j)?;
    eprintln!("pipeline: wrote {}", json_out.display());
    drop(bed);
    Ok(())
}
