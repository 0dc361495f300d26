//! REST API through warp's test harness: auth, origin, validation (a rejected
//! request publishes and records nothing), reads of ingested data.

mod common;

use common::*;
use dashboard::api::routes;
use serde_json::{Value, json};
use tad_wire::{Action, BlockOrigin, Command, ThresholdSettings, now_ms, topic};
use warp::{http::StatusCode, test::request};

fn audit_lines(f: &Fixture) -> usize {
    std::fs::read_to_string(f.dir.path().join("audit.jsonl"))
        .unwrap_or_default()
        .lines()
        .count()
}

/// What a mutating request must not have changed when it is rejected.
struct Snapshot {
    published: usize,
    audit: usize,
    blocks: Value,
    thresholds: Value,
}

async fn snapshot(f: &Fixture) -> Snapshot {
    Snapshot {
        published: f.publisher.sent().len(),
        audit: audit_lines(f),
        blocks: get(&f.app, "/api/v1/blocks").await.1,
        thresholds: get(&f.app, "/api/v1/thresholds").await.1,
    }
}

async fn assert_unchanged(f: &Fixture, before: &Snapshot) {
    let after = snapshot(f).await;
    assert_eq!(after.published, before.published, "something was published");
    assert_eq!(after.audit, before.audit, "the audit log grew");
    assert_eq!(after.blocks, before.blocks, "the block list changed");
    assert_eq!(
        after.thresholds, before.thresholds,
        "the thresholds changed"
    );
}

fn block_body() -> Value {
    json!({"gateway_id": GW, "target": "192.0.2.66", "ttl_s": 600, "reason": "operator test"})
}

async fn post(f: &Fixture, path: &str, auth: Option<&str>, body: &Value) -> (StatusCode, Value) {
    let mut req = request()
        .method("POST")
        .path(path)
        .header("content-type", "application/json")
        .header("host", "dash.example:8080")
        .body(serde_json::to_vec(body).unwrap());
    if let Some(a) = auth {
        req = req.header("authorization", a);
    }
    let res = req.reply(&routes(f.app.clone())).await;
    (
        res.status(),
        serde_json::from_slice(res.body()).unwrap_or(Value::Null),
    )
}

fn bearer() -> String {
    format!("Bearer {TOKEN}")
}

#[tokio::test]
async fn block_without_or_with_wrong_token_is_401_and_changes_nothing() {
    let f = fixture();
    known_gateway(&f.app);
    let before = snapshot(&f).await;
    for auth in [
        None,
        Some("Bearer wrong-token"),
        Some("Basic dXNlcjpwYXNz"),
        Some("Bearer "),
    ] {
        let (status, body) = post(&f, "/api/v1/blocks", auth, &block_body()).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{auth:?}: {body}");
        assert!(body["error"].as_str().unwrap().contains("token"), "{body}");
        assert_unchanged(&f, &before).await;
    }
    // Same for unblock and thresholds.
    let res = request()
        .method("DELETE")
        .path(&format!("/api/v1/blocks?gateway_id={GW}&target=192.0.2.66"))
        .header("authorization", "Bearer nope")
        .reply(&routes(f.app.clone()))
        .await;
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    let (status, _) = post(
        &f,
        "/api/v1/thresholds",
        None,
        &json!({"values": {"portscan.vertical_ports": 20}}),
    )
    .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_unchanged(&f, &before).await;
}

#[tokio::test]
async fn unauthorized_carries_a_bearer_challenge() {
    let f = fixture();
    let res = request()
        .method("POST")
        .path("/api/v1/blocks")
        .body(serde_json::to_vec(&block_body()).unwrap())
        .reply(&routes(f.app.clone()))
        .await;
    assert_eq!(res.status(), StatusCode::UNAUTHORIZED);
    assert!(
        res.headers()["www-authenticate"]
            .to_str()
            .unwrap()
            .starts_with("Bearer")
    );
}

