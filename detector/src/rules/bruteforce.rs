//! Password guessing (`[bruteforce]`), recognised from the connection pattern on
//! any port: many short connections ([`classify::auth_attempt`]) from one source to
//! one service (address and port) in `bruteforce.window_s`, of similar size, made
//! back to back. Each guess (or batch of guesses, SSH allows several per
//! connection) is one connection that opens, runs the same authentication
//! exchange, fails and closes; the guesser reconnects at once, so its connections
//! come fast or keep the service busy, and their byte counts barely differ.
//!
//! A count is the largest group of the window's connections whose sizes (bytes,
//! both directions) lie within a factor `1 + 2 * size_spread` of each other, and it
//! must be at least `similar_share` of them. Back to back: the median gap between
//! connection starts is at most `1 / min_rate_per_s`, or the connections' summed
//! durations cover at least `min_busy_share` of their span. An IoT device's
//! periodic reconnects to its MQTT/HTTP server (a short session with data every
//! few seconds or minutes) are idle most of the time and do neither.
//!
//! | rule | ports | count at least | blocks |
//! |---|---|---|---|
//! | `bruteforce.auth` | `ports` (FTP, SSH, Telnet, MQTT): failed (refused or unanswered) connections count too | `attempts` | yes, unless the source shows spoofing evidence |
//! | `bruteforce.http` | `http_ports`, where many short connections are normal: answered connections only | `http_attempts` | no (medium) |
//! | `bruteforce.pattern` | any other TCP port: answered connections only (unanswered ones are the scan rules') | `pattern_attempts` | yes, unless spoofing evidence |
//!
//! Zeek's `SSH::password_guesses_limit` (30 failed logins in 30 min) and its FTP
//! brute-force notice count failed logins per service seen in the protocol; a flow
//! record carries no protocol outcome, so the pattern stands in for it.

use std::{collections::VecDeque, net::IpAddr};

use tad_wire::{AlertKind, FlowRecord, Severity};

use super::{Detection, Seen, WINDOW_CAP, map, ms};
use crate::{
    HashMap,
    classify::{self, AuthAttempt},
    config::BruteForce,
};

/// Connections judged per service at most (the newest).
const JUDGED: usize = 512;

/// One counted connection.
#[derive(Clone, Copy, Debug)]
struct Conn {
    /// Arrival (record) time, ms: the window.
    seen_ms: u64,
    /// First packet, ms, and duration, ms (the flow's own times).
    start_ms: u64,
    dur_ms: u64,
    /// Both directions, bytes.
    bytes: u64,
}

/// Per-source brute-force state.
pub(super) struct AuthState {
    /// Connections by (dst, port).
    by_service: HashMap<(IpAddr, u16), VecDeque<Conn>>,
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

/// Which family a service port is of.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Family {
    Auth,
    Http,
    Other,
}

/// A record that counts as a connection to a service.
#[derive(Clone, Copy)]
pub(super) struct Attempt {
    family: Family,
}

/// Whether `r` counts: a short or failed TCP connection (with its handshake) to
/// a port of `ports`, or a short answered one to any other port (unanswered
/// handshakes elsewhere are the SYN-flood and scan rules').
pub(super) fn classify(bf: &BruteForce, r: &FlowRecord) -> Option<Attempt> {
    let family = if bf.ports.contains(&r.dport) {
        Family::Auth
    } else if bf.http_ports.contains(&r.dport) {
        Family::Http
    } else {
        Family::Other
    };
    let outcome = classify::auth_attempt(r, ms(bf.max_duration_s) * 1000, bf.max_bytes)?;
    (family == Family::Auth || outcome == AuthAttempt::Short).then_some(Attempt { family })
}

/// Largest number of `bytes` within a factor `1 + 2 * spread` of each other.
fn similar(conns: &[Conn], spread: f64) -> usize {
    let mut b: Vec<u64> = conns.iter().map(|c| c.bytes).collect();
    b.sort_unstable();
    let factor = 1.0 + 2.0 * spread;
    let (mut best, mut lo) = (0, 0);
    for hi in 0..b.len() {
        while (b[hi] as f64) > (b[lo] as f64) * factor {
            lo += 1;
        }
        best = best.max(hi + 1 - lo);
    }
    best
}

/// (median gap between starts, ms; summed durations over the span, in [0, ∞)).
fn pace(conns: &[Conn]) -> (u64, f64) {
    let mut starts: Vec<u64> = conns.iter().map(|c| c.start_ms).collect();
    starts.sort_unstable();
    let mut gaps: Vec<u64> = starts.windows(2).map(|w| w[1] - w[0]).collect();
    gaps.sort_unstable();
    let median = gaps.get(gaps.len() / 2).copied().unwrap_or(0);
    let first = starts.first().copied().unwrap_or(0);
    let last = conns
        .iter()
        .map(|c| c.start_ms + c.dur_ms)
        .max()
        .unwrap_or(0);
    let busy: u64 = conns.iter().map(|c| c.dur_ms).sum();
    let span = last.saturating_sub(first);
    let share = if span == 0 {
        1.0
    } else {
        busy as f64 / span as f64
    };
    (median, share)
}

