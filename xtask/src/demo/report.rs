//! The demo's closing checks and table: reaction per attack, benign hosts never
//! blocked, XDP drop counters rising for blocked sources under probe packets, and
//! every detected attack's alert (with its audit hash) served by the dashboard API.
use std::{
    collections::{BTreeSet, HashMap},
    net::IpAddr,
    time::Duration,
};

use anyhow::{Context as _, bail};

use super::{Outcome, Seen};
use crate::{
    replay::{self, AddrMap, Macs, Timing},
    testbed::{self, netns, stack::Stack},
};

/// Sends `n` TCP SYNs with source `src` to device 1 from the replay host.
fn probe(src: IpAddr, n: usize) -> anyhow::Result<()> {
    let IpAddr::V4(s) = src else {
        bail!("IPv6 probe not supported")
    };
    let macs = Macs {
        src: netns::mac_of(testbed::NS_REPLAY, testbed::HOST_IF)?,
        dst: replay::testbed_router_mac()?,
    };
    let mut frames = Vec::new();
    for i in 0..n {
        let mut v = Vec::new();
        etherparse::PacketBuilder::ethernet2(macs.src, macs.dst)
            .ipv4(s.octets(), testbed::device_addr(1).octets(), 64)
            .tcp(40000 + i as u16, 9, 1, 1024)
            .syn()
            .write(&mut v, &[])?;
        frames.push(replay::Frame {
            ts_ns: 0,
            data: v,
            src: Some(src),
        });
    }
    let p = replay::Prepared {
        frames,
        packets_in_file: n as u64,
        map: AddrMap::default(),
        skipped: replay::Skipped::default(),
        linktype_name: "probe".into(),
    };
    replay::inject(
        &p,
        Some(testbed::NS_REPLAY),
        testbed::HOST_IF,
        Timing::Rate(100.0),
        |_, _| {},
    )?;
    Ok(())
}

