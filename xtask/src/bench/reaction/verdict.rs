//! The verdict-to-map half of the reaction benchmark: the benchmark publishes
//! block (then unblock) verdicts as [`BENCH_DETECTOR_ID`], signed with its
//! certificate key on its own verdict topic (so the time includes the gateway's
//! signature check), and reads the pinned block
//! map until each entry is there (gone); see the parent module's docs.
use std::{
    net::Ipv4Addr,
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail, ensure};
use fw_common::filter::BlockReason;
use serde_json::Value;
use tad_wire::{Action, SCHEMA_VERSION, Verdict, topic};

use super::{
    BENCH_DETECTOR_ID, BlockReader, VERDICT_POLL, VERDICT_RUNS, check_deadline, percentile,
    set_thread_nice, unix_ns, verdict_target,
};
use crate::testbed::{
    self, netns,
    nodes::{self, GATEWAY_ID},
    stack::{self, Stack},
};

/// What the verdict phase measured, ms.
#[derive(Default)]
pub struct VerdictResults {
    /// Per run: publish-to-entry-present delays.
    pub block_ms: Vec<Vec<f64>>,
    /// Per run: unblock publish-to-entry-gone delays.
    pub unblock_ms: Vec<Vec<f64>>,
    /// The daemon's receipt-to-map times from its acks of the block verdicts.
    pub apply_ms: Vec<f64>,
    /// Largest gap between two map reads while waiting, ms.
    pub poll_gap_ms_max: f64,
    /// Block verdicts slower than [`SLOW_MS`].
    pub slow: Vec<Slow>,
    /// `at_unix_ms` of the daemon's status file mod 1000.
    pub status_tick_phase_ms: Option<u64>,
}

/// One slow verdict-to-map sample.
pub struct Slow {
    pub run: usize,
    pub index: usize,
    pub id: String,
    pub published_unix_ns: u64,
    pub ms: f64,
    /// From the ack: gateway receipt (ack `at_ms` - `apply_us`) - publish, ms
    /// (±1 ms: `at_ms` has ms resolution).
    pub receipt_ms: Option<f64>,
    /// The ack's `apply_us`, ms.
    pub apply_ms: Option<f64>,
}

/// A verdict-to-map time above this is listed on its own in the JSON, ms.
pub const SLOW_MS: f64 = 5.0;

fn bench_verdict(id: String, action: Action, target: Ipv4Addr) -> Verdict {
    Verdict {
        v: SCHEMA_VERSION,
        id,
        detector_id: BENCH_DETECTOR_ID.parse().expect("a valid node id"),
        issued_at_ms: unix_ns() / 1_000_000,
        action,
        target: tad_wire::Target::host(target.into()),
        ttl_s: (action != Action::Unblock).then_some(600),
        reason: BlockReason::Manual,
        rule: "bench.reaction".into(),
        confidence: 1.0,
        alert_id: None,
        observe_only: false,
        port: None,
    }
}

/// Publishes `v` and reads the map every [`VERDICT_POLL`] until `target`'s entry
/// is present (`want_present`) or gone. Returns (delay ms, largest read gap ms).
fn publish_and_wait(
    bus: &tad_bus::BusClient,
    signer: &tad_bus::Signer,
    reader: &BlockReader,
    v: &Verdict,
    target: Ipv4Addr,
    want_present: bool,
) -> anyhow::Result<(f64, f64)> {
    let topic = topic::verdicts(GATEWAY_ID, BENCH_DETECTOR_ID);
    let t0 = Instant::now();
    bus.try_publish_signed(&topic, signer, v, tad_bus::PublishOptions::verdict(60))
        .with_context(|| format!("publishing verdict {}", v.id))?;
    let mut last = t0;
    let mut gap = Duration::ZERO;
    loop {
        let present = reader.get(target)?.is_some();
        let now = Instant::now();
        gap = gap.max(now - last);
        last = now;
        if present == want_present {
            return Ok(((now - t0).as_secs_f64() * 1e3, gap.as_secs_f64() * 1e3));
        }
        if now - t0 > Duration::from_secs(5) {
            bail!(
                "verdict {} ({:?} {target}) did not reach the block map within 5 s; see {}/fw-ctl.log",
                v.id,
                v.action,
                testbed::run_dir("reaction")
                    .map(|d| d.display().to_string())
                    .unwrap_or_default()
            );
        }
        std::thread::sleep(VERDICT_POLL);
    }
}

