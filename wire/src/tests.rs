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

/// An alert as a detector that does not merge alerts writes it (no `count`, no
/// `first_seen_ms`).
const SINGLE_ALERT: &str = r#"{"v":1,"id":"a-1","detector_id":"detector-1",
    "gateway_id":"gateway-1","at_ms":5000,"kind":"host_sweep","severity":"high",
    "source":"203.0.113.66","explanation":{"rule":"portscan.horizontal","window_s":60.0,
    "observed":{"targets":256.0},"thresholds":{},"text":"a sweep"}}"#;

#[test]
fn merged_alert_fields_are_optional_and_checked() {
    let a: Alert = decode(SINGLE_ALERT.as_bytes()).unwrap();
    assert_eq!((a.count, a.first_seen_ms, a.first_seen()), (1, None, 5000));
    assert_eq!(a.kind, AlertKind::HostSweep);
    assert_eq!(a.kind.block_reason(), BlockReason::PortScan);
    // A merged version round-trips; one absent field is not written.
    let mut m = a.clone();
    m.count = 7;
    m.first_seen_ms = Some(1000);
    assert_eq!(decode::<Alert>(&encode(&m)).unwrap(), m);
    assert!(
        !String::from_utf8(encode(&a))
            .unwrap()
            .contains("first_seen_ms")
    );
    // No alert is zero detections, none was first seen after it was last seen.
    m.count = 0;
    assert!(decode::<Alert>(&encode(&m)).is_err());
    m.count = 2;
    m.first_seen_ms = Some(6000);
    let e = decode::<Alert>(&encode(&m)).unwrap_err().to_string();
    assert!(e.contains("first_seen_ms"), "{e}");
}
