//! Support for the kernel tests: loading the real XDP object, running it through
//! BPF_PROG_TEST_RUN, reading and writing its maps, and crafting frames byte by
//! byte (so that every header variant, including malformed ones, is exact).
#![allow(dead_code)]

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use aya::{
    Ebpf, EbpfLoader,
    maps::{Array, HashMap, LpmTrie, PerCpuArray, PerCpuHashMap, PerCpuValues, lpm_trie::Key},
    programs::{TestRun, TestRunOptions, Xdp},
    util::nr_cpus,
};
use fw_common::{
    config::GatewayConfig,
    counters::{CounterSlot, CounterValue},
    filter::{AllowEntry, BlockEntry},
    flow::{FlowKey, FlowStats},
    maps as m,
};
use fw_ctl::pin::PinDir;

pub const XDP_DROP: u32 = 1;
pub const XDP_PASS: u32 = 2;

/// Nanoseconds on CLOCK_MONOTONIC, the clock of `bpf_ktime_get_ns`.
pub fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: valid pointer to a timespec.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    assert_eq!(rc, 0, "clock_gettime");
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// Pins the calling thread to one CPU so that per-CPU values land in one copy.
pub fn pin_to_cpu(cpu: usize) {
    // SAFETY: cpu_set_t is plain data; sched_setaffinity reads it.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        let rc = libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set);
        assert_eq!(rc, 0, "sched_setaffinity");
    }
}

/// A private pin directory `/sys/fs/bpf/<instance>/`, created on `new`; on drop
/// every map pin in it and the directory go (also when a test fails).
pub struct PrivatePins(pub PinDir);

impl PrivatePins {
    /// `instance` should carry the process id so parallel runs do not collide.
    pub fn new(instance: &str) -> PrivatePins {
        let dir = PinDir::new(instance).unwrap();
        for d in [dir.root.clone(), dir.maps_dir(), dir.links_dir()] {
            std::fs::create_dir_all(&d).expect("create the pin directory (bpffs, root)");
        }
        PrivatePins(dir)
    }
}

impl Drop for PrivatePins {
    fn drop(&mut self) {
        for n in m::ALL {
            let _ = std::fs::remove_file(self.0.map(n));
        }
        let _ = std::fs::remove_dir(self.0.maps_dir());
        let _ = std::fs::remove_dir(self.0.links_dir());
        let _ = std::fs::remove_dir(&self.0.root);
    }
}

/// The XDP program loaded (not attached) with private, unpinned maps.
pub struct Harness {
    pub ebpf: Ebpf,
}

impl Harness {
    pub fn load() -> Harness {
        Self::load_with(|_| {})
    }

