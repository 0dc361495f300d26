//! SYN authentication of a protected service (`fw_common::synauth`), executed by
//! the kernel through BPF_PROG_TEST_RUN (needs root): the challenge SYN-ACK the
//! program writes for `XDP_TX` (checked byte by byte and with etherparse's
//! checksums), the client's RST carrying the cookie back (validated with the
//! kernel's own syncookie check), the retransmitted SYN passing, forged RSTs
//! validating nothing, IPv4 and IPv6, observe mode, the fallback rate for SYNs
//! that cannot be answered, and what stays untouched (other ports, established
//! flows, an expired protection).

use etherparse::{NetSlice, SlicedPacket, TransportSlice};
use fw_common::{
    config::{GatewayConfig, MODE_OBSERVE},
    counters::CounterSlot,
    flow::tcp_flags as tf,
    synauth::SynAuthEntry,
};
use fw_testkit::*;

const CLIENT4: &str = "192.0.2.20";
const SERVER4: &str = "192.0.2.10";
const CLIENT6: &str = "2001:db8:20::1";
const SERVER6: &str = "2001:db8:10::1";
const PORT: u16 = 80;

fn protected() -> SynAuthEntry {
    SynAuthEntry::default()
}

fn syn(c: &str, s: &str, v6: bool, sport: u16) -> Vec<u8> {
    if v6 {
        v6_tcp(c, s, sport, PORT, tf::SYN, 0)
    } else {
        v4_tcp(c, s, sport, PORT, tf::SYN, 0)
    }
}

/// The RST a Linux client in SYN-SENT sends for a SYN-ACK whose acknowledgment
/// number `ack` is not acceptable: seq = that number, flag RST only.
fn rst(c: &str, s: &str, v6: bool, sport: u16, seq: u32) -> Vec<u8> {
    let mut f = if v6 {
        v6_tcp(c, s, sport, PORT, tf::RST, 0)
    } else {
        v4_tcp(c, s, sport, PORT, tf::RST, 0)
    };
    let th = if v6 { 14 + 40 } else { 14 + 20 };
    f[th + 4..th + 8].copy_from_slice(&seq.to_be_bytes());
    f
}

/// Checks the challenge frame against the SYN it answers; returns its
/// acknowledgment number (the cookie).
fn check_challenge(syn: &[u8], out: &[u8], v6: bool, sport: u16) -> u32 {
    assert_eq!(
        &out[0..6],
        &syn[6..12],
        "destination MAC = the SYN's source"
    );
    assert_eq!(
        &out[6..12],
        &syn[0..6],
        "source MAC = the SYN's destination"
    );
    let p = SlicedPacket::from_ethernet(out).expect("the challenge parses");
    let (src, dst, pseudo_ok) = match p.net.expect("IP") {
        NetSlice::Ipv4(ip) => {
            let h = ip.header();
            assert!(!v6);
            assert_eq!(h.ihl(), 5);
            assert_eq!(h.total_len(), 40, "no options, no payload");
            let hdr = h.to_header();
            assert_eq!(
                hdr.calc_header_checksum(),
                hdr.header_checksum,
                "IPv4 checksum"
            );
            let TransportSlice::Tcp(t) = p.transport.expect("TCP") else {
                panic!("not TCP")
            };
            let ok = t.calc_checksum_ipv4(hdr.source, hdr.destination).unwrap() == t.checksum();
            (
                std::net::IpAddr::V4(h.source_addr()),
                std::net::IpAddr::V4(h.destination_addr()),
                ok,
            )
        }
        NetSlice::Ipv6(ip) => {
            let h = ip.header();
            assert!(v6);
            assert_eq!(h.payload_length(), 20);
            let hdr = h.to_header();
            let TransportSlice::Tcp(t) = p.transport.expect("TCP") else {
                panic!("not TCP")
            };
            let ok = t.calc_checksum_ipv6(hdr.source, hdr.destination).unwrap() == t.checksum();
            (
                std::net::IpAddr::V6(h.source_addr()),
                std::net::IpAddr::V6(h.destination_addr()),
                ok,
            )
        }
        _ => panic!("not IP"),
    };
    let (c, s) = if v6 {
        (CLIENT6, SERVER6)
    } else {
        (CLIENT4, SERVER4)
    };
    assert_eq!(
        (src.to_string(), dst.to_string()),
        (s.to_string(), c.to_string())
    );
    assert!(pseudo_ok, "TCP checksum");
    let p = SlicedPacket::from_ethernet(out).unwrap();
    let TransportSlice::Tcp(t) = p.transport.unwrap() else {
        unreachable!()
    };
    assert_eq!((t.source_port(), t.destination_port()), (PORT, sport));
    assert!(t.syn() && t.ack() && !t.rst() && !t.fin());
    assert_eq!(t.data_offset(), 5);
    // The acknowledgment does not acknowledge the client's ISN (1 in test frames):
    // a real client answers it with a RST.
    assert_ne!(t.acknowledgment_number(), 2);
    t.acknowledgment_number()
}

