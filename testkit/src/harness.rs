//! The real XDP program loaded (not attached) with private or pinned maps, run
//! once or many times through BPF_PROG_TEST_RUN, and helpers to fill and read its
//! maps (blocks, allows, config, counters, flows, evidence, events) the way the
//! gateway does.

use std::net::IpAddr;

use aya::{
    Ebpf, EbpfLoader,
    maps::{
        Array, HashMap, LpmTrie, PerCpuArray, PerCpuHashMap, PerCpuValues, RingBuf, lpm_trie::Key,
    },
    programs::{TestRun, TestRunOptions, Xdp},
    util::nr_cpus,
};
use fw_common::{
    admission::{PendingFlow, STAT_SLOTS},
    config::GatewayConfig,
    counters::{CounterSlot, CounterValue},
    evidence::{EvidenceEvent, EvidenceSlot},
    filter::{AllowEntry, BlockEntry},
    flow::{FlowKey, FlowStats, v4_mapped},
    maps as m,
};
use fw_ctl::pin::PinDir;

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
pub struct PrivatePins(
    /// The pin directory (maps under `maps/`).
    pub PinDir,
);

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
    /// The loaded object: program `fw` and its maps.
    pub ebpf: Ebpf,
}

impl Harness {
    /// Loads with private maps of the default sizes (panics unless root, or when
    /// the verifier rejects the program).
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

    /// Writes the single entry of the config map (mode, rate limits).
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

    /// Allowlists `net` ("a.b.c.d/len", no length = single address) in the
    /// allow trie of its family.
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

impl Harness {
    /// Every slot of `EVIDENCE_SRC` (one value shared by all CPUs), index order
    /// (`fw_common::evidence::slot_index`), empty slots included.
    pub fn evidence_src(&self) -> Vec<EvidenceSlot> {
        self.evidence(m::EVIDENCE_SRC)
    }

    /// Every slot of `EVIDENCE_DST`, same layout.
    pub fn evidence_dst(&self) -> Vec<EvidenceSlot> {
        self.evidence(m::EVIDENCE_DST)
    }

    /// Every slot of `PENDING` (first packets of flows not admitted yet,
    /// `fw_common::admission`), index order, empty slots included.
    pub fn pending(&self) -> Vec<PendingFlow> {
        let a: Array<_, PendingFlow> = Array::try_from(self.ebpf.map(m::PENDING).unwrap()).unwrap();
        (0..a.len()).map(|i| a.get(&i, 0).unwrap()).collect()
    }

    /// Every flow the program accounted: the flow map's (merged) and each
    /// pending one-packet flow's statistics, as (key, stats, CPUs that saw it).
    pub fn accounted_flows(&self) -> Vec<(FlowKey, FlowStats, u32)> {
        let mut out = self.flows();
        out.extend(
            self.pending()
                .iter()
                .filter(|p| p.first_seen_ns != 0)
                .map(|p| (p.key, p.stats(), 1)),
        );
        out
    }

    /// The admission counts (`fw_common::admission::STAT_*`), summed over CPUs.
    pub fn admission_counts(&self) -> [u64; STAT_SLOTS as usize] {
        let a: PerCpuArray<_, u64> =
            PerCpuArray::try_from(self.ebpf.map(m::ADMISSION).unwrap()).unwrap();
        let mut out = [0; STAT_SLOTS as usize];
        for (i, o) in out.iter_mut().enumerate() {
            *o = a.get(&(i as u32), 0).unwrap().iter().sum();
        }
        out
    }

    fn evidence(&self, name: &str) -> Vec<EvidenceSlot> {
        let a: Array<_, EvidenceSlot> = Array::try_from(self.ebpf.map(name).unwrap()).unwrap();
        (0..a.len()).map(|i| a.get(&i, 0).unwrap()).collect()
    }

    /// Every entry of the host blocklists `BLOCK_HOST_V4` and `BLOCK_HOST_V6`
    /// (expired ones included), addresses in the map encoding (IPv4-mapped for
    /// IPv4), sorted by address.
    pub fn host_blocks(&self) -> Vec<([u8; 16], BlockEntry)> {
        let v4: HashMap<_, [u8; 4], BlockEntry> =
            HashMap::try_from(self.ebpf.map(m::BLOCK_HOST_V4).unwrap()).unwrap();
        let v6: HashMap<_, [u8; 16], BlockEntry> =
            HashMap::try_from(self.ebpf.map(m::BLOCK_HOST_V6).unwrap()).unwrap();
        let mut out: Vec<([u8; 16], BlockEntry)> = v4
            .iter()
            .map(|r| {
                let (k, v) = r.unwrap();
                (v4_mapped(k), v)
            })
            .chain(v6.iter().map(|r| r.unwrap()))
            .collect();
        out.sort_unstable_by_key(|(a, _)| *a);
        out
    }

    /// Takes every event waiting in the `EVENTS` ring buffer, oldest first (the
    /// consumer position lives in the map, so each event is returned once).
    pub fn drain_events(&self) -> Vec<EvidenceEvent> {
        let mut ring = RingBuf::try_from(self.ebpf.map(m::EVENTS).unwrap()).unwrap();
        let mut out = Vec::new();
        while let Some(item) = ring.next() {
            assert_eq!(
                item.len(),
                std::mem::size_of::<EvidenceEvent>(),
                "ring buffer record size"
            );
            // SAFETY: the record holds exactly one EvidenceEvent (plain old data),
            // possibly unaligned.
            out.push(unsafe { std::ptr::read_unaligned(item.as_ptr().cast::<EvidenceEvent>()) });
        }
        out
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
