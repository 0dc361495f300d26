//! Active vulnerability check (seed 003's scanner, issue 17 item 6): a TCP connect
//! scan of a device's address for services that should never be open on an IoT
//! device, a [`ScanReport`] naming each dangerous one, and the vulnerability score
//! the trust ledger takes ([`crate::TrustLedger::set_vulnerability`], weight 0.3 in
//! seed 003's `0.5·behaviour + 0.3·vulnerability + 0.2·reputation`).
//!
//! # Scan
//! A full TCP handshake (`connect(2)` with a timeout, [`ScanConfig::connect_timeout_ms`])
//! to every port of [`ScanConfig::ports`], [`ScanConfig::parallel`] at a time:
//! open = the handshake completed; refused or timed out = not open. No raw
//! sockets, so it needs no privilege and works through any routing; it is what
//! nmap calls a connect scan (`-sT`). UDP services (SSDP on 1900/udp) are not
//! probed: UPnP is flagged by its TCP control ports (1900, 5000, 49152).
//! An open 1883 gets one more probe: an MQTT 3.1.1 CONNECT without credentials
//! (OASIS MQTT 3.1.1 §3.1, §3.2): CONNACK return code 0 means the broker takes
//! anonymous clients (critical); anything else means it asks for authentication
//! (low: plaintext MQTT all the same).
//!
//! # Score
//! `score = max(0, 100 − Σ penalty(severity))` over the findings, with penalties
//! critical 60, high 30, medium 15, low 5: one telnet port alone gives 40, which
//! with clean behaviour and reputation makes trust `min(100, 50 + 12 + 20) = 82`
//! (normal) and two critical services give 0 → trust 70 (warning). A scan alone
//! never takes a device below "warning" (see [`crate::trust`]).

use std::{
    collections::BTreeMap,
    io::{Read, Write},
    net::{IpAddr, SocketAddr, TcpStream},
    time::Duration,
};

use serde::{Deserialize, Serialize};

use crate::ids::DeviceId;

/// How dangerous an open service is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    Low,
    Medium,
    High,
    Critical,
}

impl Severity {
    /// Points taken off the vulnerability score (module docs).
    pub fn penalty(self) -> f64 {
        match self {
            Severity::Low => 5.0,
            Severity::Medium => 15.0,
            Severity::High => 30.0,
            Severity::Critical => 60.0,
        }
    }
}

/// The dangerous TCP ports, with service name, severity and why.
pub const DANGEROUS: &[(u16, &str, Severity, &str)] = &[
    (
        21,
        "ftp",
        Severity::High,
        "FTP: plaintext credentials, often anonymous",
    ),
    (
        23,
        "telnet",
        Severity::Critical,
        "telnet: plaintext remote shell (Mirai's way in)",
    ),
    (
        2323,
        "telnet",
        Severity::Critical,
        "telnet on the alternative port (Mirai scans it)",
    ),
    (1883, "mqtt", Severity::Low, "plaintext MQTT"),
    (
        1900,
        "upnp",
        Severity::High,
        "UPnP: unauthenticated port mapping and device control",
    ),
    (5000, "upnp", Severity::High, "UPnP control port"),
    (49152, "upnp", Severity::High, "UPnP control port"),
    (
        5555,
        "adb",
        Severity::Critical,
        "Android Debug Bridge: unauthenticated root shell",
    ),
    (
        7547,
        "tr-069",
        Severity::High,
        "TR-069 CWMP management (exploited by Mirai variants)",
    ),
    (6668, "tuya", Severity::Medium, "local control protocol"),
    (80, "http", Severity::Medium, "plaintext web interface"),
];

/// Scanner settings (`[devices.scan]`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ScanConfig {
    /// Scan at all.
    pub enabled: bool,
    /// Device → address to scan (the registry holds keys, not addresses).
    pub addresses: BTreeMap<DeviceId, IpAddr>,
    /// Ports probed (default: every port of [`DANGEROUS`] plus 22 and 443).
    pub ports: Vec<u16>,
    /// Rescan every device this often, ms (a new device is scanned at once).
    pub interval_ms: u64,
    /// Connect timeout per port, ms.
    pub connect_timeout_ms: u64,
    /// Ports probed at the same time.
    pub parallel: usize,
}

