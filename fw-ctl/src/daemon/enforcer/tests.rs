//! The enforcer's checks one by one: a valid verdict, each refusal reason
//! counted with no map change, the replay window, commands per dashboard.

use fw_common::filter::{AllowEntry, ORIGIN_CONFIG};
use tad_bus::{
    Signer,
    pki::{CertificateAuthority, Validity},
};

use super::*;
use crate::lists::MemLists;

/// A test CA with signers for the ids the tests use.
struct Pki {
    ca: CertificateAuthority,
}

impl Pki {
    fn new() -> Pki {
        Pki {
            ca: CertificateAuthority::generate("enforcer test CA", Validity::days(1)).unwrap(),
        }
    }

    fn signer(&self, id: &str) -> Signer {
        let c = self.ca.issue_client(id, Validity::days(1)).unwrap();
        Signer::from_pem(c.cert_pem.as_bytes(), c.key_pem.as_bytes()).unwrap()
    }

    fn verifier(&self) -> Verifier {
        Verifier::from_ca_pem(self.ca.cert_pem().as_bytes()).unwrap()
    }

    fn enforcer(&self) -> Enforcer {
        Enforcer::new(policy(), self.verifier(), None)
    }
}

fn policy() -> Policy {
    Policy {
        gateway_id: "gw-1".parse().unwrap(),
        trusted_detectors: vec!["detector-1".into(), "detector-3".into()],
        trusted_dashboards: vec!["dashboard".into()],
        max_ttl_s: 3600,
        default_block_ttl_s: 600,
        width: WidthPolicy::default(),
        max_age_s: 300,
        replay_window: 3,
        syn_fallback_pps: 0,
        syn_fallback_burst: 0,
    }
}

fn verdict(id: &str, target: &str) -> Verdict {
    Verdict {
        v: SCHEMA_VERSION,
        id: id.into(),
        detector_id: "detector-1".parse().unwrap(),
        issued_at_ms: clock::unix_ms(),
        action: Action::Quarantine,
        target: target.parse().unwrap(),
        ttl_s: Some(300),
        reason: BlockReason::PortScan,
        rule: "portscan.vertical".into(),
        confidence: 0.9,
        alert_id: None,
        observe_only: false,
        port: None,
    }
}

fn command(id: &str, target: &str) -> Command {
    Command {
        v: SCHEMA_VERSION,
        id: id.into(),
        operator: "alice".into(),
        issued_at_ms: clock::unix_ms(),
        action: Action::Block,
        target: target.parse().unwrap(),
        ttl_s: Some(60),
        reason: Some("noisy".into()),
        port: None,
    }
}

fn lists() -> MemLists {
    let mut l = MemLists::default();
    l.put_allow(
        &"192.0.2.0/28".parse().unwrap(),
        &AllowEntry {
            origin: ORIGIN_CONFIG,
            ..Default::default()
        },
    )
    .unwrap();
    l
}

/// Replaces the JWS payload with `f` of it, keeping header and signature.
fn tamper(jws: &[u8], f: impl Fn(String) -> String) -> Vec<u8> {
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let text = String::from_utf8(jws.to_vec()).unwrap();
    let parts: Vec<&str> = text.split('.').collect();
    let body = String::from_utf8(b64.decode(parts[1]).unwrap()).unwrap();
    format!("{}.{}.{}", parts[0], b64.encode(f(body)), parts[2]).into_bytes()
}

fn refusals(e: &Enforcer) -> Vec<(RefusalReason, u64)> {
    e.stats.refusals.iter().map(|(r, n)| (*r, *n)).collect()
}

