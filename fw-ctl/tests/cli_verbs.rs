//! Every fw-ctl verb against the XDP program loaded on a veth interface in a test
//! namespace, with `--json` output parsed, and real pings showing the effect on
//! traffic. Needs root (run through `cargo xtask test`).

mod ctl;

use std::path::Path;

use ctl::*;
use serde_json::Value;

fn counter(v: &Value, verdict: &str, reason: &str) -> u64 {
    v["counters"]
        .as_array()
        .expect("counters")
        .iter()
        .find(|c| c["verdict"] == verdict && c["reason"] == reason)
        .unwrap_or_else(|| panic!("no counter {verdict}/{reason} in {v}"))["packets"]
        .as_u64()
        .unwrap()
}

fn map_entries(status: &Value, name: &str) -> u64 {
    status["maps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["name"] == name)
        .unwrap()["entries"]
        .as_u64()
        .unwrap()
}

#[test]
fn every_verb_with_json_output() {
    let net = Net::new("verbs");
    let ctl = Ctl::new("verbs", &net.gw);
    let [a2, a3, a4] = PEER_ADDRS;

    let load = ctl.json(&[
        "load",
        "--iface",
        "gw0",
        "--mode",
        "skb",
        "--management",
        MGMT,
    ]);
    assert_eq!(load["interfaces"], serde_json::json!(["gw0"]));
    assert_eq!(load["xdp_mode"], "skb");
    assert_eq!(load["observe"], false);
    assert!(ctl.pin_dir().join("fw").exists());
    assert!(ctl.pin_dir().join("maps/BLOCK_V4").exists());
    assert!(ctl.pin_dir().join("maps/BLOCK_HOST_V4").exists());
    assert!(net.ping(a2, 1), "traffic passes before any block");

    // block: the source stops getting through; others still do.
    let b = ctl.json(&["block", a2, "--ttl", "10m", "--reason", "scanner"]);
    assert_eq!(b[0]["prefix"], format!("{a2}/32"));
    assert_eq!(b[0]["change"], "inserted");
    assert!(!net.ping(a2, 2), "a blocked source is dropped");
    assert!(net.ping(a3, 1), "another source still passes");

    let l = ctl.blocks();
    assert_eq!(l.len(), 1);
    let e = &l[0];
    assert_eq!(
        (
            e["origin"].as_str(),
            e["reason"].as_str(),
            e["text"].as_str()
        ),
        (Some("manual"), Some("manual"), Some("scanner"))
    );
    let left = e["expires_in_s"].as_f64().unwrap();
    assert!(left > 500.0 && left <= 600.0, "time left {left}");
    assert!(e["hits"].as_u64().unwrap() >= 2, "hits counted: {e}");

    let st = ctl.json(&["status"]);
    assert_eq!(
        st["interfaces"],
        serde_json::json!([{"name": "gw0", "xdp_mode": "skb"}])
    );
    assert_eq!(st["mode"], "enforce");
    assert_eq!(
        (
            map_entries(&st, "BLOCK_HOST_V4"),
            map_entries(&st, "BLOCK_V4")
        ),
        (1, 0),
        "a single address is kept in the host map"
    );
    assert!(
        map_entries(&st, "ALLOW_V4") >= 1,
        "the management network is allowlisted"
    );
    assert!(counter(&st["counters"], "drop", "blocklist") >= 2);
    assert!(st["counters"]["total_pps"].is_number());

    let stats = ctl.json(&["stats"]);
    assert_eq!(
        stats["counters"].as_array().unwrap().len(),
        fw_common::counters::COUNTER_SLOTS as usize,
        "one entry per verdict counter slot"
    );
    assert!(counter(&stats, "pass", "no_match") >= 1);
    let watch = ctl.run(&[
        "--json",
        "stats",
        "--watch",
        "--count",
        "2",
        "--interval",
        "0.2",
    ]);
    assert_eq!(watch.code, 0);
    assert_eq!(watch.stdout.lines().count(), 2, "one JSON line per sample");

    // flows: the passing pings are one ICMP flow from .3 to the gateway.
    let flows = ctl.json(&["flows", "--top", "50", "--sort", "packets"]);
    let f = flows
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["src"] == a3 && f["proto"] == 1)
        .unwrap_or_else(|| panic!("no ICMP flow from {a3}: {flows}"));
    assert_eq!(f["dst"], GW_ADDR);
    // XDP sees what arrives on gw0: the echo requests; the gateway's own replies
    // leave through gw0 and are not seen (a router attaches to both sides).
    assert!(f["fwd_packets"].as_u64().unwrap() >= 1, "{f}");
    assert_eq!(f["bwd_packets"], 0, "{f}");

    // mode: observe passes the blocked source and counts a would-drop.
    assert_eq!(ctl.json(&["mode", "observe"])["previous"], "enforce");
    assert!(net.ping(a2, 1), "observe mode passes");
    assert!(counter(&ctl.json(&["stats"]), "would_drop", "blocklist") >= 1);
    assert_eq!(ctl.json(&["mode", "enforce"])["mode"], "enforce");
    assert!(!net.ping(a2, 1));

    // unblock.
    assert_eq!(ctl.json(&["unblock", a2])[0]["changed"], true);
    assert!(net.ping(a2, 1), "unblocked source passes again");
    assert!(ctl.blocks().is_empty());

    // A single address (host map) inside a blocked prefix (trie): both listed,
    // each removable on its own.
    ctl.json(&["block", a2, "198.51.100.2/31"]);
    let mut listed: Vec<String> = ctl
        .blocks()
        .iter()
        .map(|b| b["prefix"].as_str().unwrap().to_string())
        .collect();
    listed.sort();
    assert_eq!(listed, ["198.51.100.2/31", "198.51.100.2/32"]);
    assert!(!net.ping(a3, 1), "the /31 covers {a3}");
    assert_eq!(ctl.json(&["unblock", a2])[0]["changed"], true);
    assert!(!net.ping(a2, 1), "still covered by the /31");
    assert_eq!(
        ctl.json(&["unblock", "198.51.100.2/31"])[0]["changed"],
        true
    );
    assert!(
        net.ping(a2, 1) && net.ping(a3, 1),
        "nothing blocks them now"
    );
    assert!(ctl.blocks().is_empty());

    // allow wins; config entries are protected; manual ones can go.
    assert_eq!(
        ctl.json(&["allow", a4, "--reason", "printer"])[0]["changed"],
        true
    );
    let refused = ctl.run(&["block", a4]);
    assert_eq!(refused.code, 1);
    assert!(refused.stderr.contains("allowlist"), "{}", refused.stderr);
    let refused = ctl.run(&["block", "192.0.2.5"]);
    assert_eq!(refused.code, 1, "the management network cannot be blocked");
    let allows = ctl.json(&["list", "allows"]);
    let origin_of = |p: &str| {
        allows
            .as_array()
            .unwrap()
            .iter()
            .find(|a| a["prefix"] == p)
            .map(|a| a["origin"].clone())
    };
    assert_eq!(origin_of(&format!("{a4}/32")), Some("manual".into()));
    assert_eq!(origin_of(MGMT), Some("config".into()));
    assert_eq!(ctl.run(&["disallow", MGMT]).code, 1);
    assert_eq!(ctl.json(&["disallow", a4])[0]["changed"], true);

    // An invalid CIDR anywhere in the list: exit 2, named, nothing changed.
    let bad = ctl.run(&["block", "203.0.113.9", "203.0.113.300", a3]);
    assert_eq!(bad.code, 2);
    assert!(bad.stderr.contains("203.0.113.300"), "{}", bad.stderr);
    let bad = ctl.run(&["block", "203.0.113.9/24"]);
    assert_eq!(bad.code, 2, "host bits set");
    assert_eq!(ctl.run(&["block", a3, "--ttl", "forever-ish"]).code, 2);
    assert!(ctl.blocks().is_empty(), "nothing was blocked");
    assert!(net.ping(a3, 1));

    // limits.
    let lim = ctl.json(&["limits", "--syn-pps", "100", "--syn-burst", "10"]);
    assert_eq!(
        (
            lim["syn_pps"].as_u64(),
            lim["syn_burst"].as_u64(),
            lim["pps"].as_u64()
        ),
        (Some(100), Some(10), Some(0))
    );
    assert_eq!(ctl.json(&["status"])["limits"]["syn_pps"], 100);
    assert_eq!(
        ctl.run(&["limits", "--pps", "50"]).code,
        2,
        "a rate without a burst is refused"
    );
    ctl.json(&["limits", "--syn-pps", "0", "--syn-burst", "0"]);

    // feed load: good lines loaded, bad ones reported by line number.
    let feed = ctl.dir.path().join("drop.txt");
    std::fs::write(
        &feed,
        "# FireHOL style\n203.0.113.0/25\n; Spamhaus style\n198.18.0.0/15 ; SBL1\nnot-a-prefix\n198.51.100.2 # a host\n",
    )
    .unwrap();
    let fr = ctl.json(&["feed", "load", feed.to_str().unwrap(), "--ttl", "2d"]);
    assert_eq!(
        (fr["prefixes"].as_u64(), fr["inserted"].as_u64()),
        (Some(3), Some(3))
    );
    assert_eq!(fr["bad_lines"][0]["line"], 5);
    let fb = ctl.block_of("198.18.0.0/15").expect("feed entry listed");
    assert_eq!(
        (fb["origin"].as_str(), fb["reason"].as_str()),
        (Some("feed"), Some("threat_feed"))
    );
    assert!(!net.ping(a2, 1), "a feed entry blocks");

    // config check.
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("gateway.toml.example");
    let ok = ctl.json(&["config", "check", example.to_str().unwrap()]);
    assert_eq!(ok["valid"], true);
    let broken = ctl.dir.path().join("broken.toml");
    std::fs::write(
        &broken,
        "gateway_id = \"gateway-1\"\nmanagment = [\"192.0.2.0/28\"]\n",
    )
    .unwrap();
    let o = ctl.run(&["--json", "config", "check", broken.to_str().unwrap()]);
    assert_eq!(o.code, 1);
    assert!(o.stdout.contains("managment"), "{}", o.stdout);

    // unload.
    let u = ctl.json(&["unload"]);
    assert_eq!(u["detached"], serde_json::json!(["gw0"]));
    assert!(!ctl.pin_dir().exists());
    assert!(
        net.ping(a2, 1),
        "unload returns once the program is detached"
    );
    assert_eq!(
        ctl.run(&["status"]).code,
        1,
        "status of an unloaded instance fails"
    );
}