    /// Loads with every map pinned in `pins`, so that `fw_ctl::kernel::Pinned`
    /// (the daemon's and the CLI's map access) works on them; `f` adjusts the loader.
    pub fn load_pinned(pins: &PrivatePins, f: impl FnOnce(&mut EbpfLoader<'_>)) -> Harness {
        let paths: Vec<(&str, std::path::PathBuf)> =
            m::ALL.iter().map(|n| (*n, pins.0.map(n))).collect();
        Self::load_with(|l| {
            for (name, p) in &paths {
                l.map_pin_path(name, p.clone());
            }
            f(l);
        })
    }

    /// Loads with a hook to adjust the loader (map sizes).
    pub fn load_with(f: impl FnOnce(&mut EbpfLoader<'_>)) -> Harness {
        let mut loader = EbpfLoader::new();
        f(&mut loader);
        let mut ebpf = loader
            .load(fw_ctl::object::EBPF_OBJECT)
            .expect("load the XDP object (run as root)");
        let prog: &mut Xdp = ebpf
            .program_mut(m::PROGRAM)
            .expect("program fw")
            .try_into()
            .expect("an XDP program");
        prog.load().expect("the verifier accepts the program");
        Harness { ebpf }
    }

    fn prog(&self) -> &Xdp {
        self.ebpf
            .program(m::PROGRAM)
            .expect("program fw")
            .try_into()
            .expect("an XDP program")
    }

    /// Runs the program once on `frame`; returns the XDP action.
    pub fn run(&self, frame: &[u8]) -> u32 {
        self.run_repeat(frame, 1).0
    }

    /// Runs the program `repeat` times; returns the action and mean ns per run.
    pub fn run_repeat(&self, frame: &[u8], repeat: u32) -> (u32, f64) {
        let mut opts = TestRunOptions::new();
        opts.data_in = Some(frame);
        opts.repeat = repeat;
        let r = self.prog().test_run(opts).expect("BPF_PROG_TEST_RUN");
        (r.return_value, r.duration.as_nanos() as f64)
    }

    pub fn set_config(&mut self, cfg: GatewayConfig) {
        let mut a: Array<_, GatewayConfig> =
            Array::try_from(self.ebpf.map_mut(m::CONFIG).unwrap()).unwrap();
        a.set(0, cfg, 0).unwrap();
    }

    /// Sum over CPUs of one counter slot.
    pub fn counter(&self, slot: CounterSlot) -> CounterValue {
        let a: PerCpuArray<_, CounterValue> =
            PerCpuArray::try_from(self.ebpf.map(m::COUNTERS).unwrap()).unwrap();
        let v = a.get(&(slot as u32), 0).unwrap();
        v.iter()
            .fold(CounterValue::default(), |acc, c| CounterValue {
                packets: acc.packets + c.packets,
                bytes: acc.bytes + c.bytes,
            })
    }

    /// Every slot's packet count, in slot order.
    pub fn all_counters(&self) -> Vec<u64> {
        CounterSlot::ALL
            .iter()
            .map(|s| self.counter(*s).packets)
            .collect()
    }

    /// Blocks `net` ("a.b.c.d/len", no length = single address) in the map the
    /// gateway uses for it: single addresses in the host hash maps, shorter
    /// prefixes in the LPM tries.
    pub fn block(&mut self, net: &str, entry: BlockEntry) {
        let (addr, len) = parse_net(net);
        self.block_prefix(addr, len, entry);
    }

    /// [`Harness::block`] without the parsing (for filling large lists).
    pub fn block_prefix(&mut self, addr: IpAddr, len: u32, entry: BlockEntry) {
        let host = m::is_host_prefix(len as u8, addr.is_ipv6());
        match (addr, host) {
            (IpAddr::V4(a), true) => {
                let mut h: HashMap<_, [u8; 4], BlockEntry> =
                    HashMap::try_from(self.ebpf.map_mut(m::BLOCK_HOST_V4).unwrap()).unwrap();
                h.insert(a.octets(), entry, 0).unwrap();
            }
            (IpAddr::V6(a), true) => {
                let mut h: HashMap<_, [u8; 16], BlockEntry> =
                    HashMap::try_from(self.ebpf.map_mut(m::BLOCK_HOST_V6).unwrap()).unwrap();
                h.insert(a.octets(), entry, 0).unwrap();
            }
            (IpAddr::V4(a), false) => {
                let mut t: LpmTrie<_, [u8; 4], BlockEntry> =
                    LpmTrie::try_from(self.ebpf.map_mut(m::BLOCK_V4).unwrap()).unwrap();
                t.insert(&Key::new(len, a.octets()), entry, 0).unwrap();
            }
            (IpAddr::V6(a), false) => {
                let mut t: LpmTrie<_, [u8; 16], BlockEntry> =
                    LpmTrie::try_from(self.ebpf.map_mut(m::BLOCK_V6).unwrap()).unwrap();
                t.insert(&Key::new(len, a.octets()), entry, 0).unwrap();
            }
        }
    }

    /// Removes exactly `net` from the map [`Harness::block`] put it in (panics when
    /// absent).
    pub fn unblock(&mut self, net: &str) {
        let (addr, len) = parse_net(net);
        let host = m::is_host_prefix(len as u8, addr.is_ipv6());
        match (addr, host) {
            (IpAddr::V4(a), true) => {
                let mut h: HashMap<_, [u8; 4], BlockEntry> =
                    HashMap::try_from(self.ebpf.map_mut(m::BLOCK_HOST_V4).unwrap()).unwrap();
                h.remove(&a.octets()).unwrap();
            }
            (IpAddr::V6(a), true) => {
                let mut h: HashMap<_, [u8; 16], BlockEntry> =
                    HashMap::try_from(self.ebpf.map_mut(m::BLOCK_HOST_V6).unwrap()).unwrap();
                h.remove(&a.octets()).unwrap();
            }
            (IpAddr::V4(a), false) => {
                let mut t: LpmTrie<_, [u8; 4], BlockEntry> =
                    LpmTrie::try_from(self.ebpf.map_mut(m::BLOCK_V4).unwrap()).unwrap();
                t.remove(&Key::new(len, a.octets())).unwrap();
            }
            (IpAddr::V6(a), false) => {
                let mut t: LpmTrie<_, [u8; 16], BlockEntry> =
                    LpmTrie::try_from(self.ebpf.map_mut(m::BLOCK_V6).unwrap()).unwrap();
                t.remove(&Key::new(len, a.octets())).unwrap();
            }
        }
    }

    /// The entry stored for exactly `net` (panics when absent).
    pub fn block_entry(&self, net: &str) -> BlockEntry {
        let (addr, len) = parse_net(net);
        let host = m::is_host_prefix(len as u8, addr.is_ipv6());
        match (addr, host) {
            (IpAddr::V4(a), true) => {
                let h: HashMap<_, [u8; 4], BlockEntry> =
                    HashMap::try_from(self.ebpf.map(m::BLOCK_HOST_V4).unwrap()).unwrap();
                h.get(&a.octets(), 0).unwrap()
            }
            (IpAddr::V6(a), true) => {
                let h: HashMap<_, [u8; 16], BlockEntry> =
                    HashMap::try_from(self.ebpf.map(m::BLOCK_HOST_V6).unwrap()).unwrap();
                h.get(&a.octets(), 0).unwrap()
            }
            (IpAddr::V4(a), false) => {
                let t: LpmTrie<_, [u8; 4], BlockEntry> =
                    LpmTrie::try_from(self.ebpf.map(m::BLOCK_V4).unwrap()).unwrap();
                t.get(&Key::new(len, a.octets()), 0).unwrap()
            }
            (IpAddr::V6(a), false) => {
                let t: LpmTrie<_, [u8; 16], BlockEntry> =
                    LpmTrie::try_from(self.ebpf.map(m::BLOCK_V6).unwrap()).unwrap();
                t.get(&Key::new(len, a.octets()), 0).unwrap()
            }
        }
    }

    pub fn allow(&mut self, net: &str) {
        let (addr, len) = parse_net(net);
        let entry = AllowEntry::default();
        match addr {
            IpAddr::V4(a) => {
                let mut t: LpmTrie<_, [u8; 4], AllowEntry> =
                    LpmTrie::try_from(self.ebpf.map_mut(m::ALLOW_V4).unwrap()).unwrap();
                t.insert(&Key::new(len, a.octets()), entry, 0).unwrap();
            }
            IpAddr::V6(a) => {
                let mut t: LpmTrie<_, [u8; 16], AllowEntry> =
                    LpmTrie::try_from(self.ebpf.map_mut(m::ALLOW_V6).unwrap()).unwrap();
                t.insert(&Key::new(len, a.octets()), entry, 0).unwrap();
            }
        }
    }

    /// All flows, per-CPU copies merged: (key, merged stats, CPUs that saw it).
    pub fn flows(&self) -> Vec<(FlowKey, FlowStats, u32)> {
        let h: PerCpuHashMap<_, FlowKey, FlowStats> =
            PerCpuHashMap::try_from(self.ebpf.map(m::FLOWS).unwrap()).unwrap();
        h.iter()
            .map(|r| {
                let (k, v): (FlowKey, PerCpuValues<FlowStats>) = r.unwrap();
                let (merged, seen) = FlowStats::merge(v.iter());
                (k, merged, seen)
            })
            .collect()
    }
}

/// Number of possible CPUs (per-CPU map width).
pub fn cpus() -> usize {
    nr_cpus().unwrap()
}

fn parse_net(net: &str) -> (IpAddr, u32) {
    let (a, l) = net.split_once('/').unwrap_or((net, ""));
    let addr: IpAddr = a.parse().unwrap();
    let len = if l.is_empty() {
        if addr.is_ipv4() { 32 } else { 128 }
    } else {
        l.parse().unwrap()
    };
    (addr, len)
}

// ---- Frame crafting -------------------------------------------------------

pub const TPID_8021Q: u16 = 0x8100;
pub const TPID_8021AD: u16 = 0x88a8;

/// Ethernet header (+ VLAN tags, outermost first, as (TPID, VID)) and ethertype.
pub fn eth(vlans: &[(u16, u16)], ethertype: u16) -> Vec<u8> {
    let mut f = vec![0x02, 0, 0, 0, 0, 0x02, 0x02, 0, 0, 0, 0, 0x01];
    for (tpid, vid) in vlans {
        f.extend_from_slice(&tpid.to_be_bytes());
        f.extend_from_slice(&vid.to_be_bytes());
    }
    f.extend_from_slice(&ethertype.to_be_bytes());
    f
}

/// IPv4 header with `opt_words` 32-bit words of options (NOPs), `frag` = flags +
/// fragment offset field, followed by `payload`. Total length covers the payload.
pub fn ipv4(
    src: Ipv4Addr,
    dst: Ipv4Addr,
    proto: u8,
    opt_words: u8,
    frag: u16,
    payload: &[u8],
) -> Vec<u8> {
    let ihl = 5 + opt_words;
    let tot = ihl as u16 * 4 + payload.len() as u16;
    let mut h = vec![0x40 | ihl, 0];
    h.extend_from_slice(&tot.to_be_bytes());
    h.extend_from_slice(&[0x12, 0x34]);
    h.extend_from_slice(&frag.to_be_bytes());
    h.extend_from_slice(&[64, proto, 0, 0]);
    h.extend_from_slice(&src.octets());
    h.extend_from_slice(&dst.octets());
    h.extend(std::iter::repeat_n(1u8, opt_words as usize * 4)); // NOP options
    h.extend_from_slice(payload);
    h
}

/// IPv6 extension header: (type, body) where the body excludes the 2 bytes of
/// next-header and length; it is padded to a multiple of 8 octets.
pub fn ipv6(
    src: Ipv6Addr,
    dst: Ipv6Addr,
    proto: u8,
    ext: &[(u8, Vec<u8>)],
    payload: &[u8],
) -> Vec<u8> {
    let mut exts = Vec::new();
    let mut types: Vec<u8> = ext.iter().map(|(t, _)| *t).collect();
    types.push(proto);
    for (i, (t, body)) in ext.iter().enumerate() {
        let next = types[i + 1];
        if *t == 44 {
            // Fragment header: next, reserved, offset/flags (2), id (4).
            exts.push(next);
            exts.push(0);
            exts.extend_from_slice(&body[..6]);
        } else {
            let mut b = vec![next, 0];
            b.extend_from_slice(body);
            while b.len() % 8 != 0 {
                b.push(0);
            }
            b[1] = (b.len() / 8 - 1) as u8;
            exts.extend(b);
        }
    }
    let first = if ext.is_empty() { proto } else { ext[0].0 };
    let plen = (exts.len() + payload.len()) as u16;
    let mut h = vec![0x60, 0, 0, 0];
    h.extend_from_slice(&plen.to_be_bytes());
    h.push(first);
    h.push(64);
    h.extend_from_slice(&src.octets());
    h.extend_from_slice(&dst.octets());
    h.extend(exts);
    h.extend_from_slice(payload);
    h
}

/// IPv6 fragment-header body: fragment offset (8-octet units) and M flag.
pub fn frag6(offset_units: u16, more: bool) -> Vec<u8> {
    let v = (offset_units << 3) | more as u16;
    let mut b = v.to_be_bytes().to_vec();
    b.extend_from_slice(&[0, 0, 0, 7]);
    b
}

/// TCP header (20 bytes) with `flags`, followed by `payload_len` zero bytes.
pub fn tcp(sport: u16, dport: u16, flags: u8, payload_len: usize) -> Vec<u8> {
    let mut t = Vec::with_capacity(20 + payload_len);
    t.extend_from_slice(&sport.to_be_bytes());
    t.extend_from_slice(&dport.to_be_bytes());
    t.extend_from_slice(&[0, 0, 0, 1, 0, 0, 0, 0, 0x50, flags, 0xff, 0xff, 0, 0, 0, 0]);
    t.resize(20 + payload_len, 0);
    t
}

/// UDP header (8 bytes) + `payload_len` bytes.
pub fn udp(sport: u16, dport: u16, payload_len: usize) -> Vec<u8> {
    let mut u = Vec::new();
    u.extend_from_slice(&sport.to_be_bytes());
    u.extend_from_slice(&dport.to_be_bytes());
    u.extend_from_slice(&((8 + payload_len) as u16).to_be_bytes());
    u.extend_from_slice(&[0, 0]);
    u.resize(8 + payload_len, 0);
    u
}

/// ICMP / ICMPv6 header: type, code, checksum, 4 bytes rest.
pub fn icmp(typ: u8, code: u8) -> Vec<u8> {
    vec![typ, code, 0, 0, 0, 1, 0, 1]
}

/// A whole Ethernet/IPv4/TCP frame.
pub fn v4_tcp(src: &str, dst: &str, sport: u16, dport: u16, flags: u8, payload: usize) -> Vec<u8> {
    let mut f = eth(&[], 0x0800);
    f.extend(ipv4(
        src.parse().unwrap(),
        dst.parse().unwrap(),
        6,
        0,
        0,
        &tcp(sport, dport, flags, payload),
    ));
    f
}

/// A whole Ethernet/IPv6/TCP frame.
pub fn v6_tcp(src: &str, dst: &str, sport: u16, dport: u16, flags: u8, payload: usize) -> Vec<u8> {
    let mut f = eth(&[], 0x86dd);
    f.extend(ipv6(
        src.parse().unwrap(),
        dst.parse().unwrap(),
        6,
        &[],
        &tcp(sport, dport, flags, payload),
    ));
    f
}

/// The machine a benchmark ran on: CPU model, CPUs, memory, kernel release.
pub fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_string())
        })
        .unwrap_or_default();
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let mem_gib = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .next()
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<f64>().ok())
        })
        .map(|kb| kb / 1024.0 / 1024.0)
        .unwrap_or(0.0);
    format!(
        "{cpu}; {} CPUs; {mem_gib:.0} GiB; Linux {}",
        cpus(),
        kernel.trim()
    )
}