#[test]
fn a_valid_verdict_blocks_and_acks() {
    let pki = Pki::new();
    let det = pki.signer("detector-1");
    let mut l = lists();
    let mut e = pki.enforcer();
    let ack = e
        .on_verdict(
            &mut l,
            &det.sign(&verdict("v1", "198.51.100.7/32")),
            "detector-1",
            Instant::now(),
        )
        .unwrap();
    assert_eq!(
        (ack.id.as_str(), ack.outcome, ack.gateway_id.as_str()),
        ("v1", Outcome::Applied, "gw-1"),
        "{ack:?}"
    );
    let entry = l.block[&"198.51.100.7/32".parse().unwrap()];
    assert_eq!(entry.reason, BlockReason::PortScan as u8);
    assert_eq!(entry.origin, Origin::Detector.code());
    assert_eq!(entry.rule_id, rule_id_of("v1"));
    // A shorter quarantine of the same source: the longer one stays.
    let mut v2 = verdict("v2", "198.51.100.7/32");
    v2.ttl_s = Some(60);
    let ack = e
        .on_verdict(&mut l, &det.sign(&v2), "detector-1", Instant::now())
        .unwrap();
    assert_eq!(ack.outcome, Outcome::NoChange);
    assert!(e.stats.refusals.is_empty());
    assert_eq!(
        (e.stats.verdicts_applied, e.stats.verdicts_no_change),
        (1, 1)
    );
}

#[test]
fn unauthentic_verdicts_are_refused_by_reason_and_change_nothing() {
    let pki = Pki::new();
    let det1 = pki.signer("detector-1");
    let det2 = pki.signer("detector-2");
    let det3 = pki.signer("detector-3");
    let rogue = CertificateAuthority::generate("rogue CA", Validity::days(1)).unwrap();
    let rogue_det1 = {
        let c = rogue.issue_client("detector-1", Validity::days(1)).unwrap();
        Signer::from_pem(c.cert_pem.as_bytes(), c.key_pem.as_bytes()).unwrap()
    };
    let mut l = lists();
    let mut e = pki.enforcer();
    let t = "198.51.100.7/32";
    let mut old = verdict("stale", t);
    old.issued_at_ms = clock::unix_ms() - 301_000;
    let mut future = verdict("future", t);
    future.issued_at_ms = clock::unix_ms() + 301_000;
    let mut names_other = verdict("names-other", t);
    names_other.detector_id = "detector-3".parse().unwrap();
    let mut untrusted = verdict("untrusted", t);
    untrusted.detector_id = "detector-2".parse().unwrap();
    let mut bad_version = verdict("bad-version", t);
    bad_version.v = 9;
    let cases: Vec<(&str, Vec<u8>, &str, RefusalReason)> = vec![
        (
            "tampered",
            tamper(&det1.sign(&verdict("tampered", "198.51.100.8/32")), |b| {
                b.replace("198.51.100.8", "198.51.100.7")
            }),
            "detector-1",
            RefusalReason::BadSignature,
        ),
        (
            "unsigned",
            tad_wire::encode(&verdict("unsigned", t)),
            "detector-1",
            RefusalReason::BadSignature,
        ),
        (
            "foreign-ca",
            rogue_det1.sign(&verdict("foreign-ca", t)),
            "detector-1",
            RefusalReason::BadSignature,
        ),
        (
            "bad-version",
            det1.sign(&bad_version),
            "detector-1",
            RefusalReason::Malformed,
        ),
        // detector-2 signs in detector-1's name, on its own topic.
        (
            "spoof",
            det2.sign(&verdict("spoof", t)),
            "detector-2",
            RefusalReason::IdentityMismatch,
        ),
        // ... or on detector-1's topic (a broker that does not enforce the ACL).
        (
            "spoof-topic",
            det2.sign(&verdict("spoof-topic", t)),
            "detector-1",
            RefusalReason::IdentityMismatch,
        ),
        // A trusted detector naming another trusted one.
        (
            "names-other",
            det1.sign(&names_other),
            "detector-1",
            RefusalReason::IdentityMismatch,
        ),
        (
            "untrusted",
            det2.sign(&untrusted),
            "detector-2",
            RefusalReason::UntrustedSender,
        ),
        ("stale", det1.sign(&old), "detector-1", RefusalReason::Stale),
        (
            "future",
            det1.sign(&future),
            "detector-1",
            RefusalReason::Stale,
        ),
    ];
    for (id, payload, topic, reason) in &cases {
        let ack = e
            .on_verdict(&mut l, payload, topic, Instant::now())
            .unwrap_or_else(|| panic!("{id}: no ack"));
        assert_eq!(
            (ack.id.as_str(), ack.outcome),
            (*id, Outcome::Rejected),
            "{ack:?}"
        );
        let err = ack.error.unwrap();
        assert!(
            err.starts_with(&format!("{}: ", reason_name(*reason))),
            "{id}: {err}"
        );
    }
    // No id to ack: counted only.
    assert!(
        e.on_verdict(&mut l, b"\x00garbage", "detector-1", Instant::now())
            .is_none()
    );
    assert!(l.block.is_empty(), "no refused verdict changed a map");
    assert_eq!(e.stats.verdicts_rejected, cases.len() as u64 + 1);
    assert_eq!(e.stats.verdicts_applied, 0);
    assert_eq!(
        refusals(&e),
        vec![
            (RefusalReason::Malformed, 1),
            (RefusalReason::BadSignature, 4),
            (RefusalReason::IdentityMismatch, 3),
            (RefusalReason::UntrustedSender, 1),
            (RefusalReason::Stale, 2),
        ]
    );
    // Not a JWS (x2: unsigned JSON, garbage) and an invalid message inside.
    assert_eq!(e.stats.malformed, 3);
    // detector-3 is trusted and signs its own verdict: accepted.
    let mut own = verdict("own", t);
    own.detector_id = "detector-3".parse().unwrap();
    let ack = e
        .on_verdict(&mut l, &det3.sign(&own), "detector-3", Instant::now())
        .unwrap();
    assert_eq!(ack.outcome, Outcome::Applied, "{ack:?}");
    assert_eq!(l.block.len(), 1);
}

