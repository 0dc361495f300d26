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
