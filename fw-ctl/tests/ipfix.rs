//! The gateway's IPFIX export (`fw_ctl::daemon::ipfix`) checked by a real
//! collector: nfdump's `nfcapd` (Debian package `nfdump`, installed by `cargo
//! xtask setup`) listens on loopback, stores what it decodes, and `nfdump -o json`
//! reads it back. The test compares the collector's flows with the records the
//! gateway exported: the flow count (one uniflow per direction with packets, also
//! nfcapd's own `Flows:` total and its sequence-error count), and per flow the
//! packets, bytes, addresses, ports, protocol, ICMP type/code, VLAN, TCP flags and
//! start/end times. No root needed; the collector is killed by PID on every exit.
//!
//! `the_daemon_exports_what_it_meters` runs the whole path as root: `fw-ctl run`
//! with `[ipfix] collector` in the gateway namespace (tests/ctl), pings through
//! the XDP program, and nfcapd in the same namespace; the collector's flows must
//! be the daemon's exported flows (count from its status file, packets, bytes,
//! ICMP type of each).

mod ctl;

use std::{
    collections::BTreeMap,
    net::{IpAddr, UdpSocket},
    path::Path,
    process::{Child, Command, Stdio},
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use ctl::wait_for;
use fw_ctl::{config::Ipfix, daemon::ipfix::IpfixExporter};
use tad_wire::{DirCounters, EndReason, FlowRecord};

/// nfcapd on 127.0.0.1:`port`, writing into `dir`; SIGKILLed on drop if still
/// running.
struct Collector {
    child: Option<Child>,
    port: u16,
    log: std::path::PathBuf,
}

impl Collector {
    /// In this network namespace on a free port, or in namespace `netns` (made by
    /// the test, so nothing else listens there) on the IANA IPFIX port 4739.
    fn start(dir: &Path, netns: Option<&str>) -> Collector {
        let port = match netns {
            Some(_) => 4739,
            // A free port: bind, note it, release it for nfcapd.
            None => UdpSocket::bind("127.0.0.1:0")
                .unwrap()
                .local_addr()
                .unwrap()
                .port(),
        };
        let flows = dir.join("flows");
        std::fs::create_dir_all(&flows).unwrap();
        let log = dir.join("nfcapd.log");
        let out = std::fs::File::create(&log).unwrap();
        // nsenter execs nfcapd: the child's PID is nfcapd's.
        let mut cmd = match netns {
            Some(ns) => {
                let mut c = Command::new("nsenter");
                c.arg(format!("--net=/run/netns/{ns}")).arg("nfcapd");
                c
            }
            None => Command::new("nfcapd"),
        };
        let child = cmd
            .args(["-b", "127.0.0.1", "-p", &port.to_string(), "-w"])
            .arg(&flows)
            .args(["-t", "3600"])
            .stdin(Stdio::null())
            .stdout(out.try_clone().unwrap())
            .stderr(out)
            .spawn()
            .expect("nfcapd (Debian package nfdump; `cargo xtask setup` installs it)");
        let mut c = Collector {
            child: Some(child),
            port,
            log,
        };
        wait_for(Duration::from_secs(10), || {
            if let Ok(Some(st)) = c.child.as_mut().unwrap().try_wait() {
                panic!("nfcapd exited ({st}): {}", c.log_text());
            }
            c.rx_queue().map(|_| ())
        })
        .unwrap_or_else(|| panic!("nfcapd does not listen on {port}: {}", c.log_text()));
        c
    }

    /// Bytes waiting in nfcapd's socket (`/proc/<pid>/net/udp`: its namespace's
    /// table); `None` while it is not bound.
    fn rx_queue(&self) -> Option<u64> {
        let pid = self.child.as_ref()?.id();
        udp_queue(&format!("/proc/{pid}/net/udp"), self.port)
    }

    /// Waits until nfcapd has read every datagram sent to it, then stops it.
    fn drain_and_stop(&mut self) -> String {
        wait_for(Duration::from_secs(10), || {
            (self.rx_queue()? == 0).then_some(())
        })
        .expect("nfcapd reads what was sent");
        self.stop()
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// SIGTERM (nfcapd then closes its file) and wait; the log afterwards.
    fn stop(&mut self) -> String {
        let mut child = self.child.take().expect("running");
        // SAFETY: kill(2) on the PID of the child this test started.
        unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
        let exited = wait_for(Duration::from_secs(10), || child.try_wait().ok().flatten());
        if exited.is_none() {
            let _ = child.kill();
            let _ = child.wait();
            panic!("nfcapd did not stop on SIGTERM: {}", self.log_text());
        }
        self.log_text()
    }
}

impl Drop for Collector {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// The receive queue (bytes not yet read) of the UDP socket bound to
/// 127.0.0.1:`port`, from a `/proc/.../net/udp` table; `None` when no socket is
/// bound there.
fn udp_queue(table: &str, port: u16) -> Option<u64> {
    let text = std::fs::read_to_string(table).ok()?;
    let local = format!("0100007F:{port:04X}");
    text.lines().skip(1).find_map(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        (f.get(1) == Some(&local.as_str()))
            .then(|| f.get(4)?.split_once(':'))
            .flatten()
            .and_then(|(_, rx)| u64::from_str_radix(rx, 16).ok())
    })
}

fn dir(packets: u64, bytes: u64, flags: u8, icmp: Option<(u8, u8)>) -> DirCounters {
    DirCounters {
        packets,
        bytes,
        tcp_flags_or: flags,
        icmp,
        ..Default::default()
    }
}

/// The gateway's records: IPv4 and IPv6, TCP, UDP, ICMP, ICMPv6, every end
/// reason, answered and unanswered flows, VLAN-tagged and not; enough of them
/// that the 512-byte messages split them.
fn records(now_ms: u64) -> Vec<FlowRecord> {
    let reasons = [
        EndReason::IdleTimeout,
        EndReason::ActiveTimeout,
        EndReason::EndOfFlow,
        EndReason::ForcedEnd,
    ];
    (0..48u64)
        .map(|i| {
            let v6 = i % 3 == 0;
            let (src, dst): (IpAddr, IpAddr) = if v6 {
                (
                    format!("2001:db8::{:x}", i + 1).parse().unwrap(),
                    "2001:db8:1::53".parse().unwrap(),
                )
            } else {
                (
                    format!("198.51.100.{}", i + 1).parse().unwrap(),
                    format!("203.0.113.{}", 200 + i % 5).parse().unwrap(),
                )
            };
            let kind = i % 4;
            let (proto, sport, dport, fwd, bwd) = match kind {
                // TCP, answered.
                0 => (
                    6,
                    40_000 + i as u16,
                    22,
                    dir(10 + i, 800 + 13 * i, 0x1b, None),
                    dir(8 + i, 4000 + 7 * i, 0x1a, None),
                ),
                // TCP SYN, unanswered: only the forward direction.
                1 => (
                    6,
                    50_000 + i as u16,
                    443,
                    dir(1, 60, 0x02, None),
                    dir(0, 0, 0, None),
                ),
                // UDP, answered.
                2 => (17, 5353, 53, dir(1, 73, 0, None), dir(1, 150 + i, 0, None)),
                // ICMP / ICMPv6 echo and reply.
                _ => {
                    let (p, req, rep) = if v6 { (58, 128, 129) } else { (1, 8, 0) };
                    (
                        p,
                        0,
                        0,
                        dir(3, 252, 0, Some((req, 0))),
                        dir(3, 252, 0, Some((rep, 0))),
                    )
                }
            };
            FlowRecord {
                src,
                dst,
                sport,
                dport,
                proto,
                vlan: if i % 5 == 0 { 100 + i as u16 } else { 0 },
                start_ms: now_ms - 60_000 + i * 1_000,
                duration_us: 1_500_000 + i * 12_345,
                fwd,
                bwd,
                iat_mean_us: 0.0,
                iat_std_us: 0.0,
                end_reason: reasons[(i % 4) as usize],
            }
        })
        .collect()
}

/// A uniflow as both sides describe it (nfdump's JSON field names in comments).
#[derive(Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Flow {
    /// `src4_addr` / `src6_addr`
    src: String,
    /// `dst4_addr` / `dst6_addr`
    dst: String,
    sport: u16,
    dport: u16,
    proto: u8,
    icmp_type: u8,
    icmp_code: u8,
    /// `src_vlan`
    vlan: u16,
    /// `in_packets`
    packets: u64,
    /// `in_bytes`
    bytes: u64,
    /// `tcp_flags`, "CEUAPRSF" with `.` for unset bits
    tcp_flags: String,
    /// `first`, `last`: UTC, ms
    first: String,
    last: String,
}

/// nfdump's 8-character flag text (`CEUAPRSF`, `.` when unset).
fn flag_text(f: u8) -> String {
    "CEUAPRSF"
        .chars()
        .enumerate()
        .map(|(i, c)| if f & (0x80 >> i) != 0 { c } else { '.' })
        .collect()
}

/// Unix ms as nfdump prints it with TZ=UTC: `2026-12-03T13:32:10.238`.
fn ms_text(ms: u64) -> String {
    let t = UNIX_EPOCH + Duration::from_millis(ms);
    humantime::format_rfc3339_millis(t)
        .to_string()
        .trim_end_matches('Z')
        .to_string()
}

/// What the collector must hold for `recs`: one uniflow per direction with
/// packets, the reverse one with addresses and ports swapped.
fn expected(recs: &[FlowRecord]) -> Vec<Flow> {
    let mut out = Vec::new();
    for r in recs {
        let end = r.start_ms + r.duration_us / 1000;
        for (d, rev) in [(&r.fwd, false), (&r.bwd, true)] {
            if d.packets == 0 {
                continue;
            }
            let (s, t, sp, dp) = if rev {
                (r.dst, r.src, r.dport, r.sport)
            } else {
                (r.src, r.dst, r.sport, r.dport)
            };
            let (it, ic) = d.icmp.unwrap_or((0, 0));
            out.push(Flow {
                src: s.to_string(),
                dst: t.to_string(),
                sport: sp,
                dport: dp,
                proto: r.proto,
                icmp_type: it,
                icmp_code: ic,
                vlan: r.vlan,
                packets: d.packets,
                bytes: d.bytes,
                tcp_flags: flag_text(d.tcp_flags_or),
                first: ms_text(r.start_ms),
                last: ms_text(end),
            });
        }
    }
    out.sort();
    out
}

/// The flows `nfdump -o json` reads from the collector's files.
fn collected(flows_dir: &Path) -> Vec<Flow> {
    let out = Command::new("nfdump")
        .env("TZ", "UTC")
        .arg("-R")
        .arg(flows_dir)
        .args(["-o", "json"])
        .output()
        .expect("nfdump");
    assert!(
        out.status.success(),
        "nfdump: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("nfdump json: {e}: {}", String::from_utf8_lossy(&out.stdout)));
    let s = |r: &serde_json::Value, k: &str| r[k].as_str().map(str::to_owned);
    let n = |r: &serde_json::Value, k: &str| r[k].as_u64().unwrap_or(0);
    let mut flows: Vec<Flow> = v
        .as_array()
        .expect("a JSON array")
        .iter()
        .filter(|r| r["type"] == "FLOW")
        .map(|r| Flow {
            src: s(r, "src4_addr").or(s(r, "src6_addr")).expect("a source"),
            dst: s(r, "dst4_addr")
                .or(s(r, "dst6_addr"))
                .expect("a destination"),
            sport: n(r, "src_port") as u16,
            dport: n(r, "dst_port") as u16,
            proto: n(r, "proto") as u8,
            icmp_type: n(r, "icmp_type") as u8,
            icmp_code: n(r, "icmp_code") as u8,
            vlan: n(r, "src_vlan") as u16,
            packets: n(r, "in_packets"),
            bytes: n(r, "in_bytes"),
            tcp_flags: s(r, "tcp_flags").unwrap_or_else(|| flag_text(0)),
            first: s(r, "first").expect("first"),
            last: s(r, "last").expect("last"),
        })
        .collect();
    flows.sort();
    flows
}

/// nfcapd's own summary line on exit: `Flows: N, ..., Sequence Errors: N, ...`.
fn summary(log: &str) -> BTreeMap<String, u64> {
    let line = log
        .lines()
        .rfind(|l| l.contains("Flows:"))
        .unwrap_or_else(|| panic!("no summary in the nfcapd log: {log}"));
    line.split(',')
        .filter_map(|kv| {
            let (k, v) = kv.rsplit_once(':')?;
            let k = k.rsplit("'").next().unwrap_or(k).trim().to_string();
            Some((k, v.trim().parse().ok()?))
        })
        .collect()
}

#[test]
fn nfcapd_decodes_every_exported_flow() {
    let started = Instant::now();
    let tmp = tempfile::tempdir().unwrap();
    let mut collector = Collector::start(tmp.path(), None);
    let mut exporter = IpfixExporter::from_config(&Ipfix {
        collector: Some(format!("127.0.0.1:{}", collector.port)),
        observation_domain_id: 42,
        template_refresh_s: 60,
        max_message_bytes: 512,
    })
    .unwrap()
    .expect("a collector is configured");

    let now_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    let recs = records(now_ms);
    // Three export passes, as the daemon hands them over poll by poll.
    for chunk in recs.chunks(20) {
        exporter.export(chunk);
    }
    let want = expected(&recs);
    let st = exporter.stats.clone();
    assert_eq!(st.send_errors_total, 0, "{st:?}");
    assert_eq!(
        st.records_sent_total,
        want.len() as u64,
        "one data record per direction with packets"
    );
    assert!(
        st.messages_sent_total > 3,
        "512-byte messages split the passes: {st:?}"
    );

    // Every datagram read by nfcapd (its receive queue empty), then stop it so it
    // closes its file.
    let log = collector.drain_and_stop();

    let sum = summary(&log);
    assert_eq!(
        sum.get("Flows").copied(),
        Some(st.records_sent_total),
        "nfcapd's flow count = the gateway's: {log}"
    );
    assert_eq!(
        sum.get("Sequence Errors").copied(),
        Some(0),
        "sequence numbers count data records: {log}"
    );
    assert_eq!(sum.get("Bad Packets").copied(), Some(0), "{log}");
    assert!(
        log.contains("Observation domain 42"),
        "observation domain id from the config: {log}"
    );

    let got = collected(&tmp.path().join("flows"));
    assert_eq!(got.len(), want.len(), "flow count");
    let packets = |f: &[Flow]| f.iter().map(|f| f.packets).sum::<u64>();
    let bytes = |f: &[Flow]| f.iter().map(|f| f.bytes).sum::<u64>();
    assert_eq!(
        (packets(&got), bytes(&got)),
        (
            recs.iter().map(|r| r.packets()).sum(),
            recs.iter().map(|r| r.fwd.bytes + r.bwd.bytes).sum()
        ),
        "packet and byte totals"
    );
    for (g, w) in got.iter().zip(&want) {
        assert_eq!(g, w, "collector's flow vs the gateway's");
    }
    eprintln!(
        "{} flows in {} messages checked in {:?}",
        got.len(),
        st.messages_sent_total,
        started.elapsed()
    );
}

#[test]
fn the_daemon_exports_what_it_meters() {
    let net = ctl::Net::new("ipfix");
    let gw = ctl::Ctl::new("ipfix", &net.gw);
    let tmp = tempfile::tempdir().unwrap();
    let mut collector = Collector::start(tmp.path(), Some(&net.gw));
    let cfg = ctl::gateway_toml(
        &gw,
        None,
        &format!(
            "[ipfix]\ncollector = \"127.0.0.1:{}\"\nobservation_domain_id = 7\n",
            collector.port
        ),
    );
    let cfg = cfg.to_str().unwrap();
    let mut d = ctl::Proc(Some(gw.spawn(&["--config", cfg, "run"], true)));
    wait_for(Duration::from_secs(20), || {
        fw_ctl::daemon::DaemonStatus::load(&gw.status_path())
            .ok()?
            .ipfix
    })
    .unwrap_or_else(|| panic!("daemon did not start with IPFIX: {}", gw.log()));

    // One ICMP echo flow per peer address.
    let pings = 3;
    for a in ctl::PEER_ADDRS {
        assert!(net.ping(a, pings), "{a} reaches the gateway");
    }
    // Idle timeout 1 s: all three flows exported, then a clean stop.
    let st = wait_for(Duration::from_secs(15), || {
        let st = fw_ctl::daemon::DaemonStatus::load(&gw.status_path()).ok()?;
        (st.records_exported_total >= ctl::PEER_ADDRS.len() as u64).then_some(st)
    })
    .unwrap_or_else(|| panic!("flows not exported: {}", gw.log()));
    assert!(st.records_exported_total >= 3, "{st:?}");
    d.signal(libc::SIGTERM);
    assert_eq!(d.wait(Duration::from_secs(20)), Some(0), "{}", gw.log());
    let st = fw_ctl::daemon::DaemonStatus::load(&gw.status_path()).unwrap();
    let ip = st.ipfix.clone().expect("IPFIX stats in the status file");
    assert_eq!(ip.send_errors_total, 0, "{ip:?}");

    let log = collector.drain_and_stop();
    let sum = summary(&log);
    let got = collected(&tmp.path().join("flows"));
    assert_eq!(
        got.len() as u64,
        ip.records_sent_total,
        "the collector's flow count = the gateway's IPFIX records: {log}"
    );
    assert_eq!(
        sum.get("Flows").copied(),
        Some(ip.records_sent_total),
        "{log}"
    );
    assert_eq!(sum.get("Sequence Errors").copied(), Some(0), "{log}");
    // XDP sees what arrives on gw0: the echo requests. The replies leave through
    // it unseen, so each flow has its forward direction only, one uniflow each.
    assert_eq!(
        got.len() as u64,
        st.records_exported_total,
        "one uniflow per flow the gateway exported: {got:#?}"
    );
    for a in ctl::PEER_ADDRS {
        let f = got
            .iter()
            .find(|f| f.src == a && f.dst == ctl::GW_ADDR)
            .unwrap_or_else(|| panic!("no {a} -> gateway flow in {got:#?}"));
        assert_eq!(
            (f.proto, f.icmp_type, f.icmp_code, f.packets),
            (1, 8, 0, u64::from(pings)),
            "echo requests: {f:?}"
        );
        // ping's default 56 data bytes: 84-byte IP packets.
        assert_eq!(f.bytes, 84 * f.packets, "IP bytes: {f:?}");
        assert!(f.first < f.last, "{f:?}");
    }
}
