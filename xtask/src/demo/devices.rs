//! The demo's device-layer attacks (issue 17): signed telemetry from the testbed's
//! simulated ESP32-class devices through the gateway's device guard, and six
//! attacks on that layer, each of which must be refused or flagged:
//!
//! | row | what | expected |
//! |---|---|---|
//! | replayed telemetry | esp32-1 resends a message the gateway accepted | refused `replay` |
//! | forged signature | esp32-1's topic, payload signed with another key | refused `bad_signature` |
//! | unenrolled device | esp32-9 (certificate, no enrollment) publishes | refused `unenrolled` (×2) |
//! | out-of-range values | esp32-2, validly signed, temperature 150 °C | refused `out_of_range` |
//! | command burst to a low-trust device | esp32-1 (after the attacks above plus an id mismatch: trust 40) gets 5 signed reboot requests | 5 refused `low_trust` |
//! | telnet open | esp32-3 listens on 2323/tcp | scan finding `telnet`, critical |
//!
//! Counting: the gateway's status file (`devices` of `fw-status.json`) before and
//! after; `received` must grow by the messages sent, `accepted` by the valid ones,
//! and the refusals by exactly the attacks (per reason). Devices publish with
//! `mosquitto_pub` (MQTT 3.1.1, QoS 1, their own certificate) from their
//! namespaces; command requests are JWS-signed with the dashboard's key
//! (`tad_bus::Signer`) and published with the dashboard's certificate (its own
//! client id, so the running dashboard keeps its session); decisions and scan
//! reports are read with `mosquitto_sub` in the monitor namespace.
//!
//! Wiring: the testbed gateway gets its `[devices]` table from
//! `testbed::nodes::devices` (`StackOptions::devices`); the scenario starts
//! [`listen_telnet`] before the stack (the scan of a new device runs at once),
//! calls [`run`] after the network attacks and prints its [`Row`]s after the
//! attack table.

use std::{
    collections::BTreeMap,
    io::Write as _,
    path::PathBuf,
    process::Stdio,
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use tad_devices::{
    DeviceId, Registry,
    cli::read_signing_key,
    sim::SimDevice,
    telemetry::{seal, topic},
};
use tad_wire::{
    SCHEMA_VERSION,
    devices::{DeviceCommandRequest, DeviceCommandSpec, DeviceVulnReport},
    topic as wt,
};

use crate::{
    certs::{TESTBED_UNENROLLED, device_registry},
    testbed::{
        self,
        netns::{self, in_ns},
        nodes::{BROKER_PORT, DASHBOARD_ID, GATEWAY_ID},
        stack::Stack,
    },
};

/// The device listening on telnet (1-based testbed device index, its id).
pub const TELNET_DEVICE: (u8, &str) = (3, "esp32-3");

/// One row of the device table.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Row {
    pub attack: &'static str,
    pub device: String,
    pub expected: String,
    pub observed: String,
    pub ok: bool,
}

/// The fewest testbed device hosts the rows need (esp32-1..3; the telnet
/// listener is on the third).
pub const MIN_DEVICES: u8 = TELNET_DEVICE.0;

/// Opens a TCP listener on 2323 (accepts and closes every connection, like a
/// telnet daemon's port as a connect scan sees it) in [`TELNET_DEVICE`]'s
/// namespace; stopped (by its PID) when the returned process is dropped.
pub fn listen_telnet() -> anyhow::Result<netns::Proc> {
    const LISTENER: &str = "import socket\n\
s = socket.socket()\n\
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n\
s.bind(('0.0.0.0', 2323))\n\
s.listen(64)\n\
while True:\n    c, _ = s.accept()\n    c.close()\n";
    netns::Proc::spawn(
        "telnet-like listener (python3) on 2323",
        in_ns(&testbed::device_ns(TELNET_DEVICE.0), "python3").args(["-c", LISTENER]),
        None,
    )
}

fn certs(stack: &Stack) -> PathBuf {
    stack.dir.join("certs")
}

