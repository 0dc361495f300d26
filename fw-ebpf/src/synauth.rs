//! Step 4b of the program: SYN authentication of protected services (see
//! `fw_common::synauth` for the challenge): the lookup, the cookie check of a
//! client's RST, and the SYN-ACK the program writes for `XDP_TX`.

use super::*;

/// [`syn_auth`]'s answer when the packet goes on through the rest of the program.
pub(super) const SYN_AUTH_GO_ON: u64 = u64::MAX;

/// SYN authentication (see `fw_common::synauth`) of a SYN or a RST without ACK
/// to a protected service from a source not yet validated: `slot << 32 | action`
/// when the program acts on the packet itself, [`SYN_AUTH_GO_ON`] otherwise.
///
/// A BPF-to-BPF call of its own (not inlined): its locals get their own stack
/// frame instead of adding to `fw`'s 512 bytes.
#[inline(never)]
pub(super) fn syn_auth(raw: *mut xdp_md, sc: &mut Scratch, cfg: &GatewayConfig, now: u64) -> u64 {
    let ctx = XdpContext::new(raw);
    match syn_auth_inner(&ctx, sc, cfg, now) {
        Some((slot, action)) => ((slot as u64) << 32) | action as u64,
        None => SYN_AUTH_GO_ON,
    }
}

#[inline(always)]
fn syn_auth_inner(
    ctx: &XdpContext,
    sc: &mut Scratch,
    cfg: &GatewayConfig,
    now: u64,
) -> Option<(CounterSlot, u32)> {
    // The service itself, else the whole host (port 0: every TCP port).
    sc.svc = ServiceKey {
        addr: sc.p.dst,
        port: sc.p.dport,
        _pad: [0; 2],
    };
    let e = match SYN_AUTH.get_ptr_mut(&sc.svc) {
        Some(e) => e,
        None => {
            sc.svc.port = 0;
            SYN_AUTH.get_ptr_mut(&sc.svc)?
        }
    };
    let e = unsafe { &mut *e };
    if !e.active(now) {
        return None;
    }
    let syn = sc.p.meta.tcp_flags & tcp_flags::SYN != 0;
    if let Some(until) = unsafe { SYN_VALIDATED.get(&sc.p.src) }
        && *until > now
    {
        if syn {
            bump(&e.passed);
        }
        return None;
    }
    if !syn {
        // A RST: the answer to a challenge when it carries a valid cookie.
        if !cookie_returned(sc) {
            return None;
        }
        sc.validated_until = now + cfg.syn_auth_ttl_ns();
        let _ = SYN_VALIDATED.insert(&sc.p.src, &sc.validated_until, BPF_ANY as u64);
        bump(&e.validated);
        return Some((CounterSlot::DropSynAuth, xdp_action::XDP_DROP));
    }
    // A challenged SYN opens no flow; the victim's evidence still counts it, so the
    // detector sees the flood go on.
    count_towards(&sc.p, now);
    if cfg.observe() {
        return Some((CounterSlot::WouldTxSynAuth, xdp_action::XDP_PASS));
    }
    if challenge(ctx, sc) {
        bump(&e.challenged);
        return Some((CounterSlot::TxSynAuth, xdp_action::XDP_TX));
    }
    // Cannot be answered: the per-service fallback rate.
    if gcra_admit(
        &mut e.fallback_tat_ns,
        now,
        e.fallback_pps,
        e.fallback_burst,
    ) {
        return None;
    }
    bump(&e.limited);
    Some((CounterSlot::DropVictimRate, xdp_action::XDP_DROP))
}

