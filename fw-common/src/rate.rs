//! Per-source rate limiting: a token bucket in its GCRA form (the Generic Cell
//! Rate Algorithm of ITU-T I.371, "virtual scheduling"), which needs one timestamp
//! per bucket instead of a token count and a refill time.
//!
//! A bucket with rate `r` packets/s and burst `b` admits `b` packets back to back
//! and then one every `1/r` seconds: exactly the token bucket with depth `b` that
//! refills at `r` tokens/s.

/// Key of the rate-limit LRU: the source address. IPv4 sources are stored
/// IPv4-mapped (`::ffff:a.b.c.d`, RFC 4291 2.5.5.2), network byte order.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct RateKey {
    pub addr: [u8; 16],
}

/// Two buckets per source. Timestamps on the `bpf_ktime_get_ns` clock (ns).
///
/// Updates are plain stores, not atomics: when two CPUs race on one source each
/// may admit a packet the other would have counted, so the limit can be exceeded
/// by at most one packet per CPU per race. A source's packets normally arrive on
/// one receive queue, so this is rare.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RateState {
    /// Theoretical arrival time of the next SYN (TCP SYN without ACK), ns.
    pub syn_tat_ns: u64,
    /// Theoretical arrival time of the next packet of any kind, ns.
    pub pkt_tat_ns: u64,
}

/// GCRA admission test: whether a packet arriving at `now_ns` conforms to a bucket
/// of `rate_pps` packets/s with burst `burst` packets, updating the bucket's
/// theoretical arrival time `tat_ns` when it does.
///
/// `rate_pps == 0` means no limit. A burst of 0 is treated as 1. A packet that does
/// not conform leaves the bucket unchanged (it consumes no token).
#[inline(always)]
pub fn gcra_admit(tat_ns: &mut u64, now_ns: u64, rate_pps: u32, burst: u32) -> bool {
    if rate_pps == 0 {
        return true;
    }
    let interval_ns = 1_000_000_000u64 / rate_pps as u64;
    let burst = if burst == 0 { 1 } else { burst };
    let tolerance_ns = interval_ns * (burst as u64 - 1);
    let tat = if *tat_ns > now_ns { *tat_ns } else { now_ns };
    if tat - now_ns > tolerance_ns {
        return false;
    }
    *tat_ns = tat + interval_ns;
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn admits_exactly_the_burst_back_to_back() {
        let mut tat = 0;
        let admitted = (0..20)
            .filter(|_| gcra_admit(&mut tat, 1_000, 10, 5))
            .count();
        assert_eq!(admitted, 5);
    }

    #[test]
    fn refills_at_the_rate() {
        let mut tat = 0;
        let t0 = 5_000_000_000;
        for _ in 0..5 {
            assert!(gcra_admit(&mut tat, t0, 10, 5));
        }
        assert!(!gcra_admit(&mut tat, t0, 10, 5));
        // One interval (100 ms at 10 pps) later exactly one more conforms.
        assert!(gcra_admit(&mut tat, t0 + 100_000_000, 10, 5));
        assert!(!gcra_admit(&mut tat, t0 + 100_000_000, 10, 5));
    }

    #[test]
    fn zero_rate_is_off() {
        let mut tat = 0;
        assert!((0..1000).all(|_| gcra_admit(&mut tat, 1, 0, 0)));
        assert_eq!(tat, 0);
    }
}