#[test]
fn load_refusals_leave_nothing_behind() {
    let net = Net::new("refuse");
    let ctl = Ctl::new("refuse", &net.gw);
    let other = Ctl::new("refuse2", &net.gw);

    let o = ctl.run(&["load", "--iface", "nope0", "--mode", "skb"]);
    assert_eq!(o.code, 1);
    assert!(
        o.stderr.contains("\"nope0\" does not exist"),
        "{}",
        o.stderr
    );
    assert!(!ctl.pin_dir().exists());

    // Loopback has no driver XDP.
    let o = ctl.run(&["load", "--iface", "lo", "--mode", "native"]);
    assert_eq!(o.code, 1);
    assert!(
        o.stderr.contains("does not support native XDP"),
        "{}",
        o.stderr
    );
    assert!(!ctl.pin_dir().exists(), "a failed load leaves no pins");

    // Two interfaces, the second one failing: the first is detached again.
    let o = ctl.run(&[
        "load", "--iface", "gw0", "--iface", "lo", "--mode", "native",
    ]);
    assert_eq!(o.code, 1);
    assert!(!ctl.pin_dir().exists());
    let xdp = std::process::Command::new("ip")
        .args(["-n", &net.gw, "link", "show", "gw0"])
        .output()
        .unwrap();
    assert!(
        !String::from_utf8_lossy(&xdp.stdout).contains("xdp"),
        "gw0 has no XDP program left"
    );

    let unpriv = std::process::Command::new("setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            BIN,
            "--instance",
            &ctl.instance,
            "load",
            "--iface",
            "gw0",
        ])
        .output()
        .unwrap();
    assert_eq!(unpriv.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&unpriv.stderr).contains("not privileged"));

    ctl.json(&["load", "--iface", "gw0", "--mode", "skb"]);
    let o = ctl.run(&["load", "--iface", "gw0", "--mode", "skb"]);
    assert_eq!(o.code, 1);
    assert!(o.stderr.contains("already loaded"), "{}", o.stderr);
    let o = other.run(&["load", "--iface", "gw0", "--mode", "skb"]);
    assert_eq!(o.code, 1);
    assert!(
        o.stderr.contains("already has an XDP program"),
        "{}",
        o.stderr
    );
    assert!(!other.pin_dir().exists());
    assert_eq!(
        ctl.json(&["status"])["interfaces"][0]["name"],
        "gw0",
        "the first instance is untouched"
    );
}

