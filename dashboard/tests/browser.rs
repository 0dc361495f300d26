//! Headless Chromium against a running dashboard: the overview's charts move as
//! samples arrive, a new alert appears at the top with its audit hash, the Blocks
//! page shows the gateway state's CLI and feed entries and drops one the
//! gateway's delta removes as expired, a block from the form is pending (not a
//! block), and every page renders; screenshots land in `target/tmp/dashboard-e2e/`.
//!
//! Needs Debian's `chromium` and `npm ci` in `dashboard/e2e` (playwright-core);
//! fails with those install steps when either is missing.

mod common;

use std::{
    path::{Path, PathBuf},
    process::Stdio,
    sync::Arc,
    time::Duration,
};

use common::*;
use dashboard::server;
use tad_wire::{BlockOrigin, RemovalCause, RemovedBlock, now_ms, topic};
use tokio::{
    io::{AsyncBufReadExt, BufReader},
    process::Command,
};

const CHROMIUM: &str = "/usr/bin/chromium";

fn e2e_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("e2e")
}

fn check_prerequisites() {
    let mut missing = Vec::new();
    if !Path::new(CHROMIUM).exists() {
        missing.push(format!("{CHROMIUM} (install: apt-get install -y chromium)"));
    }
    if !e2e_dir().join("node_modules/playwright-core").exists() {
        missing.push(format!(
            "playwright-core (install: cd {} && npm ci)",
            e2e_dir().display()
        ));
    }
    if std::process::Command::new("node")
        .arg("--version")
        .output()
        .is_err()
    {
        missing.push("node (install: apt-get install -y nodejs npm)".into());
    }
    assert!(
        missing.is_empty(),
        "browser test prerequisites missing (run `cargo xtask setup`): {}",
        missing.join("; ")
    );
}

