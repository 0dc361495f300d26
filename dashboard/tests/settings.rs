//! Detector settings and the audit log through the API (warp's test harness, a
//! recording publisher): threshold changes are checked against the detectors'
//! published schemas (unknown key or out of range: 400 naming the key, nothing
//! stored or sent; no schema: 503), acks are stored and shown per detector,
//! removing a key publishes the set without it, and every audit record (changes,
//! acks, alerts) resolves through `GET /api/v1/audit/{hash}` with its position
//! and a verification that names the first tampered record.

mod common;

use std::collections::BTreeMap;

use common::*;
use dashboard::{api::routes, ingest::Ingested};
use serde_json::{Value, json};
use tad_wire::{
    Ack, Outcome, SCHEMA_VERSION, SettingKey, SettingKind, SettingsAck, SettingsOutcome,
    SettingsSchema, ThresholdSettings, topic,
};
use warp::{http::StatusCode, test::request};

const VP: &str = "portscan.vertical_ports";
const ALPHA: &str = "spike.alpha";

fn key(name: &str, kind: SettingKind, min: f64, max: f64, default: f64, unit: &str) -> SettingKey {
    SettingKey {
        key: name.into(),
        kind,
        min,
        max,
        default,
        unit: unit.into(),
        help: format!("help of {name}"),
    }
}

/// A schema as `detector::settings::schema` publishes it (a few of its keys).
fn schema(det: &str, vp_max: f64) -> SettingsSchema {
    SettingsSchema {
        v: SCHEMA_VERSION,
        detector_id: det.parse().unwrap(),
        at_ms: 1_000,
        keys: vec![
            key(VP, SettingKind::Integer, 1.0, vp_max, 15.0, "ports"),
            key(ALPHA, SettingKind::Float, 1e-6, 1.0, 0.1, ""),
            key(
                "synflood.per_source_half_open",
                SettingKind::Integer,
                1.0,
                4_294_967_295.0,
                64.0,
                "handshakes",
            ),
        ],
    }
}

fn with_schema(f: &Fixture, det: &str, vp_max: f64) {
    let r = f
        .app
        .ingest(
            &topic::settings_schema(det),
            &tad_wire::encode(&schema(det, vp_max)),
        )
        .unwrap();
    assert_eq!(r, Ingested::Stored("settings_schema"));
}

fn ack(det: &str, id: &str, outcome: SettingsOutcome, effective: &[(&str, f64)]) -> SettingsAck {
    SettingsAck {
        v: SCHEMA_VERSION,
        id: id.into(),
        detector_id: det.parse().unwrap(),
        at_ms: tad_wire::now_ms(),
        outcome,
        error: (outcome == SettingsOutcome::Refused)
            .then(|| "trust.weight_behavioural + ... = 1.2 must be 1".into()),
        effective: effective.iter().map(|(k, v)| (k.to_string(), *v)).collect(),
    }
}

fn audit_lines(f: &Fixture) -> Vec<String> {
    std::fs::read_to_string(f.dir.path().join("audit.jsonl"))
        .unwrap_or_default()
        .lines()
        .map(str::to_owned)
        .collect()
}

/// What a refused change must leave as it was.
#[derive(Debug, PartialEq)]
struct Unchanged {
    published: usize,
    audit: usize,
    stored: Option<ThresholdSettings>,
}

fn unchanged(f: &Fixture) -> Unchanged {
    Unchanged {
        published: f.publisher.sent().len(),
        audit: audit_lines(f).len(),
        stored: f.app.store.thresholds().unwrap(),
    }
}

fn published(f: &Fixture, i: usize) -> ThresholdSettings {
    let sent = &f.publisher.sent()[i];
    assert_eq!(sent.topic, topic::thresholds());
    assert!(sent.retain, "threshold settings are retained");
    tad_wire::decode(&sent.payload).unwrap()
}

fn values(kv: &[(&str, f64)]) -> BTreeMap<String, f64> {
    kv.iter().map(|(k, v)| (k.to_string(), *v)).collect()
}