#[test]
fn a_challenge_a_returned_cookie_and_the_retransmitted_syn() {
    for v6 in [false, true] {
        let (c, s) = if v6 {
            (CLIENT6, SERVER6)
        } else {
            (CLIENT4, SERVER4)
        };
        let mut h = Harness::load();
        h.protect(s, PORT, protected());
        let first = syn(c, s, v6, 40000);
        let (action, out) = h.run_out(&first);
        assert_eq!(
            action, XDP_TX,
            "v6={v6}: the SYN is answered by the program"
        );
        let cookie = check_challenge(&first, &out, v6, 40000);
        assert_eq!(h.counter(CounterSlot::TxSynAuth).packets, 1);
        assert!(
            h.accounted_flows().is_empty(),
            "a challenged SYN opens no flow"
        );
        assert_eq!(h.validated_until(c), None);

        // A forged RST (wrong cookie) validates nothing and is left to the server.
        assert_eq!(h.run(&rst(c, s, v6, 40000, cookie ^ 0x0100_0000)), XDP_PASS);
        assert_eq!(h.validated_until(c), None);
        assert_eq!(h.counter(CounterSlot::DropSynAuth).packets, 0);

        // The real client's RST carries the cookie: consumed, source validated.
        let before = monotonic_ns();
        assert_eq!(h.run(&rst(c, s, v6, 40000, cookie)), XDP_DROP);
        assert_eq!(h.counter(CounterSlot::DropSynAuth).packets, 1);
        let until = h.validated_until(c).expect("validated");
        let ttl = fw_common::synauth::DEFAULT_VALIDATED_TTL_S as u64 * 1_000_000_000;
        assert!(until >= before + ttl && until <= monotonic_ns() + ttl);

        // Its retransmitted SYN, and its later connections, go to the server.
        assert_eq!(h.run(&first), XDP_PASS);
        assert_eq!(h.run(&syn(c, s, v6, 40001)), XDP_PASS);
        let e = h.syn_auth_entry(s, PORT);
        assert_eq!((e.challenged, e.validated, e.passed), (1, 1, 2));
        assert_eq!(h.accounted_flows().len(), 2);
    }
}

#[test]
fn a_cookie_is_bound_to_its_client() {
    let mut h = Harness::load();
    h.protect(SERVER4, PORT, protected());
    let (_, out) = h.run_out(&syn(CLIENT4, SERVER4, false, 40000));
    let cookie = check_challenge(&syn(CLIENT4, SERVER4, false, 40000), &out, false, 40000);
    // Another source (or port) returning that cookie proves nothing.
    assert_eq!(
        h.run(&rst("192.0.2.21", SERVER4, false, 40000, cookie)),
        XDP_PASS
    );
    assert_eq!(
        h.run(&rst(CLIENT4, SERVER4, false, 40001, cookie)),
        XDP_PASS
    );
    assert_eq!(h.validated_until("192.0.2.21"), None);
    assert_eq!(h.validated_until(CLIENT4), None);
    // So its SYNs are still challenged.
    assert_eq!(
        h.run_out(&syn("192.0.2.21", SERVER4, false, 40000)).0,
        XDP_TX
    );
}

#[test]
fn unprotected_services_established_flows_and_expired_protection_are_untouched() {
    let mut h = Harness::load();
    h.protect(SERVER4, PORT, protected());
    // Another port of the same server.
    assert_eq!(
        h.run(&v4_tcp(CLIENT4, SERVER4, 40000, 443, tf::SYN, 0)),
        XDP_PASS
    );
    // Segments of a connection opened before the protection.
    assert_eq!(
        h.run(&v4_tcp(
            CLIENT4,
            SERVER4,
            40000,
            PORT,
            tf::ACK | tf::PSH,
            100
        )),
        XDP_PASS
    );
    // The server's own packets.
    assert_eq!(
        h.run(&v4_tcp(SERVER4, CLIENT4, PORT, 40000, tf::SYN | tf::ACK, 0)),
        XDP_PASS
    );
    assert_eq!(h.counter(CounterSlot::TxSynAuth).packets, 0);
    // An expired protection.
    h.protect(
        SERVER4,
        PORT,
        SynAuthEntry {
            expires_ns: monotonic_ns() - 1,
            ..protected()
        },
    );
    assert_eq!(h.run(&syn(CLIENT4, SERVER4, false, 40002)), XDP_PASS);
    assert_eq!(h.counter(CounterSlot::TxSynAuth).packets, 0);
}

