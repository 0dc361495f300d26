//! IoT device reports (issue 17) through `App::ingest` and the `/api/v1/iot`
//! reads: telemetry batches committed to the audit log with their SHA-256 (the
//! hash recomputed from the records; a batch whose records do not give it is
//! refused), trust changes as audit entries with old/new/cause, the chain
//! verifying and broken by an edit, redeliveries stored once, and the device
//! page's API showing what the gateway published.

mod common;
mod iot;

use common::{fixture, get};
use dashboard::{
    audit::{AuditError, AuditLog, VerifyError, verify_file},
    ingest::{IngestError, Ingested},
    store::DeviceQuery,
};
use iot::*;
use serde_json::Value;
use tad_wire::{
    devices::{DeviceRefusalReason, DeviceTrustCause},
    encode, now_ms, topic,
};
use warp::http::StatusCode;

/// Every audit record, parsed.
fn audit_records(app: &dashboard::app::App) -> Vec<Value> {
    let path = app.audit.lock().unwrap().path().to_owned();
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn of_kind<'a>(records: &'a [Value], kind: &str) -> Vec<&'a Value> {
    records.iter().filter(|r| r["kind"] == kind).collect()
}

fn q(device_id: &str) -> DeviceQuery<'_> {
    DeviceQuery {
        device_id,
        gateway_id: None,
        since_ms: None,
        limit: 100,
    }
}

#[test]
fn a_batch_is_committed_with_its_sha256_and_stored_once() {
    let f = fixture();
    let now = now_ms();
    let b = batch(
        3,
        &[
            ("esp32-1", 7, now - 900, 12.0, 98.0, 21.5),
            ("esp32-2", 40, now - 800, 30.0, 55.0, 19.0),
            ("esp32-1", 8, now - 700, 14.0, 97.5, 21.7),
        ],
    );
    let payload = encode(&b);
    assert_eq!(
        f.app
            .ingest(&topic::devices_telemetry(GW), &payload)
            .unwrap(),
        Ingested::Stored("device_batch")
    );
    let recs = audit_records(&f.app);
    let committed = of_kind(&recs, "telemetry_batch");
    assert_eq!(committed.len(), 1);
    let d = &committed[0]["data"];
    assert_eq!(d["sha256"], b.sha256.as_str());
    assert_eq!(
        (d["gateway_id"].as_str(), d["batch_no"].as_u64()),
        (Some(GW), Some(3))
    );
    assert_eq!(d["records"], 3);
    assert_eq!(d["devices"][0]["device_id"], "esp32-1");
    assert_eq!(
        (
            d["devices"][0]["first_seq"].as_u64(),
            d["devices"][0]["last_seq"].as_u64()
        ),
        (Some(7), Some(8))
    );
    assert_eq!(
        verify_file(&f.dir.path().join("audit.jsonl"))
            .unwrap()
            .records,
        recs.len() as u64
    );

    // The per-device samples, oldest first, each naming its batch.
    let pts = f.app.store.iot_telemetry(&q("esp32-1")).unwrap();
    let seqs: Vec<u64> = pts.iter().map(|p| p.sequence_no).collect();
    assert_eq!(seqs, [7, 8]);
    assert_eq!(pts[1].sensors["temperature"], 21.7);
    assert_eq!(pts[0].batch_sha256, b.sha256);
    let batches = f.app.store.iot_batches(&q("esp32-2")).unwrap();
    assert_eq!(batches.len(), 1);
    assert_eq!(
        batches[0].audit_hash,
        committed[0]["hash"].as_str().unwrap()
    );

    // A QoS 1 redelivery: neither stored nor audited again.
    assert_eq!(
        f.app
            .ingest(&topic::devices_telemetry(GW), &payload)
            .unwrap(),
        Ingested::Duplicate("device_batch")
    );
    assert_eq!(audit_records(&f.app).len(), recs.len());
    assert_eq!(f.app.store.iot_telemetry(&q("esp32-1")).unwrap().len(), 2);
}