#[tokio::test]
async fn block_with_token_publishes_a_signed_command_pending_until_the_gateway_state_shows_it() {
    let f = fixture();
    known_gateway(&f.app);
    let (status, body) = post(&f, "/api/v1/blocks", Some(&bearer()), &block_body()).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    let sent = f.publisher.sent();
    assert_eq!(sent.len(), 1);
    // On the dashboard's own command topic, to be signed with its key.
    assert_eq!(sent[0].topic, topic::commands(GW, "dashboard"));
    assert!(sent[0].signed);
    assert!(!sent[0].retain);
    let cmd: Command = tad_wire::decode(&sent[0].payload).unwrap();
    assert_eq!(cmd.action, Action::Block);
    assert_eq!(cmd.target.to_string(), "192.0.2.66/32");
    assert_eq!(cmd.ttl_s, Some(600));
    assert_eq!(cmd.reason.as_deref(), Some("operator test"));
    assert_eq!(body["command"]["id"], cmd.id.as_str());

    // Not a block yet: the gateway has not shown it. Listed as pending, audited.
    let (_, blocks) = get(&f.app, "/api/v1/blocks").await;
    assert_eq!(blocks["blocks"], json!([]), "{blocks}");
    let p = &blocks["pending"][0];
    assert_eq!(p["command_id"], cmd.id.as_str());
    assert_eq!(p["target"], "192.0.2.66/32");
    assert_eq!(p["status"], "sent");
    assert_eq!(p["outcome"], Value::Null);
    assert_eq!(p["audit_hash"], body["audit_hash"]);
    let (_, commands) = get(&f.app, "/api/v1/commands").await;
    assert_eq!(commands[0]["audit_hash"], body["audit_hash"]);
    assert_eq!(audit_lines(&f), 1);

    // The gateway's ack: still pending (acked) until its state shows the entry.
    let ack = tad_wire::Ack {
        v: 1,
        id: cmd.id.clone(),
        gateway_id: GW.parse().unwrap(),
        outcome: tad_wire::Outcome::Applied,
        error: None,
        at_ms: now_ms(),
        apply_us: 40,
    };
    f.app
        .ingest(&topic::acks(GW), &tad_wire::encode(&ack))
        .unwrap();
    let (_, blocks) = get(&f.app, "/api/v1/blocks").await;
    assert_eq!(blocks["pending"][0]["status"], "acked");
    assert_eq!(blocks["pending"][0]["outcome"], "applied");
    assert_eq!(blocks["blocks"], json!([]));
    let mut e = entry(
        "192.0.2.66/32",
        BlockOrigin::Command,
        "dashboard@dashboard",
        Some(now_ms() + 600_000),
    );
    e.rule = Some("operator test".into());
    f.app
        .ingest(
            &topic::gateway_state(GW),
            &tad_wire::encode(&gw_state(1, now_ms(), vec![e])),
        )
        .unwrap();
    let (_, blocks) = get(&f.app, "/api/v1/blocks").await;
    let b = &blocks["blocks"][0];
    assert_eq!(b["prefix"], "192.0.2.66/32");
    assert_eq!(b["origin"], "command");
    assert_eq!(b["gateway_id"], GW);
    assert!(
        (599..=600).contains(&b["ttl_left_s"].as_u64().unwrap()),
        "{b}"
    );
    assert_eq!(blocks["pending"], json!([]), "{blocks}");
    assert_eq!(blocks["gateways"][0]["rev"], 1);
    // 1 command + 1 ack (every ack is audited) + 1 gateway state change.
    assert_eq!(audit_lines(&f), 3);

    // Our own command echoed by the broker (signed by us) is not recorded twice.
    f.app
        .ingest(
            &topic::commands(GW, "dashboard"),
            &sign_as("dashboard", &cmd),
        )
        .unwrap();
    assert_eq!(audit_lines(&f), 3);
    assert_eq!(
        get(&f.app, "/api/v1/commands")
            .await
            .1
            .as_array()
            .unwrap()
            .len(),
        1
    );

    // Unblock publishes an unblock command; the entry stays until the gateway's
    // state drops it.
    let res = request()
        .method("DELETE")
        .path(&format!(
            "/api/v1/blocks?gateway_id={GW}&target=192.0.2.66%2F32"
        ))
        .header("authorization", bearer())
        .reply(&routes(f.app.clone()))
        .await;
    assert_eq!(res.status(), StatusCode::ACCEPTED);
    let unblock: Command = tad_wire::decode(&f.publisher.sent()[1].payload).unwrap();
    assert_eq!(unblock.action, Action::Unblock);
    let (_, blocks) = get(&f.app, "/api/v1/blocks").await;
    assert_eq!(blocks["blocks"].as_array().unwrap().len(), 1);
    assert_eq!(blocks["pending"][0]["action"], "unblock");
    let mut d = gw_delta(2, now_ms());
    d.removed = vec![tad_wire::RemovedBlock {
        prefix: "192.0.2.66/32".parse().unwrap(),
        cause: tad_wire::RemovalCause::Removed,
    }];
    f.app
        .ingest(&topic::gateway_state_delta(GW), &tad_wire::encode(&d))
        .unwrap();
    let (_, blocks) = get(&f.app, "/api/v1/blocks").await;
    assert_eq!(blocks["blocks"], json!([]));
    assert_eq!(blocks["pending"], json!([]));
    // + the unblock command, + the delta.
    assert_eq!(audit_lines(&f), 5);
}

