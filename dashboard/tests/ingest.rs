//! Ingestion paths not covered through the API: flows and device last-seen,
//! signed verdicts (verified, refused ones counted and audited, never shown),
//! gateway state snapshots and deltas (the only source of blocks), retained
//! thresholds from the bus, the Influx export.

mod common;

use std::{sync::Arc, time::Duration};

use common::*;
use dashboard::{
    app::App,
    audit::{AuditLog, verify_file},
    config::Config,
    influx::{InfluxSink, InfluxTargets},
    ingest::{IngestError, Ingested},
    metrics::Metrics,
    publish::RecordingPublisher,
    store::Store,
};
use tad_wire::{
    self, BlockOrigin, DirCounters, EndReason, FlowBatch, FlowRecord, RefusalReason, RemovalCause,
    RemovedBlock, SCHEMA_VERSION, ThresholdSettings, now_ms, topic,
};

fn audit_records(f: &Fixture) -> Vec<serde_json::Value> {
    std::fs::read_to_string(f.dir.path().join("audit.jsonl"))
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn prefixes(f: &Fixture) -> Vec<String> {
    let mut p: Vec<String> = f
        .app
        .store
        .blocks(now_ms())
        .unwrap()
        .iter()
        .map(|b| b.prefix.to_string())
        .collect();
    p.sort();
    p
}

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
fn signed_verdicts_are_stored_once_and_are_not_blocks() {
    let f = fixture();
    let mut v = verdict("v-obs", now_ms(), "192.0.2.10/32");
    v.observe_only = true;
    let payload = sign_as(DET, &v);
    assert_eq!(
        f.app.ingest(&topic::verdicts(GW, DET), &payload).unwrap(),
        Ingested::Stored("verdict")
    );
    assert_eq!(f.app.store.verdicts(10).unwrap()[0].verdict, v);
    // What a detector asked for is not what the gateway enforces.
    assert!(f.app.store.blocks(now_ms()).unwrap().is_empty());
    let dev = f.app.store.devices(now_ms()).unwrap();
    assert!(!dev[0].blocked);
    // Redelivery is not audited again.
    assert_eq!(
        f.app.ingest(&topic::verdicts(GW, DET), &payload).unwrap(),
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
fn forged_and_unsigned_verdicts_are_refused_counted_and_audited_never_shown() {
    let f = fixture();
    let v = verdict("v-forged", now_ms(), "192.0.2.20/32");
    // detector-2, with a valid certificate, publishes on its own topic level a
    // verdict naming detector-1.
    let err = f
        .app
        .ingest(
            &topic::verdicts(GW, "detector-2"),
            &sign_as("detector-2", &v),
        )
        .unwrap_err();
    assert!(
        matches!(
            err,
            IngestError::Refused {
                reason: RefusalReason::IdentityMismatch,
                ..
            }
        ),
        "{err}"
    );
    // The same signed by detector-2 but on detector-1's topic level.
    let err = f
        .app
        .ingest(&topic::verdicts(GW, DET), &sign_as("detector-2", &v))
        .unwrap_err();
    assert!(err.to_string().contains("detector-2"), "{err}");
    // Unsigned JSON, a tampered signature, a certificate from another CA.
    assert!(
        f.app
            .ingest(&topic::verdicts(GW, DET), &tad_wire::encode(&v))
            .is_err()
    );
    let mut tampered = sign_as(DET, &v);
    let n = tampered.len();
    tampered[n - 5] = if tampered[n - 5] == b'A' { b'B' } else { b'A' };
    let err = f
        .app
        .ingest(&topic::verdicts(GW, DET), &tampered)
        .unwrap_err();
    assert!(
        matches!(
            err,
            IngestError::Refused {
                reason: RefusalReason::BadSignature,
                ..
            }
        ),
        "{err}"
    );
    let other =
        tad_bus::pki::CertificateAuthority::generate("rogue CA", tad_bus::pki::Validity::days(1))
            .unwrap();
    let c = other
        .issue_client(DET, tad_bus::pki::Validity::days(1))
        .unwrap();
    let rogue =
        tad_bus::signing::Signer::from_pem(c.cert_pem.as_bytes(), c.key_pem.as_bytes()).unwrap();
    assert!(
        f.app
            .ingest(&topic::verdicts(GW, DET), &rogue.sign(&v))
            .is_err()
    );

    assert!(f.app.store.verdicts(10).unwrap().is_empty());
    let m = &f.app.metrics;
    assert_eq!(m.refusals("verdict", RefusalReason::IdentityMismatch), 2);
    assert_eq!(m.refusals("verdict", RefusalReason::BadSignature), 3);
    assert_eq!(m.messages("verdict"), 0);
    let text = m.render(None, 0);
    assert!(
        text.contains(
            "tad_dashboard_refused_total{kind=\"verdict\",reason=\"identity_mismatch\"} 2\n"
        ),
        "{text}"
    );
    // Each refusal is an audit record naming the claimed sender and why.
    let records = audit_records(&f);
    assert_eq!(records.len(), 5);
    assert!(records.iter().all(|r| r["kind"] == "refusal"));
    let first = &records[0]["data"];
    assert_eq!(first["kind"], "verdict");
    assert_eq!(first["claimed_sender"], "detector-2");
    assert_eq!(first["claimed_signer"], "detector-2");
    assert_eq!(first["message_id"], "v-forged");
    assert_eq!(first["reason"], "identity_mismatch");
    assert!(
        first["error"].as_str().unwrap().contains("detector-1"),
        "{first}"
    );
    assert_eq!(records[1]["data"]["claimed_sender"], DET);
    assert_eq!(records[2]["data"]["reason"], "bad_signature");
}

#[test]
fn commands_from_another_dashboard_are_verified_against_their_topic_level() {
    let f = fixture();
    let c = tad_wire::Command {
        v: SCHEMA_VERSION,
        id: "cmd-other".into(),
        operator: "bob".into(),
        issued_at_ms: now_ms(),
        action: tad_wire::Action::Block,
        target: "192.0.2.30".parse().unwrap(),
        ttl_s: None,
        reason: None,
        port: None,
    };
    // dashboard-2 signing, claiming to be dashboard: refused.
    let err = f
        .app
        .ingest(
            &topic::commands(GW, "dashboard"),
            &sign_as("dashboard-2", &c),
        )
        .unwrap_err();
    assert!(err.to_string().contains("dashboard-2"), "{err}");
    assert_eq!(
        f.app
            .metrics
            .refusals("command", RefusalReason::IdentityMismatch),
        1
    );
    assert!(f.app.store.commands(10).unwrap().is_empty());
    // Under its own name it is recorded (audited, listed).
    assert_eq!(
        f.app
            .ingest(
                &topic::commands(GW, "dashboard-2"),
                &sign_as("dashboard-2", &c)
            )
            .unwrap(),
        Ingested::Stored("command")
    );
    assert_eq!(f.app.store.commands(10).unwrap()[0].command, c);
}

#[test]
fn gateway_state_is_the_block_list_and_deltas_move_it() {
    let f = fixture();
    let now = now_ms();
    let cli = entry("192.0.2.7/32", BlockOrigin::Cli, "root", None);
    let feed = entry(
        "198.51.100.0/24",
        BlockOrigin::Feed,
        "feed:spamhaus-drop.txt",
        Some(now + 3_600_000),
    );
    let gone = entry("203.0.113.5/32", BlockOrigin::Verdict, DET, Some(now - 1));
    let payload = tad_wire::encode(&gw_state(10, now, vec![cli, feed, gone]));
    assert_eq!(
        f.app.ingest(&topic::gateway_state(GW), &payload).unwrap(),
        Ingested::Stored("state")
    );
    // The entry past its expiry is hidden.
    assert_eq!(prefixes(&f), ["192.0.2.7/32", "198.51.100.0/24"]);
    let records = audit_records(&f);
    assert_eq!(records.len(), 1);
    assert_eq!(records[0]["kind"], "gateway_state");
    assert_eq!(records[0]["data"]["via"], "snapshot");
    assert_eq!(records[0]["data"]["upserted"].as_array().unwrap().len(), 3);
    // The same snapshot again (retained, on reconnect) changes nothing, audits nothing.
    f.app.ingest(&topic::gateway_state(GW), &payload).unwrap();
    assert_eq!(audit_records(&f).len(), 1);

    // The feed entry expires: the gateway's delta removes it.
    let mut d = gw_delta(11, now + 1_000);
    d.removed = vec![RemovedBlock {
        prefix: "198.51.100.0/24".parse().unwrap(),
        cause: RemovalCause::Expired,
    }];
    d.refusals = Some([(RefusalReason::BadSignature, 1)].into());
    let dp = tad_wire::encode(&d);
    assert_eq!(
        f.app.ingest(&topic::gateway_state_delta(GW), &dp).unwrap(),
        Ingested::Stored("state_delta")
    );
    assert_eq!(prefixes(&f), ["192.0.2.7/32"]);
    let r = &audit_records(&f)[1];
    assert_eq!(r["kind"], "gateway_state");
    assert_eq!(r["data"]["via"], "delta");
    assert_eq!(r["data"]["removed"][0]["prefix"], "198.51.100.0/24");
    assert_eq!(r["data"]["removed"][0]["cause"], "expired");
    assert_eq!(r["data"]["refusals_increased"]["bad_signature"], 1);
    // Redelivered: already applied.
    assert_eq!(
        f.app.ingest(&topic::gateway_state_delta(GW), &dp).unwrap(),
        Ingested::Duplicate("state_delta")
    );
    // A gap (rev 13 after 11) is ignored until the next snapshot.
    let mut gap = gw_delta(13, now + 3_000);
    gap.removed = vec![RemovedBlock {
        prefix: "192.0.2.7/32".parse().unwrap(),
        cause: RemovalCause::Removed,
    }];
    assert_eq!(
        f.app
            .ingest(&topic::gateway_state_delta(GW), &tad_wire::encode(&gap))
            .unwrap(),
        Ingested::Ignored
    );
    assert_eq!(prefixes(&f), ["192.0.2.7/32"]);
    // A restarted gateway's snapshot at rev 0 replaces the held state.
    f.app
        .ingest(
            &topic::gateway_state(GW),
            &tad_wire::encode(&gw_state(0, now + 4_000, vec![])),
        )
        .unwrap();
    assert!(prefixes(&f).is_empty());
    let r = audit_records(&f).pop().unwrap();
    assert_eq!(r["data"]["removed"][0], "192.0.2.7/32");
    // A state from another gateway's topic is refused.
    assert!(
        f.app
            .ingest(&topic::gateway_state("gateway-2"), &payload)
            .is_err()
    );
}

#[test]
fn held_state_is_shown_after_a_restart_before_the_next_snapshot() {
    let f = fixture();
    let now = now_ms();
    f.app
        .ingest(
            &topic::gateway_state(GW),
            &tad_wire::encode(&gw_state(
                5,
                now - 5_000,
                vec![entry("192.0.2.7/32", BlockOrigin::Cli, "root", None)],
            )),
        )
        .unwrap();
    let store = Store::open(&f.app.config.storage.db_path).unwrap();
    let blocks = store.blocks(now).unwrap();
    assert_eq!(blocks.len(), 1);
    assert_eq!(blocks[0].state_at_ms, now - 5_000);
    let held = store.gateway_state(GW).unwrap().unwrap();
    assert_eq!((held.state.rev, held.synced), (5, false));
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

/// Two quick changes A then B: the late bus echo of A must not put A back in
/// force over B (the settings-bus test once saw the old value come back), and
/// neither may a set issued before the one in force.
#[test]
fn a_late_echo_of_older_settings_does_not_replace_newer_ones() {
    let f = fixture();
    let set = |id: &str, at: u64, v: f64| ThresholdSettings {
        v: SCHEMA_VERSION,
        id: id.into(),
        operator: "ops".into(),
        issued_at_ms: at,
        values: [("portscan.vertical_ports".to_string(), v)].into(),
    };
    let (a, b) = (set("thr-a", 10, 30.0), set("thr-b", 20, 14.0));
    f.app.record_thresholds(&a, "api").unwrap();
    f.app.record_thresholds(&b, "api").unwrap();
    for echo in [&a, &b] {
        assert_eq!(
            f.app
                .ingest(&topic::thresholds(), &tad_wire::encode(echo))
                .unwrap(),
            Ingested::Duplicate("thresholds")
        );
    }
    let older = set("thr-other", 15, 99.0);
    assert_eq!(
        f.app
            .ingest(&topic::thresholds(), &tad_wire::encode(&older))
            .unwrap(),
        Ingested::Duplicate("thresholds")
    );
    assert_eq!(f.app.store.thresholds().unwrap(), Some(b.clone()));
    let newer = set("thr-c", 30, 40.0);
    assert_eq!(
        f.app
            .ingest(&topic::thresholds(), &tad_wire::encode(&newer))
            .unwrap(),
        Ingested::Stored("thresholds")
    );
    assert_eq!(f.app.store.thresholds().unwrap(), Some(newer));
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

#[test]
fn protect_syn_verdicts_and_acks_are_stored_and_audited_and_protection_comes_only_from_state() {
    use tad_wire::{Ack, Action, BlockReason, Outcome, state::ProtectedService};

    let f = fixture();
    let now = now_ms();
    let mut v = verdict("v-protect", now, "192.0.2.10/32");
    v.action = Action::ProtectSyn;
    v.port = Some(80);
    v.ttl_s = Some(300);
    v.reason = BlockReason::SynFlood;
    v.rule = "synflood.spoofed".into();
    assert_eq!(
        f.app
            .ingest(&topic::verdicts(GW, DET), &sign_as(DET, &v))
            .unwrap(),
        Ingested::Stored("verdict")
    );
    let stored = &f.app.store.verdicts(10).unwrap()[0].verdict;
    assert_eq!((stored.action, stored.port), (Action::ProtectSyn, Some(80)));
    let r = audit_records(&f).pop().unwrap();
    assert_eq!(
        (&r["kind"], &r["data"]["verdict"]["action"]),
        (&"verdict".into(), &"protect_syn".into())
    );
    // Neither a block nor a protection: only the gateway's state says what it does.
    assert!(f.app.store.blocks(now).unwrap().is_empty());
    assert!(f.app.store.protected(now).unwrap().is_empty());
    let ack = Ack {
        v: SCHEMA_VERSION,
        id: "v-protect".into(),
        gateway_id: GW.parse().unwrap(),
        outcome: Outcome::Applied,
        error: None,
        at_ms: now,
        apply_us: 90,
    };
    assert_eq!(
        f.app
            .ingest(&topic::acks(GW), &tad_wire::encode(&ack))
            .unwrap(),
        Ingested::Stored("ack")
    );
    assert_eq!(audit_records(&f).pop().unwrap()["kind"], "ack");

    let svc = |challenged| ProtectedService {
        addr: "192.0.2.10".parse().unwrap(),
        port: Some(80),
        origin: BlockOrigin::Verdict,
        rule: Some("synflood.spoofed".into()),
        by: Some(DET.into()),
        created_ms: now,
        expires_at_ms: Some(now + 300_000),
        challenged,
        validated: 1,
        passed: 2,
        limited: 0,
    };
    let mut s = gw_state(20, now, vec![]);
    s.protected = vec![svc(500)];
    f.app
        .ingest(&topic::gateway_state(GW), &tad_wire::encode(&s))
        .unwrap();
    let p = f.app.store.protected(now).unwrap();
    assert_eq!(
        (
            p[0].service.as_str(),
            p[0].origin,
            p[0].challenged,
            p[0].by.as_deref()
        ),
        ("192.0.2.10:80", BlockOrigin::Verdict, 500, Some(DET))
    );
    assert!(
        f.app.store.blocks(now).unwrap().is_empty(),
        "no source is blocked"
    );
    let r = audit_records(&f).pop().unwrap();
    assert_eq!(r["kind"], "gateway_state");
    assert_eq!(r["data"]["protected_on"][0]["service"], "192.0.2.10:80");
    let audited = audit_records(&f).len();
    // The next snapshot only moves the counters: shown, not audited.
    s.protected = vec![svc(90_000)];
    s.at_ms = now + 5_000;
    f.app
        .ingest(&topic::gateway_state(GW), &tad_wire::encode(&s))
        .unwrap();
    assert_eq!(f.app.store.protected(now).unwrap()[0].challenged, 90_000);
    assert_eq!(audit_records(&f).len(), audited);
    // The flood ends: the delta takes the service off, audited.
    let mut d = gw_delta(21, now + 6_000);
    d.protected = Some(vec![]);
    assert_eq!(
        f.app
            .ingest(&topic::gateway_state_delta(GW), &tad_wire::encode(&d))
            .unwrap(),
        Ingested::Stored("state_delta")
    );
    assert!(f.app.store.protected(now).unwrap().is_empty());
    let r = audit_records(&f).pop().unwrap();
    assert_eq!(r["data"]["protected_off"][0], "192.0.2.10:80");
}
