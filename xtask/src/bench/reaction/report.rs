//! The reaction benchmark's JSON document and printed table.
use std::time::{Duration, SystemTime};

use serde_json::{Value, json};

use super::{
    BURST_GAP, ReactionArgs, SCAN_POLL, VERDICT_POLL, VERDICT_RUNS, median, percentile,
    scan::{Kind, Round, scan_command},
    summary,
    verdict::{SLOW_MS, VerdictResults},
};

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

/// The JSON of one verdict pace: all samples pooled, per run, unblocks, the
/// daemon's own apply times, slow samples.
fn verdict_json(v: &VerdictResults, gap: Duration) -> Value {
    let r3 = |x: Option<f64>| x.map(round3);
    let all_v: Vec<f64> = v.block_ms.iter().flatten().copied().collect();
    let all_u: Vec<f64> = v.unblock_ms.iter().flatten().copied().collect();
    let run_p =
        |p: f64| -> Vec<f64> { v.block_ms.iter().filter_map(|r| percentile(r, p)).collect() };
    json!({
        "gap_ms": gap.as_millis() as u64,
        "all": summary(&all_v),
        "runs": v.block_ms.iter().map(|r| summary(r)).collect::<Vec<_>>(),
        "median_of_run_p50": r3(median(&run_p(50.0))),
        "median_of_run_p99": r3(median(&run_p(99.0))),
        "unblock_to_map_ms": summary(&all_u),
        "daemon_apply_ms": summary(&v.apply_ms),
        "poll_gap_ms_max": round3(v.poll_gap_ms_max),
        "slow": {
            "threshold_ms": SLOW_MS,
            "daemon_status_tick_phase_ms": v.status_tick_phase_ms,
            "samples": v.slow.iter().map(|sl| {
                let at = sl.published_unix_ns / 1_000_000;
                json!({
                    "run": sl.run + 1,
                    "index": sl.index,
                    "published_unix_ms": at,
                    "ms": round3(sl.ms),
                    "gateway_receipt_after_publish_ms": sl.receipt_ms.map(round3),
                    "gateway_apply_ms": sl.apply_ms.map(round3),
                    "ms_after_daemon_status_tick": v.status_tick_phase_ms.map(|p| (at + 1000 - p % 1000) % 1000),
                })
            }).collect::<Vec<_>>(),
        },
    })
}

/// Counts of `values` (e.g. block origins) as a JSON object.
fn tally<'a>(values: impl Iterator<Item = Option<&'a str>>) -> Value {
    let mut m = std::collections::BTreeMap::<&str, u64>::new();
    for v in values {
        *m.entry(v.unwrap_or("none")).or_default() += 1;
    }
    json!(m)
}

/// The JSON of one set of scan rounds (all of one [`Kind`]).
fn scan_set_json(rounds: &[&Round]) -> Value {
    let col =
        |f: fn(&Round) -> Option<f64>| -> Vec<f64> { rounds.iter().filter_map(|r| f(r)).collect() };
    let count = |f: fn(&Round) -> Option<u64>| -> Vec<f64> {
        rounds
            .iter()
            .filter_map(|r| f(r).map(|n| n as f64))
            .collect()
    };
    let drop_ms = col(|r| r.scan_to_drop_ms);
    let block_ms = col(|r| r.scan_to_block_ms);
    let before = count(|r| r.probes_before_block);
    let passed = count(|r| Some(r.probes_passed));
    let r3 = |x: Option<f64>| x.map(round3);
    let per_round: Vec<Value> = rounds
        .iter()
        .enumerate()
        .map(|(i, r)| {
            json!({
                "round": i + 1,
                "source": r.source.to_string(),
                "target": r.target.to_string(),
                "t_first_unix_ns": r.t_first_ns,
                "scan_to_block_ms": r3(r.scan_to_block_ms),
                "scan_to_drop_ms": r3(r.scan_to_drop_ms),
                "block_origin": r.block_origin,
                "block_new_flows_only": r.block_new_flows_only,
                "origin_at_stop": r.origin_at_stop,
                "probes_before_block": r.probes_before_block,
                "probes_before_block_min": r.probes_before_block_min,
                "probes_before_drop": r.probes_before_drop,
                "probes_sent": r.probes_sent,
                "probes_passed": r.probes_passed,
                "capture_dropped": r.capture_dropped,
                "first_to_detector_ms": r3(r.first_to_detector_ms),
                "detector_to_map_ms": r3(r.detector_to_map_ms),
                "apply_ms": r3(r.apply_ms),
                "block_to_drop_ms": r3(r.block_to_drop_ms),
                "poll_gap_ms": round3(r.poll_gap_ms),
                "block_resolution_ms": r3(r.block_resolution_ms),
                "drop_resolution_ms": r3(r.drop_resolution_ms),
                "nmap_ms": round3(r.nmap_ms),
                "nmap_exited_before_drop": r.nmap_exited_before_drop,
                "alert_rule": r.alert_rule,
                "verdict_action": r.verdict_action,
                "hits_when_seen": r.hits_at_stop,
            })
        })
        .collect();
    let within = rounds
        .iter()
        .filter(|r| r.scan_to_block_ms.is_some_and(|ms| ms <= 1000.0) && r.probes_passed <= 100)
        .count();
    json!({
        "rounds": rounds.len(),
        "scan_to_drop_ms_p50": r3(percentile(&drop_ms, 50.0)),
        "scan_to_drop_ms_p99": r3(percentile(&drop_ms, 99.0)),
        "scan_to_block_ms_p50": r3(percentile(&block_ms, 50.0)),
        "scan_to_block_ms_p99": r3(percentile(&block_ms, 99.0)),
        "probes_passed_p50": percentile(&passed, 50.0),
        "probes_passed_p99": percentile(&passed, 99.0),
        "probes_before_block_p50": percentile(&before, 50.0),
        "probes_before_block_p99": percentile(&before, 99.0),
        "rounds_blocked_within_1s_and_100_probes": within,
        "scan_to_drop_ms": summary(&drop_ms),
        "scan_to_block_ms": summary(&block_ms),
        "probes_passed": summary(&passed),
        "probes_before_block": summary(&before),
        "probes_before_block_min": summary(&count(|r| r.probes_before_block_min)),
        "probes_before_drop": summary(&count(|r| r.probes_before_drop)),
        "probes_sent": summary(&count(|r| Some(r.probes_sent))),
        "capture_dropped_total": rounds.iter().filter_map(|r| r.capture_dropped).sum::<u64>(),
        "drop_resolution_ms": summary(&col(|r| r.drop_resolution_ms)),
        "rounds_without_drop": rounds.iter().filter(|r| r.scan_to_drop_ms.is_none()).count(),
        "rounds_without_block": rounds.iter().filter(|r| r.scan_to_block_ms.is_none()).count(),
        "block_origin": tally(rounds.iter().map(|r| r.block_origin)),
        "origin_at_stop": tally(rounds.iter().map(|r| r.origin_at_stop)),
        "breakdown_ms": {
            "first_to_detector": summary(&col(|r| r.first_to_detector_ms)),
            "detector_to_map": summary(&col(|r| r.detector_to_map_ms)),
            "gateway_apply": summary(&col(|r| r.apply_ms)),
            "block_to_drop": summary(&col(|r| r.block_to_drop_ms)),
        },
        "per_round": per_round,
    })
}