#[tokio::test]
async fn a_refused_command_is_listed_as_refused_never_as_a_block() {
    let f = fixture();
    known_gateway(&f.app);
    f.app
        .ingest(
            &topic::gateway_state(GW),
            &tad_wire::encode(&gw_state(0, now_ms(), vec![])),
        )
        .unwrap();
    let (status, body) = post(&f, "/api/v1/blocks", Some(&bearer()), &block_body()).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    let id = body["command"]["id"].as_str().unwrap().to_owned();
    let ack = tad_wire::Ack {
        v: 1,
        id: id.clone(),
        gateway_id: GW.parse().unwrap(),
        outcome: tad_wire::Outcome::Rejected,
        error: Some("192.0.2.66/32 overlaps the allowlist".into()),
        at_ms: now_ms(),
        apply_us: 12,
    };
    f.app
        .ingest(&topic::acks(GW), &tad_wire::encode(&ack))
        .unwrap();
    // A later state (no entry) does not make it go away silently either.
    f.app
        .ingest(
            &topic::gateway_state_delta(GW),
            &tad_wire::encode(&gw_delta(1, now_ms() + 10)),
        )
        .unwrap();
    let (_, blocks) = get(&f.app, "/api/v1/blocks").await;
    assert_eq!(blocks["blocks"], json!([]), "{blocks}");
    let p = &blocks["pending"][0];
    assert_eq!(p["command_id"], id.as_str());
    assert_eq!(p["status"], "refused");
    assert_eq!(p["outcome"], "rejected");
    assert!(p["error"].as_str().unwrap().contains("allowlist"), "{p}");
    let (_, devices) = get(&f.app, "/api/v1/devices").await;
    assert!(
        devices
            .as_array()
            .unwrap()
            .iter()
            .all(|d| d["blocked"] == false)
    );
    let text = metrics_text(&f).await;
    // Prometheus's own parser and linter accept it.
    if let Err(e) = tad_bus::testing::promtool_check(&text) {
        panic!("{e}\n{text}");
    }
    assert!(
        text.contains("tad_dashboard_pending_commands{status=\"refused\"} 1"),
        "{text}"
    );
    assert!(
        text.contains("tad_dashboard_blocks{gateway=\"gateway-1\",origin=\"command\"} 0"),
        "{text}"
    );
}

async fn metrics_text(f: &Fixture) -> String {
    let res = request()
        .path("/metrics")
        .reply(&routes(f.app.clone()))
        .await;
    String::from_utf8(res.body().to_vec()).unwrap()
}

#[tokio::test]
async fn cross_origin_mutation_is_refused_even_with_the_token() {
    let f = fixture();
    known_gateway(&f.app);
    let before = snapshot(&f).await;
    for (name, value) in [
        ("origin", "http://evil.example"),
        ("sec-fetch-site", "cross-site"),
    ] {
        let res = request()
            .method("POST")
            .path("/api/v1/blocks")
            .header("host", "dash.example:8080")
            .header(name, value)
            .header("authorization", bearer())
            .body(serde_json::to_vec(&block_body()).unwrap())
            .reply(&routes(f.app.clone()))
            .await;
        assert_eq!(res.status(), StatusCode::FORBIDDEN, "{name}");
        assert_unchanged(&f, &before).await;
    }
    // The dashboard's own origin is fine.
    let res = request()
        .method("POST")
        .path("/api/v1/blocks")
        .header("host", "dash.example:8080")
        .header("origin", "http://dash.example:8080")
        .header("authorization", bearer())
        .body(serde_json::to_vec(&block_body()).unwrap())
        .reply(&routes(f.app.clone()))
        .await;
    assert_eq!(res.status(), StatusCode::ACCEPTED);
}