/// Publishes one counters sample a tick, with values that change each time.
async fn feed_samples(app: Arc<dashboard::app::App>, stop: tokio::sync::watch::Receiver<bool>) {
    let mut i = 0u64;
    while !*stop.borrow() {
        i += 1;
        let pass = 800.0 + 150.0 * ((i as f64) / 3.0).sin() + i as f64;
        let drop = 40.0 + (i % 7) as f64 * 12.0;
        let snap = counters(GW, now_ms(), pass, drop, 5 + i % 4);
        app.ingest(&topic::counters(GW), &tad_wire::encode(&snap))
            .unwrap();
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pages_render_live_data_in_chromium() {
    check_prerequisites();
    let f = fixture();
    let app = f.app.clone();
    let now = now_ms();

    // What the dashboard already knows when the page opens.
    known_gateway(&app);
    for k in (1..=60).rev() {
        let snap = counters(GW, now - k * 1000, 600.0 + (k % 10) as f64 * 20.0, 30.0, 4);
        app.ingest(&topic::counters(GW), &tad_wire::encode(&snap))
            .unwrap();
    }
    app.ingest(
        &topic::alerts(DET),
        &tad_wire::encode(&alert("a-old", now - 30_000, "192.0.2.50")),
    )
    .unwrap();
    app.ingest(
        &topic::trust(DET),
        &tad_wire::encode(&trust("192.0.2.10", now, 15.0)),
    )
    .unwrap();
    app.ingest(
        &topic::trust(DET),
        &tad_wire::encode(&trust("192.0.2.11", now, 62.0)),
    )
    .unwrap();
    app.ingest(
        &topic::trust(DET),
        &tad_wire::encode(&trust("192.0.2.12", now, 91.0)),
    )
    .unwrap();
    app.ingest(
        &topic::verdicts(GW, DET),
        &sign_as(DET, &verdict("v-1", now, "192.0.2.10/32")),
    )
    .unwrap();
    // What gateway-1 enforces: a block made with `fw-ctl block`, two feed
    // entries (one about to be swept), the detector's quarantine and one entry
    // already past its expiry.
    app.ingest(
        &topic::gateway_state(GW),
        &tad_wire::encode(&gw_state(
            1,
            now,
            vec![
                entry("192.0.2.66/32", BlockOrigin::Cli, "root", None),
                entry(
                    "198.51.100.0/24",
                    BlockOrigin::Feed,
                    "feed:spamhaus-drop.txt",
                    Some(now + 86_400_000),
                ),
                entry(
                    "203.0.113.0/24",
                    BlockOrigin::Feed,
                    "feed:spamhaus-drop.txt",
                    Some(now + 3_600_000),
                ),
                entry(
                    "192.0.2.10/32",
                    BlockOrigin::Verdict,
                    DET,
                    Some(now + 600_000),
                ),
                entry(
                    "203.0.113.77/32",
                    BlockOrigin::Cli,
                    "root",
                    Some(now - 1_000),
                ),
            ],
        )),
    )
    .unwrap();

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let server = tokio::spawn(server::serve(listener, app.clone(), {
        let mut rx = stop_rx.clone();
        async move {
            let _ = rx.wait_for(|s| *s).await;
        }
    }));
    let feeder = tokio::spawn(feed_samples(app.clone(), stop_rx.clone()));

    let shots = Path::new(env!("CARGO_TARGET_TMPDIR")).join("dashboard-e2e");
    std::fs::create_dir_all(&shots).unwrap();
    for entry in std::fs::read_dir(&shots).unwrap() {
        let _ = std::fs::remove_file(entry.unwrap().path());
    }
    let mut child = Command::new("node")
        .arg(e2e_dir().join("dashboard.mjs"))
        .current_dir(e2e_dir())
        .env("DASHBOARD_URL", format!("http://{addr}"))
        .env("SCREENSHOT_DIR", &shots)
        .env("CHROMIUM", CHROMIUM)
        .env("ALERT_ID", "a-live")
        .env("API_TOKEN", TOKEN)
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("node runs");
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut verdict = None;
    let run = async {
        while let Some(line) = lines.next_line().await.unwrap() {
            if line == "loaded" {
                // The page is up: a new alert arrives while it watches.
                let a = alert("a-live", now_ms(), "192.0.2.66");
                app.ingest(&topic::alerts(DET), &tad_wire::encode(&a))
                    .unwrap();
            } else if line == "alert-shown" {
                // The attack goes on: the detector's update of the same alert.
                let mut a = alert("a-live", now_ms(), "192.0.2.66");
                a.first_seen_ms = Some(a.at_ms - 5_000);
                a.count = 4;
                app.ingest(&topic::alerts(DET), &tad_wire::encode(&a))
                    .unwrap();
            } else if line == "blocks-shown" {
                // The gateway's sweep removes the expired feed entry.
                let mut d = gw_delta(2, now_ms());
                d.removed = vec![RemovedBlock {
                    prefix: "203.0.113.0/24".parse().unwrap(),
                    cause: RemovalCause::Expired,
                }];
                app.ingest(&topic::gateway_state_delta(GW), &tad_wire::encode(&d))
                    .unwrap();
            } else if line.starts_with("ok ") || line.starts_with("fail ") {
                verdict = Some(line);
            }
        }
        child.wait().await.unwrap()
    };
    // A bound on the whole run so a hung browser fails the test instead of CI.
    let status = tokio::time::timeout(Duration::from_secs(120), run)
        .await
        .expect("browser script finished within 120 s");

    stop_tx.send_replace(true);
    feeder.await.unwrap();
    server.await.unwrap();

    let verdict = verdict.unwrap_or_else(|| "no result line".into());
    assert!(
        status.success() && verdict.starts_with("ok "),
        "browser check failed: {verdict}"
    );
    // The form's block went out as a signed command to the gateway.
    let sent = f.publisher.sent();
    let cmd: tad_wire::Command =
        tad_wire::decode(&sent.last().expect("a command").payload).unwrap();
    assert_eq!(sent.last().unwrap().topic, topic::commands(GW, "dashboard"));
    assert!(sent.last().unwrap().signed);
    // What the page showed is what the store holds: the expired entries are gone.
    let mut shown: Vec<String> = app
        .store
        .blocks(now_ms())
        .unwrap()
        .iter()
        .map(|b| b.prefix.to_string())
        .collect();
    shown.sort();
    assert_eq!(shown, ["192.0.2.10/32", "192.0.2.66/32", "198.51.100.0/24"]);
    assert_eq!(cmd.target.to_string(), "198.51.100.77/32");
    assert_eq!(cmd.ttl_s, Some(3600));
    for name in [
        "overview",
        "devices",
        "alerts",
        "blocks",
        "gateways",
        "history",
        "blocks-after-form",
    ] {
        let png = shots.join(format!("{name}.png"));
        let len = std::fs::metadata(&png).map(|m| m.len()).unwrap_or(0);
        assert!(len > 10_000, "{} is missing or empty", png.display());
    }
}
