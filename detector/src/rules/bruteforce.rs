//! Brute force (`[bruteforce]`): short or failed connections
//! ([`classify::auth_attempt`]) from one source to one service in
//! `bruteforce.window_s`. Authentication ports (`bruteforce.ports`) report
//! `bruteforce.auth` (high, blocks unless the source shows spoofing evidence); HTTP
//! ports (`bruteforce.http_ports`), where many short connections are normal, report
//! `bruteforce.http` at `http_attempts` (medium, never blocks).

use std::net::IpAddr;

use tad_wire::{AlertKind, FlowRecord, Severity};

use super::{Detection, Seen, WINDOW_CAP, map, ms};
use crate::{
    HashMap,
    classify::{self, AuthAttempt},
    config::BruteForce,
    window::Distinct,
};

/// Per-source brute-force state.
pub(super) struct AuthState {
    /// Attempts by (dst, port); the key is 1 for a failed one.
    by_service: HashMap<(IpAddr, u16), Distinct<u8>>,
    /// Last sweep of emptied services, ms.
    swept_ms: u64,
}

impl AuthState {
    pub(super) fn new(now_ms: u64) -> Self {
        AuthState {
            by_service: HashMap::default(),
            swept_ms: now_ms,
        }
    }
}

/// A record that counts as an attempt on a watched service.
#[derive(Clone, Copy)]
pub(super) struct Attempt {
    outcome: AuthAttempt,
    /// An HTTP port (and not an authentication one).
    http: bool,
}

/// Whether `r` is an attempt on a watched service: to a port in `ports` or
/// `http_ports`, and short or failed.
pub(super) fn classify(bf: &BruteForce, r: &FlowRecord) -> Option<Attempt> {
    let auth_port = bf.ports.contains(&r.dport);
    let http_port = bf.http_ports.contains(&r.dport);
    if !(auth_port || http_port) {
        return None;
    }
    classify::auth_attempt(r, ms(bf.max_duration_s) * 1000, bf.max_bytes).map(|outcome| Attempt {
        outcome,
        http: !auth_port,
    })
}

/// Counts one attempt on `seen.r`'s service and reports once there are
/// `attempts` (or `http_attempts`) in the window.
pub(super) fn attempt(
    st: &mut AuthState,
    bf: &BruteForce,
    a: Attempt,
    seen: &Seen,
    out: &mut Vec<Detection>,
) {
    let (r, now_ms, spoofed) = (seen.r, seen.now_ms, seen.spoofed);
    let w_ms = ms(bf.window_s);
    let w = st
        .by_service
        .entry((r.dst, r.dport))
        .or_insert_with(|| Distinct::new(WINDOW_CAP));
    w.evict(now_ms, w_ms);
    w.insert(now_ms, (a.outcome == AuthAttempt::Failed) as u8);
    let n = w.len() as f64;
    if now_ms >= st.swept_ms + 1000 {
        st.swept_ms = now_ms;
        st.by_service.retain(|_, w| {
            w.evict(now_ms, w_ms);
            !w.is_empty()
        });
    }
    let http = a.http;
    let limit = if http { bf.http_attempts } else { bf.attempts };
    let rule = if http {
        "bruteforce.http"
    } else {
        "bruteforce.auth"
    };
    if n >= limit as f64 && seen.gate.open(rule, seen.source(), Some(r.dst), n) {
        out.push(Detection {
            main: n,
            kind: AlertKind::BruteForce,
            rule,
            severity: if http {
                Severity::Medium
            } else {
                Severity::High
            },
            confidence: if http { 0.6 } else { 0.9 },
            source: seen.source(),
            target: Some(r.dst),
            window_s: bf.window_s,
            observed: map(&[("attempts", n)]),
            thresholds: map(&[
                ("attempts", limit as f64),
                ("max_duration_s", bf.max_duration_s),
                ("max_bytes", bf.max_bytes as f64),
            ]),
            text: format!(
                "{} made {n} short or failed connections to {}:{} in {} s",
                r.src, r.dst, r.dport, bf.window_s
            ),
            flows: seen.recent.list(),
            may_block: !http && !spoofed,
        });
    }
}