#[tokio::test]
async fn configured_origin_is_allowed() {
    let f = fixture_with(|c| c.server.allowed_origins = vec!["https://ops.example".into()]);
    known_gateway(&f.app);
    let res = request()
        .method("POST")
        .path("/api/v1/blocks")
        .header("host", "dash.example:8080")
        .header("origin", "https://ops.example")
        .header("authorization", bearer())
        .body(serde_json::to_vec(&block_body()).unwrap())
        .reply(&routes(f.app.clone()))
        .await;
    assert_eq!(res.status(), StatusCode::ACCEPTED);
}

#[tokio::test]
async fn no_configured_token_disables_mutation() {
    let f = fixture_with(|c| c.server.api_token.clear());
    known_gateway(&f.app);
    let (status, body) = post(&f, "/api/v1/blocks", Some("Bearer "), &block_body()).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert!(f.publisher.sent().is_empty());
}

#[tokio::test]
async fn invalid_block_requests_are_rejected_naming_the_field() {
    let f = fixture();
    known_gateway(&f.app);
    let before = snapshot(&f).await;
    let cases = [
        (
            json!({"gateway_id": GW, "target": "192.0.2.300", "ttl_s": 60}),
            400,
            "target",
        ),
        (
            json!({"gateway_id": GW, "target": "192.0.2.1/24", "ttl_s": 60}),
            400,
            "host bits",
        ),
        (
            json!({"gateway_id": GW, "target": "0.0.0.0/0", "ttl_s": 60}),
            400,
            "wider",
        ),
        (
            json!({"gateway_id": GW, "target": "192.0.2.7", "ttl_s": 0}),
            400,
            "ttl_s",
        ),
        (
            json!({"gateway_id": GW, "target": "192.0.2.7", "ttl_s": 2_592_001}),
            400,
            "ttl_s",
        ),
        (
            json!({"gateway_id": GW, "target": "192.0.2.7", "ttl_s": -5}),
            400,
            "ttl_s",
        ),
        (
            json!({"gateway_id": "gw/+", "target": "192.0.2.7"}),
            400,
            "gateway_id",
        ),
        (
            json!({"gateway_id": "gateway-9", "target": "192.0.2.7"}),
            422,
            "unknown",
        ),
        (
            json!({"gateway_id": GW, "target": "192.0.2.7", "colour": "red"}),
            400,
            "colour",
        ),
        (json!({"target": "192.0.2.7"}), 400, "gateway_id"),
        (
            json!({"gateway_id": GW, "target": "192.0.2.7", "reason": "a\u{7}b"}),
            400,
            "reason",
        ),
    ];
    for (body, status, needle) in cases {
        let (got, answer) = post(&f, "/api/v1/blocks", Some(&bearer()), &body).await;
        assert_eq!(got.as_u16(), status, "{body}: {answer}");
        let msg = answer["error"].as_str().unwrap();
        assert!(msg.contains(needle), "{body}: {msg}");
        assert_unchanged(&f, &before).await;
    }
    // Not JSON at all.
    let res = request()
        .method("POST")
        .path("/api/v1/blocks")
        .header("authorization", bearer())
        .body("{nope")
        .reply(&routes(f.app.clone()))
        .await;
    assert_eq!(res.status(), StatusCode::BAD_REQUEST);
    assert_unchanged(&f, &before).await;
}

#[tokio::test]
async fn refused_publish_is_503_and_records_nothing() {
    let f = fixture();
    known_gateway(&f.app);
    let before = snapshot(&f).await;
    f.publisher.set_refuse(true);
    let (status, body) = post(&f, "/api/v1/blocks", Some(&bearer()), &block_body()).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_unchanged(&f, &before).await;
}