/// Publishes `payload` on `topic` from device namespace `ns` with the
/// certificate of `id` (QoS 1; mosquitto_pub waits for the PUBACK).
fn mqtt_pub(stack: &Stack, ns: &str, id: &str, topic: &str, payload: &[u8]) -> anyhow::Result<()> {
    let c = certs(stack);
    let mut child = in_ns(ns, "mosquitto_pub")
        .args([
            "-h",
            &testbed::MONITOR.to_string(),
            "-p",
            &BROKER_PORT.to_string(),
        ])
        .arg("--cafile")
        .arg(c.join("ca.pem"))
        .arg("--cert")
        .arg(c.join(format!("nodes/{id}.pem")))
        .arg("--key")
        .arg(c.join(format!("nodes/{id}.key")))
        .args(["-i", &format!("{id}-demo-{}", std::process::id())])
        .args(["-q", "1", "-t", topic, "-s"])
        .stdin(Stdio::piped())
        .spawn()
        .context("mosquitto_pub (Debian package mosquitto-clients)")?;
    child
        .stdin
        .take()
        .expect("piped")
        .write_all(payload)
        .context("writing to mosquitto_pub")?;
    let st = child.wait()?;
    if !st.success() {
        bail!("mosquitto_pub as {id} on {topic} failed: {st}");
    }
    Ok(())
}

/// The first message on `filter` for which `pick` is true, within `limit`
/// (mosquitto_sub in the monitor namespace with the dashboard's certificate).
fn mqtt_wait(
    stack: &Stack,
    filter: &str,
    limit: Duration,
    pick: impl Fn(&str) -> bool,
) -> anyhow::Result<Option<String>> {
    let c = certs(stack);
    // `-W` ends mosquitto_sub after `limit` (with a non-zero status); lines are
    // read as they arrive and the subscriber is stopped at the first match.
    let mut child = in_ns(testbed::NS_MONITOR, "mosquitto_sub")
        .args([
            "-h",
            &testbed::MONITOR.to_string(),
            "-p",
            &BROKER_PORT.to_string(),
        ])
        .arg("--cafile")
        .arg(c.join("ca.pem"))
        .arg("--cert")
        .arg(c.join(format!("nodes/{DASHBOARD_ID}.pem")))
        .arg("--key")
        .arg(c.join(format!("nodes/{DASHBOARD_ID}.key")))
        .args(["-i", &format!("dashboard-demo-sub-{}", std::process::id())])
        .args(["-t", filter, "-W", &limit.as_secs().max(1).to_string()])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .context("mosquitto_sub (Debian package mosquitto-clients)")?;
    let out = child.stdout.take().expect("piped");
    let found = std::io::BufRead::lines(std::io::BufReader::new(out))
        .map_while(Result::ok)
        .find(|l| pick(l));
    let _ = child.kill();
    let _ = child.wait();
    Ok(found)
}

/// The `devices` counters of the gateway's status file.
fn device_stats(stack: &Stack) -> anyhow::Result<serde_json::Value> {
    let p = stack.dir.join("fw-status.json");
    let v: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(&p).with_context(|| format!("reading {}", p.display()))?,
    )?;
    v.get("devices").cloned().context(
        "the gateway status has no `devices`: is [devices] configured on the testbed gateway?",
    )
}

fn refused(v: &serde_json::Value) -> BTreeMap<String, u64> {
    v["refused"]
        .as_object()
        .map(|m| {
            m.iter()
                .map(|(k, n)| (k.clone(), n.as_u64().unwrap_or(0)))
                .filter(|(_, n)| *n > 0)
                .collect()
        })
        .unwrap_or_default()
}

fn sim(stack: &Stack, reg: &Registry, id: &str, seed: u64) -> anyhow::Result<SimDevice> {
    let key = read_signing_key(&certs(stack).join(format!("devices/{id}.key")))?;
    let e = reg
        .get(id)
        .with_context(|| format!("{id} is not enrolled"))?;
    Ok(SimDevice::new(
        DeviceId::parse(id)?,
        key,
        e.sensors.clone(),
        seed,
    ))
}

