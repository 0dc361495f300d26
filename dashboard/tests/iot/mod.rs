//! IoT device reports as a gateway publishes them (`tad_wire::devices`), for the
//! device tests. Telemetry batches are closed by the devices crate's own
//! `Batcher` (`tad_devices::batch`), so their SHA-256 is the gateway's, not one
//! computed the dashboard's way.
#![allow(dead_code)]

use std::collections::BTreeMap;

use tad_devices::{
    batch::{BatchConfig, BatchRecord, Batcher},
    telemetry::Telemetry,
};
use tad_wire::{
    SCHEMA_VERSION,
    devices::{
        CommandDecision, DeviceCommandDecision, DeviceCommandSpec, DeviceRefusal,
        DeviceRefusalReason, DeviceRefusals, DeviceStates, DeviceTelemetryBatch, DeviceTrustCause,
        DeviceTrustChange, DeviceTrustChanges, DeviceTrustComponents, DeviceTrustLevel, DeviceView,
        DeviceVulnReport, Severity, VulnFinding,
    },
};

pub const GW: &str = "gateway-1";

/// One reading: `(device, sequence_no, arrival_ms, cpu %, battery %, temperature)`.
pub type Reading<'a> = (&'a str, u64, u64, f64, f64, f64);

/// A batch numbered `batch_no` of `readings`, closed by `tad_devices::batch`
/// (signatures are 64 fixed bytes: the dashboard hashes them, it does not verify
/// them), wrapped as the gateway publishes it.
pub fn batch(batch_no: u64, readings: &[Reading<'_>]) -> DeviceTelemetryBatch {
    let mut b = Batcher::new(BatchConfig {
        max_records: 10_000,
        max_age_ms: u64::MAX,
    });
    // The batcher numbers from 1: skip to `batch_no`.
    for _ in 1..batch_no {
        let (dev, _, at, ..) = readings[0];
        let t = telemetry(dev, 0, at, 0.0, 0.0, 0.0);
        let bytes = t.to_bytes();
        b.push(record(&t, at, &bytes), &bytes, &[0; 64]);
        b.close(at).unwrap();
    }
    for &(dev, seq, at, cpu, bat, temp) in readings {
        let t = telemetry(dev, seq, at, cpu, bat, temp);
        let bytes = t.to_bytes();
        let sig = [seq as u8; 64];
        assert!(
            b.push(record_sig(&t, at, &bytes, &sig), &bytes, &sig)
                .is_none()
        );
    }
    let closed = b.close(readings.last().unwrap().2 + 5).unwrap();
    assert_eq!(closed.batch_no, batch_no);
    let mut v = serde_json::to_value(&closed).unwrap();
    v["gateway_id"] = GW.into();
    v["sent_at_ms"] = (closed.closed_ms + 1).into();
    serde_json::from_value(v).unwrap()
}

fn telemetry(dev: &str, seq: u64, at: u64, cpu: f64, bat: f64, temp: f64) -> Telemetry {
    Telemetry {
        v: 1,
        device_id: dev.parse().unwrap(),
        sequence_no: seq,
        timestamp: at - 3,
        cpu_usage: cpu,
        battery_level: bat,
        sensors: BTreeMap::from([("temperature".to_string(), temp)]),
    }
}

fn record(t: &Telemetry, at: u64, bytes: &[u8]) -> BatchRecord {
    record_sig(t, at, bytes, &[0; 64])
}

fn record_sig(t: &Telemetry, at: u64, bytes: &[u8], sig: &[u8; 64]) -> BatchRecord {
    use base64::{Engine as _, engine::general_purpose::URL_SAFE_NO_PAD};
    BatchRecord {
        arrival_ms: at,
        payload: URL_SAFE_NO_PAD.encode(bytes),
        sig: URL_SAFE_NO_PAD.encode(sig),
        telemetry: t.clone(),
        anomaly: None,
    }
}

pub fn level(t: f64) -> DeviceTrustLevel {
    match t {
        t if t >= 75.0 => DeviceTrustLevel::Normal,
        t if t >= 50.0 => DeviceTrustLevel::Warning,
        t if t >= 20.0 => DeviceTrustLevel::Alert,
        _ => DeviceTrustLevel::Critical,
    }
}

/// One trust change of `dev` from `old` to `new` for `cause`.
pub fn change(
    dev: &str,
    at_ms: u64,
    old: f64,
    new: f64,
    cause: DeviceTrustCause,
) -> DeviceTrustChange {
    DeviceTrustChange {
        device_id: dev.into(),
        at_ms,
        cause,
        old,
        new,
        old_level: level(old),
        new_level: level(new),
        components: DeviceTrustComponents {
            behaviour: new,
            vulnerability: 100.0,
            reputation: 90.0,
        },
        batch_sha256: None,
    }
}

pub fn trust(sent_at_ms: u64, changes: Vec<DeviceTrustChange>) -> DeviceTrustChanges {
    DeviceTrustChanges {
        v: SCHEMA_VERSION,
        gateway_id: GW.parse().unwrap(),
        sent_at_ms,
        changes,
    }
}

pub fn alert_cause(reason: &str) -> DeviceTrustCause {
    DeviceTrustCause::SecurityAlert {
        reason: reason.into(),
        detail: format!("{reason} from the device's topic"),
    }
}

/// A refusals report listing one refusal per `(device, reason, seq)`.
pub fn refusals(at_ms: u64, list: &[(&str, DeviceRefusalReason, u64)]) -> DeviceRefusals {
    DeviceRefusals {
        v: SCHEMA_VERSION,
        gateway_id: GW.parse().unwrap(),
        sent_at_ms: at_ms + 10,
        refusals: list
            .iter()
            .enumerate()
            .map(|(i, &(dev, reason, seq))| DeviceRefusal {
                device_id: dev.into(),
                enrolled: dev != "rogue-1",
                reason,
                count: i as u64 + 1,
                at_ms,
                sequence_no: Some(seq),
                detail: format!("{} of sequence {seq}", reason.as_str()),
            })
            .collect(),
        suppressed: 0,
        totals: DeviceRefusalReason::ALL
            .into_iter()
            .map(|r| (r, list.iter().filter(|x| x.1 == r).count() as u64))
            .collect(),
    }
}

/// A command decision: refused with `reason`, or allowed when `None`.
pub fn decision(
    id: &str,
    dev: &str,
    at_ms: u64,
    reason: Option<&str>,
    trust: f64,
) -> DeviceCommandDecision {
    DeviceCommandDecision {
        v: SCHEMA_VERSION,
        gateway_id: GW.parse().unwrap(),
        request_id: id.into(),
        device_id: dev.into(),
        command: "reboot".into(),
        spec: DeviceCommandSpec::Reboot {},
        decision: if reason.is_some() {
            CommandDecision::Refused
        } else {
            CommandDecision::Allowed
        },
        reason: reason.map(str::to_owned),
        detail: reason.map_or(String::new(), |r| format!("{r}: trust {trust} is below 50")),
        trust,
        requested_by: "dashboard/alice".into(),
        at_ms,
    }
}

/// A scan of `dev` that found telnet open (score 40), or nothing (100).
pub fn scan(dev: &str, at_ms: u64, telnet: bool) -> DeviceVulnReport {
    DeviceVulnReport {
        v: SCHEMA_VERSION,
        gateway_id: GW.parse().unwrap(),
        device_id: dev.into(),
        addr: "192.0.2.31".parse().unwrap(),
        at_ms,
        open_ports: if telnet { vec![23, 80] } else { vec![80] },
        findings: if telnet {
            vec![VulnFinding {
                port: 23,
                proto: "tcp".into(),
                service: "telnet".into(),
                severity: Severity::Critical,
                why: "telnet sends credentials in clear text".into(),
            }]
        } else {
            vec![]
        },
        score: if telnet { 40.0 } else { 100.0 },
        scanner: "connect".into(),
    }
}

/// The retained snapshot listing `(device, trust)`.
pub fn states(at_ms: u64, devices: &[(&str, f64)]) -> DeviceStates {
    DeviceStates {
        v: SCHEMA_VERSION,
        gateway_id: GW.parse().unwrap(),
        at_ms,
        devices: devices
            .iter()
            .map(|&(d, t)| DeviceView {
                device_id: d.into(),
                trust: t,
                level: level(t),
                components: DeviceTrustComponents {
                    behaviour: t,
                    vulnerability: 100.0,
                    reputation: 90.0,
                },
                accepted: 10,
                refused: 2,
                last_seen_ms: Some(at_ms - 100),
                sensors: vec!["temperature".into()],
            })
            .collect(),
        received: 12 * devices.len() as u64,
        accepted: 10 * devices.len() as u64,
        refused: [(DeviceRefusalReason::Replay, 2 * devices.len() as u64)].into(),
        outbox_queued: 0,
        outbox_dropped_batches: 0,
    }
}