#[tokio::test]
async fn thresholds_are_validated_merged_published_retained_and_removable() {
    let f = fixture();
    // The detector's schema decides which keys exist and their ranges.
    let schema = tad_wire::SettingsSchema {
        v: tad_wire::SCHEMA_VERSION,
        detector_id: DET.parse().unwrap(),
        at_ms: 1,
        keys: vec![
            tad_wire::SettingKey {
                key: "portscan.vertical_ports".into(),
                kind: tad_wire::SettingKind::Integer,
                min: 1.0,
                max: 65535.0,
                default: 15.0,
                unit: "ports".into(),
                help: String::new(),
            },
            tad_wire::SettingKey {
                key: "spike.min_pps".into(),
                kind: tad_wire::SettingKind::Float,
                min: 0.0,
                max: 1e9,
                default: 100.0,
                unit: "pps".into(),
                help: String::new(),
            },
        ],
    };
    f.app
        .ingest(&topic::settings_schema(DET), &tad_wire::encode(&schema))
        .unwrap();
    let before = snapshot(&f).await;
    for (body, needle) in [
        (
            json!({"values": {"portscan.unknown": 3}}),
            "unknown setting",
        ),
        (
            json!({"values": {"synflood.syn_rate_pps": 3}}),
            "synflood.syn_rate_pps: unknown setting",
        ),
        (json!({"values": {"PortScan": 3}}), "section.name"),
        (
            json!({"values": {"portscan.vertical_ports": -1}}),
            "outside",
        ),
        (
            json!({"values": {"portscan.vertical_ports": 1e12}}),
            "outside",
        ),
        (
            json!({"values": {"portscan.vertical_ports": "ten"}}),
            "request body",
        ),
        (json!({"values": {}}), "empty"),
        (
            json!({"values": {"portscan.vertical_ports": 3}, "x": 1}),
            "unknown field",
        ),
    ] {
        let (status, answer) = post(&f, "/api/v1/thresholds", Some(&bearer()), &body).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}: {answer}");
        assert!(
            answer["error"].as_str().unwrap().contains(needle),
            "{answer}"
        );
        assert_unchanged(&f, &before).await;
    }
    let (s, _) = post(
        &f,
        "/api/v1/thresholds",
        Some(&bearer()),
        &json!({"values": {"portscan.vertical_ports": 20}}),
    )
    .await;
    assert_eq!(s, StatusCode::ACCEPTED);
    let (s, _) = post(
        &f,
        "/api/v1/thresholds",
        Some(&bearer()),
        &json!({"values": {"spike.min_pps": 500.5}}),
    )
    .await;
    assert_eq!(s, StatusCode::ACCEPTED);
    let sent = f.publisher.sent();
    assert_eq!(sent.len(), 2);
    assert_eq!(sent[1].topic, topic::thresholds());
    assert!(sent[1].retain);
    let t: ThresholdSettings = tad_wire::decode(&sent[1].payload).unwrap();
    assert_eq!(t.values.len(), 2, "second settings carry the merged set");
    assert_eq!(
        get(&f.app, "/api/v1/thresholds").await.1["values"]["spike.min_pps"],
        500.5
    );

    let res = request()
        .method("DELETE")
        .path("/api/v1/thresholds?key=portscan.vertical_ports")
        .header("authorization", bearer())
        .reply(&routes(f.app.clone()))
        .await;
    assert_eq!(res.status(), StatusCode::ACCEPTED);
    let t: ThresholdSettings = tad_wire::decode(&f.publisher.sent()[2].payload).unwrap();
    assert_eq!(t.values.keys().collect::<Vec<_>>(), ["spike.min_pps"]);
    // Removing a key that is not set: 404, nothing sent.
    let res = request()
        .method("DELETE")
        .path("/api/v1/thresholds?key=portscan.vertical_ports")
        .header("authorization", bearer())
        .reply(&routes(f.app.clone()))
        .await;
    assert_eq!(res.status(), StatusCode::NOT_FOUND);
    assert_eq!(f.publisher.sent().len(), 3);
    // The schema, then the three changes.
    assert_eq!(audit_lines(&f), 4);
}