#[test]
fn observe_mode_counts_what_it_would_challenge() {
    let mut h = Harness::load();
    h.set_config(GatewayConfig {
        mode: MODE_OBSERVE,
        ..Default::default()
    });
    h.protect(SERVER4, PORT, protected());
    assert_eq!(h.run(&syn(CLIENT4, SERVER4, false, 40000)), XDP_PASS);
    assert_eq!(h.counter(CounterSlot::WouldTxSynAuth).packets, 1);
    assert_eq!(h.counter(CounterSlot::TxSynAuth).packets, 0);
}

#[test]
fn syns_that_cannot_be_answered_are_held_to_the_fallback_rate() {
    let mut h = Harness::load();
    h.protect(
        SERVER4,
        PORT,
        SynAuthEntry {
            fallback_pps: 1,
            fallback_burst: 2,
            ..protected()
        },
    );
    // IPv4 with options: the program does not rewrite it.
    let with_options = |sport: u16| {
        let mut f = eth(&[], 0x0800);
        f.extend(ipv4(
            CLIENT4.parse().unwrap(),
            SERVER4.parse().unwrap(),
            6,
            1,
            0,
            &tcp(sport, PORT, tf::SYN, 0),
        ));
        f
    };
    let verdicts: Vec<u32> = (0..4).map(|i| h.run(&with_options(40000 + i))).collect();
    assert_eq!(verdicts, [XDP_PASS, XDP_PASS, XDP_DROP, XDP_DROP]);
    assert_eq!(h.counter(CounterSlot::DropVictimRate).packets, 2);
    assert_eq!(h.syn_auth_entry(SERVER4, PORT).limited, 2);
    // Without a fallback rate they pass.
    h.protect(SERVER4, PORT, protected());
    assert_eq!(h.run(&with_options(40010)), XDP_PASS);
}

/// Two namespaces joined by a veth pair (client side `c`, server side `s`);
/// removed on drop, with every process started in them.
struct Net {
    c: String,
    s: String,
    procs: Vec<std::process::Child>,
}

fn sh(args: &[&str]) {
    let st = std::process::Command::new(args[0])
        .args(&args[1..])
        .status()
        .expect(args[0]);
    assert!(st.success(), "{args:?} failed");
}

impl Net {
    fn new() -> Net {
        let id = std::process::id();
        let n = Net {
            c: format!("tadsa-{id}-c"),
            s: format!("tadsa-{id}-s"),
            procs: Vec::new(),
        };
        for ns in [&n.c, &n.s] {
            sh(&["ip", "netns", "add", ns]);
        }
        sh(&[
            "ip", "link", "add", "veth-sa", "netns", &n.c, "type", "veth", "peer", "name",
            "veth-sa", "netns", &n.s,
        ]);
        for (ns, addr) in [(&n.c, "192.0.2.20/24"), (&n.s, "192.0.2.10/24")] {
            sh(&["ip", "-n", ns, "addr", "add", addr, "dev", "veth-sa"]);
            sh(&["ip", "-n", ns, "link", "set", "veth-sa", "up"]);
            sh(&["ip", "-n", ns, "link", "set", "lo", "up"]);
        }
        n
    }

    fn spawn(&mut self, ns: &str, argv: &[&str]) {
        let mut c = std::process::Command::new("ip");
        c.args(["netns", "exec", ns])
            .args(argv)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null());
        self.procs.push(c.spawn().expect(argv[0]));
    }

    /// Ends every process started with [`Net::spawn`] and waits for it, so
    /// counters read afterwards no longer move.
    fn stop_all(&mut self) {
        for mut p in self.procs.drain(..) {
            let _ = p.kill();
            let _ = p.wait();
        }
    }

    /// Runs `f` on a thread inside namespace `ns`.
    fn within<T: Send>(ns: &str, f: impl FnOnce() -> T + Send) -> T {
        use std::os::fd::AsRawFd;
        let path = format!("/run/netns/{ns}");
        std::thread::scope(|s| {
            s.spawn(|| {
                let file = std::fs::File::open(&path).expect("namespace file");
                // SAFETY: setns on this thread only; the fd is valid.
                let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
                assert_eq!(rc, 0, "setns into {ns}");
                f()
            })
            .join()
            .expect("namespace thread")
        })
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        for p in &mut self.procs {
            let _ = p.kill();
            let _ = p.wait();
        }
        for ns in [&self.c, &self.s] {
            let _ = std::process::Command::new("ip")
                .args(["netns", "del", ns])
                .status();
        }
    }
}