/// Builds the synthetic IP header (client → server, as the SYN) and a 20-byte TCP
/// header with `seq`, `ack` and `flags` for the cookie helpers, in scratch space
/// (written in place: the 512-byte BPF stack has no room for copies).
#[inline(always)]
fn cookie_headers(sc: &mut Scratch, seq: u32, ack: u32, flags: u8) {
    let p = &sc.p;
    let ip = sc.cookie_ip.as_mut_ptr() as *mut u8;
    let th = sc.cookie_th.as_mut_ptr() as *mut u8;
    unsafe {
        core::ptr::write_bytes(ip, 0, 40);
        core::ptr::write_bytes(th, 0, 20);
        if p.family == FAMILY_V4 {
            *ip = 0x45;
            *ip.add(3) = 40;
            *ip.add(8) = 64;
            *ip.add(9) = 6;
            core::ptr::copy_nonoverlapping(p.src4.as_ptr(), ip.add(12), 4);
            core::ptr::copy_nonoverlapping(p.dst.as_ptr().add(12), ip.add(16), 4);
        } else {
            *ip = 0x60;
            *ip.add(5) = 20;
            *ip.add(6) = 6;
            *ip.add(7) = 64;
            core::ptr::copy_nonoverlapping(p.src.as_ptr(), ip.add(8), 16);
            core::ptr::copy_nonoverlapping(p.dst.as_ptr(), ip.add(24), 16);
        }
        sc.cookie_th[0] = u32::from_ne_bytes(pair_be(p.sport, p.dport));
        sc.cookie_th[1] = seq.to_be();
        sc.cookie_th[2] = ack.to_be();
        *th.add(12) = 0x50;
        *th.add(13) = flags;
    }
}

/// Two host-order `u16`s as four big-endian bytes.
#[inline(always)]
fn pair_be(a: u16, b: u16) -> [u8; 4] {
    let (a, b) = (a.to_be_bytes(), b.to_be_bytes());
    [a[0], a[1], b[0], b[1]]
}

/// Whether a RST's sequence number is the cookie a challenge sent this client:
/// checked by the kernel as the ACK of an ISN-0 handshake (seq 1, ack cookie + 1).
#[inline(always)]
fn cookie_returned(sc: &mut Scratch) -> bool {
    let ack = sc.p.tcp_seq.wrapping_add(1);
    cookie_headers(sc, 1, ack, tcp_flags::ACK);
    let ip = sc.cookie_ip.as_mut_ptr();
    let th = sc.cookie_th.as_mut_ptr() as *mut tcphdr;
    let r = unsafe {
        if sc.p.family == FAMILY_V4 {
            bpf_tcp_raw_check_syncookie_ipv4(ip as *mut iphdr, th)
        } else {
            bpf_tcp_raw_check_syncookie_ipv6(ip as *mut ipv6hdr, th)
        }
    };
    r == 0
}

/// Writes `v` big-endian at `p + off`.
#[inline(always)]
unsafe fn put16(p: *mut u8, off: usize, v: u16) {
    let b = v.to_be_bytes();
    unsafe {
        *p.add(off) = b[0];
        *p.add(off + 1) = b[1];
    }
}