#[tokio::test]
async fn reads_return_what_was_ingested() {
    let f = fixture();
    let app = &f.app;
    let now = now_ms();
    known_gateway(app);
    app.ingest(
        &topic::counters(GW),
        &tad_wire::encode(&counters(GW, now - 2000, 100.0, 10.0, 4)),
    )
    .unwrap();
    app.ingest(
        &topic::alerts(DET),
        &tad_wire::encode(&alert("a-1", now - 1500, "192.0.2.66")),
    )
    .unwrap();
    // The next sample counts the alert of the last minute.
    app.ingest(
        &topic::counters(GW),
        &tad_wire::encode(&counters(GW, now - 1000, 200.0, 20.0, 6)),
    )
    .unwrap();
    app.ingest(
        &topic::alerts(DET),
        &tad_wire::encode(&alert("a-2", now - 500, "192.0.2.67")),
    )
    .unwrap();
    app.ingest(
        &topic::verdicts(GW, DET),
        &sign_as(DET, &verdict("v-1", now, "192.0.2.10/32")),
    )
    .unwrap();
    // The gateway enforces the detector's quarantine (its state says so).
    let mut q = entry(
        "192.0.2.10/32",
        BlockOrigin::Verdict,
        DET,
        Some(now + 600_000),
    );
    q.reason = tad_wire::BlockReason::PortScan;
    q.rule = Some("portscan.vertical".into());
    app.ingest(
        &topic::gateway_state(GW),
        &tad_wire::encode(&gw_state(3, now, vec![q])),
    )
    .unwrap();
    app.ingest(
        &topic::trust(DET),
        &tad_wire::encode(&trust("192.0.2.10", now, 15.0)),
    )
    .unwrap();
    app.ingest(
        &topic::trust(DET),
        &tad_wire::encode(&trust("192.0.2.11", now, 80.0)),
    )
    .unwrap();

    // Alerts newest first, each with its audit hash.
    let (s, alerts) = get(&f.app, "/api/v1/alerts").await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(alerts[0]["id"], "a-2");
    assert_eq!(alerts[1]["id"], "a-1");
    assert_eq!(alerts[0]["audit_hash"].as_str().unwrap().len(), 64);
    assert!(
        alerts[0]["explanation"]["text"]
            .as_str()
            .unwrap()
            .contains("22 ports")
    );
    assert_eq!(
        get(&f.app, "/api/v1/alerts?limit=1")
            .await
            .1
            .as_array()
            .unwrap()
            .len(),
        1
    );
    assert_eq!(
        get(&f.app, "/api/v1/alerts?limit=0").await.0,
        StatusCode::BAD_REQUEST
    );
    assert_eq!(
        get(&f.app, "/api/v1/alerts?bogus=1").await.0,
        StatusCode::BAD_REQUEST
    );

    // Devices: the named, scored, blocked one sorts first (lowest score).
    let (_, devices) = get(&f.app, "/api/v1/devices").await;
    assert_eq!(devices[0]["address"], "192.0.2.10");
    assert_eq!(devices[0]["name"], "thermostat");
    assert_eq!(devices[0]["level"], "critical");
    assert_eq!(devices[0]["blocked"], true);
    assert_eq!(devices[1]["blocked"], false);

    // Blocks: the detector's quarantine, as the gateway enforces it.
    let (_, blocks) = get(&f.app, "/api/v1/blocks").await;
    let b = &blocks["blocks"][0];
    assert_eq!(b["origin"], "verdict");
    assert_eq!(b["by"], DET);
    assert_eq!(b["reason"], "port_scan");
    assert_eq!(b["rule"], "portscan.vertical");
    assert_eq!(b["hits"], 42);
    // The held state itself.
    let (s, st) = get(&f.app, &format!("/api/v1/gateways/{GW}/state")).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(st["rev"], 3);
    assert_eq!(st["at_ms"], now);
    assert_eq!(st["synced"], true);
    assert_eq!(st["blocks"][0]["prefix"], "192.0.2.10/32");
    assert_eq!(
        get(&f.app, "/api/v1/gateways/gateway-9/state").await.0,
        StatusCode::NOT_FOUND
    );

    // History: the two samples, with derived rates.
    let (_, h) = get(
        &f.app,
        &format!(
            "/api/v1/history?from_ms={}&to_ms={}&step_s=1",
            now - 10_000,
            now + 1
        ),
    )
    .await;
    let points = h["points"].as_array().unwrap();
    assert_eq!(points.len(), 2, "{h}");
    assert_eq!(points[1]["pass_pps"], 200.0);
    assert_eq!(points[1]["drop_syn_rate_pps"], 20.0);
    assert_eq!(points[1]["drop_blocklist_pps"], 10.0);
    assert_eq!(points[1]["flows_per_s"], 6.0);
    assert_eq!(points[1]["alerts_per_min"], 1.0);
    assert_eq!(
        get(&f.app, "/api/v1/history?from_ms=10&to_ms=5").await.0,
        StatusCode::BAD_REQUEST
    );

    // Gateways: online, mode, map fill from the latest counters.
    let (_, nodes) = get(&f.app, "/api/v1/gateways").await;
    assert_eq!(nodes[0]["node_id"], GW);
    assert_eq!(nodes[0]["online"], true);
    assert_eq!(nodes[0]["mode"], "enforce");
    assert_eq!(nodes[0]["maps"][0]["name"], "FLOWS");
    // Its Last Will turns it offline.
    app.ingest(
        &topic::gateway_status(GW),
        &tad_wire::encode(&status(GW, false, now)),
    )
    .unwrap();
    assert_eq!(get(&f.app, "/api/v1/gateways").await.1[0]["online"], false);

    // Verdicts, audit head, health, metrics.
    assert_eq!(get(&f.app, "/api/v1/verdicts").await.1[0]["id"], "v-1");
    let (_, head) = get(&f.app, "/api/v1/audit/head").await;
    // 2 alerts, 1 verdict, 1 gateway state change.
    assert_eq!(head["records"], 4);
    let (s, health) = get(&f.app, "/health").await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(health["database"], "wal");
    let res = request()
        .path("/metrics")
        .reply(&routes(f.app.clone()))
        .await;
    let text = String::from_utf8(res.body().to_vec()).unwrap();
    assert!(
        res.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain")
    );
    assert!(
        text.contains("tad_dashboard_messages_total{kind=\"alert\"} 2"),
        "{text}"
    );
    assert!(
        text.contains("tad_dashboard_rows{table=\"samples\"} 2"),
        "{text}"
    );
    assert!(
        text.contains("tad_dashboard_blocks{gateway=\"gateway-1\",origin=\"verdict\"} 1\n"),
        "{text}"
    );
    assert!(
        text.contains("tad_dashboard_gateway_state_rev{gateway=\"gateway-1\"} 3\n"),
        "{text}"
    );
}