#[test]
fn unload_keep_maps_keeps_blocks_for_the_next_load() {
    let net = Net::new("keep");
    let ctl = Ctl::new("keep", &net.gw);
    ctl.json(&["load", "--iface", "gw0", "--mode", "skb"]);
    ctl.json(&["block", PEER_ADDRS[0], "--ttl", "1h"]);
    let u = ctl.json(&["unload", "--keep-maps"]);
    assert_eq!(u["maps_kept"], true);
    assert!(ctl.pin_dir().join("maps/BLOCK_V4").exists());
    assert!(net.ping(PEER_ADDRS[0], 1), "no program attached");
    let l = ctl.json(&["load", "--iface", "gw0", "--mode", "skb"]);
    assert_eq!(l["reused_maps"], true);
    assert!(
        !net.ping(PEER_ADDRS[0], 2),
        "the kept block is in force again"
    );
}

#[test]
fn feed_of_100k_prefixes_loads_completely() {
    let net = Net::new("feed");
    let ctl = Ctl::new("feed", &net.gw);
    ctl.json(&["load", "--iface", "gw0", "--mode", "skb"]);
    let mut text =
        String::from("# 100,000 host prefixes in 198.18.0.0/15, Spamhaus-style comments\n");
    for i in 0..100_000u32 {
        text.push_str(&format!(
            "198.{}.{}.{} ; SBL{i}\n",
            18 + (i >> 16),
            (i >> 8) & 255,
            i & 255
        ));
    }
    let f = ctl.dir.path().join("big.txt");
    std::fs::write(&f, text).unwrap();
    let t = std::time::Instant::now();
    let r = ctl.json(&["feed", "load", f.to_str().unwrap()]);
    eprintln!(
        "feed load of 100000 prefixes: {:?} (debug build; see the report for release timing)",
        t.elapsed()
    );
    assert_eq!(
        (r["prefixes"].as_u64(), r["inserted"].as_u64()),
        (Some(100_000), Some(100_000))
    );
    assert!(r["bad_lines"].as_array().unwrap().is_empty());
    let st = ctl.json(&["status"]);
    assert_eq!(map_entries(&st, "BLOCK_HOST_V4"), 100_000);
    assert_eq!(ctl.blocks().len(), 100_000, "listed from the host map");
}