#[tokio::test]
async fn without_any_schema_a_change_is_503_and_changes_nothing() {
    let f = fixture();
    let before = unchanged(&f);
    for (method, body) in [
        ("POST", json!({"values": {VP: 20}})),
        ("PUT", json!({"values": {VP: 20}})),
    ] {
        let (s, b) = call(&f.app, method, "/api/v1/thresholds", Some(body)).await;
        assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE, "{method}: {b}");
        let e = b["error"].as_str().unwrap();
        assert!(e.contains("no detector settings schema is known"), "{e}");
        assert_eq!(unchanged(&f), before);
    }
    let (_, view) = get(&f.app, "/api/v1/thresholds").await;
    assert_eq!(view["schemas"], json!([]));
    assert_eq!(view["values"], json!({}));
}

#[tokio::test]
async fn unknown_keys_and_out_of_range_values_are_400_naming_the_key() {
    let f = fixture();
    with_schema(&f, DET, 65_535.0);
    with_schema(&f, "detector-2", 100.0);
    let before = unchanged(&f);
    for (method, body, starts, needle) in [
        // The key the old example config allowed, which no detector has.
        (
            "POST",
            json!({"values": {"synflood.syn_rate_pps": 500}}),
            "synflood.syn_rate_pps",
            "unknown setting (detector detector-1 does not have it)",
        ),
        (
            "PUT",
            json!({"values": {VP: 20, "portscan.no_such_key": 1}}),
            "portscan.no_such_key",
            "unknown setting",
        ),
        ("POST", json!({"values": {VP: 0}}), VP, "outside [1, 65535]"),
        ("POST", json!({"values": {VP: 2.5}}), VP, "whole number"),
        ("POST", json!({"values": {ALPHA: 1.5}}), ALPHA, "outside"),
        // detector-1 accepts 500 ports, detector-2 does not: every schema must.
        (
            "POST",
            json!({"values": {VP: 500}}),
            VP,
            "outside [1, 100] (schema of detector-2)",
        ),
        (
            "POST",
            json!({"values": {"PortScan": 3}}),
            "threshold key",
            "section.name",
        ),
        ("POST", json!({"values": {}}), "values is empty", "PUT"),
        (
            "POST",
            json!({"values": {VP: "ten"}}),
            "request body",
            "values",
        ),
    ] {
        let (s, b) = call(&f.app, method, "/api/v1/thresholds", Some(body.clone())).await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{body}: {b}");
        let e = b["error"].as_str().unwrap();
        assert!(e.starts_with(starts), "{body}: {e}");
        assert!(e.contains(needle), "{body}: {e}");
        assert_eq!(unchanged(&f), before, "{body} changed something");
    }
}

