//! Round trips and field checks of the wire messages in `lib.rs`.

use super::*;

fn verdict() -> Verdict {
    Verdict {
        v: SCHEMA_VERSION,
        id: "v-1".into(),
        detector_id: "detector-1".parse().unwrap(),
        issued_at_ms: 1,
        action: Action::Quarantine,
        target: "192.0.2.7/32".parse().unwrap(),
        ttl_s: Some(600),
        reason: BlockReason::PortScan,
        rule: "portscan.vertical".into(),
        confidence: 0.9,
        alert_id: None,
        observe_only: false,
        port: None,
    }
}

#[test]
fn round_trip() {
    let v = verdict();
    assert_eq!(decode::<Verdict>(&encode(&v)).unwrap(), v);
}

#[test]
fn rejects_other_versions_and_bad_fields() {
    let mut v = verdict();
    v.v = 2;
    assert!(matches!(
        decode::<Verdict>(&encode(&v)),
        Err(WireError::Version { got: 2, .. })
    ));
    let mut v = verdict();
    v.ttl_s = None;
    assert!(matches!(
        decode::<Verdict>(&encode(&v)),
        Err(WireError::Invalid { .. })
    ));
    assert!(matches!(
        decode::<Verdict>(b"{"),
        Err(WireError::Json { .. })
    ));
}

#[test]
fn partitions_are_stable_and_in_range() {
    let a: IpAddr = "192.0.2.7".parse().unwrap();
    assert_eq!(partition_of(a, 4), partition_of(a, 4));
    assert!((0..200u8).all(|i| partition_of(IpAddr::V4(Ipv4Addr::new(198, 18, 0, i)), 3) < 3));
    assert_eq!(partition_of(a, 1), 0);
}