#[tokio::test]
async fn bad_bus_messages_are_refused_and_counted() {
    let f = fixture();
    let app = &f.app;
    // Payload claims another gateway than its topic.
    let err = app
        .ingest(
            &topic::counters("gateway-2"),
            &tad_wire::encode(&counters(GW, 1, 1.0, 0.0, 0)),
        )
        .unwrap_err();
    assert!(err.to_string().contains("gateway-2"), "{err}");
    assert!(app.ingest(&topic::alerts(DET), b"{not json").is_err());
    assert!(app.ingest("tad/v1/nonsense", b"{}").is_err());
    assert_eq!(get(&f.app, "/api/v1/gateways").await.1, json!([]));
    let res = request()
        .path("/metrics")
        .reply(&routes(f.app.clone()))
        .await;
    let text = String::from_utf8(res.body().to_vec()).unwrap();
    assert!(text.contains("tad_dashboard_topic_mismatch_total 1"));
    assert!(text.contains("tad_dashboard_decode_errors_total 1"));
    // A redelivered alert is stored and audited once.
    let a = tad_wire::encode(&alert("a-1", 5, "192.0.2.66"));
    app.ingest(&topic::alerts(DET), &a).unwrap();
    app.ingest(&topic::alerts(DET), &a).unwrap();
    assert_eq!(audit_lines(&f), 1);
}