/// Counts one connection to `seen.r`'s service and reports once the pattern
/// holds (see the module docs).
pub(super) fn attempt(
    st: &mut AuthState,
    bf: &BruteForce,
    a: Attempt,
    seen: &Seen,
    out: &mut Vec<Detection>,
) {
    let (r, now_ms, spoofed) = (seen.r, seen.now_ms, seen.spoofed);
    let w_ms = ms(bf.window_s);
    let evict = |q: &mut VecDeque<Conn>| {
        while q
            .front()
            .is_some_and(|c| now_ms.saturating_sub(c.seen_ms) >= w_ms)
        {
            q.pop_front();
        }
    };
    let q = st.by_service.entry((r.dst, r.dport)).or_default();
    evict(q);
    if q.len() >= WINDOW_CAP {
        q.pop_front();
    }
    q.push_back(Conn {
        seen_ms: now_ms,
        start_ms: r.start_ms,
        dur_ms: r.duration_us / 1000,
        bytes: r.fwd.bytes + r.bwd.bytes,
    });
    let n_all = q.len();
    let (rule, limit, severity, confidence, may_block) = match a.family {
        Family::Auth => ("bruteforce.auth", bf.attempts, Severity::High, 0.9, true),
        Family::Http => (
            "bruteforce.http",
            bf.http_attempts,
            Severity::Medium,
            0.6,
            false,
        ),
        Family::Other => (
            "bruteforce.pattern",
            bf.pattern_attempts,
            Severity::High,
            0.85,
            true,
        ),
    };
    let judged: Vec<Conn> = q.iter().rev().take(JUDGED).copied().collect();
    if now_ms >= st.swept_ms + 1000 {
        st.swept_ms = now_ms;
        st.by_service.retain(|_, q| {
            evict(q);
            !q.is_empty()
        });
    }
    if n_all < limit as usize {
        return;
    }
    let n = similar(&judged, bf.size_spread);
    let share = n as f64 / judged.len() as f64;
    let (gap_ms, busy) = pace(&judged);
    let fast = (gap_ms as f64) <= 1000.0 / bf.min_rate_per_s;
    let back_to_back = fast || busy >= bf.min_busy_share;
    let n = n as f64;
    if n < limit as f64
        || share < bf.similar_share
        || !back_to_back
        || !seen.gate.open(rule, seen.source(), Some(r.dst), n)
    {
        return;
    }
    out.push(Detection {
        main: n,
        kind: AlertKind::BruteForce,
        rule,
        severity,
        confidence,
        source: seen.source(),
        target: Some(r.dst),
        window_s: bf.window_s,
        observed: map(&[
            ("attempts", n),
            ("connections", n_all as f64),
            ("similar_share", share),
            ("median_gap_s", gap_ms as f64 / 1000.0),
            ("busy_share", busy),
        ]),
        thresholds: map(&[
            ("attempts", limit as f64),
            ("max_duration_s", bf.max_duration_s),
            ("max_bytes", bf.max_bytes as f64),
            ("similar_share", bf.similar_share),
            ("min_rate_per_s", bf.min_rate_per_s),
            ("min_busy_share", bf.min_busy_share),
        ]),
        text: format!(
            "{} made {n} short connections of similar size ({n_all} in all) to {}:{} in {} s, back to back (median gap {:.2} s, busy {:.0} % of the time): password guessing",
            r.src,
            r.dst,
            r.dport,
            bf.window_s,
            gap_ms as f64 / 1000.0,
            busy.min(1.0) * 100.0
        ),
        flows: seen.recent.list(),
        may_block: may_block && !spoofed,
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(start_ms: u64, dur_ms: u64, bytes: u64) -> Conn {
        Conn {
            seen_ms: start_ms,
            start_ms,
            dur_ms,
            bytes,
        }
    }

    #[test]
    fn similar_sizes_are_the_largest_close_group() {
        let conns: Vec<Conn> = [100, 3000, 3100, 3300, 2900, 9000, 120]
            .into_iter()
            .map(|b| c(0, 0, b))
            .collect();
        assert_eq!(similar(&conns, 0.25), 4);
        assert_eq!(similar(&conns, 0.0), 1);
    }

    #[test]
    fn pace_tells_back_to_back_from_periodic() {
        // Guessing: 2 s connections one after the other.
        let guess: Vec<Conn> = (0..10).map(|i| c(i * 2100, 2000, 1200)).collect();
        let (gap, busy) = pace(&guess);
        assert_eq!(gap, 2100);
        assert!(busy > 0.9, "{busy}");
        // A device reconnecting every 30 s for 200 ms.
        let periodic: Vec<Conn> = (0..10).map(|i| c(i * 30_000, 200, 1200)).collect();
        let (gap, busy) = pace(&periodic);
        assert_eq!(gap, 30_000);
        assert!(busy < 0.01, "{busy}");
    }
}