fn now_ms() -> u64 {
    tad_wire::now_ms()
}

/// Runs the rows (module docs); failed expectations go to `failures`.
pub fn run(stack: &Stack, failures: &mut Vec<String>) -> anyhow::Result<Vec<Row>> {
    let reg = Registry::load(&device_registry(&certs(stack)))?;
    let ns = |i: u8| testbed::device_ns(i);
    let mut d1 = sim(stack, &reg, "esp32-1", 1)?;
    let mut d2 = sim(stack, &reg, "esp32-2", 2)?;
    let forger = SimDevice::from_seed("esp32-1", 99);
    let before = device_stats(stack)?;
    let (mut sent, mut valid) = (0u64, 0u64);
    let mut attacks: BTreeMap<String, u64> = BTreeMap::new();

    // Normal telemetry first (two messages at most per device within the default
    // burst of 10: no rate limiting).
    let mut accepted_one = None;
    for _ in 0..4 {
        let (t, b) = d1.publish(now_ms());
        accepted_one.get_or_insert_with(|| b.clone());
        mqtt_pub(stack, &ns(1), "esp32-1", &t, &b)?;
        let (t, b) = d2.publish(now_ms());
        mqtt_pub(stack, &ns(2), "esp32-2", &t, &b)?;
        sent += 2;
        valid += 2;
    }
    let t1 = topic(&d1.id);
    // Replay.
    mqtt_pub(
        stack,
        &ns(1),
        "esp32-1",
        &t1,
        accepted_one.as_ref().expect("sent"),
    )?;
    *attacks.entry("replay".into()).or_default() += 1;
    // Forged signature.
    let r = d1.reading(now_ms());
    mqtt_pub(
        stack,
        &ns(1),
        "esp32-1",
        &t1,
        &seal(&r.to_bytes(), forger.key()),
    )?;
    *attacks.entry("bad_signature".into()).or_default() += 1;
    // Id mismatch (so esp32-1 ends at trust 40: three distinct security alerts).
    let mut r = d1.reading(now_ms());
    r.device_id = d2.id.clone();
    mqtt_pub(stack, &ns(1), "esp32-1", &t1, &r.sign(d1.key()))?;
    *attacks.entry("id_mismatch".into()).or_default() += 1;
    // Unenrolled device (a valid certificate, a self-made key).
    let mut d9 = SimDevice::from_seed(TESTBED_UNENROLLED, 9);
    for _ in 0..2 {
        let (t, b) = d9.publish(now_ms());
        mqtt_pub(stack, &ns(3), TESTBED_UNENROLLED, &t, &b)?;
    }
    *attacks.entry("unenrolled".into()).or_default() += 2;
    // Out-of-range values from a compromised device.
    let mut r = d2.reading(now_ms());
    r.sensors.insert("temperature".into(), 150.0);
    mqtt_pub(stack, &ns(2), "esp32-2", &topic(&d2.id), &r.sign(d2.key()))?;
    *attacks.entry("out_of_range".into()).or_default() += 1;
    sent += 6;

    // Wait until the guard saw everything.
    let want = before["received"].as_u64().unwrap_or(0) + sent;
    let t0 = Instant::now();
    let after = loop {
        let s = device_stats(stack)?;
        if s["received"].as_u64().unwrap_or(0) >= want || t0.elapsed() > Duration::from_secs(10) {
            break s;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let delta = |k: &str| after[k].as_u64().unwrap_or(0) - before[k].as_u64().unwrap_or(0);
    let mut got = refused(&after);
    for (k, n) in refused(&before) {
        *got.entry(k).or_default() -= n;
    }
    got.retain(|_, n| *n > 0);
    let mut rows = Vec::new();
    let mut row = |attack, device: &str, reason: &str, n: u64| {
        let seen = got.get(reason).copied().unwrap_or(0);
        rows.push(Row {
            attack,
            device: device.into(),
            expected: format!("refused {reason} ×{n}"),
            observed: format!("refused {reason} ×{seen}"),
            ok: seen == n,
        });
    };
    row("replayed telemetry", "esp32-1", "replay", 1);
    row("forged signature", "esp32-1", "bad_signature", 1);
    row("unenrolled device", TESTBED_UNENROLLED, "unenrolled", 2);
    row("out-of-range sensor values", "esp32-2", "out_of_range", 1);
    row(
        "id mismatch (lowers esp32-1's trust)",
        "esp32-1",
        "id_mismatch",
        1,
    );
    let (received, accepted) = (delta("received"), delta("accepted"));
    let refused_total: u64 = got.values().sum();
    if received != sent || accepted != valid || received != accepted + refused_total {
        failures.push(format!(
            "devices: sent {sent} (valid {valid}), the guard received {received}, accepted {accepted}, refused {refused_total}"
        ));
    }
    if got != attacks {
        failures.push(format!(
            "devices: refused {got:?}, the attacks were {attacks:?}"
        ));
    }

    // A command burst to the low-trust device.
    let c = certs(stack);
    let signer = tad_bus::Signer::from_files(
        &c.join(format!("nodes/{DASHBOARD_ID}.pem")),
        &c.join(format!("nodes/{DASHBOARD_ID}.key")),
    )?;
    let req_topic = wt::device_requests(GATEWAY_ID, DASHBOARD_ID);
    for n in 0..5 {
        let req = DeviceCommandRequest {
            v: SCHEMA_VERSION,
            id: format!("demo-burst-{n}"),
            device_id: "esp32-1".into(),
            command: DeviceCommandSpec::Reboot {},
            issued_by: "demo".into(),
            issued_at_ms: now_ms(),
        };
        mqtt_pub(
            stack,
            testbed::NS_MONITOR,
            DASHBOARD_ID,
            &req_topic,
            &signer.sign(&req),
        )?;
    }
    let before_cmd = refused_commands(&after);
    let t0 = Instant::now();
    let low = loop {
        let s = device_stats(stack)?;
        let n = refused_commands(&s).saturating_sub(before_cmd);
        if n >= 5 || t0.elapsed() > Duration::from_secs(10) {
            break n;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    rows.push(Row {
        attack: "command burst to a low-trust device",
        device: "esp32-1".into(),
        expected: "5 refused low_trust".into(),
        observed: format!("{low} refused low_trust"),
        ok: low == 5,
    });

    // The telnet listener found by the scan (every 10 s).
    let telnet = mqtt_wait(
        stack,
        &wt::devices_vulns(GATEWAY_ID),
        Duration::from_secs(25),
        |l| {
            serde_json::from_str::<DeviceVulnReport>(l).is_ok_and(|r| {
                r.device_id == TELNET_DEVICE.1 && r.findings.iter().any(|f| f.service == "telnet")
            })
        },
    )?;
    rows.push(Row {
        attack: "device with telnet open",
        device: TELNET_DEVICE.1.into(),
        expected: "scan finding telnet 2323/tcp, critical".into(),
        observed: match &telnet {
            Some(_) => "finding telnet 2323/tcp, critical".into(),
            None => "no finding within 25 s".into(),
        },
        ok: telnet.is_some(),
    });
    for r in rows.iter().filter(|r| !r.ok) {
        failures.push(format!(
            "devices: {}: expected {}, saw {}",
            r.attack, r.expected, r.observed
        ));
    }
    Ok(rows)
}

fn refused_commands(stats: &serde_json::Value) -> u64 {
    stats["commands_refused"]["low_trust"].as_u64().unwrap_or(0)
}

/// Prints the rows as a table.
pub fn print(rows: &[Row]) {
    println!("\ndevice layer (issue 17):");
    println!(
        "{:<38} {:<10} {:<40} {:<40} ok",
        "attack", "device", "expected", "observed"
    );
    for r in rows {
        println!(
            "{:<38} {:<10} {:<40} {:<40} {}",
            r.attack,
            r.device,
            r.expected,
            r.observed,
            if r.ok { "yes" } else { "NO" }
        );
    }
}
