//! Attach test: the XDP program on a real veth interface between two network
//! namespaces this test creates (and always removes). Real packets cross; a
//! source blocked from userspace stops getting through, unblocked it passes
//! again, and its flow is read back from the map. Needs root.

use std::{
    fs::File,
    os::fd::AsRawFd,
    process::{Command, Stdio},
};

use aya::programs::{Xdp, XdpMode};
use fw_common::{
    counters::CounterSlot,
    filter::BlockEntry,
    flow::{FAMILY_V4, proto, v4_mapped},
    maps as m,
};
use fw_testkit::*;

/// Two namespaces joined by a veth pair; removed on drop (also on panic).
struct Pair {
    a: String,
    b: String,
}

impl Pair {
    fn new(tag: &str) -> Pair {
        let id = std::process::id();
        let pair = Pair {
            a: format!("tad-at-{tag}-{id}-a"),
            b: format!("tad-at-{tag}-{id}-b"),
        };
        for ns in [&pair.a, &pair.b] {
            sh(&["ip", "netns", "add", ns]);
        }
        sh(&[
            "ip", "link", "add", "veth-at", "netns", &pair.a, "type", "veth", "peer", "name",
            "veth-at", "netns", &pair.b,
        ]);
        for (ns, addr) in [(&pair.a, "192.0.2.1/24"), (&pair.b, "192.0.2.2/24")] {
            sh(&["ip", "-n", ns, "addr", "add", addr, "dev", "veth-at"]);
            sh(&["ip", "-n", ns, "link", "set", "veth-at", "up"]);
            sh(&["ip", "-n", ns, "link", "set", "lo", "up"]);
        }
        pair
    }

    /// One ping from A to B; whether a reply came back.
    fn ping(&self) -> bool {
        Command::new("ip")
            .args([
                "netns",
                "exec",
                &self.a,
                "ping",
                "-c",
                "1",
                "-W",
                "1",
                "-q",
                "192.0.2.2",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .expect("run ping (iputils-ping)")
            .success()
    }
}

impl Drop for Pair {
    fn drop(&mut self) {
        for ns in [&self.a, &self.b] {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
    }
}

fn sh(args: &[&str]) {
    let st = Command::new(args[0])
        .args(&args[1..])
        .status()
        .expect(args[0]);
    assert!(st.success(), "{args:?} failed");
}

/// Loads the program and attaches it to `veth-at` inside namespace `ns` (from a
/// thread that entered the namespace, so the interface name resolves there).
fn load_in(ns: &str, mode: XdpMode) -> Harness {
    let path = format!("/run/netns/{ns}");
    std::thread::scope(|s| {
        s.spawn(|| {
            let f = File::open(&path).expect("namespace file");
            // SAFETY: setns on this thread only; the fd is valid.
            let rc = unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) };
            assert_eq!(rc, 0, "setns into {ns}");
            let mut h = Harness::load();
            let prog: &mut Xdp = h.ebpf.program_mut(m::PROGRAM).unwrap().try_into().unwrap();
            prog.attach("veth-at", mode).expect("attach XDP to veth-at");
            h
        })
        .join()
        .expect("loader thread")
    })
}

fn block_unblock_cycle(mode: XdpMode, tag: &str) {
    let pair = Pair::new(tag);
    assert!(pair.ping(), "path works before the program is attached");
    let mut h = load_in(&pair.b, mode);
    assert!(pair.ping(), "the program passes unlisted sources");

    h.block(
        "192.0.2.1/32",
        BlockEntry {
            reason: 1,
            ..Default::default()
        },
    );
    let dropped_before = h.counter(CounterSlot::DropBlocklist).packets;
    assert!(!pair.ping(), "a blocked source gets no reply");
    assert!(
        h.counter(CounterSlot::DropBlocklist).packets > dropped_before,
        "drops counted"
    );

    h.unblock("192.0.2.1/32");
    assert!(pair.ping(), "unblocked, the source passes again");

    // The ICMP flow between the two hosts, seen on B's ingress (requests from A).
    let flows = h.flows();
    let icmp = flows
        .iter()
        .find(|(k, ..)| {
            k.proto == proto::ICMP
                && k.family == FAMILY_V4
                && k.addr_a == v4_mapped([192, 0, 2, 1])
                && k.addr_b == v4_mapped([192, 0, 2, 2])
        })
        .expect("ICMP flow from 192.0.2.1 recorded");
    let st = &icmp.1;
    // Two pings passed while attached (before the block and after the unblock); the
    // blocked one was dropped before flow accounting. Echo requests: 84-byte IP
    // packets. Replies leave through B's egress, which XDP does not see.
    assert_eq!(st.dir[0].packets, 2, "{st:?}");
    assert_eq!(st.dir[0].bytes, 2 * 84);
    assert_eq!(st.dir[0].icmp_type_plus1, 9, "echo request");
    drop(h);
    drop(pair);
}

#[test]
fn native_mode_blocks_and_unblocks_real_traffic() {
    block_unblock_cycle(XdpMode::Driver, "drv");
}

#[test]
fn skb_mode_blocks_and_unblocks_real_traffic() {
    block_unblock_cycle(XdpMode::Skb, "skb");
}
