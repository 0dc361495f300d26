//! Scheduled threat-feed refresh (`[[feeds]]`, `fw_ctl::daemon::feeds`) against the
//! real kernel maps: the XDP program loaded (not attached) with its maps pinned in
//! a private bpffs directory, the daemon's refresher thread on a local file, and a
//! loopback HTTP server for the URL path. Each refresh applies the diff (added,
//! removed, untouched entries keep their expiry), never touches operator or
//! detector blocks, and a failed fetch or a bad file keeps what is enforced.
//! Packets go through BPF_PROG_TEST_RUN to show the effect. Needs root.

use std::{
    io::{Read as _, Write as _},
    net::TcpListener,
    path::Path,
    sync::{Arc, Mutex, atomic::AtomicBool},
    time::Duration,
};

use fw_common::{
    filter::{BlockEntry, BlockReason},
    flow::tcp_flags as tf,
};
use fw_ctl::{
    config::Feed,
    control::{self, Meta},
    daemon::feeds::{self, FeedError, FeedStatus},
    kernel::Pinned,
    lists::{BlockRequest, Lists, Merge, Origin, Strictness},
    state::State,
};
use fw_testkit::*;
use ipnet::IpNet;

const DST: &str = "192.0.2.10";

fn net(s: &str) -> IpNet {
    s.parse().unwrap()
}

fn syn_from(src: &str) -> Vec<u8> {
    v4_tcp(src, DST, 40000, 443, tf::SYN, 0)
}

fn feed(name: &str, source: &str) -> Feed {
    Feed {
        name: name.into(),
        source: source.into(),
        interval_s: 1,
        ttl_s: Some(3600),
        renew: false,
        max_bytes: 1 << 20,
        timeout_s: 5,
    }
}

/// Replaces the file in one rename, so the refresher never reads half of it.
fn write_atomic(path: &Path, text: &str) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

fn entry(maps: &Pinned, s: &str) -> Option<BlockEntry> {
    maps.get_block(&net(s)).unwrap()
}