#[test]
fn policy_refusals_are_counted_by_reason() {
    let pki = Pki::new();
    let det = pki.signer("detector-1");
    let mut l = lists();
    let mut e = pki.enforcer();
    let mut too_long = verdict("ttl", "198.51.100.7/32");
    too_long.ttl_s = Some(7200);
    let cases = [
        (verdict("mgmt", "192.0.2.5/32"), RefusalReason::Allowlisted),
        (
            verdict("holds-mgmt", "192.0.2.0/24"),
            RefusalReason::Allowlisted,
        ),
        (too_long, RefusalReason::Ttl),
        (verdict("wide", "198.0.0.0/8"), RefusalReason::TooWide),
    ];
    for (v, reason) in &cases {
        let ack = e
            .on_verdict(&mut l, &det.sign(v), "detector-1", Instant::now())
            .unwrap();
        assert_eq!(ack.outcome, Outcome::Rejected, "{ack:?}");
        assert!(
            ack.error
                .as_deref()
                .unwrap()
                .starts_with(&reason_name(*reason)),
            "{ack:?}"
        );
    }
    assert!(l.block.is_empty());
    assert_eq!(
        refusals(&e),
        vec![
            (RefusalReason::Ttl, 1),
            (RefusalReason::TooWide, 1),
            (RefusalReason::Allowlisted, 2),
        ]
    );
    // A refused id is not remembered: fixed and re-sent, it is accepted.
    let ack = e
        .on_verdict(
            &mut l,
            &det.sign(&verdict("ttl", "198.51.100.7/32")),
            "detector-1",
            Instant::now(),
        )
        .unwrap();
    assert_eq!(ack.outcome, Outcome::Applied);
}