#[tokio::test]
async fn a_valid_change_is_published_and_its_acks_are_stored_and_shown() {
    let f = fixture();
    with_schema(&f, DET, 65_535.0);
    with_schema(&f, "detector-2", 65_535.0);
    let (_, view) = get(&f.app, "/api/v1/thresholds").await;
    assert_eq!(view["id"], Value::Null);
    assert_eq!(view["detectors"][0]["status"], "none", "{view}");
    let k = &view["schemas"][0]["keys"][0];
    assert_eq!(
        (
            &k["key"],
            &k["kind"],
            &k["min"],
            &k["max"],
            &k["default"],
            &k["unit"]
        ),
        (
            &json!(VP),
            &json!("integer"),
            &json!(1.0),
            &json!(65535.0),
            &json!(15.0),
            &json!("ports")
        )
    );
    assert!(k["help"].as_str().unwrap().contains(VP));

    let (s, b) = call(
        &f.app,
        "POST",
        "/api/v1/thresholds",
        Some(json!({"values": {VP: 30}})),
    )
    .await;
    assert_eq!(s, StatusCode::ACCEPTED, "{b}");
    assert_eq!(b["awaiting"], json!([DET, "detector-2"]));
    assert_eq!(b["previous"], json!({}));
    let sent = published(&f, 0);
    assert_eq!(sent.values, values(&[(VP, 30.0)]));
    assert_eq!(b["settings"]["id"], sent.id.as_str());

    // Until the detectors answer: pending.
    let (_, view) = get(&f.app, "/api/v1/thresholds").await;
    assert_eq!(view["id"], sent.id.as_str());
    assert_eq!(view["values"], json!({VP: 30.0}));
    assert_eq!(view["detectors"][0]["status"], "pending");
    assert_eq!(view["detectors"][0]["ack"], Value::Null);

    // detector-1 applies them, detector-2 refuses them.
    let applied = ack(
        DET,
        &sent.id,
        SettingsOutcome::Applied,
        &[(VP, 30.0), (ALPHA, 0.1)],
    );
    let topic1 = topic::settings_acks(DET);
    let payload = tad_wire::encode(&applied);
    assert_eq!(
        f.app.ingest(&topic1, &payload).unwrap(),
        Ingested::Stored("settings_ack")
    );
    let audit_after_ack = audit_lines(&f).len();
    // A QoS 1 redelivery is neither stored nor audited again.
    assert_eq!(
        f.app.ingest(&topic1, &payload).unwrap(),
        Ingested::Duplicate("settings_ack")
    );
    assert_eq!(audit_lines(&f).len(), audit_after_ack);
    let refused = ack(
        "detector-2",
        &sent.id,
        SettingsOutcome::Refused,
        &[(VP, 15.0)],
    );
    f.app
        .ingest(
            &topic::settings_acks("detector-2"),
            &tad_wire::encode(&refused),
        )
        .unwrap();
    // An ack claiming another detector than its topic is refused.
    assert!(
        f.app
            .ingest(&topic::settings_acks("detector-2"), &payload)
            .is_err()
    );

    let (_, view) = get(&f.app, "/api/v1/thresholds").await;
    let d1 = &view["detectors"][0];
    assert_eq!(
        (&d1["detector_id"], &d1["status"]),
        (&json!(DET), &json!("applied"))
    );
    assert_eq!(d1["ack"]["effective"][VP], 30.0);
    assert_eq!(d1["has_schema"], true);
    let d2 = &view["detectors"][1];
    assert_eq!(d2["status"], "refused");
    assert!(
        d2["ack"]["error"].as_str().unwrap().contains("must be 1"),
        "{d2}"
    );

    // The ack's audit record: detector, outcome, error.
    let hash = d2["ack"]["audit_hash"].as_str().unwrap();
    let (s, rec) = get(&f.app, &format!("/api/v1/audit/{hash}")).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(rec["entry"]["kind"], "settings_ack");
    assert_eq!(rec["entry"]["data"]["detector_id"], "detector-2");
    assert_eq!(rec["entry"]["data"]["outcome"], "refused");
    assert!(
        rec["entry"]["data"]["error"]
            .as_str()
            .unwrap()
            .contains("must be 1")
    );

    // The change's audit record: who, old -> new.
    let (_, rec) = get(
        &f.app,
        &format!("/api/v1/audit/{}", b["audit_hash"].as_str().unwrap()),
    )
    .await;
    assert_eq!(rec["entry"]["kind"], "thresholds");
    let data = &rec["entry"]["data"];
    assert_eq!(data["operator"], "dashboard");
    assert_eq!(data["via"], "api");
    assert_eq!(
        (&data["old"], &data["new"]),
        (&json!({}), &json!({VP: 30.0}))
    );

    // A second change is pending again for both.
    let (s, b) = call(
        &f.app,
        "POST",
        "/api/v1/thresholds",
        Some(json!({"values": {ALPHA: 0.5}})),
    )
    .await;
    assert_eq!(s, StatusCode::ACCEPTED);
    assert_eq!(b["previous"], json!({VP: 30.0}));
    assert_eq!(published(&f, 1).values, values(&[(VP, 30.0), (ALPHA, 0.5)]));
    let (_, view) = get(&f.app, "/api/v1/thresholds").await;
    assert_eq!(view["detectors"][0]["status"], "pending");
    assert_eq!(view["detectors"][1]["status"], "pending");
}

