//! Ingestion paths not covered through the API: flows and device last-seen,
//! observe-only verdicts, retained thresholds from the bus, the Influx export.

mod common;

use std::{sync::Arc, time::Duration};

use common::*;
use dashboard::{
    app::App,
    audit::{AuditLog, verify_file},
    config::Config,
    influx::{InfluxSink, InfluxTargets},
    ingest::Ingested,
    metrics::Metrics,
    publish::RecordingPublisher,
    store::{BlockState, Store},
};
use tad_wire::{
    self, DirCounters, EndReason, FlowBatch, FlowRecord, SCHEMA_VERSION, ThresholdSettings, now_ms,
    topic,
};

fn flow(src: &str, dst: &str, start_ms: u64) -> FlowRecord {
    FlowRecord {
        src: src.parse().unwrap(),
        dst: dst.parse().unwrap(),
        sport: 40000,
        dport: 443,
        proto: 6,
        vlan: 0,
        start_ms,
        duration_us: 2_000_000,
        fwd: DirCounters {
            packets: 10,
            bytes: 1200,
            ..Default::default()
        },
        bwd: DirCounters {
            packets: 8,
            bytes: 9000,
            ..Default::default()
        },
        iat_mean_us: 100.0,
        iat_std_us: 10.0,
        end_reason: EndReason::EndOfFlow,
    }
}

#[test]
fn flows_are_summarised_and_refresh_device_last_seen() {
    let f = fixture();
    let batch = FlowBatch {
        v: SCHEMA_VERSION,
        gateway_id: GW.parse().unwrap(),
        seq: 0,
        partition: 0,
        sent_at_ms: 5_000,
        dropped_records: 0,
        records: vec![flow("192.0.2.10", "198.51.100.1", 1_000)],
    };
    let r = f
        .app
        .ingest(&topic::flows(GW, 0), &tad_wire::encode(&batch))
        .unwrap();
    assert_eq!(r, Ingested::Stored("flows"));
    let flows = f.app.store.flows(10).unwrap();
    assert_eq!(flows.len(), 1);
    assert_eq!(flows[0].packets, 18);
    assert_eq!(flows[0].bytes, 10_200);
    assert_eq!(flows[0].end_reason, "end_of_flow");
    // The named device (from the config) was seen at the flow's last packet.
    let dev = f.app.store.devices(now_ms()).unwrap();
    let thermostat = dev
        .iter()
        .find(|d| d.name.as_deref() == Some("thermostat"))
        .unwrap();
    assert_eq!(thermostat.last_seen_ms, Some(3_000));
    assert_eq!(thermostat.score, None);
}

#[test]
fn observe_only_verdicts_are_recorded_but_not_enforced() {
    let f = fixture();
    let mut v = verdict("v-obs", now_ms(), "192.0.2.10/32");
    v.observe_only = true;
    f.app
        .ingest(&topic::verdicts(GW), &tad_wire::encode(&v))
        .unwrap();
    let blocks = f.app.store.blocks(now_ms()).unwrap();
    assert_eq!(blocks[0].state, BlockState::Observed);
    let dev = f.app.store.devices(now_ms()).unwrap();
    assert!(!dev[0].blocked);
    // Redelivery is not audited again.
    assert_eq!(
        f.app
            .ingest(&topic::verdicts(GW), &tad_wire::encode(&v))
            .unwrap(),
        Ingested::Duplicate("verdict")
    );
    assert_eq!(
        verify_file(&f.dir.path().join("audit.jsonl"))
            .unwrap()
            .records,
        1
    );
}

#[test]
fn retained_thresholds_are_stored_and_audited_once() {
    let f = fixture();
    let t = ThresholdSettings {
        v: SCHEMA_VERSION,
        id: "thr-1".into(),
        operator: "other-dashboard".into(),
        issued_at_ms: 1,
        values: [("portscan.vertical_ports".to_string(), 25.0)].into(),
    };
    let payload = tad_wire::encode(&t);
    assert_eq!(
        f.app.ingest(&topic::thresholds(), &payload).unwrap(),
        Ingested::Stored("thresholds")
    );
    assert_eq!(
        f.app.ingest(&topic::thresholds(), &payload).unwrap(),
        Ingested::Duplicate("thresholds")
    );
    assert_eq!(f.app.store.thresholds().unwrap(), Some(t));
    assert_eq!(
        verify_file(&f.dir.path().join("audit.jsonl"))
            .unwrap()
            .records,
        1
    );
}

#[tokio::test]
async fn influx_export_gets_counters_alerts_and_trust() {
    let dir = tempfile::tempdir().unwrap();
    let lp = dir.path().join("out.lp");
    let mut cfg: Config = config(dir.path());
    cfg.influx.enabled = true;
    cfg.influx.file = Some(lp.clone());
    let metrics = Arc::new(Metrics::default());
    let sink = InfluxSink::spawn(
        InfluxTargets {
            file: Some(lp.clone()),
            udp: None,
        },
        16,
        metrics.clone(),
    );
    let app = App::new(
        cfg.clone(),
        Store::open(&cfg.storage.db_path).unwrap(),
        AuditLog::open(&cfg.storage.audit_log).unwrap(),
        Arc::new(RecordingPublisher::default()),
        Some(sink),
        metrics,
    );
    app.ingest(
        &topic::counters(GW),
        &tad_wire::encode(&counters(GW, 7_000, 10.0, 1.0, 2)),
    )
    .unwrap();
    app.ingest(
        &topic::alerts(DET),
        &tad_wire::encode(&alert("a-1", 7_500, "192.0.2.66")),
    )
    .unwrap();
    app.ingest(
        &topic::trust(DET),
        &tad_wire::encode(&trust("192.0.2.10", 8_000, 40.0)),
    )
    .unwrap();
    // 1 traffic + 3 slot lines, 1 alert, 1 trust: written by the export task.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let text = loop {
        let text = std::fs::read_to_string(&lp).unwrap_or_default();
        if text.lines().count() >= 6 {
            break text;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "export wrote: {text}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(text.starts_with("tad_traffic,gateway=gateway-1,mode=enforce pass_pps=10,"));
    assert!(text.contains("\ntad_alert,gateway=gateway-1,detector=detector-1,kind=port_scan"));
    assert!(text.contains("\ntad_trust,device=192.0.2.10,level=alert score=40,"));
}