#[test]
fn replays_are_refused_within_the_window() {
    let pki = Pki::new();
    let det = pki.signer("detector-1");
    let mut l = lists();
    let mut e = pki.enforcer();
    let v1 = det.sign(&verdict("r1", "198.51.100.7/32"));
    assert_eq!(
        e.on_verdict(&mut l, &v1, "detector-1", Instant::now())
            .unwrap()
            .outcome,
        Outcome::Applied
    );
    // Unblocked by hand, then the same signed verdict again: refused, not acked,
    // and the map stays as it is.
    l.block.clear();
    assert!(
        e.on_verdict(&mut l, &v1, "detector-1", Instant::now())
            .is_none()
    );
    assert!(l.block.is_empty());
    assert_eq!(refusals(&e), vec![(RefusalReason::Replayed, 1)]);
    // The window holds 3 ids: after 3 more, r1 is forgotten.
    for id in ["r2", "r3", "r4"] {
        let ack = e
            .on_verdict(
                &mut l,
                &det.sign(&verdict(id, "198.51.100.9/32")),
                "detector-1",
                Instant::now(),
            )
            .unwrap();
        assert_ne!(ack.outcome, Outcome::Rejected, "{ack:?}");
    }
    assert!(
        e.on_verdict(
            &mut l,
            &det.sign(&verdict("r4", "198.51.100.9/32")),
            "detector-1",
            Instant::now()
        )
        .is_none(),
        "r4 is in the window"
    );
    assert_eq!(
        e.on_verdict(&mut l, &v1, "detector-1", Instant::now())
            .unwrap()
            .outcome,
        Outcome::Applied
    );
    assert_eq!(e.stats.refusals[&RefusalReason::Replayed], 2);
    assert_eq!(e.seen["detector-1"].order.len(), 3);
    assert_eq!(e.seen["detector-1"].ids.len(), 3);
}

#[test]
fn commands_need_their_own_trusted_dashboard() {
    let pki = Pki::new();
    let dash = pki.signer("dashboard");
    let dash2 = pki.signer("dashboard-2");
    let mut l = lists();
    let mut e = pki.enforcer();
    let c = command("c1", "203.0.113.9/32");
    // An untrusted dashboard on its own topic.
    let ack = e
        .on_command(&mut l, &dash2.sign(&c), "dashboard-2", Instant::now())
        .unwrap();
    assert_eq!(ack.outcome, Outcome::Rejected);
    assert!(ack.error.unwrap().starts_with("untrusted_sender: "));
    // The untrusted dashboard's signature on the trusted one's topic.
    let ack = e
        .on_command(&mut l, &dash2.sign(&c), "dashboard", Instant::now())
        .unwrap();
    assert!(ack.error.unwrap().starts_with("identity_mismatch: "));
    // Unsigned.
    let ack = e
        .on_command(&mut l, &tad_wire::encode(&c), "dashboard", Instant::now())
        .unwrap();
    assert!(ack.error.unwrap().starts_with("bad_signature: "));
    assert!(l.block.is_empty());
    assert_eq!(e.stats.commands_rejected, 3);
    assert_eq!(
        refusals(&e),
        vec![
            (RefusalReason::BadSignature, 1),
            (RefusalReason::IdentityMismatch, 1),
            (RefusalReason::UntrustedSender, 1),
        ]
    );

    let ack = e
        .on_command(&mut l, &dash.sign(&c), "dashboard", Instant::now())
        .unwrap();
    assert_eq!(ack.outcome, Outcome::Applied, "{ack:?}");
    let entry = l.block[&"203.0.113.9/32".parse().unwrap()];
    assert_eq!(entry.origin, Origin::Command.code());
    assert_eq!(entry.reason, BlockReason::Manual as u8);
    let mut un = command("c2", "203.0.113.9/32");
    un.action = Action::Unblock;
    un.ttl_s = None;
    let ack = e
        .on_command(&mut l, &dash.sign(&un), "dashboard", Instant::now())
        .unwrap();
    assert_eq!(ack.outcome, Outcome::Applied);
    assert!(l.block.is_empty());
    assert_eq!(e.stats.commands_applied, 2);
}