impl Default for ScanConfig {
    fn default() -> Self {
        let mut ports: Vec<u16> = DANGEROUS.iter().map(|d| d.0).collect();
        ports.extend([22, 443]);
        ports.sort_unstable();
        ScanConfig {
            enabled: false,
            addresses: BTreeMap::new(),
            ports,
            interval_ms: 3_600_000,
            connect_timeout_ms: 500,
            parallel: 16,
        }
    }
}

impl ScanConfig {
    /// Problems with the values, each naming its key.
    pub fn check(&self) -> Vec<String> {
        let mut p = Vec::new();
        if self.ports.is_empty() || self.ports.contains(&0) {
            p.push("devices.scan.ports: must be non-empty ports 1..=65535".into());
        }
        if !(10..=10_000).contains(&self.connect_timeout_ms) {
            p.push(format!(
                "devices.scan.connect_timeout_ms {}: must be in 10..=10000 (ms)",
                self.connect_timeout_ms
            ));
        }
        if self.interval_ms < 10_000 {
            p.push(format!(
                "devices.scan.interval_ms {}: at least 10000 (ms)",
                self.interval_ms
            ));
        }
        if !(1..=256).contains(&self.parallel) {
            p.push(format!(
                "devices.scan.parallel {}: must be in 1..=256",
                self.parallel
            ));
        }
        p
    }
}

/// One dangerous open service.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Finding {
    pub port: u16,
    /// Always `tcp` for this scanner.
    pub proto: String,
    pub service: String,
    pub severity: Severity,
    pub why: String,
}

impl Finding {
    /// `"<port>/<proto> <service>: <why>"`, the form the trust ledger records.
    pub fn label(&self) -> String {
        format!(
            "{}/{} {}: {}",
            self.port, self.proto, self.service, self.why
        )
    }
}

/// The result of one scan.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ScanReport {
    pub device_id: DeviceId,
    pub addr: IpAddr,
    /// When it finished, Unix ms.
    pub at_ms: u64,
    /// Every open port, ascending.
    pub open_ports: Vec<u16>,
    pub findings: Vec<Finding>,
    /// 0..100, 100 = nothing dangerous open (module docs).
    pub score: f64,
}

/// The score of `findings` (module docs).
pub fn score(findings: &[Finding]) -> f64 {
    (100.0 - findings.iter().map(|f| f.severity.penalty()).sum::<f64>()).max(0.0)
}

/// Whether a TCP handshake to `addr` completes within `timeout`.
pub fn tcp_open(addr: SocketAddr, timeout: Duration) -> bool {
    TcpStream::connect_timeout(&addr, timeout).is_ok()
}

/// MQTT 3.1.1 CONNECT without credentials (§3.1): `Some(true)` when the broker
/// answers CONNACK return code 0 (accepts anonymous clients), `Some(false)` for
/// any other CONNACK, `None` when it does not speak MQTT within `timeout`.
pub fn mqtt_anonymous(addr: SocketAddr, timeout: Duration) -> Option<bool> {
    let mut s = TcpStream::connect_timeout(&addr, timeout).ok()?;
    s.set_read_timeout(Some(timeout)).ok()?;
    s.set_write_timeout(Some(timeout)).ok()?;
    // Fixed header 0x10, remaining length 17; variable header (10 bytes): protocol
    // name "MQTT", level 4, flags 0x02 (clean session), keep alive 10 s; payload
    // (7 bytes): client id "tadsc".
    let pkt: [u8; 19] = [
        0x10, 17, 0, 4, b'M', b'Q', b'T', b'T', 4, 0x02, 0, 10, 0, 5, b't', b'a', b'd', b's', b'c',
    ];
    s.write_all(&pkt).ok()?;
    let mut ack = [0u8; 4];
    s.read_exact(&mut ack).ok()?;
    (ack[0] == 0x20 && ack[1] == 2).then_some(ack[3] == 0)
}