#[tokio::test]
async fn pages_and_assets_are_served() {
    let f = fixture();
    for path in [
        "/",
        "/devices",
        "/alerts",
        "/blocks",
        "/history",
        "/gateways",
        "/settings",
        "/audit",
    ] {
        let res = request().path(path).reply(&routes(f.app.clone())).await;
        assert_eq!(res.status(), StatusCode::OK, "{path}");
        assert!(
            res.headers()["content-type"]
                .to_str()
                .unwrap()
                .starts_with("text/html")
        );
        assert!(String::from_utf8_lossy(res.body()).contains("/assets/app.js"));
    }
    for (path, ct) in [
        ("/assets/app.js", "text/javascript"),
        ("/assets/uPlot.iife.min.js", "text/javascript"),
        ("/assets/uPlot.min.css", "text/css"),
        ("/assets/uPlot-LICENSE", "text/plain"),
        ("/openapi.yaml", "application/yaml"),
    ] {
        let res = request().path(path).reply(&routes(f.app.clone())).await;
        assert_eq!(res.status(), StatusCode::OK, "{path}");
        assert!(
            res.headers()["content-type"]
                .to_str()
                .unwrap()
                .starts_with(ct),
            "{path}"
        );
        assert!(!res.body().is_empty());
    }
    let res = request().path("/nope").reply(&routes(f.app.clone())).await;
    assert_eq!(res.status(), StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn every_read_is_documented_in_the_openapi_file() {
    let f = fixture();
    let spec = include_str!("../openapi.yaml");
    let reads = [
        "/api/v1/overview",
        "/api/v1/history",
        "/api/v1/devices",
        "/api/v1/alerts",
        "/api/v1/verdicts",
        "/api/v1/commands",
        "/api/v1/acks",
        "/api/v1/flows",
        "/api/v1/gateways",
        "/api/v1/audit/head",
        "/api/v1/blocks",
        "/api/v1/thresholds",
        "/health",
        "/metrics",
        "/openapi.yaml",
    ];
    for path in reads {
        assert!(
            spec.contains(&format!("\n  {path}:\n")),
            "{path} is not in openapi.yaml"
        );
        let res = request().path(path).reply(&routes(f.app.clone())).await;
        assert_eq!(res.status(), StatusCode::OK, "{path}");
    }
    assert!(spec.contains("\n  /api/v1/events:\n"));
    assert!(spec.contains("\n  /api/v1/gateways/{id}/state:\n"));
    for mutation in [
        "    post:\n      summary: Block",
        "    delete:\n      summary: Unblock",
        "    post:\n      summary: Set thresholds",
        "    delete:\n      summary: Remove one threshold",
        "    put:\n      summary: Replace the whole threshold set",
        "  /api/v1/thresholds/{key}:\n    delete:\n      summary: Remove one threshold",
        "  /api/v1/audit/{hash}:\n    get:\n",
    ] {
        assert!(spec.contains(mutation), "{mutation}");
    }
}

#[tokio::test]
async fn protect_and_unprotect_publish_signed_syn_auth_commands_for_one_host() {
    let f = fixture();
    known_gateway(&f.app);
    let before = snapshot(&f).await;
    for (body, needle) in [
        (
            json!({"gateway_id": GW, "target": "192.0.2.0/24", "ttl_s": 600}),
            "one host",
        ),
        (
            json!({"gateway_id": GW, "target": "192.0.2.10", "port": 0, "ttl_s": 600}),
            "port",
        ),
        (json!({"gateway_id": GW, "target": "192.0.2.10"}), "ttl_s"),
        (
            json!({"gateway_id": GW, "target": "192.0.2.10", "ttl_s": 2_592_001}),
            "ttl_s",
        ),
    ] {
        let (got, answer) = post(&f, "/api/v1/protected", Some(&bearer()), &body).await;
        assert_eq!(got, StatusCode::BAD_REQUEST, "{body}: {answer}");
        assert!(
            answer["error"].as_str().unwrap().contains(needle),
            "{body}: {answer}"
        );
        assert_unchanged(&f, &before).await;
    }
    let (status, _) = post(
        &f,
        "/api/v1/protected",
        None,
        &json!({"gateway_id": GW, "target": "192.0.2.10", "port": 80, "ttl_s": 600}),
    )
    .await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);

    let (status, body) = post(
        &f,
        "/api/v1/protected",
        Some(&bearer()),
        &json!({"gateway_id": GW, "target": "192.0.2.10", "port": 80, "ttl_s": 600,
                "reason": "camera under flood"}),
    )
    .await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    let sent = f.publisher.sent();
    assert_eq!(sent[0].topic, topic::commands(GW, "dashboard"));
    assert!(sent[0].signed);
    let cmd: Command = tad_wire::decode(&sent[0].payload).unwrap();
    assert_eq!(
        (cmd.action, cmd.target.to_string(), cmd.port, cmd.ttl_s),
        (
            Action::ProtectSyn,
            "192.0.2.10/32".into(),
            Some(80),
            Some(600)
        )
    );
    // Pending (not a block, not yet a protection) until the gateway's state lists it.
    let (_, blocks) = get(&f.app, "/api/v1/blocks").await;
    assert_eq!(blocks["blocks"], json!([]));
    assert_eq!(blocks["protected"], json!([]));
    assert_eq!(
        (
            &blocks["pending"][0]["action"],
            &blocks["pending"][0]["port"]
        ),
        (&json!("protect_syn"), &json!(80))
    );

    let res = request()
        .method("DELETE")
        .path(&format!(
            "/api/v1/protected?gateway_id={GW}&target=192.0.2.10&port=80"
        ))
        .header("authorization", bearer())
        .header("host", "dash.example:8080")
        .reply(&routes(f.app.clone()))
        .await;
    assert_eq!(res.status(), StatusCode::ACCEPTED);
    let cmd: Command = tad_wire::decode(&f.publisher.sent()[1].payload).unwrap();
    assert_eq!(
        (cmd.action, cmd.port, cmd.ttl_s),
        (Action::UnprotectSyn, Some(80), None)
    );
}