#[test]
fn commands_record_the_operator_at_the_certificates_dashboard() {
    let pki = Pki::new();
    let dash = pki.signer("dashboard");
    let dir = tempfile::tempdir().unwrap();
    let state_path = dir.path().join("state.json");
    let mut l = lists();
    let mut e = Enforcer::new(policy(), pki.verifier(), Some(state_path.clone()));
    let ack = e
        .on_command(
            &mut l,
            &dash.sign(&command("c1", "203.0.113.9/32")),
            "dashboard",
            Instant::now(),
        )
        .unwrap();
    assert_eq!(ack.outcome, Outcome::Applied);
    let st = crate::state::State::load(&state_path).unwrap();
    let rec = &st.blocks[&"203.0.113.9/32".parse().unwrap()];
    assert_eq!(rec.by.as_deref(), Some("alice@dashboard"));
    assert_eq!(rec.origin, Origin::Command);
    assert_eq!(rec.text.as_deref(), Some("noisy"));
}

/// What the XDP program writes for a provisional quarantine of `ttl_s` from now.
fn provisional(ttl_s: u64) -> fw_common::filter::BlockEntry {
    fw_common::filter::BlockEntry {
        expires_ns: clock::mono_ns() + ttl_s * 1_000_000_000,
        hits: 7,
        rule_id: 0,
        reason: BlockReason::Quarantine as u8,
        origin: fw_common::filter::ORIGIN_DATAPATH,
        flags: fw_common::filter::BLOCK_FLAG_NEW_FLOWS_ONLY,
        lpm_tag: 0,
    }
}

#[test]
fn a_block_verdict_confirms_a_provisional_quarantine_as_a_full_block() {
    let pki = Pki::new();
    let det = pki.signer("detector-1");
    let mut l = lists();
    let net: ipnet::IpNet = "198.51.100.7/32".parse().unwrap();
    // The program's entry outlives the verdict's TTL: an Extend merge alone would
    // keep it, and with it the new-flows-only flag.
    l.put_block(&net, &provisional(3_000)).unwrap();
    let mut e = pki.enforcer();
    let mut v = verdict("confirm", "198.51.100.7/32");
    v.action = Action::Block;
    v.ttl_s = Some(60);
    let ack = e
        .on_verdict(&mut l, &det.sign(&v), "detector-1", Instant::now())
        .unwrap();
    assert_eq!(ack.outcome, Outcome::Applied, "{ack:?}");
    let entry = l.block[&net];
    assert!(!entry.new_flows_only(), "now drops every packet");
    assert_eq!(
        (entry.origin, entry.reason, entry.hits),
        (Origin::Detector.code(), BlockReason::PortScan as u8, 7),
        "the detector's entry, keeping the hit count"
    );
    let left_s = entry.expires_ns.saturating_sub(clock::mono_ns()) / 1_000_000_000;
    assert!(left_s <= 60, "the verdict's TTL, {left_s} s left");
}

#[test]
fn an_unblock_verdict_lifts_a_provisional_quarantine() {
    let pki = Pki::new();
    let det = pki.signer("detector-1");
    let mut l = lists();
    let net: ipnet::IpNet = "198.51.100.9/32".parse().unwrap();
    l.put_block(&net, &provisional(30)).unwrap();
    let mut e = pki.enforcer();
    let mut v = verdict("lift", "198.51.100.9/32");
    v.action = Action::Unblock;
    v.ttl_s = None;
    let ack = e
        .on_verdict(&mut l, &det.sign(&v), "detector-1", Instant::now())
        .unwrap();
    assert_eq!(ack.outcome, Outcome::Applied, "{ack:?}");
    assert!(!l.block.contains_key(&net));
    // Lifting it again changes nothing.
    let mut v = verdict("lift-again", "198.51.100.9/32");
    v.action = Action::Unblock;
    v.ttl_s = None;
    let ack = e
        .on_verdict(&mut l, &det.sign(&v), "detector-1", Instant::now())
        .unwrap();
    assert_eq!(ack.outcome, Outcome::NoChange);
}