/// Scans `addr` (device `id`) with `cfg` (module docs). Blocking: at most about
/// `ports / parallel × connect_timeout_ms` ms.
pub fn scan(id: &DeviceId, addr: IpAddr, cfg: &ScanConfig, now_ms: u64) -> ScanReport {
    let timeout = Duration::from_millis(cfg.connect_timeout_ms);
    let mut ports = cfg.ports.clone();
    ports.sort_unstable();
    ports.dedup();
    let mut open = Vec::new();
    for chunk in ports.chunks(cfg.parallel.max(1)) {
        let found: Vec<u16> = std::thread::scope(|s| {
            let hs: Vec<_> = chunk
                .iter()
                .map(|&p| s.spawn(move || tcp_open(SocketAddr::new(addr, p), timeout).then_some(p)))
                .collect();
            hs.into_iter()
                .filter_map(|h| h.join().ok().flatten())
                .collect()
        });
        open.extend(found);
    }
    open.sort_unstable();
    let mut findings = Vec::new();
    for &p in &open {
        let Some(&(_, service, sev, why)) = DANGEROUS.iter().find(|d| d.0 == p) else {
            continue;
        };
        let (severity, why) = if service == "mqtt" {
            match mqtt_anonymous(SocketAddr::new(addr, p), timeout) {
                Some(true) => (
                    Severity::Critical,
                    "MQTT broker accepts anonymous clients (CONNACK 0 without credentials)"
                        .to_string(),
                ),
                Some(false) => (sev, format!("{why}, authentication required")),
                None => (sev, format!("{why} (did not answer an MQTT CONNECT)")),
            }
        } else {
            (sev, why.to_string())
        };
        findings.push(Finding {
            port: p,
            proto: "tcp".into(),
            service: service.into(),
            severity,
            why,
        });
    }
    ScanReport {
        device_id: id.clone(),
        addr,
        at_ms: now_ms,
        open_ports: open,
        score: score(&findings),
        findings,
    }
}

/// When each device is due for a scan: a new one at once, then every
/// `interval_ms` after its last scan.
#[derive(Clone, Debug, Default)]
pub struct Schedule {
    last_ms: BTreeMap<DeviceId, u64>,
}

