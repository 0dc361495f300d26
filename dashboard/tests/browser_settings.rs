//! Headless Chromium on the Settings and Audit pages (`e2e/settings.mjs`): the
//! detectors' schema keys with their ranges, the values set and in force, and
//! per detector applied / refused with the error; the settings form refuses an
//! out-of-range value with the API's message and sends a valid one, pending until
//! the detector's ack arrives; an alert links to its audit record, shown with its
//! position and a verified chain. Screenshots land in `target/tmp/dashboard-e2e/`.
//!
//! Needs Debian's `chromium` and `npm ci` in `dashboard/e2e` (playwright-core),
//! as `tests/browser.rs`.

mod common;

use std::{
    path::{Path, PathBuf},
    process::Stdio,
    time::Duration,
};

use common::*;
use dashboard::server;
use tad_wire::{
    SCHEMA_VERSION, SettingKey, SettingKind, SettingsAck, SettingsOutcome, SettingsSchema, now_ms,
    topic,
};
use tokio::{
    io::{AsyncBufReadExt, BufReader},
    process::Command,
};
use warp::{http::StatusCode, test::request};

const CHROMIUM: &str = "/usr/bin/chromium";

fn e2e_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("e2e")
}

fn schema(det: &str) -> SettingsSchema {
    let key = |key: &str, kind, min, max, default, unit: &str| SettingKey {
        key: key.into(),
        kind,
        min,
        max,
        default,
        unit: unit.into(),
        help: format!("help of {key}"),
    };
    SettingsSchema {
        v: SCHEMA_VERSION,
        detector_id: det.parse().unwrap(),
        at_ms: now_ms(),
        keys: vec![
            key(
                "portscan.vertical_ports",
                SettingKind::Integer,
                1.0,
                65535.0,
                15.0,
                "ports",
            ),
            key("spike.alpha", SettingKind::Float, 1e-6, 1.0, 0.1, ""),
        ],
    }
}

fn ack(det: &str, id: &str, outcome: SettingsOutcome, vp: f64, alpha: f64) -> Vec<u8> {
    tad_wire::encode(&SettingsAck {
        v: SCHEMA_VERSION,
        id: id.into(),
        detector_id: det.parse().unwrap(),
        at_ms: now_ms(),
        outcome,
        error: (outcome == SettingsOutcome::Refused)
            .then(|| "trust.weight_behavioural + ... = 1.2 must be 1".into()),
        effective: [
            ("portscan.vertical_ports".to_string(), vp),
            ("spike.alpha".to_string(), alpha),
        ]
        .into(),
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn settings_and_audit_pages_in_chromium() {
    assert!(
        Path::new(CHROMIUM).exists() && e2e_dir().join("node_modules/playwright-core").exists(),
        "browser test prerequisites missing (run `cargo xtask setup`: chromium, npm ci in {})",
        e2e_dir().display()
    );
    let f = fixture();
    let app = f.app.clone();
    for det in [DET, "detector-2"] {
        app.ingest(
            &topic::settings_schema(det),
            &tad_wire::encode(&schema(det)),
        )
        .unwrap();
    }
    let res = request()
        .method("POST")
        .path("/api/v1/thresholds")
        .header("authorization", format!("Bearer {TOKEN}"))
        .json(&serde_json::json!({"values": {"portscan.vertical_ports": 30}}))
        .reply(&dashboard::api::routes(app.clone()))
        .await;
    assert_eq!(res.status(), StatusCode::ACCEPTED);
    let id = app.store.thresholds().unwrap().unwrap().id;
    app.ingest(
        &topic::settings_acks(DET),
        &ack(DET, &id, SettingsOutcome::Applied, 30.0, 0.1),
    )
    .unwrap();
    app.ingest(
        &topic::settings_acks("detector-2"),
        &ack("detector-2", &id, SettingsOutcome::Refused, 15.0, 0.1),
    )
    .unwrap();
    app.ingest(
        &topic::alerts(DET),
        &tad_wire::encode(&alert("a-linked", now_ms(), "192.0.2.50")),
    )
    .unwrap();

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop_tx, mut stop_rx) = tokio::sync::watch::channel(false);
    let server = tokio::spawn(server::serve(listener, app.clone(), async move {
        let _ = stop_rx.wait_for(|s| *s).await;
    }));
    let shots = Path::new(env!("CARGO_TARGET_TMPDIR")).join("dashboard-e2e");
    std::fs::create_dir_all(&shots).unwrap();
    for name in ["settings", "settings-after-change", "audit"] {
        let _ = std::fs::remove_file(shots.join(format!("{name}.png")));
    }
    let mut child = Command::new("node")
        .arg(e2e_dir().join("settings.mjs"))
        .current_dir(e2e_dir())
        .env("DASHBOARD_URL", format!("http://{addr}"))
        .env("SCREENSHOT_DIR", &shots)
        .env("CHROMIUM", CHROMIUM)
        .env("ALERT_ID", "a-linked")
        .env("API_TOKEN", TOKEN)
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("node runs");
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut verdict = None;
    let mut sent = None;
    let run = async {
        while let Some(line) = lines.next_line().await.unwrap() {
            if line == "settings-sent" {
                // The form's change went out; detector-1 applies it.
                let t = app.store.thresholds().unwrap().unwrap();
                app.ingest(
                    &topic::settings_acks(DET),
                    &ack(DET, &t.id, SettingsOutcome::Applied, 30.0, 0.5),
                )
                .unwrap();
                sent = Some(t);
            } else if line.starts_with("ok ") || line.starts_with("fail ") {
                verdict = Some(line);
            }
        }
        child.wait().await.unwrap()
    };
    let status = tokio::time::timeout(Duration::from_secs(120), run)
        .await
        .expect("browser script finished within 120 s");
    stop_tx.send_replace(true);
    server.await.unwrap();

    let verdict = verdict.unwrap_or_else(|| "no result line".into());
    assert!(
        status.success() && verdict.starts_with("ok "),
        "browser check failed: {verdict}"
    );
    // The form sent the merged set, once (the out-of-range value sent nothing).
    let sent = sent.expect("the page sent a change");
    assert_eq!(
        sent.values,
        [
            ("portscan.vertical_ports".to_string(), 30.0),
            ("spike.alpha".to_string(), 0.5)
        ]
        .into()
    );
    assert_eq!(f.publisher.sent().len(), 2);
    for name in ["settings", "settings-after-change", "audit"] {
        let png = shots.join(format!("{name}.png"));
        let len = std::fs::metadata(&png).map(|m| m.len()).unwrap_or(0);
        assert!(len > 10_000, "{} is missing or empty", png.display());
    }
}