#[test]
fn a_detector_cannot_lift_an_operators_or_a_feeds_block() {
    let pki = Pki::new();
    let det = pki.signer("detector-1");
    let mut l = lists();
    let mut e = pki.enforcer();
    for (i, origin) in [Origin::Manual, Origin::Feed, Origin::Command]
        .into_iter()
        .enumerate()
    {
        let net: ipnet::IpNet = format!("198.51.100.{}/32", 20 + i).parse().unwrap();
        let entry = fw_common::filter::BlockEntry {
            origin: origin.code(),
            reason: BlockReason::Manual as u8,
            ..Default::default()
        };
        l.put_block(&net, &entry).unwrap();
        let mut v = verdict(&format!("lift-{i}"), &net.to_string());
        v.action = Action::Unblock;
        v.ttl_s = None;
        let ack = e
            .on_verdict(&mut l, &det.sign(&v), "detector-1", Instant::now())
            .unwrap();
        assert_eq!(ack.outcome, Outcome::Rejected, "{origin:?}");
        assert!(
            ack.error.as_deref().unwrap().starts_with("not_owner: "),
            "{ack:?}"
        );
        assert_eq!(l.block[&net], entry, "the {origin:?} block stays as it was");
    }
}

/// A detector's `protect_syn` verdict for `target` (`port`), TTL 300 s.
fn protect_verdict(id: &str, target: &str, port: Option<u16>) -> Verdict {
    Verdict {
        action: Action::ProtectSyn,
        reason: BlockReason::SynFlood,
        rule: "synflood.spoofed".into(),
        port,
        ..verdict(id, target)
    }
}

fn service(s: &str) -> std::net::SocketAddr {
    s.parse().unwrap()
}

#[test]
fn a_protect_syn_verdict_protects_the_service_and_blocks_nothing() {
    let pki = Pki::new();
    let det = pki.signer("detector-1");
    let dir = tempfile::tempdir().unwrap();
    let state_path = dir.path().join("state.json");
    let mut l = lists();
    let mut e = Enforcer::new(policy(), pki.verifier(), Some(state_path.clone()));
    let ack = e
        .on_verdict(
            &mut l,
            &det.sign(&protect_verdict("p1", "192.0.2.200/32", Some(80))),
            "detector-1",
            Instant::now(),
        )
        .unwrap();
    assert_eq!(
        (ack.id.as_str(), ack.outcome),
        ("p1", Outcome::Applied),
        "{ack:?}"
    );
    let entry = l.protected[&service("192.0.2.200:80")];
    assert_eq!(
        (entry.origin, entry.rule_id),
        (Origin::Detector.code(), rule_id_of("p1"))
    );
    let left_s = entry.expires_ns.saturating_sub(clock::mono_ns()) / 1_000_000_000;
    assert!(
        (290..=300).contains(&left_s),
        "the verdict's TTL, {left_s} s left"
    );
    assert!(
        l.block.is_empty(),
        "a spoofed flood's sources are never blocked"
    );
    let st = crate::state::State::load(&state_path).unwrap();
    let rec = &st.protected[&service("192.0.2.200:80")];
    assert_eq!(
        (
            rec.origin,
            rec.by.as_deref(),
            rec.text.as_deref(),
            rec.rule_id
        ),
        (
            Origin::Detector,
            Some("detector-1"),
            Some("synflood.spoofed"),
            rule_id_of("p1")
        )
    );
    // Every port of an IPv6 host: key port 0.
    let ack = e
        .on_verdict(
            &mut l,
            &det.sign(&protect_verdict("p2", "2001:db8::10/128", None)),
            "detector-1",
            Instant::now(),
        )
        .unwrap();
    assert_eq!(ack.outcome, Outcome::Applied, "{ack:?}");
    assert!(l.protected.contains_key(&service("[2001:db8::10]:0")));
    assert_eq!(e.stats.verdicts_applied, 2);
}