#[test]
fn a_batch_whose_records_do_not_give_its_hash_is_refused_and_audited() {
    let f = fixture();
    let now = now_ms();
    let genuine = batch(1, &[("esp32-1", 1, now - 500, 10.0, 90.0, 20.0)]);
    // A reading swapped in after hashing (another batch's record).
    let mut forged = genuine.clone();
    forged.records[0] = batch(1, &[("esp32-1", 1, now - 500, 10.0, 90.0, 99.0)]).records[0].clone();
    let err = f
        .app
        .ingest(&topic::devices_telemetry(GW), &encode(&forged))
        .unwrap_err();
    match &err {
        IngestError::Refused { kind, why, .. } => {
            assert_eq!(*kind, "telemetry_batch");
            assert!(why.contains("does not match its records"), "{why}");
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
    assert!(f.app.store.iot_telemetry(&q("esp32-1")).unwrap().is_empty());
    let recs = audit_records(&f.app);
    assert!(of_kind(&recs, "telemetry_batch").is_empty());
    let refusal = of_kind(&recs, "refusal");
    assert_eq!(refusal.len(), 1);
    assert_eq!(refusal[0]["data"]["kind"], "telemetry_batch");
    assert_eq!(
        refusal[0]["data"]["claimed_sha256"],
        genuine.sha256.as_str()
    );
    assert_ne!(
        refusal[0]["data"]["computed_sha256"],
        genuine.sha256.as_str()
    );
    assert_eq!(
        f.app
            .metrics
            .refusals("telemetry_batch", tad_wire::RefusalReason::Malformed),
        1
    );
    // A signature that is not 64 bytes is named.
    let mut short = genuine.clone();
    short.records[0].sig = "AAAA".into();
    let err = f
        .app
        .ingest(&topic::devices_telemetry(GW), &encode(&short))
        .unwrap_err();
    assert!(
        err.to_string().contains("record 0: sig is 3 bytes"),
        "{err}"
    );
    // The genuine one still goes in.
    assert!(
        f.app
            .ingest(&topic::devices_telemetry(GW), &encode(&genuine))
            .is_ok()
    );
}

#[test]
fn every_trust_change_is_an_audit_entry_with_old_new_and_cause() {
    let f = fixture();
    let now = now_ms();
    let msg = trust(
        now,
        vec![
            change(
                "esp32-1",
                now - 20,
                80.0,
                60.0,
                alert_cause("bad_signature"),
            ),
            change(
                "esp32-1",
                now - 10,
                60.0,
                40.0,
                DeviceTrustCause::Vulnerability {
                    score: 40.0,
                    findings: vec!["23/telnet: clear-text login".into()],
                },
            ),
        ],
    );
    let payload = encode(&msg);
    assert_eq!(
        f.app.ingest(&topic::devices_trust(GW), &payload).unwrap(),
        Ingested::Stored("device_trust")
    );
    let recs = audit_records(&f.app);
    let entries = of_kind(&recs, "device_trust");
    assert_eq!(entries.len(), 2);
    let first = &entries[0]["data"];
    assert_eq!(first["gateway_id"], GW);
    assert_eq!(first["device_id"], "esp32-1");
    assert_eq!(
        (first["old"].as_f64(), first["new"].as_f64()),
        (Some(80.0), Some(60.0))
    );
    assert_eq!(
        (first["old_level"].as_str(), first["new_level"].as_str()),
        (Some("normal"), Some("warning"))
    );
    assert_eq!(first["cause"]["kind"], "security_alert");
    assert_eq!(first["cause"]["reason"], "bad_signature");
    let second = &entries[1]["data"];
    assert_eq!(second["cause"]["kind"], "vulnerability");
    assert_eq!(
        second["cause"]["findings"][0],
        "23/telnet: clear-text login"
    );

    // Stored oldest first, each with its own audit record's hash.
    let stored = f.app.store.iot_trust(&q("esp32-1")).unwrap();
    let news: Vec<f64> = stored.iter().map(|t| t.change.new).collect();
    assert_eq!(news, [60.0, 40.0]);
    assert_eq!(stored[0].audit_hash, entries[0]["hash"].as_str().unwrap());
    assert_eq!(stored[1].audit_hash, entries[1]["hash"].as_str().unwrap());

    assert_eq!(
        f.app.ingest(&topic::devices_trust(GW), &payload).unwrap(),
        Ingested::Duplicate("device_trust")
    );
    assert_eq!(audit_records(&f.app).len(), recs.len());
}

#[test]
fn the_device_chain_verifies_and_an_edited_trust_entry_breaks_it() {
    let f = fixture();
    let now = now_ms();
    let ingest = |t: String, p: Vec<u8>| f.app.ingest(&t, &p).unwrap();
    ingest(
        topic::devices_telemetry(GW),
        encode(&batch(1, &[("esp32-1", 1, now - 50, 5.0, 99.0, 20.0)])),
    );
    ingest(
        topic::devices_trust(GW),
        encode(&trust(
            now,
            vec![change("esp32-1", now, 80.0, 60.0, alert_cause("replay"))],
        )),
    );
    ingest(
        topic::devices_decisions(GW),
        encode(&decision("r-1", "esp32-1", now, Some("low_trust"), 10.0)),
    );
    ingest(
        topic::devices_vulns(GW),
        encode(&scan("esp32-1", now, true)),
    );
    ingest(
        topic::devices_refusals(GW),
        encode(&refusals(
            now,
            &[("esp32-1", DeviceRefusalReason::Replay, 1)],
        )),
    );
    let path = f.dir.path().join("audit.jsonl");
    let head = verify_file(&path).unwrap();
    let recs = audit_records(&f.app);
    assert_eq!(head.records, recs.len() as u64);
    for kind in [
        "telemetry_batch",
        "device_trust",
        "device_command",
        "device_vulns",
        "device_refusals",
    ] {
        assert_eq!(of_kind(&recs, kind).len(), 1, "{kind}");
    }

    // Someone raises the device's recorded trust after the fact.
    let text = std::fs::read_to_string(&path).unwrap();
    let mut lines: Vec<String> = text.lines().map(str::to_owned).collect();
    let at = lines
        .iter()
        .position(|l| l.contains("\"kind\":\"device_trust\""))
        .unwrap();
    assert!(lines[at].contains("\"new\":60.0"), "{}", lines[at]);
    lines[at] = lines[at].replace("\"new\":60.0", "\"new\":95.0");
    std::fs::write(
        &path,
        lines.iter().map(|l| format!("{l}\n")).collect::<String>(),
    )
    .unwrap();
    match verify_file(&path) {
        Err(VerifyError::Fault { fault, .. }) => {
            assert_eq!(fault.line, at + 1, "{fault}");
            assert!(fault.what.contains("modified"), "{fault}");
        }
        other => panic!("expected a chain fault, got {other:?}"),
    }
    assert!(matches!(
        AuditLog::open(&path),
        Err(AuditError::Broken { .. })
    ));
}

#[test]
fn device_topics_check_the_gateway_and_skip_the_devices_own_traffic() {
    let f = fixture();
    let now = now_ms();
    // The raw telemetry is the gateway's to judge; the dashboard reads its reports.
    assert_eq!(
        f.app
            .ingest(&topic::device_telemetry("esp32-1"), b"{\"v\":1}")
            .unwrap(),
        Ingested::Ignored
    );
    assert_eq!(
        f.app
            .ingest(&topic::device_requests(GW, "dashboard"), b"x")
            .unwrap(),
        Ingested::Ignored
    );
    // A report under another gateway's topic is refused.
    let err = f
        .app
        .ingest(
            &topic::devices_vulns("gateway-2"),
            &encode(&scan("esp32-1", now, false)),
        )
        .unwrap_err();
    assert!(matches!(err, IngestError::IdMismatch { .. }), "{err}");
    // A report that does not decode names its topic.
    let err = f.app.ingest(&topic::devices_trust(GW), b"{}").unwrap_err();
    assert!(matches!(err, IngestError::Decode { .. }), "{err}");
    assert!(audit_records(&f.app).is_empty());
}

#[tokio::test]
async fn the_device_api_shows_what_the_gateway_published() {
    let f = fixture();
    let app = &f.app;
    let now = now_ms();
    let ingest = |t: String, p: Vec<u8>| app.ingest(&t, &p).unwrap();
    ingest(
        topic::devices_state(GW),
        encode(&states(now, &[("esp32-1", 55.0), ("esp32-2", 97.0)])),
    );
    // An older snapshot arriving late does not replace it.
    assert_eq!(
        app.ingest(
            &topic::devices_state(GW),
            &encode(&states(now - 5_000, &[("esp32-1", 99.0)]))
        )
        .unwrap(),
        Ingested::Duplicate("device_state")
    );
    ingest(
        topic::devices_telemetry(GW),
        encode(&batch(
            1,
            &[
                ("esp32-1", 1, now - 300, 10.0, 90.0, 20.0),
                ("esp32-1", 2, now - 200, 11.0, 89.0, 20.5),
            ],
        )),
    );
    // The last trust change says 20; the list shows the gateway's state (55).
    ingest(
        topic::devices_trust(GW),
        encode(&trust(
            now,
            vec![change(
                "esp32-1",
                now - 100,
                60.0,
                20.0,
                alert_cause("bad_signature"),
            )],
        )),
    );
    ingest(
        topic::devices_vulns(GW),
        encode(&scan("esp32-1", now - 50, true)),
    );
    ingest(
        topic::devices_decisions(GW),
        encode(&decision(
            "r-1",
            "esp32-1",
            now - 40,
            Some("low_trust"),
            20.0,
        )),
    );
    ingest(
        topic::devices_decisions(GW),
        encode(&decision("r-2", "esp32-2", now - 30, None, 97.0)),
    );
    ingest(
        topic::devices_refusals(GW),
        encode(&refusals(
            now - 20,
            &[
                ("esp32-1", DeviceRefusalReason::Replay, 2),
                ("rogue-1", DeviceRefusalReason::Unenrolled, 1),
            ],
        )),
    );

    let (s, list) = get(app, "/api/v1/iot/devices").await;
    assert_eq!(s, StatusCode::OK);
    let devs = list["devices"].as_array().unwrap();
    assert_eq!(devs.len(), 2);
    assert_eq!(devs[0]["device_id"], "esp32-1", "lowest trust first");
    assert_eq!(devs[0]["trust"], 55.0);
    assert_eq!(devs[0]["level"], "warning");
    assert_eq!(devs[0]["gateway_id"], GW);
    assert_eq!(devs[0]["findings"], 1);
    assert_eq!(devs[1]["findings"], Value::Null, "never scanned");
    assert_eq!(list["gateways"][0]["refused"]["replay"], 4);

    let (s, d) = get(app, "/api/v1/iot/devices/esp32-1").await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(d["state"][0]["trust"], 55.0);
    let seqs: Vec<u64> = d["telemetry"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["sequence_no"].as_u64().unwrap())
        .collect();
    assert_eq!(seqs, [1, 2]);
    assert_eq!(d["trust"][0]["new"], 20.0);
    assert_eq!(d["trust"][0]["cause"]["reason"], "bad_signature");
    assert_eq!(d["vulns"][0]["findings"][0]["service"], "telnet");
    assert_eq!(d["commands"].as_array().unwrap().len(), 1);
    assert_eq!(d["commands"][0]["reason"], "low_trust");
    assert_eq!(d["refusals"].as_array().unwrap().len(), 1);
    assert_eq!(d["refusals"][0]["reason"], "replay");
    assert_eq!(d["batches"].as_array().unwrap().len(), 1);
    // Each event links to its audit record.
    for hash in [
        &d["trust"][0]["audit_hash"],
        &d["batches"][0]["audit_hash"],
        &d["commands"][0]["audit_hash"],
    ] {
        let (s, rec) = get(app, &format!("/api/v1/audit/{}", hash.as_str().unwrap())).await;
        assert_eq!(s, StatusCode::OK);
        assert_eq!(rec["verification"]["ok"], true);
    }
    let (_, rec) = get(
        app,
        &format!(
            "/api/v1/audit/{}",
            d["batches"][0]["audit_hash"].as_str().unwrap()
        ),
    )
    .await;
    assert_eq!(rec["entry"]["data"]["sha256"], d["batches"][0]["sha256"]);
    assert_eq!(d["telemetry"][0]["batch_sha256"], d["batches"][0]["sha256"]);

    // limit and since_ms apply per list.
    let (_, d1) = get(app, "/api/v1/iot/devices/esp32-1?limit=1").await;
    assert_eq!(d1["telemetry"].as_array().unwrap().len(), 1);
    assert_eq!(d1["telemetry"][0]["sequence_no"], 2, "the newest");
    let (_, d2) = get(
        app,
        &format!("/api/v1/iot/devices/esp32-1?since_ms={}", now - 250),
    )
    .await;
    assert_eq!(d2["telemetry"].as_array().unwrap().len(), 1);

    // Refusals of every device, the unenrolled one included; all decisions.
    let (_, all) = get(app, "/api/v1/iot/refusals").await;
    let who: Vec<&str> = all
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["device_id"].as_str().unwrap())
        .collect();
    assert!(
        who.contains(&"rogue-1") && who.contains(&"esp32-1"),
        "{who:?}"
    );
    let (_, rogue) = get(app, "/api/v1/iot/devices/rogue-1").await;
    assert_eq!(rogue["state"], serde_json::json!([]));
    assert_eq!(rogue["refusals"][0]["enrolled"], false);
    let (_, cmds) = get(app, "/api/v1/iot/commands").await;
    assert_eq!(cmds.as_array().unwrap().len(), 2);
    assert_eq!(cmds[0]["request_id"], "r-2", "newest first");

    // Errors name what was wrong.
    let (s, e) = get(app, "/api/v1/iot/devices/Bad!").await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert!(
        e["error"].as_str().unwrap().starts_with("device_id:"),
        "{e}"
    );
    let (s, e) = get(app, "/api/v1/iot/devices/nobody").await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    assert!(e["error"].as_str().unwrap().contains("nobody"), "{e}");
    let (s, e) = get(app, "/api/v1/iot/devices/esp32-1?limit=0").await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert!(e["error"].as_str().unwrap().contains("limit 0"), "{e}");
    let (s, _) = get(app, "/api/v1/iot/refusals?colour=red").await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
}

#[test]
fn device_reports_leave_with_their_retention() {
    let f = fixture();
    let day = 86_400_000;
    let now = now_ms();
    let old = now - 40 * day;
    f.app
        .ingest(
            &topic::devices_telemetry(GW),
            &encode(&batch(1, &[("esp32-1", 1, old, 5.0, 99.0, 20.0)])),
        )
        .unwrap();
    f.app
        .ingest(
            &topic::devices_telemetry(GW),
            &encode(&batch(2, &[("esp32-1", 2, now - day, 5.0, 99.0, 20.0)])),
        )
        .unwrap();
    let r = dashboard::config::RetentionConfig {
        counters_days: 30,
        ..Default::default()
    };
    assert!(f.app.store.prune(now, &r).unwrap() >= 1);
    let seqs: Vec<u64> = f
        .app
        .store
        .iot_telemetry(&q("esp32-1"))
        .unwrap()
        .iter()
        .map(|p| p.sequence_no)
        .collect();
    assert_eq!(seqs, [2]);
}
