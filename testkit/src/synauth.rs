//! SYN-authentication helpers for the kernel tests: protect a service in the
//! `SYN_AUTH` map, read its counters and the validated sources, and run the
//! program with its output frame (the challenge SYN-ACK it writes for `XDP_TX`).

use std::net::IpAddr;

use aya::{
    maps::HashMap,
    programs::{TestRun, TestRunOptions, Xdp},
};
use fw_common::{
    flow::v4_mapped,
    maps as m,
    synauth::{ServiceKey, SynAuthEntry},
};

use crate::Harness;

/// `XDP_TX` (`enum xdp_action`, include/uapi/linux/bpf.h).
pub const XDP_TX: u32 = 3;

/// An address as the maps key it (network order, IPv4-mapped).
pub fn map_addr(a: IpAddr) -> [u8; 16] {
    match a {
        IpAddr::V4(a) => v4_mapped(a.octets()),
        IpAddr::V6(a) => a.octets(),
    }
}

fn service(addr: &str, port: u16) -> ServiceKey {
    ServiceKey {
        addr: map_addr(addr.parse().expect("an address")),
        port,
        _pad: [0; 2],
    }
}

impl Harness {
    /// Runs the program once on `frame`; returns the action and the frame as the
    /// program left it.
    pub fn run_out(&self, frame: &[u8]) -> (u32, Vec<u8>) {
        let prog: &Xdp = self
            .ebpf
            .program(m::PROGRAM)
            .expect("program fw")
            .try_into()
            .expect("an XDP program");
        let mut out = vec![0u8; frame.len() + 256];
        let mut opts = TestRunOptions::new();
        opts.data_in = Some(frame);
        opts.data_out = Some(&mut out);
        let r = prog.test_run(opts).expect("BPF_PROG_TEST_RUN");
        let n = r.data_size_out as usize;
        out.truncate(n);
        (r.return_value, out)
    }

    /// Protects TCP service `addr:port` with `entry` (its counters as given).
    pub fn protect(&mut self, addr: &str, port: u16, entry: SynAuthEntry) {
        let mut h: HashMap<_, ServiceKey, SynAuthEntry> =
            HashMap::try_from(self.ebpf.map_mut(m::SYN_AUTH).unwrap()).unwrap();
        h.insert(service(addr, port), entry, 0).unwrap();
    }

    /// Ends the protection of `addr:port`.
    pub fn unprotect(&mut self, addr: &str, port: u16) {
        let mut h: HashMap<_, ServiceKey, SynAuthEntry> =
            HashMap::try_from(self.ebpf.map_mut(m::SYN_AUTH).unwrap()).unwrap();
        h.remove(&service(addr, port)).unwrap();
    }

    /// The protection entry of `addr:port` (panics when absent).
    pub fn syn_auth_entry(&self, addr: &str, port: u16) -> SynAuthEntry {
        let h: HashMap<_, ServiceKey, SynAuthEntry> =
            HashMap::try_from(self.ebpf.map(m::SYN_AUTH).unwrap()).unwrap();
        h.get(&service(addr, port), 0).unwrap()
    }

    /// The expiry (ns) of a validated source, if it is in the map.
    pub fn validated_until(&self, addr: &str) -> Option<u64> {
        let h: HashMap<_, [u8; 16], u64> =
            HashMap::try_from(self.ebpf.map(m::SYN_VALIDATED).unwrap()).unwrap();
        h.get(&map_addr(addr.parse().unwrap()), 0).ok()
    }
}