#[test]
fn a_shorter_protect_syn_changes_nothing_and_a_longer_one_extends() {
    let pki = Pki::new();
    let det = pki.signer("detector-1");
    let mut l = lists();
    let mut e = pki.enforcer();
    let send = |e: &mut Enforcer, l: &mut MemLists, v: &Verdict| {
        e.on_verdict(l, &det.sign(v), "detector-1", Instant::now())
            .unwrap()
    };
    assert_eq!(
        send(
            &mut e,
            &mut l,
            &protect_verdict("p1", "192.0.2.200/32", Some(443))
        )
        .outcome,
        Outcome::Applied
    );
    let svc = service("192.0.2.200:443");
    l.protected.get_mut(&svc).unwrap().challenged = 10_000;
    let first = l.protected[&svc];
    // A shorter protection (the detector's next, smaller estimate): the one in
    // force outlives it, nothing to change.
    let mut shorter = protect_verdict("p2", "192.0.2.200/32", Some(443));
    shorter.ttl_s = Some(60);
    let ack = send(&mut e, &mut l, &shorter);
    assert_eq!(ack.outcome, Outcome::NoChange, "{ack:?}");
    assert_eq!(l.protected[&svc], first);
    // A longer one extends it and keeps the counters.
    let mut longer = protect_verdict("p3", "192.0.2.200/32", Some(443));
    longer.ttl_s = Some(900);
    assert_eq!(send(&mut e, &mut l, &longer).outcome, Outcome::Applied);
    let now = l.protected[&svc];
    assert!(now.expires_ns > first.expires_ns);
    assert_eq!((now.challenged, now.rule_id), (10_000, rule_id_of("p3")));
    assert_eq!(
        (e.stats.verdicts_applied, e.stats.verdicts_no_change),
        (2, 1)
    );
}

#[test]
fn an_observe_mode_protect_syn_is_observed_only() {
    let pki = Pki::new();
    let det = pki.signer("detector-1");
    let mut l = lists();
    let mut e = pki.enforcer();
    let mut v = protect_verdict("obs", "192.0.2.200/32", Some(80));
    v.observe_only = true;
    let ack = e
        .on_verdict(&mut l, &det.sign(&v), "detector-1", Instant::now())
        .unwrap();
    assert_eq!(ack.outcome, Outcome::Observed);
    assert!(l.protected.is_empty() && l.block.is_empty());
    assert_eq!(e.stats.verdicts_observed, 1);
}

#[test]
fn protect_syn_from_an_untrusted_sender_or_over_the_ttl_bound_is_refused() {
    let pki = Pki::new();
    let det = pki.signer("detector-1");
    let det2 = pki.signer("detector-2");
    let mut l = lists();
    let mut e = pki.enforcer();
    let mut untrusted = protect_verdict("u", "192.0.2.200/32", Some(80));
    untrusted.detector_id = "detector-2".parse().unwrap();
    let ack = e
        .on_verdict(&mut l, &det2.sign(&untrusted), "detector-2", Instant::now())
        .unwrap();
    assert_eq!(ack.outcome, Outcome::Rejected);
    assert!(ack.error.unwrap().starts_with("untrusted_sender: "));
    let mut long = protect_verdict("long", "192.0.2.200/32", Some(80));
    long.ttl_s = Some(7200);
    let ack = e
        .on_verdict(&mut l, &det.sign(&long), "detector-1", Instant::now())
        .unwrap();
    assert_eq!(ack.outcome, Outcome::Rejected);
    assert!(
        ack.error.unwrap().starts_with("ttl: "),
        "verdicts.max_ttl_s is 3600"
    );
    // A prefix is not one host: refused by the message check (malformed).
    let ack = e
        .on_verdict(
            &mut l,
            &det.sign(&protect_verdict("wide", "192.0.2.0/24", Some(80))),
            "detector-1",
            Instant::now(),
        )
        .unwrap();
    assert_eq!(ack.outcome, Outcome::Rejected);
    assert!(ack.error.unwrap().starts_with("malformed: "));
    assert!(l.protected.is_empty());
    assert_eq!(
        refusals(&e),
        vec![
            (RefusalReason::Malformed, 1),
            (RefusalReason::UntrustedSender, 1),
            (RefusalReason::Ttl, 1),
        ]
    );
}