/// Waits (at most 20 s) until the feed's status satisfies `f`.
fn wait_status(stats: &feeds::Shared, f: impl Fn(&FeedStatus) -> bool) -> FeedStatus {
    for _ in 0..200 {
        let s = stats.lock().unwrap()[0].clone();
        if f(&s) {
            return s;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!(
        "feed status never reached the expected state: {:?}",
        stats.lock().unwrap()[0]
    );
}

fn block(maps: &mut Pinned, sp: &Path, s: &str, origin: Origin, reason: BlockReason) {
    control::block(
        maps,
        Some(sp),
        &[BlockRequest {
            net: net(s),
            ttl: None,
            reason,
            origin,
            rule_id: 0,
        }],
        &Meta {
            text: None,
            by: Some(format!("{origin:?}")),
        },
        Merge::Replace,
        Strictness::Covered,
    )
    .unwrap();
}

#[test]
fn scheduled_refresh_applies_the_diff_and_keeps_blocks_on_failure() {
    let pins = PrivatePins::new(&format!("tadtest-feedrefresh-{}", std::process::id()));
    let h = Harness::load_pinned(&pins, |_| {});
    let dir = tempfile::tempdir().unwrap();
    let sp = dir.path().join("state.json");
    let file = dir.path().join("drop.txt");
    let mut maps = Pinned::open(&pins.0).unwrap();

    // Blocks of other origins on prefixes the feed lists and then drops.
    block(
        &mut maps,
        &sp,
        "203.0.113.0/25",
        Origin::Manual,
        BlockReason::Manual,
    );
    block(
        &mut maps,
        &sp,
        "203.0.113.200/32",
        Origin::Detector,
        BlockReason::PortScan,
    );

    write_atomic(
        &file,
        "# test feed\n198.18.0.1\n198.18.1.0/24 ; SBL1\n2001:db8:bad::/48\n\
         203.0.113.0/25\n203.0.113.200\n",
    );
    let stats: feeds::Shared = Arc::new(Mutex::new(feeds::initial_status(&[feed(
        "drop",
        file.to_str().unwrap(),
    )])));
    let stop = Arc::new(AtomicBool::new(false));
    let thread = {
        let (d, sp, st, stop) = (pins.0.clone(), sp.clone(), stats.clone(), stop.clone());
        let f = vec![feed("drop", file.to_str().unwrap())];
        std::thread::spawn(move || feeds::run(d, sp, f, st, stop))
    };
    struct Stop(Arc<AtomicBool>);
    impl Drop for Stop {
        fn drop(&mut self) {
            self.0.store(true, std::sync::atomic::Ordering::SeqCst);
        }
    }
    let _stop = Stop(stop.clone());

    // First refresh: the feed's new prefixes are blocked, the others' left alone.
    let s = wait_status(&stats, |s| s.refreshes_total >= 1);
    let rep = s.last.unwrap();
    assert_eq!(
        (rep.prefixes, rep.added, rep.held_by_others),
        (5, 3, 2),
        "{rep:?}"
    );
    for p in ["198.18.0.1/32", "198.18.1.0/24", "2001:db8:bad::/48"] {
        let e = entry(&maps, p).unwrap_or_else(|| panic!("{p} blocked"));
        assert_eq!(Origin::from_code(e.origin), Origin::Feed, "{p}");
        assert_eq!(
            BlockReason::from_code(e.reason),
            BlockReason::ThreatFeed,
            "{p}"
        );
        assert_ne!(e.expires_ns, 0, "{p}: ttl_s applies");
    }
    assert_eq!(h.run(&syn_from("198.18.1.77")), XDP_DROP);
    assert_eq!(h.run(&syn_from("198.18.2.2")), XDP_PASS);
    let host_expiry = entry(&maps, "198.18.0.1/32").unwrap().expires_ns;

    // The feed changes: 198.18.1.0/24 and the others' prefixes leave it,
    // 198.18.2.2 arrives, 198.18.0.1 stays.
    let n = s.refreshes_total;
    write_atomic(&file, "198.18.0.1\n198.18.2.2\n2001:db8:bad::/48\n");
    let s = wait_status(&stats, |s| {
        s.refreshes_total > n && s.last.as_ref().is_some_and(|r| r.prefixes == 3)
    });
    let rep = s.last.unwrap();
    assert_eq!(
        (rep.added, rep.removed, rep.unchanged),
        (1, 1, 2),
        "{rep:?}"
    );
    assert!(
        entry(&maps, "198.18.1.0/24").is_none(),
        "left the feed: unblocked"
    );
    assert_eq!(h.run(&syn_from("198.18.1.77")), XDP_PASS);
    assert_eq!(h.run(&syn_from("198.18.2.2")), XDP_DROP);
    assert_eq!(
        entry(&maps, "198.18.0.1/32").unwrap().expires_ns,
        host_expiry,
        "an unchanged prefix keeps its expiry (no reload)"
    );
    let manual = entry(&maps, "203.0.113.0/25").expect("the operator's block stays");
    assert_eq!(Origin::from_code(manual.origin), Origin::Manual);
    let det = entry(&maps, "203.0.113.200/32").expect("the detector's block stays");
    assert_eq!(Origin::from_code(det.origin), Origin::Detector);
    let st = State::load(&sp).unwrap();
    assert_eq!(
        st.blocks[&net("198.18.2.2/32")].by.as_deref(),
        Some("feed:drop")
    );
    assert!(!st.blocks.contains_key(&net("198.18.1.0/24")));

    // A bad file (an HTML error page): refused, named, counted; nothing changes.
    let before = maps.blocks().unwrap();
    write_atomic(&file, "<html>\n<body>502 Bad Gateway</body>\n</html>\n");
    let s = wait_status(&stats, |s| s.failures_total >= 1);
    let err = s.last_error.unwrap();
    assert!(
        err.contains("\"drop\"") && err.contains("not IP prefixes"),
        "{err}"
    );
    // A missing file: the same.
    std::fs::remove_file(&file).unwrap();
    let s = wait_status(&stats, |s| {
        s.failures_total >= 2 && s.last_error.as_deref() != Some(err.as_str())
    });
    let err = s.last_error.unwrap();
    assert!(
        err.contains("cannot read") && err.contains("drop.txt"),
        "{err}"
    );
    let mut after = maps.blocks().unwrap();
    let mut before = before;
    before.sort_by_key(|(n, _)| *n);
    after.sort_by_key(|(n, _)| *n);
    let strip = |v: Vec<(IpNet, BlockEntry)>| -> Vec<(IpNet, u64, u8)> {
        v.into_iter()
            .map(|(n, e)| (n, e.expires_ns, e.origin))
            .collect()
    };
    assert_eq!(
        strip(after),
        strip(before),
        "a failed refresh keeps what is enforced"
    );
    assert_eq!(h.run(&syn_from("198.18.2.2")), XDP_DROP);

    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    thread.join().unwrap();
}

/// Serves `responses` in order on a loopback port, one connection each.
fn http_server(responses: Vec<(u16, String)>) -> (String, std::thread::JoinHandle<()>) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/drop.txt", l.local_addr().unwrap());
    let t = std::thread::spawn(move || {
        for (code, body) in responses {
            let (mut c, _) = l.accept().unwrap();
            let mut buf = [0u8; 4096];
            let mut req = Vec::new();
            while !req.windows(4).any(|w| w == b"\r\n\r\n") {
                let n = c.read(&mut buf).unwrap();
                if n == 0 {
                    break;
                }
                req.extend_from_slice(&buf[..n]);
            }
            let _ = write!(
                c,
                "HTTP/1.1 {code} X\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    (url, t)
}

#[test]
fn url_feeds_refresh_and_http_errors_change_nothing() {
    let pins = PrivatePins::new(&format!("tadtest-feedurl-{}", std::process::id()));
    let h = Harness::load_pinned(&pins, |_| {});
    let dir = tempfile::tempdir().unwrap();
    let sp = dir.path().join("state.json");
    let mut maps = Pinned::open(&pins.0).unwrap();
    // 198.51.100.64/26 nests in the /24 with an identical entry: the diff must
    // still see it as present, and remove it alone.
    let (url, server) = http_server(vec![
        (
            200,
            "198.51.100.0/24\n198.51.100.64/26\n198.51.100.77\n".into(),
        ),
        (404, "not found".into()),
        (200, "198.51.100.0/24\n198.51.100.77\n".into()),
        (200, "198.51.100.77\n".into()),
    ]);
    let f = feed("remote", &url);

    let rep = feeds::refresh_once(&mut maps, &sp, &f).unwrap();
    assert_eq!(rep.added, 3);
    assert_eq!(h.run(&syn_from("198.51.100.5")), XDP_DROP);

    let e = feeds::refresh_once(&mut maps, &sp, &f).unwrap_err();
    assert!(matches!(e, FeedError::Http { .. }), "{e}");
    assert!(
        e.to_string().contains("404") && e.to_string().contains(&url),
        "{e}"
    );
    assert!(
        entry(&maps, "198.51.100.0/24").is_some(),
        "kept after a failed fetch"
    );

    let rep = feeds::refresh_once(&mut maps, &sp, &f).unwrap();
    assert_eq!(
        (rep.added, rep.removed, rep.unchanged),
        (0, 1, 2),
        "{rep:?}"
    );
    let nets: Vec<IpNet> = maps.blocks().unwrap().into_iter().map(|(n, _)| n).collect();
    assert!(!nets.contains(&net("198.51.100.64/26")), "{nets:?}");
    assert!(nets.contains(&net("198.51.100.0/24")), "{nets:?}");

    let rep = feeds::refresh_once(&mut maps, &sp, &f).unwrap();
    assert_eq!((rep.removed, rep.unchanged), (1, 1));
    assert_eq!(h.run(&syn_from("198.51.100.5")), XDP_PASS);
    assert_eq!(h.run(&syn_from("198.51.100.77")), XDP_DROP);
    server.join().unwrap();
}

/// Feeds nest prefixes (a /16 and /24s inside it) with the same metadata: each
/// stored prefix is found as itself, a prefix only covered by another is absent,
/// and removing the inner one leaves the outer one enforced. An LPM lookup alone
/// returns the longest covering entry, which used to make the inner prefix look
/// absent when both entries were alike.
#[test]
fn nested_prefixes_with_the_same_metadata_are_each_found_exactly() {
    let pins = PrivatePins::new(&format!("tadtest-nested-{}", std::process::id()));
    let h = Harness::load_pinned(&pins, |_| {});
    let mut maps = Pinned::open(&pins.0).unwrap();
    let e = BlockEntry {
        expires_ns: 0,
        reason: BlockReason::ThreatFeed as u8,
        origin: Origin::Feed.code(),
        rule_id: 7,
        ..BlockEntry::default()
    };
    for n in [
        "198.18.0.0/16",
        "198.18.1.0/24",
        "2001:db8::/32",
        "2001:db8:1::/48",
    ] {
        maps.put_block(&net(n), &e).unwrap();
    }
    for n in [
        "198.18.0.0/16",
        "198.18.1.0/24",
        "2001:db8::/32",
        "2001:db8:1::/48",
    ] {
        assert_eq!(entry(&maps, n), Some(e), "{n} is stored");
    }
    for n in ["198.18.2.0/24", "198.18.1.0/25", "2001:db8:2::/48"] {
        assert_eq!(entry(&maps, n), None, "{n} is only covered");
    }
    // Listing shows the entries as they were given.
    let listed = maps.blocks().unwrap();
    assert_eq!(listed.len(), 4);
    assert!(listed.iter().all(|(_, got)| *got == e));
    assert!(maps.del_block(&net("198.18.1.0/24")).unwrap());
    assert_eq!(entry(&maps, "198.18.1.0/24"), None);
    assert_eq!(entry(&maps, "198.18.0.0/16"), Some(e));
    // The covering /16 still drops the inner addresses.
    assert_eq!(h.run(&syn_from("198.18.1.9")), XDP_DROP);
}