pub fn report(
    a: &ReactionArgs,
    v: &VerdictResults,
    burst: &VerdictResults,
    rounds: &[Round],
    load_before: String,
    load_after: String,
    took: Duration,
) -> Value {
    let set = |k: Kind| -> Vec<&Round> { rounds.iter().filter(|r| r.kind == k).collect() };
    let all_v: Vec<f64> = v.block_ms.iter().flatten().copied().collect();
    let all_b: Vec<f64> = burst.block_ms.iter().flatten().copied().collect();
    let r3 = |x: Option<f64>| x.map(round3);
    json!({
        "benchmark": "reaction",
        "machine": fw_ctl::bench_env::machine(),
        "date_utc": humantime::format_rfc3339_seconds(SystemTime::now()).to_string(),
        "loadavg_before": load_before,
        "loadavg_after": load_after,
        "duration_s": took.as_secs(),
        "percentile_method": "nearest rank: p-th percentile of n values = the ceil(p*n/100)-th smallest (with 20 rounds p99 = the largest)",
        "targets": {
            "scan_to_drop_ms_p50_max": 1000,
            "scan_blocked_within_ms": 1000,
            "scan_blocked_within_probes": 100,
            "verdict_to_map_ms_p99_max": 10,
        },
        "answered": scan_set_json(&set(Kind::Answered)),
        "unanswered": scan_set_json(&set(Kind::Unanswered)),
        "verdict_to_map_ms_p50": r3(percentile(&all_v, 50.0)),
        "verdict_to_map_ms_p99": r3(percentile(&all_v, 99.0)),
        "verdict_to_map_ms": verdict_json(v, Duration::from_millis(a.verdict_gap_ms)),
        "verdict_to_map_burst_ms_p50": r3(percentile(&all_b, 50.0)),
        "verdict_to_map_burst_ms_p99": r3(percentile(&all_b, 99.0)),
        "verdict_to_map_burst_ms": verdict_json(burst, BURST_GAP),
        "settings": {
            "scan_answered": scan_command(Kind::Answered, "<round source>", "<device>", a).join(" "),
            "scan_unanswered": scan_command(Kind::Unanswered, "<round source>", "<absent host>", a).join(" "),
            "scan_rounds_per_set": a.rounds,
            "scan_poll_interval_ms": SCAN_POLL.as_secs_f64() * 1e3,
            "verdict_runs_per_pace": VERDICT_RUNS,
            "verdicts_per_run": a.verdicts,
            "verdict_gap_ms": a.verdict_gap_ms,
            "verdict_burst_gap_ms": BURST_GAP.as_millis() as u64,
            "verdict_poll_interval_us": VERDICT_POLL.as_micros() as u64,
            "xdp_mode": "native",
            "gateway_export": "poll 250 ms, idle timeout 3 s, active timeout 10 s, end grace 300 ms (xtask/src/testbed/stack.rs)",
            "gateway_evidence": "the gateway's [evidence] defaults (provisional quarantine at 48 set bits of distinct hosts or ports with as many unreplied new flows, TTL 30 s; report events at 16)",
        },
        "method": {
            "t_first": "kernel timestamp (CLOCK_REALTIME, ns) of the earliest SYN (without ACK) from the round's source, tcpdump -w --time-stamp-precision=nano in the attacker namespace on its interface, listening before nmap starts",
            "t_block": "CLOCK_REALTIME right after the first read of the pinned block map (every ~1 ms) that finds an entry in force for the source's /32, whoever made it (origin datapath: the XDP program's provisional quarantine; detector: a verdict)",
            "t_drop": "CLOCK_REALTIME right after the first read that finds the entry's XDP hit counter above 0; resolution = poll_gap_ms of the round",
            "probes_passed": "flows with the source at one end in the pinned flow map right after nmap is stopped: each probe that passed the XDP program opened one (a new destination port), each dropped one none",
            "probes_before_block": "captured SYNs of the source with a timestamp before t_block: put on the wire before the entry was seen (upper bound); probes_before_block_min: before the read preceding t_block (these passed for certain)",
            "unanswered": "target an absent host in 198.19.254.0/23, routed by the attacker via the router, which blackholes it: no answer, no ICMP error",
            "verdict_to_map": "CLOCK_MONOTONIC from just before BusClient::try_publish of a block verdict (by the trusted bench identity detector-bench) to the first map read (every ~100 us) finding the /32 entry; headline: verdicts verdict_gap_ms apart (isolated); burst: 20 ms apart (50 verdicts/s, each also fsyncs the gateway's state file)",
            "breakdown": "first_to_detector = alert at_ms (detector: flow batch arrival) - t_first; detector_to_map = ack at_ms (gateway: map updated) - verdict issued_at_ms; gateway_apply = ack apply_us; block_to_drop = t_drop - t_block",
        },
    })
}

