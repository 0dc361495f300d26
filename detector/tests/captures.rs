//! Every capture in `../shared/pcaps`, through the project's own flow meter and a
//! default-configured engine with the committed model, against MANIFEST.tsv: every
//! `must_block` source gets a blocking verdict, no other address does, and each
//! `expect_alert` kind is raised naming its address (as source or target).

use std::{collections::BTreeSet, net::IpAddr, path::PathBuf};

use detector::{config::Config, engine::Engine, model::Autoencoder, replay};
use tad_wire::AlertKind;

fn pcaps_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/pcaps")
}

struct Row {
    file: String,
    must_block: BTreeSet<IpAddr>,
    expect: Vec<(Vec<AlertKind>, IpAddr)>,
}

fn kind(name: &str) -> AlertKind {
    match name {
        "portscan" => AlertKind::PortScan,
        "synflood" => AlertKind::SynFlood,
        "bruteforce" => AlertKind::BruteForce,
        "spike" => AlertKind::TrafficSpike,
        "unauthorized" => AlertKind::UnauthorizedAccess,
        "anomaly" => AlertKind::Anomaly,
        "host_sweep" => AlertKind::HostSweep,
        "reflection" => AlertKind::Reflection,
        "amplifier" => AlertKind::Amplifier,
        other => panic!("MANIFEST names an unknown alert kind {other:?}"),
    }
}

fn manifest() -> Vec<Row> {
    let text = std::fs::read_to_string(pcaps_dir().join("MANIFEST.tsv")).expect("MANIFEST.tsv");
    let mut lines = text.lines();
    let header: Vec<&str> = lines.next().unwrap().split('\t').collect();
    let col = |name: &str| {
        header
            .iter()
            .position(|h| *h == name)
            .unwrap_or_else(|| panic!("no column {name}"))
    };
    let (c_file, c_block, c_alert) = (col("file"), col("must_block"), col("expect_alert"));
    lines
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let f: Vec<&str> = l.split('\t').collect();
            let must_block = f[c_block]
                .split([',', ' '])
                .filter(|s| !s.is_empty())
                .map(|s| s.parse().unwrap())
                .collect();
            // e.g. "portscan:10.0.2.2 (victim; ...)" or "synflood-or-portscan:10.0.2.15"
            let expect = f[c_alert]
                .split(',')
                .filter_map(|item| {
                    let item = item.split_whitespace().next()?;
                    let (kinds, addr) = item.split_once(':')?;
                    Some((
                        kinds.split("-or-").map(kind).collect(),
                        addr.parse().unwrap(),
                    ))
                })
                .collect();
            Row {
                file: f[c_file].to_string(),
                must_block,
                expect,
            }
        })
        .collect()
}

#[test]
fn every_capture_meets_its_ground_truth() {
    let rows = manifest();
    assert!(
        rows.len() >= 16,
        "expected every capture in the manifest, got {}",
        rows.len()
    );
    let mut failures = Vec::new();
    for row in &rows {
        let model = Autoencoder::load(&detector::model::default_model_path())
            .expect("committed model loads");
        let mut engine = Engine::new(Config::default(), Some(model));
        let path = pcaps_dir().join(&row.file);
        let out = replay::replay_pcap(&mut engine, &path).unwrap_or_else(|e| panic!("{e}"));
        let blocked: BTreeSet<IpAddr> = out
            .verdicts
            .iter()
            .filter(|v| {
                matches!(
                    v.verdict.action,
                    tad_wire::Action::Block | tad_wire::Action::Quarantine
                )
            })
            .map(|v| v.verdict.target.addr())
            .collect();
        for v in &out.verdicts {
            assert_eq!(
                v.verdict.target.prefix_len(),
                v.verdict.target.max_prefix_len(),
                "single-host verdicts"
            );
            // Blocks and SYN authentication expire; a lift (unblock of a
            // provisional quarantine) and the end of a SYN authentication have no TTL.
            assert_eq!(
                v.verdict.ttl_s.is_some(),
                !matches!(
                    v.verdict.action,
                    tad_wire::Action::Unblock | tad_wire::Action::UnprotectSyn
                ),
                "{v:?}"
            );
        }
        if !row.must_block.is_subset(&blocked) {
            failures.push(format!(
                "{}: must block {:?}, blocked {:?}",
                row.file, row.must_block, blocked
            ));
        }
        // The gateway's own provisional quarantines (the meter runs the XDP rule):
        // never an innocent address.
        let (_, evidence) = replay::records_and_evidence(&path).unwrap();
        let quarantined: BTreeSet<IpAddr> = evidence
            .iter()
            .flat_map(|e| &e.events)
            .filter(|e| e.kind == tad_wire::EvidenceEventKind::Quarantine)
            .map(|e| e.addr)
            .collect();
        let wrongly: Vec<_> = quarantined.difference(&row.must_block).collect();
        if !wrongly.is_empty() {
            failures.push(format!(
                "{}: provisionally quarantined innocent {wrongly:?}",
                row.file
            ));
        }
        let extra: Vec<_> = blocked.difference(&row.must_block).collect();
        if !extra.is_empty() {
            let rules: Vec<String> = out
                .verdicts
                .iter()
                .filter(|v| extra.contains(&&v.verdict.target.addr()))
                .map(|v| {
                    format!(
                        "{:?} {} by {}",
                        v.verdict.action, v.verdict.target, v.verdict.rule
                    )
                })
                .collect();
            failures.push(format!(
                "{}: blocked innocent {:?} ({})",
                row.file,
                extra,
                rules.join(", ")
            ));
        }
        for (kinds, addr) in &row.expect {
            let hit = out.alerts.iter().any(|a| {
                kinds.contains(&a.kind) && (a.source == Some(*addr) || a.target == Some(*addr))
            });
            if !hit {
                failures.push(format!("{}: no {kinds:?} alert naming {addr}", row.file));
            }
        }
        for a in &out.alerts {
            assert!(!a.explanation.rule.is_empty() && !a.explanation.text.is_empty());
            assert!(
                a.kind == AlertKind::Anomaly
                    || !a.explanation.observed.is_empty()
                    || a.kind == AlertKind::UnauthorizedAccess
            );
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn benign_captures_raise_no_rule_alerts_and_no_provisional_quarantine() {
    for row in manifest()
        .iter()
        .filter(|r| r.must_block.is_empty() && r.expect.is_empty())
    {
        let path = pcaps_dir().join(&row.file);
        let mut engine = Engine::new(Config::default(), None);
        let out = replay::replay_pcap(&mut engine, &path).unwrap();
        assert!(out.alerts.is_empty(), "{}: {:?}", row.file, out.alerts);
        // The gateway's own budgets (the meter runs the XDP program's rule): no
        // benign host is ever quarantined provisionally, nor reported.
        let (_, evidence) = replay::records_and_evidence(&path).unwrap();
        let events: Vec<_> = evidence.iter().flat_map(|e| &e.events).collect();
        assert!(
            events
                .iter()
                .all(|e| e.kind != tad_wire::EvidenceEventKind::Quarantine),
            "{}: {events:?}",
            row.file
        );
    }
}