/// [`VERDICT_RUNS`] runs of `per_run` block verdicts (then as many unblocks),
/// `pause` apart, to targets from `verdict_target(first_target)` on. `tag` names
/// the pace in messages and verdict ids.
pub fn phase(
    stack: &Stack,
    tag: &str,
    per_run: usize,
    pause: Duration,
    first_target: usize,
    deadline: Instant,
    limit: Duration,
) -> anyhow::Result<VerdictResults> {
    let certs = stack.dir.join("certs");
    let prefix = format!(
        "bench-{}-{}-{tag}",
        std::process::id(),
        unix_ns() / 1_000_000
    );
    let mut res = std::thread::scope(|s| {
        s.spawn(|| -> anyhow::Result<VerdictResults> {
            // The broker listens on the management network: this thread and the
            // runtime's threads live on the detector node.
            netns::enter_thread(testbed::NS_DETECTOR)?;
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .enable_all()
                .on_thread_start(|| {
                    let _ = netns::enter_thread(testbed::NS_DETECTOR);
                })
                .build()?;
            let host = testbed::MONITOR.to_string();
            let cfg = nodes::Bus {
                host: &host,
                certs: &certs,
            }
            .config(BENCH_DETECTOR_ID);
            let signer = tad_bus::Signer::from_bus_config(&cfg)
                .with_context(|| format!("loading {BENCH_DETECTOR_ID}'s signing key"))?;
            let bus = rt
                .block_on(async {
                    let b = tad_bus::BusClient::builder(cfg)?;
                    tokio::time::timeout(Duration::from_secs(15), b.connect())
                        .await
                        .context("timed out after 15 s")?
                        .map_err(anyhow::Error::from)
                })
                .with_context(|| format!("connecting {BENCH_DETECTOR_ID} to the broker"))?;
            let reader = BlockReader::open(stack::INSTANCE)?;
            set_thread_nice(-10);
            let mut r = VerdictResults::default();
            let result = (|| -> anyhow::Result<()> {
                for run in 0..VERDICT_RUNS {
                    let targets: Vec<Ipv4Addr> = (0..per_run)
                        .map(|i| verdict_target(first_target + run * per_run + i))
                        .collect::<anyhow::Result<_>>()?;
                    let (mut blocks, mut unblocks) = (Vec::new(), Vec::new());
                    for (i, &t) in targets.iter().enumerate() {
                        check_deadline(deadline, limit)?;
                        ensure!(
                            reader.get(t)?.is_none(),
                            "{t} is already blocked before its verdict"
                        );
                        let v = bench_verdict(format!("{prefix}-b{run}-{i}"), Action::Block, t);
                        let published_unix_ns = unix_ns();
                        let (ms, gap) = publish_and_wait(&bus, &signer, &reader, &v, t, true)?;
                        if ms > SLOW_MS {
                            r.slow.push(Slow {
                                run,
                                index: i,
                                id: v.id.clone(),
                                published_unix_ns,
                                ms,
                                receipt_ms: None,
                                apply_ms: None,
                            });
                        }
                        blocks.push(ms);
                        r.poll_gap_ms_max = r.poll_gap_ms_max.max(gap);
                        std::thread::sleep(pause);
                    }
                    for (i, &t) in targets.iter().enumerate() {
                        check_deadline(deadline, limit)?;
                        let v = bench_verdict(format!("{prefix}-u{run}-{i}"), Action::Unblock, t);
                        let (ms, gap) = publish_and_wait(&bus, &signer, &reader, &v, t, false)?;
                        unblocks.push(ms);
                        r.poll_gap_ms_max = r.poll_gap_ms_max.max(gap);
                        std::thread::sleep(pause);
                    }
                    eprintln!(
                        "reaction: verdicts {tag}, run {}: to map p50 {:.2} ms, p99 {:.2} ms",
                        run + 1,
                        percentile(&blocks, 50.0).unwrap_or(f64::NAN),
                        percentile(&blocks, 99.0).unwrap_or(f64::NAN)
                    );
                    r.block_ms.push(blocks);
                    r.unblock_ms.push(unblocks);
                }
                Ok(())
            })();
            let _ = rt.block_on(bus.shutdown(Duration::from_secs(2)));
            result.map(|()| r)
        })
        .join()
        .map_err(|_| anyhow::anyhow!("verdict thread panicked"))?
    })
    .with_context(|| format!("verdict to map ({tag})"))?;

    // The daemon rewrites its status file once a second from its event loop: the
    // phase of that tick (its last write, mod 1 s) next to the slow samples.
    res.status_tick_phase_ms = std::fs::read(stack.dir.join("fw-status.json"))
        .ok()
        .and_then(|b| serde_json::from_slice::<Value>(&b).ok())
        .and_then(|v| v["at_unix_ms"].as_u64())
        .map(|ms| ms % 1000);

    // The acks of the block verdicts, from the recorder.
    netns::sleep(Duration::from_millis(500))?;
    let rec = stack.recorded();
    let mut rejected = Vec::new();
    for (_, ack) in rec.acks.iter().filter(|(_, k)| k.id.starts_with(&prefix)) {
        if ack.outcome != tad_wire::Outcome::Applied {
            rejected.push(format!(
                "{}: {:?} {}",
                ack.id,
                ack.outcome,
                ack.error.clone().unwrap_or_default()
            ));
        } else if ack.id[prefix.len()..].starts_with("-b") {
            res.apply_ms.push(ack.apply_us as f64 / 1e3);
            if let Some(sl) = res.slow.iter_mut().find(|sl| sl.id == ack.id) {
                let receipt_ms = ack.at_ms as f64 - ack.apply_us as f64 / 1e3;
                sl.receipt_ms = Some(receipt_ms - sl.published_unix_ns as f64 / 1e6);
                sl.apply_ms = Some(ack.apply_us as f64 / 1e3);
            }
        }
    }
    ensure!(
        rejected.is_empty(),
        "the gateway did not apply {} bench verdicts: {}",
        rejected.len(),
        rejected.join("; ")
    );
    Ok(res)
}
