//! Two detector instances, each taking half of the partitions, see every source's
//! flows in exactly one instance, and together raise the same alerts and verdicts
//! as one instance taking everything.

use std::{collections::BTreeSet, path::PathBuf};

use detector::{config::Config, engine::Engine, replay};
use flow_meter::meter::TimedRecord;
use tad_wire::{Alert, AlertKind, partition_of};

fn pcaps() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/pcaps")
}

fn engine(take: Vec<u16>) -> Engine {
    let mut cfg = Config::default();
    cfg.partitions.count = 2;
    cfg.partitions.take = take;
    Engine::new(cfg, None)
}

type Key = (
    AlertKind,
    String,
    Option<std::net::IpAddr>,
    Option<std::net::IpAddr>,
);

fn keys(alerts: &[Alert]) -> BTreeSet<Key> {
    alerts
        .iter()
        .map(|a| (a.kind, a.explanation.rule.clone(), a.source, a.target))
        .collect()
}

#[test]
fn two_instances_equal_one() {
    // Several attack captures merged into one stream, so both partitions get work.
    let mut recs: Vec<TimedRecord> = Vec::new();
    for f in [
        "ntop__synscan.pcap",
        "zeek__sshguess.pcap",
        "Montimage__42.TCP_NULL_scan.pcap",
        "OISF__syn-flood-drop-precedence.pcap",
        "ntop__tuya_lp.pcap",
    ] {
        let mut r = replay::records(&pcaps().join(f)).unwrap();
        // Align every capture to start at the same time.
        let t0 = r.first().unwrap().at_ns;
        for t in &mut r {
            t.at_ns = t.at_ns - t0 + 1_700_000_000_000_000_000;
        }
        recs.extend(r);
    }
    recs.sort_by_key(|t| t.at_ns);
    let srcs: BTreeSet<u16> = recs.iter().map(|t| partition_of(t.record.src, 2)).collect();
    assert_eq!(srcs.len(), 2, "the test data must use both partitions");

    let mut single = engine(vec![]);
    let mut a = engine(vec![0]);
    let mut b = engine(vec![1]);
    let run = |e: &mut Engine| {
        let mut alerts = Vec::new();
        let mut verdicts = BTreeSet::new();
        for (_, o) in replay::run(e, &recs) {
            alerts.extend(o.alerts);
            verdicts.extend(o.verdicts.into_iter().map(|v| v.verdict.target));
        }
        (alerts, verdicts)
    };
    let (s_alerts, s_verdicts) = run(&mut single);
    let (a_alerts, a_verdicts) = run(&mut a);
    let (b_alerts, b_verdicts) = run(&mut b);
    assert_eq!(
        a.counters.records + b.counters.records,
        single.counters.records
    );
    assert_eq!(
        a.counters.foreign_records, b.counters.records,
        "each record handled by exactly one instance"
    );

    // Source-keyed alerts: each source's alerts come from one instance only.
    for (alerts, part) in [(&a_alerts, 0u16), (&b_alerts, 1)] {
        for al in alerts {
            if let Some(src) = al.source {
                assert_eq!(partition_of(src, 2), part, "{al:?}");
            }
        }
    }
    let union: BTreeSet<Key> = keys(&a_alerts).union(&keys(&b_alerts)).cloned().collect();
    assert_eq!(union, keys(&s_alerts));
    let v_union: BTreeSet<_> = a_verdicts.union(&b_verdicts).cloned().collect();
    assert_eq!(v_union, s_verdicts);
    assert!(!s_verdicts.is_empty());
}