/// The program loaded and attached to `veth-sa` in namespace `ns`, native mode.
fn attached(ns: &str) -> Harness {
    Net::within(ns, || {
        let mut h = Harness::load();
        let prog: &mut aya::programs::Xdp = h
            .ebpf
            .program_mut(fw_common::maps::PROGRAM)
            .unwrap()
            .try_into()
            .unwrap();
        prog.attach("veth-sa", aya::programs::XdpMode::Driver)
            .expect("attach XDP to veth-sa");
        h
    })
}

/// A real client connects to a real server through the program while hping3
/// floods the server with spoofed SYNs (`--rand-source`) and the service is
/// protected: every connection completes, the flood is answered by the program and
/// never reaches the server, and no flooding source is validated.
#[test]
fn real_connections_complete_under_a_spoofed_flood() {
    use std::{
        io::{Read, Write},
        net::{SocketAddr, TcpListener, TcpStream},
        time::Duration,
    };
    const CONNECTIONS: usize = 20;
    let mut net = Net::new();
    let (sname, cname) = (net.s.clone(), net.c.clone());
    // The program on the server's interface in native (driver) mode, as on the
    // testbed's router; native XDP_TX on a veth delivers only while an XDP program
    // runs on the peer, so the client's end gets one too (it passes everything
    // there: nothing is configured).
    let mut h = attached(&sname);
    let _peer = attached(&cname);
    h.protect(SERVER4, PORT, protected());
    // The server: accepts and answers each connection with one byte.
    let listener = Net::within(&sname, || {
        TcpListener::bind((SERVER4, PORT)).expect("bind the server")
    });
    let accepted = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let acc = accepted.clone();
    std::thread::spawn(move || {
        for s in listener.incoming().flatten() {
            acc.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let mut s = s;
            let _ = s.write_all(b"k");
        }
    });
    // The flood: random spoofed sources, ~10,000 SYNs/s.
    net.spawn(
        &cname,
        &[
            "hping3",
            "-q",
            "-S",
            "-p",
            "80",
            "--rand-source",
            "-i",
            "u100",
            SERVER4,
        ],
    );
    std::thread::sleep(Duration::from_millis(500));
    let flood_before = h.counter(CounterSlot::TxSynAuth).packets;
    let ok = Net::within(&cname, || {
        let to: SocketAddr = format!("{SERVER4}:{PORT}").parse().unwrap();
        (0..CONNECTIONS)
            .filter(|_| {
                let Ok(mut s) = TcpStream::connect_timeout(&to, Duration::from_secs(5)) else {
                    return false;
                };
                let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
                let mut b = [0u8; 1];
                s.read_exact(&mut b).is_ok() && &b == b"k"
            })
            .count()
    });
    // Stop the flood, and let packets already in flight through the program,
    // before comparing counters that the program bumps one after the other.
    net.stop_all();
    std::thread::sleep(Duration::from_millis(200));
    let e = h.syn_auth_entry(SERVER4, PORT);
    assert_eq!(
        ok, CONNECTIONS,
        "every connection completes under the flood"
    );
    // hping3 sent thousands of SYNs in the half second before the connections.
    assert!(flood_before > 500, "the flood is answered by the program");
    assert_eq!(e.challenged, h.counter(CounterSlot::TxSynAuth).packets);
    // One challenge answered: the real client; its SYNs then pass.
    assert_eq!(e.validated, 1, "only the real client proved itself");
    assert!(e.passed >= CONNECTIONS as u64);
    assert!(h.validated_until(CLIENT4).is_some());
    // The server saw the client's connections and no flood.
    assert_eq!(
        accepted.load(std::sync::atomic::Ordering::SeqCst),
        CONNECTIONS
    );
}

#[test]
fn port_zero_protects_every_port_of_the_host() {
    let mut h = Harness::load();
    h.protect(SERVER4, 0, protected());
    for port in [22u16, 80, 8883] {
        let f = v4_tcp(CLIENT4, SERVER4, 40000, port, tf::SYN, 0);
        assert_eq!(h.run_out(&f).0, XDP_TX, "port {port}");
    }
    // Another host is not protected.
    assert_eq!(
        h.run(&v4_tcp(CLIENT4, "192.0.2.11", 40000, 80, tf::SYN, 0)),
        XDP_PASS
    );
    assert_eq!(h.syn_auth_entry(SERVER4, 0).challenged, 3);
}