pub(super) fn report(
    stack: &Stack,
    outcomes: &[Outcome],
    benign: &BTreeSet<IpAddr>,
    seen: &Seen,
    failures: &mut Vec<String>,
) -> anyhow::Result<()> {
    let t = |x: Option<f64>, base: f64| {
        x.map(|v| format!("+{:.2}s", v - base))
            .unwrap_or_else(|| "-".into())
    };
    let first = outcomes
        .iter()
        .map(|o| o.started)
        .reduce(f64::min)
        .unwrap_or(0.0);
    println!(
        "\n{:<46} {:<36} {:>10} {:>10} {:>9} {:>14} {:>13}",
        "ATTACK", "ATTACKER", "DETECTED", "BLOCKED", "REACTION", "PASSED BEFORE", "DROPPED SINCE"
    );
    for o in outcomes {
        let passed = o.sent.saturating_sub(o.hits);
        println!(
            "{:<46} {:<36} {:>10} {:>10} {:>9} {:>14} {:>13}",
            o.name,
            o.label,
            t(o.detected, first),
            t(o.blocked, first),
            o.blocked
                .map(|b| format!("{:.2}s", b - o.started))
                .unwrap_or_else(|| "-".into()),
            if o.blocked.is_some() {
                passed.to_string()
            } else {
                "-".into()
            },
            o.hits
        );
        match o.blocked {
            None => failures.push(format!("{} from {} was not blocked", o.name, o.label)),
            Some(b) if o.scan => {
                let (after, target) = (b - o.started, super::SCAN_TARGET_S);
                if after > target || passed > super::SCAN_TARGET_PROBES {
                    failures.push(format!(
                        "{} from {}: blocked {after:.2} s after it started with {passed} packets \
                         through (target: {target} s and {} packets)",
                        o.name,
                        o.label,
                        super::SCAN_TARGET_PROBES
                    ));
                }
            }
            Some(_) => {}
        }
    }
    let all: Vec<IpAddr> = seen.lock().expect("lock").keys().copied().collect();
    let benign_blocked: Vec<String> = all
        .iter()
        .filter(|a| benign.contains(a))
        .map(|a| a.to_string())
        .collect();
    println!("\nbenign hosts blocked: {}", none_or(&benign_blocked));
    if !benign_blocked.is_empty() {
        failures.push(format!(
            "benign hosts were blocked: {}",
            benign_blocked.join(", ")
        ));
    }
    let attackers: BTreeSet<IpAddr> = outcomes.iter().map(|o| o.attacker).collect();
    let other: Vec<String> = all
        .iter()
        .filter(|a| !benign.contains(a) && !attackers.contains(a))
        .map(|a| a.to_string())
        .collect();
    if !other.is_empty() {
        println!("other addresses blocked: {}", other.join(", "));
    }

    // XDP drop counters rise for blocked sources after the block.
    let hits = || -> anyhow::Result<HashMap<IpAddr, u64>> {
        Ok(stack
            .blocks()?
            .into_iter()
            .map(|b| (b.addr, b.hits))
            .collect())
    };
    let before = hits()?;
    let blocked: Vec<IpAddr> = outcomes
        .iter()
        .filter(|o| o.blocked.is_some() && o.attacker.is_ipv4())
        .map(|o| o.attacker)
        .collect();
    for a in &blocked {
        probe(*a, 5)?;
    }
    std::thread::sleep(Duration::from_millis(500));
    let after = hits()?;
    let mut rising = 0;
    for a in &blocked {
        let (b, f) = (
            before.get(a).copied().unwrap_or(0),
            after.get(a).copied().unwrap_or(0),
        );
        if f >= b + 5 {
            rising += 1;
        } else {
            failures.push(format!(
                "XDP drop counter of {a} went {b} -> {f} after 5 probe packets (expected +5)"
            ));
        }
    }
    println!(
        "XDP drop counters rose by 5 for {rising} of {} blocked sources after 5 probes each",
        blocked.len()
    );

    // Every verdict on the bus is signed by the detector it names.
    let rec = stack.recorded();
    println!(
        "verdicts on the bus: {} verified, {} not",
        rec.verdicts.len(),
        rec.unverified_verdicts.len()
    );
    for (_, topic, why) in &rec.unverified_verdicts {
        failures.push(format!("a verdict on {topic} did not verify: {why}"));
    }

    // Alerts visible through the dashboard API, with their audit hashes.
    if let Some(url) = &stack.dashboard_url {
        match dashboard_alerts(url) {
            Ok(list) => {
                let mut missing = Vec::new();
                for o in outcomes.iter().filter(|o| o.detected.is_some()) {
                    let ok = list.iter().any(|al| {
                        al["source"].as_str() == Some(o.attacker.to_string().as_str())
                            && al["audit_hash"].as_str().is_some_and(|h| h.len() >= 32)
                    });
                    if !ok {
                        missing.push(o.label.clone());
                    }
                }
                println!(
                    "dashboard API: {} alerts; detected attacks without an alert+audit hash there: {}",
                    list.len(),
                    none_or(&missing)
                );
                if !missing.is_empty() {
                    failures.push(format!(
                        "alerts missing from the dashboard API: {}",
                        missing.join(", ")
                    ));
                }
            }
            Err(e) => failures.push(format!("dashboard API: {e:#}")),
        }
    }
    Ok(())
}

/// The list joined with commas, or "none".
fn none_or(items: &[String]) -> String {
    if items.is_empty() {
        "none".into()
    } else {
        items.join(", ")
    }
}

/// GET /api/v1/alerts?limit=1000 from the root namespace (plain HTTP, no proxy,
/// 10 s limit): the alerts array (or the first array of an object).
///
/// # Errors
/// No connection, a status other than 2xx, or a body that is not JSON.
fn dashboard_alerts(url: &str) -> anyhow::Result<Vec<serde_json::Value>> {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(Duration::from_secs(10)))
        .proxy(None)
        .build()
        .into();
    let url = format!("{}/api/v1/alerts?limit=1000", url.trim_end_matches('/'));
    let v: serde_json::Value = agent
        .get(&url)
        .call()
        .with_context(|| format!("GET {url}"))?
        .body_mut()
        .read_json()
        .context("alerts are not JSON")?;
    Ok(match v {
        serde_json::Value::Array(a) => a,
        serde_json::Value::Object(o) => o
            .values()
            .find_map(|x| x.as_array().cloned())
            .unwrap_or_default(),
        _ => Vec::new(),
    })
}