#[test]
fn a_dashboard_command_protects_and_unprotects() {
    let pki = Pki::new();
    let dash = pki.signer("dashboard");
    let dir = tempfile::tempdir().unwrap();
    let state_path = dir.path().join("state.json");
    let mut l = lists();
    let mut e = Enforcer::new(policy(), pki.verifier(), Some(state_path.clone()));
    let mut c = command("c-on", "203.0.113.80/32");
    c.action = Action::ProtectSyn;
    c.port = Some(8080);
    c.reason = Some("camera under flood".into());
    let ack = e
        .on_command(&mut l, &dash.sign(&c), "dashboard", Instant::now())
        .unwrap();
    assert_eq!(ack.outcome, Outcome::Applied, "{ack:?}");
    let svc = service("203.0.113.80:8080");
    assert_eq!(l.protected[&svc].origin, Origin::Command.code());
    let st = crate::state::State::load(&state_path).unwrap();
    assert_eq!(st.protected[&svc].by.as_deref(), Some("alice@dashboard"));
    assert!(l.block.is_empty());

    // A detector cannot lift the operator's protection...
    let det = pki.signer("detector-1");
    let mut off = protect_verdict("d-off", "203.0.113.80/32", Some(8080));
    off.action = Action::UnprotectSyn;
    off.ttl_s = None;
    let ack = e
        .on_verdict(&mut l, &det.sign(&off), "detector-1", Instant::now())
        .unwrap();
    assert!(ack.error.unwrap().starts_with("not_owner: "));
    assert!(l.protected.contains_key(&svc));
    // ... the dashboard can.
    let mut c = command("c-off", "203.0.113.80/32");
    c.action = Action::UnprotectSyn;
    c.port = Some(8080);
    c.ttl_s = None;
    let ack = e
        .on_command(&mut l, &dash.sign(&c), "dashboard", Instant::now())
        .unwrap();
    assert_eq!(ack.outcome, Outcome::Applied, "{ack:?}");
    assert!(l.protected.is_empty());
    let st = crate::state::State::load(&state_path).unwrap();
    assert!(st.protected.is_empty(), "its record goes with it");
    assert_eq!(e.stats.commands_applied, 2);
}

#[test]
fn an_unprotect_syn_verdict_switches_the_protection_off() {
    let pki = Pki::new();
    let det = pki.signer("detector-1");
    let mut l = lists();
    let mut e = pki.enforcer();
    let on = protect_verdict("on", "192.0.2.200/32", Some(80));
    e.on_verdict(&mut l, &det.sign(&on), "detector-1", Instant::now())
        .unwrap();
    // Another service's protection, long expired: freed by the next syn-auth action.
    let old = service("192.0.2.201:22");
    l.protected.insert(
        old,
        fw_common::synauth::SynAuthEntry {
            expires_ns: 1,
            origin: Origin::Detector.code(),
            ..Default::default()
        },
    );
    let mut off = protect_verdict("off", "192.0.2.200/32", Some(80));
    off.action = Action::UnprotectSyn;
    off.ttl_s = None;
    let ack = e
        .on_verdict(&mut l, &det.sign(&off), "detector-1", Instant::now())
        .unwrap();
    assert_eq!(ack.outcome, Outcome::Applied, "{ack:?}");
    assert!(l.protected.is_empty(), "{:?}", l.protected);
    // Off again: nothing to change.
    let mut again = off.clone();
    again.id = "off-again".into();
    let ack = e
        .on_verdict(&mut l, &det.sign(&again), "detector-1", Instant::now())
        .unwrap();
    assert_eq!(ack.outcome, Outcome::NoChange);
}