impl Schedule {
    /// The devices of `cfg.addresses` due at `now_ms`, marked as scanned then.
    pub fn due(&mut self, cfg: &ScanConfig, now_ms: u64) -> Vec<(DeviceId, IpAddr)> {
        if !cfg.enabled {
            return Vec::new();
        }
        let mut out = Vec::new();
        for (id, addr) in &cfg.addresses {
            let due = self
                .last_ms
                .get(id)
                .is_none_or(|t| now_ms.saturating_sub(*t) >= cfg.interval_ms);
            if due {
                self.last_ms.insert(id.clone(), now_ms);
                out.push((id.clone(), *addr));
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use std::net::{Ipv4Addr, TcpListener};

    use super::*;

    fn cfg_for(ports: Vec<u16>) -> ScanConfig {
        ScanConfig {
            enabled: true,
            ports,
            connect_timeout_ms: 300,
            ..ScanConfig::default()
        }
    }

    /// A listener on a free loopback port; returns it and its port.
    fn listen() -> (TcpListener, u16) {
        let l = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
        let p = l.local_addr().unwrap().port();
        (l, p)
    }

    #[test]
    fn an_open_telnet_port_is_critical_and_lowers_the_score() {
        // Port 23 itself is privileged and may be taken: listen on 2323 when free,
        // else check the same rule through a free port mapped to telnet.
        let id: DeviceId = "esp32-1".parse().unwrap();
        let lo = IpAddr::V4(Ipv4Addr::LOCALHOST);
        let Ok(telnet) = TcpListener::bind((Ipv4Addr::LOCALHOST, 2323)) else {
            panic!("loopback port 2323 is taken: free it to run this test");
        };
        let (_other, other) = listen();
        let (closed_l, closed) = listen();
        drop(closed_l);
        let r = scan(&id, lo, &cfg_for(vec![2323, other, closed]), 5);
        let mut want = vec![2323, other];
        want.sort_unstable();
        assert_eq!(r.open_ports, want);
        assert_eq!(r.findings.len(), 1, "{:?}", r.findings);
        assert_eq!(
            (r.findings[0].port, r.findings[0].service.as_str()),
            (2323, "telnet")
        );
        assert_eq!(r.findings[0].severity, Severity::Critical);
        assert_eq!(r.score, 100.0 - Severity::Critical.penalty());
        drop(telnet);
        let r = scan(&id, lo, &cfg_for(vec![2323]), 6);
        assert!(r.open_ports.is_empty() && r.findings.is_empty());
        assert_eq!(r.score, 100.0);
    }

    #[test]
    fn mqtt_probe_tells_anonymous_from_authenticated() {
        for (rc, anonymous) in [(0u8, true), (5u8, false)] {
            let (l, p) = listen();
            let t = std::thread::spawn(move || {
                let (mut s, _) = l.accept().unwrap();
                let mut hdr = [0u8; 2];
                s.read_exact(&mut hdr).unwrap();
                let mut rest = vec![0u8; hdr[1] as usize];
                s.read_exact(&mut rest).unwrap();
                assert_eq!(hdr[0], 0x10, "a CONNECT");
                assert_eq!(&rest[2..6], b"MQTT");
                s.write_all(&[0x20, 2, 0, rc]).unwrap();
            });
            let got = mqtt_anonymous(
                SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), p),
                Duration::from_secs(2),
            );
            t.join().unwrap();
            assert_eq!(got, Some(anonymous), "return code {rc}");
        }
    }

    #[test]
    fn score_and_trust_follow_the_documented_arithmetic() {
        let f = |s| Finding {
            port: 1,
            proto: "tcp".into(),
            service: "x".into(),
            severity: s,
            why: String::new(),
        };
        assert_eq!(score(&[]), 100.0);
        assert_eq!(score(&[f(Severity::Critical)]), 40.0);
        assert_eq!(score(&[f(Severity::Critical), f(Severity::Critical)]), 0.0);
        assert_eq!(score(&[f(Severity::High), f(Severity::Low)]), 65.0);
        let dir = tempfile::tempdir().unwrap();
        let mut ledger = crate::TrustLedger::open(crate::TrustConfig {
            state_file: dir.path().join("t.json"),
            ..Default::default()
        })
        .unwrap();
        let id: DeviceId = "d".parse().unwrap();
        let e = ledger.set_vulnerability(&id, 40.0, vec!["23/tcp telnet".into()], 1);
        // T = min(B, 0.5·100 + 0.3·40 + 0.2·100) = 82.
        assert!((e.new - 82.0).abs() < 1e-9, "{e:?}");
        let e = ledger.set_vulnerability(&id, 0.0, vec![], 2);
        assert!((e.new - 70.0).abs() < 1e-9, "{e:?}");
    }

    #[test]
    fn new_devices_are_due_at_once_then_on_the_interval() {
        let mut cfg = cfg_for(vec![23]);
        cfg.interval_ms = 10_000;
        cfg.addresses
            .insert("a".parse().unwrap(), IpAddr::V4(Ipv4Addr::LOCALHOST));
        let mut s = Schedule::default();
        assert_eq!(s.due(&cfg, 1000).len(), 1);
        assert!(s.due(&cfg, 5000).is_empty());
        cfg.addresses
            .insert("b".parse().unwrap(), IpAddr::V4(Ipv4Addr::LOCALHOST));
        let d = s.due(&cfg, 6000);
        assert_eq!(d.len(), 1);
        assert_eq!(d[0].0.as_str(), "b");
        assert_eq!(s.due(&cfg, 11_000).len(), 1);
        cfg.enabled = false;
        assert!(s.due(&cfg, 100_000).is_empty());
    }
}
