//! Headless Chromium on the IoT part of the Devices page (`e2e/devices.mjs`):
//! the device list with each device's trust and level as its gateway published
//! it, the gateway's guard counters, refusals of an unenrolled device; one
//! device's telemetry charts, trust over time with each change's cause, its
//! vulnerability findings, refused messages, command decisions and telemetry
//! batches; a trust change arriving while the page is open (the list and the
//! history follow it), and its link to the verified audit record. Screenshots
//! land in `target/tmp/dashboard-e2e/`.
//!
//! Needs Debian's `chromium` and `npm ci` in `dashboard/e2e` (playwright-core),
//! as `tests/browser.rs`.

mod common;
mod iot;

use std::{
    path::{Path, PathBuf},
    process::Stdio,
    time::Duration,
};

use common::fixture;
use dashboard::server;
use iot::*;
use tad_wire::{
    devices::{DeviceRefusalReason, DeviceTrustCause},
    encode, now_ms, topic,
};
use tokio::{
    io::{AsyncBufReadExt, BufReader},
    process::Command,
};

const CHROMIUM: &str = "/usr/bin/chromium";

fn e2e_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("e2e")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn device_page_in_chromium() {
    assert!(
        Path::new(CHROMIUM).exists() && e2e_dir().join("node_modules/playwright-core").exists(),
        "browser test prerequisites missing (run `cargo xtask setup`: chromium, npm ci in {})",
        e2e_dir().display()
    );
    let f = fixture();
    let app = f.app.clone();
    let now = now_ms();
    let ingest = |t: String, p: Vec<u8>| {
        app.ingest(&t, &p).unwrap();
    };
    // What gateway-1 published before the page opens.
    ingest(
        topic::devices_state(GW),
        encode(&states(
            now - 1_000,
            &[("esp32-1", 35.0), ("esp32-2", 97.0)],
        )),
    );
    for (no, base) in [(1, now - 60_000), (2, now - 30_000)] {
        let readings: Vec<Reading<'_>> = (0..3)
            .map(|i| {
                let seq = no * 10 + i;
                (
                    "esp32-1",
                    seq,
                    base + i * 5_000,
                    10.0 + i as f64,
                    90.0 - i as f64,
                    20.0 + i as f64,
                )
            })
            .collect();
        ingest(topic::devices_telemetry(GW), encode(&batch(no, &readings)));
    }
    ingest(
        topic::devices_trust(GW),
        encode(&trust(
            now - 20_000,
            vec![
                change("esp32-1", now - 25_000, 80.0, 60.0, alert_cause("replay")),
                change(
                    "esp32-1",
                    now - 20_000,
                    60.0,
                    35.0,
                    DeviceTrustCause::Vulnerability {
                        score: 40.0,
                        findings: vec!["23/telnet: clear-text login".into()],
                    },
                ),
            ],
        )),
    );
    ingest(
        topic::devices_vulns(GW),
        encode(&scan("esp32-1", now - 20_000, true)),
    );
    ingest(
        topic::devices_vulns(GW),
        encode(&scan("esp32-2", now - 20_000, false)),
    );
    ingest(
        topic::devices_refusals(GW),
        encode(&refusals(
            now - 15_000,
            &[
                ("esp32-1", DeviceRefusalReason::Replay, 11),
                ("rogue-1", DeviceRefusalReason::Unenrolled, 1),
            ],
        )),
    );
    ingest(
        topic::devices_decisions(GW),
        encode(&decision(
            "r-1",
            "esp32-1",
            now - 10_000,
            Some("low_trust"),
            35.0,
        )),
    );
    ingest(
        topic::devices_decisions(GW),
        encode(&decision("r-0", "esp32-1", now - 50_000, None, 80.0)),
    );

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop_tx, mut stop_rx) = tokio::sync::watch::channel(false);
    let server = tokio::spawn(server::serve(listener, app.clone(), async move {
        let _ = stop_rx.wait_for(|s| *s).await;
    }));
    let shots = Path::new(env!("CARGO_TARGET_TMPDIR")).join("dashboard-e2e");
    std::fs::create_dir_all(&shots).unwrap();
    for name in ["devices-iot", "devices-iot-live", "devices-failure"] {
        let _ = std::fs::remove_file(shots.join(format!("{name}.png")));
    }
    let mut child = Command::new("node")
        .arg(e2e_dir().join("devices.mjs"))
        .current_dir(e2e_dir())
        .env("DASHBOARD_URL", format!("http://{addr}"))
        .env("SCREENSHOT_DIR", &shots)
        .env("CHROMIUM", CHROMIUM)
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("node runs");
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut verdict = None;
    let run = async {
        while let Some(line) = lines.next_line().await.unwrap() {
            if line == "detail-shown" {
                // A forged signature: the gateway lowers esp32-1's trust and says so.
                let t = now_ms();
                ingest(
                    topic::devices_trust(GW),
                    encode(&trust(
                        t,
                        vec![change(
                            "esp32-1",
                            t,
                            35.0,
                            15.0,
                            alert_cause("bad_signature"),
                        )],
                    )),
                );
                ingest(
                    topic::devices_state(GW),
                    encode(&states(t, &[("esp32-1", 15.0), ("esp32-2", 97.0)])),
                );
                ingest(
                    topic::devices_telemetry(GW),
                    encode(&batch(
                        3,
                        &[
                            ("esp32-1", 40, t - 2_000, 50.0, 80.0, 22.0),
                            ("esp32-1", 41, t - 1_000, 55.0, 79.0, 22.5),
                        ],
                    )),
                );
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
    server.await.unwrap();

    let verdict = verdict.unwrap_or_else(|| "no result line".into());
    assert!(
        status.success() && verdict.starts_with("ok "),
        "browser check failed: {verdict}"
    );
    for name in ["devices-iot", "devices-iot-live"] {
        let png = shots.join(format!("{name}.png"));
        let len = std::fs::metadata(&png).map(|m| m.len()).unwrap_or(0);
        assert!(len > 10_000, "{} is missing or empty", png.display());
    }
}