pub fn print_table(doc: &Value) {
    let g = |v: &Value| {
        v.as_f64()
            .map(|x| format!("{x:.2}"))
            .unwrap_or_else(|| "-".into())
    };
    let header = || {
        println!(
            "\n{:<34} {:>5} {:>9} {:>9} {:>9} {:>9}",
            "reaction (ms)", "n", "min", "p50", "p99", "max"
        )
    };
    let row = |name: &str, s: &Value| {
        println!(
            "{:<34} {:>5} {:>9} {:>9} {:>9} {:>9}",
            name,
            s["n"].as_u64().unwrap_or(0),
            g(&s["min"]),
            g(&s["p50"]),
            g(&s["p99"]),
            g(&s["max"])
        )
    };
    for kind in [Kind::Answered, Kind::Unanswered] {
        let d = &doc[kind.as_str()];
        header();
        println!("{} scans", kind.as_str());
        row("scan to first XDP drop", &d["scan_to_drop_ms"]);
        row("scan to block entry", &d["scan_to_block_ms"]);
        row("probes passed (flows, count)", &d["probes_passed"]);
        row("probes sent before t_block", &d["probes_before_block"]);
        row(
            "  first packet -> detector",
            &d["breakdown_ms"]["first_to_detector"],
        );
        row(
            "  detector -> map (ack)",
            &d["breakdown_ms"]["detector_to_map"],
        );
        row("  block -> first drop", &d["breakdown_ms"]["block_to_drop"]);
        println!(
            "block origin when seen {}, at stop {}; rounds without a drop {}, blocked within 1 s and 100 probes {}/{}",
            d["block_origin"],
            d["origin_at_stop"],
            d["rounds_without_drop"],
            d["rounds_blocked_within_1s_and_100_probes"],
            d["rounds"]
        );
    }
    header();
    for (name, s) in [
        (
            "verdict to map (isolated)",
            &doc["verdict_to_map_ms"]["all"],
        ),
        (
            "  unblock verdict to map",
            &doc["verdict_to_map_ms"]["unblock_to_map_ms"],
        ),
        (
            "  daemon apply (ack apply_us)",
            &doc["verdict_to_map_ms"]["daemon_apply_ms"],
        ),
        (
            "verdict to map (burst, 50/s)",
            &doc["verdict_to_map_burst_ms"]["all"],
        ),
    ] {
        row(name, s);
    }
    println!(
        "\nscan_to_drop_ms p50 answered {} / unanswered {} (target <= 1000); probes passed p99 answered {} / unanswered {} (target <= 100); verdict_to_map_ms p99 {} (target <= 10; in bursts of 50/s: {})",
        g(&doc["answered"]["scan_to_drop_ms_p50"]),
        g(&doc["unanswered"]["scan_to_drop_ms_p50"]),
        g(&doc["answered"]["probes_passed_p99"]),
        g(&doc["unanswered"]["probes_passed_p99"]),
        g(&doc["verdict_to_map_ms_p99"]),
        g(&doc["verdict_to_map_burst_ms_p99"]),
    );
}
