//! The two clocks fw-ctl works with: the kernel program's `bpf_ktime_get_ns`
//! (CLOCK_MONOTONIC, restarts at boot) and wall-clock Unix time (CLOCK_REALTIME),
//! and conversion between them. Block expiries are stored in the maps on the
//! monotonic clock and in the state file as Unix time, so they survive a reboot.

/// Reads a clock, ns.
fn read(clock: libc::clockid_t) -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec; both clock ids always exist.
    let rc = unsafe { libc::clock_gettime(clock, &mut ts) };
    assert_eq!(
        rc, 0,
        "clock_gettime cannot fail for CLOCK_MONOTONIC/REALTIME"
    );
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// Now on the `bpf_ktime_get_ns` clock (CLOCK_MONOTONIC), ns.
pub fn mono_ns() -> u64 {
    read(libc::CLOCK_MONOTONIC)
}

/// Now as Unix time, ns.
pub fn unix_ns() -> u64 {
    read(libc::CLOCK_REALTIME)
}

/// Now as Unix time, ms.
pub fn unix_ms() -> u64 {
    unix_ns() / 1_000_000
}

/// Unix time minus monotonic time, ns: add it to a kernel timestamp to get Unix time.
pub fn unix_offset_ns() -> i128 {
    let m1 = mono_ns();
    let u = unix_ns();
    let m2 = mono_ns();
    u as i128 - (m1 / 2 + m2 / 2) as i128
}

/// Converts a Unix expiry (ms) to the monotonic clock (ns), given both clocks' now.
/// An expiry already in the past maps to `Some(mono_now_ns)` or less, i.e. expired.
/// Returns `None` for a permanent entry (`unix_ms == 0`).
pub fn expiry_to_mono(unix_ms: u64, now_unix_ns: u64, now_mono_ns: u64) -> Option<u64> {
    if unix_ms == 0 {
        return None;
    }
    let left = (unix_ms as i128 * 1_000_000) - now_unix_ns as i128;
    Some((now_mono_ns as i128 + left).max(1) as u64)
}

/// Converts a monotonic expiry (ns, 0 = permanent) to Unix time (ms, 0 = permanent).
pub fn expiry_to_unix_ms(mono_ns_at: u64, now_unix_ns: u64, now_mono_ns: u64) -> u64 {
    if mono_ns_at == 0 {
        return 0;
    }
    let unix = now_unix_ns as i128 + (mono_ns_at as i128 - now_mono_ns as i128);
    (unix.max(1_000_000) / 1_000_000) as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expiry_survives_a_reboot() {
        // Blocked at Unix 1000 s for 600 s while monotonic read 50 s.
        let exp_mono = 50_000_000_000 + 600_000_000_000;
        let unix_ms = expiry_to_unix_ms(exp_mono, 1_000_000_000_000, 50_000_000_000);
        assert_eq!(unix_ms, 1_600_000);
        // Reboot: 100 s later, monotonic restarted and reads 3 s.
        let back = expiry_to_mono(unix_ms, 1_100_000_000_000, 3_000_000_000).unwrap();
        assert_eq!(back, 3_000_000_000 + 500_000_000_000);
        assert_eq!(expiry_to_mono(0, 1, 1), None);
        assert_eq!(expiry_to_unix_ms(0, 1, 1), 0);
    }

    #[test]
    fn clocks_move_forward() {
        let a = mono_ns();
        let b = mono_ns();
        assert!(b >= a);
        assert!(unix_ms() > 1_600_000_000_000);
    }
}