/// Turns the SYN in the frame into the challenge SYN-ACK (addresses, ports and
/// MACs swapped, the cookie as acknowledgment number, no options, no payload);
/// `false` when it cannot (the frame is then unchanged).
#[inline(always)]
fn challenge(ctx: &XdpContext, sc: &mut Scratch) -> bool {
    if !sc.p.simple_l3 {
        return false;
    }
    cookie_headers(sc, 0, 0, tcp_flags::SYN);
    let ip = sc.cookie_ip.as_mut_ptr();
    let th = sc.cookie_th.as_mut_ptr() as *mut tcphdr;
    let r = unsafe {
        if sc.p.family == FAMILY_V4 {
            bpf_tcp_raw_gen_syncookie_ipv4(ip as *mut iphdr, th, 20)
        } else {
            bpf_tcp_raw_gen_syncookie_ipv6(ip as *mut ipv6hdr, th, 20)
        }
    };
    if r < 0 {
        return false;
    }
    let cookie = r as u32;
    let p = &sc.p;
    let l3 = p.l3_off as usize;
    let l4 = p.l4_off as usize;
    if l3 > 64 || l4 > 128 {
        return false;
    }
    // Trim to headers only (options and any payload go).
    let want = l4 + 20;
    let have = ctx.data_end() - ctx.data();
    if have > want && unsafe { bpf_xdp_adjust_tail(ctx.ctx, want as i32 - have as i32) } != 0 {
        return false;
    }
    // Ethernet: swap the MAC addresses.
    let Some(eth) = ptr_at::<[u8; 12]>(ctx, 0) else {
        return false;
    };
    let eth = eth as *mut [u32; 3];
    unsafe {
        let (a, b, c) = ((*eth)[0], (*eth)[1], (*eth)[2]);
        // Bytes 0-5 dst, 6-11 src, as three 32-bit words (little-endian loads).
        let (a, b, c) = (a.to_le_bytes(), b.to_le_bytes(), c.to_le_bytes());
        (*eth)[0] = u32::from_le_bytes([b[2], b[3], c[0], c[1]]);
        (*eth)[1] = u32::from_le_bytes([c[2], c[3], a[0], a[1]]);
        (*eth)[2] = u32::from_le_bytes([a[2], a[3], b[0], b[1]]);
    }
    // The TCP checksum's pseudo header and header sum (RFC 9293 §3.1).
    let mut sum: u64 = 6
        + 20
        + p.dport as u64
        + p.sport as u64
        + 2 * ((cookie >> 16) as u64 + (cookie & 0xffff) as u64)
        + 0x5012
        + fw_common::synauth::CHALLENGE_WINDOW as u64;
    if p.family == FAMILY_V4 {
        let Some(h) = ptr_at::<[u8; 20]>(ctx, l3) else {
            return false;
        };
        let h = h as *mut u8;
        unsafe {
            // Version/IHL, TOS, total length 40, id 0, DF, TTL 64, TCP, checksum.
            core::ptr::write_bytes(h, 0, 12);
            *h = 0x45;
            *h.add(3) = 40;
            *h.add(6) = 0x40;
            *h.add(8) = 64;
            *h.add(9) = 6;
            core::ptr::copy_nonoverlapping(p.dst.as_ptr().add(12), h.add(12), 4);
            core::ptr::copy_nonoverlapping(p.src4.as_ptr(), h.add(16), 4);
        }
        let addrs = csum_add_bytes(0, &p.src4)
            + csum_add_bytes(0, unsafe { &*(p.dst.as_ptr().add(12) as *const [u8; 4]) });
        let ipsum = 0x4500 + 40 + 0x4000 + 0x4006 + addrs;
        unsafe { put16(h, 10, csum_fold(ipsum)) };
        sum += addrs;
    } else {
        let Some(h) = ptr_at::<[u8; 40]>(ctx, l3) else {
            return false;
        };
        let h = h as *mut u8;
        unsafe {
            core::ptr::write_bytes(h, 0, 8);
            *h = 0x60;
            *h.add(5) = 20;
            *h.add(6) = 6;
            *h.add(7) = 64;
            core::ptr::copy_nonoverlapping(p.dst.as_ptr(), h.add(8), 16);
            core::ptr::copy_nonoverlapping(p.src.as_ptr(), h.add(24), 16);
        }
        sum += csum_add_bytes(0, &p.dst) + csum_add_bytes(0, &p.src);
    }
    let Some(t) = ptr_at::<[u8; 20]>(ctx, l4) else {
        return false;
    };
    let t = t as *mut u8;
    unsafe {
        put16(t, 0, p.dport);
        put16(t, 2, p.sport);
        put16(t, 4, (cookie >> 16) as u16);
        put16(t, 6, cookie as u16);
        put16(t, 8, (cookie >> 16) as u16);
        put16(t, 10, cookie as u16);
        *t.add(12) = 0x50;
        *t.add(13) = 0x12;
        put16(t, 14, fw_common::synauth::CHALLENGE_WINDOW);
        put16(t, 16, csum_fold(sum));
        put16(t, 18, 0);
    }
    true
}

/// Counts a flow opening towards the packet's receiver only (its destination
/// slot): for SYNs the program answers itself.
#[inline(always)]
fn count_towards(p: &Parsed, now: u64) {
    let m = &p.meta;
    if let Some(o) = opening(p.proto, m.is_tcp, m.tcp_flags, m.icmp, p.dport, m.ip_len)
        && let Some(d) = EVIDENCE_DST.get_ptr_mut(slot_index(&p.dst))
    {
        let d = unsafe { &mut *d };
        if d.claim(&p.dst, p.family, epoch_of(now)) {
            d.count_opening(&p.src, &o);
        }
    }
}