#[tokio::test]
async fn removing_keys_publishes_the_whole_set_without_them() {
    let f = fixture();
    with_schema(&f, DET, 65_535.0);
    let (s, _) = call(
        &f.app,
        "PUT",
        "/api/v1/thresholds",
        Some(json!({"values": {VP: 30, ALPHA: 0.5}})),
    )
    .await;
    assert_eq!(s, StatusCode::ACCEPTED);
    assert_eq!(published(&f, 0).values, values(&[(VP, 30.0), (ALPHA, 0.5)]));

    // DELETE /thresholds/{key}
    let (s, b) = call(&f.app, "DELETE", &format!("/api/v1/thresholds/{VP}"), None).await;
    assert_eq!(s, StatusCode::ACCEPTED, "{b}");
    assert_eq!(published(&f, 1).values, values(&[(ALPHA, 0.5)]));
    let (_, rec) = get(
        &f.app,
        &format!("/api/v1/audit/{}", b["audit_hash"].as_str().unwrap()),
    )
    .await;
    assert_eq!(
        (&rec["entry"]["data"]["old"], &rec["entry"]["data"]["new"]),
        (&json!({VP: 30.0, ALPHA: 0.5}), &json!({ALPHA: 0.5}))
    );
    // ... and DELETE ?key=, down to the empty set: every default back.
    let (s, _) = call(
        &f.app,
        "DELETE",
        &format!("/api/v1/thresholds?key={ALPHA}"),
        None,
    )
    .await;
    assert_eq!(s, StatusCode::ACCEPTED);
    assert_eq!(published(&f, 2).values, BTreeMap::new());
    assert_eq!(
        get(&f.app, "/api/v1/thresholds").await.1["values"],
        json!({})
    );

    // A key that is not set: 404, nothing sent.
    let before = unchanged(&f);
    for path in [
        format!("/api/v1/thresholds/{VP}"),
        format!("/api/v1/thresholds?key={VP}"),
    ] {
        let (s, b) = call(&f.app, "DELETE", &path, None).await;
        assert_eq!(s, StatusCode::NOT_FOUND, "{path}");
        assert!(b["error"].as_str().unwrap().contains(VP));
    }
    let (s, _) = call(&f.app, "DELETE", "/api/v1/thresholds/Not-A-Key", None).await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert_eq!(unchanged(&f), before);

    // PUT replaces the whole set (a key left out is removed).
    call(
        &f.app,
        "POST",
        "/api/v1/thresholds",
        Some(json!({"values": {VP: 20}})),
    )
    .await;
    let (s, _) = call(
        &f.app,
        "PUT",
        "/api/v1/thresholds",
        Some(json!({"values": {ALPHA: 0.2}})),
    )
    .await;
    assert_eq!(s, StatusCode::ACCEPTED);
    assert_eq!(published(&f, 4).values, values(&[(ALPHA, 0.2)]));
    // Removing needs the token like every change.
    let res = request()
        .method("DELETE")
        .path(&format!("/api/v1/thresholds/{ALPHA}"))
        .reply(&routes(f.app.clone()))
        .await;
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(f.publisher.sent().len(), 5);
}

#[tokio::test]
async fn audit_records_are_found_by_hash_with_position_and_verification() {
    let f = fixture();
    for i in 0..3 {
        f.app
            .ingest(
                &topic::alerts(DET),
                &tad_wire::encode(&alert(&format!("a-{i}"), 1_000 + i, "192.0.2.66")),
            )
            .unwrap();
    }
    // Every alert in the API carries its record's hash, and it resolves.
    let (_, alerts) = get(&f.app, "/api/v1/alerts").await;
    let newest = &alerts[0];
    assert_eq!(newest["id"], "a-2");
    let hash = newest["audit_hash"].as_str().unwrap();
    let (s, rec) = get(&f.app, &format!("/api/v1/audit/{hash}")).await;
    assert_eq!(s, StatusCode::OK, "{rec}");
    assert_eq!(rec["index"], 2);
    assert_eq!(rec["entry"]["seq"], 2);
    assert_eq!(rec["entry"]["kind"], "alert");
    assert_eq!(rec["entry"]["hash"], hash);
    assert_eq!(rec["entry"]["data"]["id"], "a-2");
    assert_eq!(
        rec["verification"],
        json!({"ok": true, "checked": 3, "first_broken": null, "error": null})
    );
    // Upper case is the same hash.
    let (s, _) = get(&f.app, &format!("/api/v1/audit/{}", hash.to_uppercase())).await;
    assert_eq!(s, StatusCode::OK);

    let (s, b) = get(&f.app, &format!("/api/v1/audit/{}", "0".repeat(64))).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    assert!(
        b["error"].as_str().unwrap().contains("no audit record"),
        "{b}"
    );
    for (bad, needle) in [
        ("abc123", "6 hex digits, expected 64"),
        (&"g".repeat(64) as &str, "not hex"),
        (&"a".repeat(65), "65 hex digits"),
    ] {
        let (s, b) = get(&f.app, &format!("/api/v1/audit/{bad}")).await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{bad}");
        assert!(b["error"].as_str().unwrap().contains(needle), "{b}");
    }
    // The head is still its own resource.
    assert_eq!(get(&f.app, "/api/v1/audit/head").await.1["records"], 3);
}

#[tokio::test]
async fn a_tampered_record_is_named_by_the_verification() {
    let f = fixture();
    for i in 0..4 {
        f.app
            .ingest(
                &topic::alerts(DET),
                &tad_wire::encode(&alert(&format!("a-{i}"), 1_000 + i, "192.0.2.66")),
            )
            .unwrap();
    }
    let hashes: Vec<String> = f
        .app
        .store
        .alerts(10, None)
        .unwrap()
        .into_iter()
        .rev()
        .map(|a| a.audit_hash)
        .collect();
    // Someone edits the second record in place (a different source address).
    let mut lines = audit_lines(&f);
    assert!(lines[1].contains("192.0.2.66"));
    lines[1] = lines[1].replacen("192.0.2.66", "192.0.2.67", 1);
    std::fs::write(
        f.dir.path().join("audit.jsonl"),
        lines.iter().map(|l| format!("{l}\n")).collect::<String>(),
    )
    .unwrap();

    let (_, rec) = get(&f.app, &format!("/api/v1/audit/{}", hashes[3])).await;
    assert_eq!(rec["index"], 3);
    let v = &rec["verification"];
    assert_eq!(
        (&v["ok"], &v["first_broken"]),
        (&json!(false), &json!(1)),
        "{v}"
    );
    assert!(v["error"].as_str().unwrap().contains("modified"), "{v}");
    // The record before the edit still verifies.
    let (_, rec) = get(&f.app, &format!("/api/v1/audit/{}", hashes[0])).await;
    assert_eq!(rec["verification"]["ok"], true);
}

#[tokio::test]
async fn every_gateway_ack_is_audited() {
    let f = fixture();
    let a = Ack {
        v: SCHEMA_VERSION,
        id: "cmd-1".into(),
        gateway_id: GW.parse().unwrap(),
        outcome: Outcome::Rejected,
        error: Some("allowlisted".into()),
        at_ms: 5,
        apply_us: 3,
    };
    let payload = tad_wire::encode(&a);
    assert_eq!(
        f.app.ingest(&topic::acks(GW), &payload).unwrap(),
        Ingested::Stored("ack")
    );
    // A QoS 1 redelivery of the same ack is not recorded twice ...
    assert_eq!(
        f.app.ingest(&topic::acks(GW), &payload).unwrap(),
        Ingested::Duplicate("ack")
    );
    assert_eq!(f.app.store.acks(10).unwrap().len(), 1);
    let lines = audit_lines(&f);
    assert_eq!(lines.len(), 1);
    let rec: Value = serde_json::from_str(&lines[0]).unwrap();
    assert_eq!(rec["kind"], "ack");
    assert_eq!(rec["data"]["gateway_id"], GW);
    assert_eq!(rec["data"]["outcome"], "rejected");
    assert_eq!(rec["data"]["error"], "allowlisted");
    // ... but a later ack of the same request is.
    let later = Ack {
        at_ms: 6,
        outcome: Outcome::NoChange,
        error: None,
        ..a
    };
    f.app
        .ingest(&topic::acks(GW), &tad_wire::encode(&later))
        .unwrap();
    assert_eq!(audit_lines(&f).len(), 2);
}

#[tokio::test]
async fn schemas_are_audited_when_new_or_changed_and_cleared_by_an_empty_retained_message() {
    let f = fixture();
    with_schema(&f, DET, 100.0);
    let payload = tad_wire::encode(&schema(DET, 100.0));
    assert_eq!(
        f.app
            .ingest(&topic::settings_schema(DET), &payload)
            .unwrap(),
        Ingested::Duplicate("settings_schema")
    );
    assert_eq!(audit_lines(&f).len(), 1);
    with_schema(&f, DET, 200.0);
    assert_eq!(audit_lines(&f).len(), 2);
    assert_eq!(
        get(&f.app, "/api/v1/thresholds").await.1["schemas"][0]["keys"][0]["max"],
        200.0
    );
    // A schema naming another detector than its topic is refused.
    assert!(
        f.app
            .ingest(&topic::settings_schema("detector-2"), &payload)
            .is_err()
    );
    f.app.ingest(&topic::settings_schema(DET), b"").unwrap();
    assert_eq!(
        get(&f.app, "/api/v1/thresholds").await.1["schemas"],
        json!([])
    );
}
