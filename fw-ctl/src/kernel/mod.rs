//! Access to a loaded instance's pinned maps (`/sys/fs/bpf/<instance>/maps/*`):
//! the allow/block LPM tries (as [`Lists`]), the runtime configuration, the verdict
//! counters, the flow table and the fill level of each map. Every verb other than
//! `load` works through this, with or without the daemon running. The evidence
//! arrays and the event ring buffer have their own handles ([`EvidenceTable`],
//! [`open_events`]), which only the daemon's evidence task holds.
//!
//! # Evidence arrays
//! `EVIDENCE_SRC` / `EVIDENCE_DST` are `BPF_F_MMAPABLE` arrays: [`EvidenceTable`]
//! maps them read-only and shared (`mmap(PROT_READ, MAP_SHARED)` of the map fd,
//! kernel `array_map_mmap`; slot `i` at byte `i * 232`), so reading all 4,096 slots
//! is a memory copy, not 4,096 syscalls. The program updates the slots with plain
//! stores while they are read: a copy may be torn (half of an update), which costs
//! at most one increment or bit until the next read. When the kernel refuses the
//! mapping (a map made without the flag by an older version, kept by `unload
//! --keep-maps`), each slot is read with a lookup instead.
//!
//! # Exact lookups in an LPM trie
//! A lookup in `BPF_MAP_TYPE_LPM_TRIE` is a longest-prefix match: asking for
//! `198.51.100.0/24` returns the entry of `198.51.100.0/16` if only that exists.
//! Every trie entry fw-ctl writes therefore carries its own prefix length
//! (`BlockEntry::lpm_tag`, cleared again on every read), and
//! [`Pinned::get_block`] reports the entry only when the tag names the asked
//! prefix. For an untagged entry (written by an older version) it looks up the
//! same address one bit shorter: when both answers are the same entry (ignoring
//! the hit count, which the program changes concurrently) the match came from a
//! shorter prefix and the exact prefix is reported absent. Deletion is exact in
//! the kernel.
//!
//! # Single addresses
//! Blocklist /32 and /128 entries live in the exact-match hash maps
//! `BLOCK_HOST_V4` / `BLOCK_HOST_V6`, every other prefix in the tries
//! (`fw_common::maps::is_host_prefix`). [`Lists`] hides the split: callers give a
//! prefix and this module picks the map. A /32 left in a trie by an older version
//! (maps reused across an upgrade) is still found, listed and removed.

use std::{collections::BTreeMap, io, net::IpAddr};

mod mapped;
use aya::maps::{
    Array, HashMap, Map, MapData, MapError, PerCpuArray, PerCpuHashMap, RingBuf,
    lpm_trie::{Key, LpmTrie},
};
use fw_common::{
    admission::STAT_SLOTS,
    config::GatewayConfig,
    counters::{COUNTER_SLOTS, CounterSlot, CounterValue},
    evidence::EvidenceEvent,
    filter::{AllowEntry, BlockEntry},
    flow::{FlowKey, FlowStats},
    maps as names,
    rate::{RateKey, RateState},
    synauth::{ServiceKey, SynAuthEntry},
};
use ipnet::IpNet;
pub use mapped::{EvidenceTable, MappedArray, PendingTable};
use tad_wire::MapFill;

use crate::{
    cidr::{key_v4, key_v6, net_of_v4, net_of_v6},
    error::{CtlError, Result},
    lists::Lists,
    pin::PinDir,
};

/// The io::Error inside a map error (syscall failures keep their errno).
pub(crate) fn io_of(e: MapError) -> io::Error {
    match e {
        MapError::SyscallError(s) => s.io_error,
        MapError::KeyNotFound => io::Error::from_raw_os_error(libc::ENOENT),
        other => io::Error::other(other.to_string()),
    }
}

pub(crate) fn err(map: &str, what: &str, e: MapError) -> CtlError {
    CtlError::map(map, what, io_of(e))
}

fn not_found(e: &MapError) -> bool {
    match e {
        MapError::KeyNotFound => true,
        MapError::SyscallError(s) => s.io_error.raw_os_error() == Some(libc::ENOENT),
        _ => false,
    }
}

fn open(dir: &PinDir, name: &str) -> Result<Map> {
    let path = dir.map(name);
    let data = MapData::from_pin(&path).map_err(|e| {
        if not_found(&e) {
            CtlError::NotLoaded {
                instance: dir.instance.clone(),
                path: path.clone(),
            }
        } else {
            err(name, "open pinned map", e)
        }
    })?;
    Map::from_map_data(data).map_err(|e| err(name, "open pinned map", e))
}

pub(crate) fn typed<T: TryFrom<Map, Error = MapError>>(dir: &PinDir, name: &str) -> Result<T> {
    T::try_from(open(dir, name)?).map_err(|e| err(name, "unexpected map type", e))
}

/// Flow entries read per `BPF_MAP_LOOKUP_BATCH` call.
pub const FLOW_BATCH: usize = 4096;

/// The maps of a loaded instance, opened from their pins.
pub struct Pinned {
    pub dir: PinDir,
    allow4: LpmTrie<MapData, [u8; 4], AllowEntry>,
    allow6: LpmTrie<MapData, [u8; 16], AllowEntry>,
    block4: LpmTrie<MapData, [u8; 4], BlockEntry>,
    block6: LpmTrie<MapData, [u8; 16], BlockEntry>,
    host4: HashMap<MapData, [u8; 4], BlockEntry>,
    host6: HashMap<MapData, [u8; 16], BlockEntry>,
    rate: HashMap<MapData, RateKey, RateState>,
    flows: PerCpuHashMap<MapData, FlowKey, FlowStats>,
    counters: PerCpuArray<MapData, CounterValue>,
    config: Array<MapData, GatewayConfig>,
}

/// One flow as read from the map: its key, the merged per-CPU statistics, the
/// per-CPU copies that saw packets.
#[derive(Clone, Debug)]
pub struct FlowEntry {
    pub key: FlowKey,
    pub stats: FlowStats,
    pub cpus_seen: u32,
}

impl Pinned {
    /// Opens every map of `dir`; [`CtlError::NotLoaded`] when they are not pinned.
    pub fn open(dir: &PinDir) -> Result<Pinned> {
        Ok(Pinned {
            dir: dir.clone(),
            allow4: typed(dir, names::ALLOW_V4)?,
            allow6: typed(dir, names::ALLOW_V6)?,
            block4: typed(dir, names::BLOCK_V4)?,
            block6: typed(dir, names::BLOCK_V6)?,
            host4: typed(dir, names::BLOCK_HOST_V4)?,
            host6: typed(dir, names::BLOCK_HOST_V6)?,
            rate: typed(dir, names::RATE)?,
            flows: typed(dir, names::FLOWS)?,
            counters: typed(dir, names::COUNTERS)?,
            config: typed(dir, names::CONFIG)?,
        })
    }

    /// The runtime configuration (index 0 of CONFIG).
    pub fn config(&self) -> Result<GatewayConfig> {
        self.config
            .get(&0, 0)
            .map_err(|e| err(names::CONFIG, "read", e))
    }

    /// Replaces the runtime configuration; the program sees it on its next packet.
    pub fn set_config(&mut self, cfg: &GatewayConfig) -> Result<()> {
        self.config
            .set(0, cfg, 0)
            .map_err(|e| err(names::CONFIG, "write", e))
    }

    /// Packets and bytes per counter slot, summed over CPUs, in slot order.
    pub fn counters(&self) -> Result<Vec<(CounterSlot, CounterValue)>> {
        let mut out = Vec::with_capacity(COUNTER_SLOTS as usize);
        for slot in CounterSlot::ALL {
            let per_cpu = self
                .counters
                .get(&(slot as u32), 0)
                .map_err(|e| err(names::COUNTERS, "read", e))?;
            let mut sum = CounterValue::default();
            for v in per_cpu.iter() {
                sum.packets += v.packets;
                sum.bytes += v.bytes;
            }
            out.push((slot, sum));
        }
        Ok(out)
    }

    /// The admission rule's counts (`fw_common::admission::STAT_*`: flows
    /// admitted on their second packet, first packets made pending, live pending
    /// flows replaced by a colliding one), summed over CPUs; `None` for maps kept
    /// from a version without the `ADMISSION` map.
    pub fn admission(&self) -> Option<[u64; STAT_SLOTS as usize]> {
        let a: PerCpuArray<MapData, u64> = typed(&self.dir, names::ADMISSION).ok()?;
        let mut out = [0; STAT_SLOTS as usize];
        for (i, o) in out.iter_mut().enumerate() {
            *o = a.get(&(i as u32), 0).ok()?.iter().sum();
        }
        Some(out)
    }

    /// Every flow in the table, per-CPU copies merged with [`FlowStats::merge`].
    /// Entries that vanish while walking (LRU eviction) are skipped.
    ///
    /// Read in batches of up to [`FLOW_BATCH`] entries with `BPF_MAP_LOOKUP_BATCH`
    /// (Linux 5.6+; one syscall per batch instead of two per entry); on a kernel
    /// without it, entry by entry.
    pub fn flows(&self) -> Result<Vec<FlowEntry>> {
        match self.flows_batched() {
            Ok(Some(v)) => Ok(v),
            Ok(None) => self.flows_one_by_one(),
            Err(e) => Err(e),
        }
    }

    /// The walk with `BPF_MAP_LOOKUP_BATCH`; `None` when the kernel lacks it.
    ///
    /// Layout (kernel `union bpf_attr`, `batch` member; Documentation/bpf/map_hash.rst):
    /// keys are packed at the key size, values at `cpus` x the value size rounded up
    /// to 8 bytes per key (per-CPU map); the batch token of hash maps is a `u32`
    /// bucket index. The last batch ends with ENOENT; ENOSPC means one hash
    /// bucket holds more entries than the buffer, which is then doubled.
    fn flows_batched(&self) -> Result<Option<Vec<FlowEntry>>> {
        const BPF_MAP_LOOKUP_BATCH: libc::c_long = 24;
        #[repr(C)]
        #[derive(Default)]
        struct BatchAttr {
            in_batch: u64,
            out_batch: u64,
            keys: u64,
            values: u64,
            count: u32,
            map_fd: u32,
            elem_flags: u64,
            flags: u64,
        }
        const _: () = assert!(std::mem::size_of::<FlowStats>().is_multiple_of(8));
        let cpus =
            aya::util::nr_cpus().map_err(|(what, e)| CtlError::map(names::FLOWS, what, e))?;
        let fd = {
            use std::os::fd::{AsFd as _, AsRawFd as _};
            aya::maps::IterableMap::map(&self.flows)
                .fd()
                .as_fd()
                .as_raw_fd() as u32
        };
        let mut cap = FLOW_BATCH;
        let mut keys = vec![FlowKey::default(); cap];
        let mut values = vec![FlowStats::default(); cap * cpus];
        let mut out = Vec::new();
        let (mut token_in, mut token_out) = (0u32, 0u32);
        let mut first = true;
        loop {
            let mut attr = BatchAttr {
                in_batch: if first {
                    0
                } else {
                    &token_in as *const u32 as u64
                },
                out_batch: &mut token_out as *mut u32 as u64,
                keys: keys.as_mut_ptr() as u64,
                values: values.as_mut_ptr() as u64,
                count: cap as u32,
                map_fd: fd,
                ..Default::default()
            };
            // SAFETY: `attr` follows the kernel's layout for the batch commands; the
            // buffers hold `cap` keys and `cap * cpus` values of the map's sizes and
            // outlive the call; the kernel writes at most `count` of each.
            let rc = unsafe {
                libc::syscall(
                    libc::SYS_bpf,
                    BPF_MAP_LOOKUP_BATCH,
                    &mut attr as *mut BatchAttr,
                    std::mem::size_of::<BatchAttr>(),
                )
            };
            let errno = (rc < 0).then(io::Error::last_os_error);
            let n = (attr.count as usize).min(cap);
            if errno.is_none()
                || errno.as_ref().and_then(|e| e.raw_os_error()) == Some(libc::ENOENT)
            {
                for (i, key) in keys[..n].iter().enumerate() {
                    let (stats, cpus_seen) = FlowStats::merge(&values[i * cpus..(i + 1) * cpus]);
                    out.push(FlowEntry {
                        key: *key,
                        stats,
                        cpus_seen,
                    });
                }
            }
            match errno.as_ref().and_then(|e| e.raw_os_error()) {
                None => {}
                Some(libc::ENOENT) => return Ok(Some(out)),
                Some(libc::ENOSPC) if n == 0 => {
                    cap *= 2;
                    keys.resize(cap, FlowKey::default());
                    values.resize(cap * cpus, FlowStats::default());
                    continue;
                }
                // No batch support for this map type or kernel.
                Some(libc::EINVAL) | Some(libc::ENOTSUP) | Some(524) if first => return Ok(None),
                Some(_) => {
                    let e = errno.unwrap_or_else(|| io::Error::other("batch lookup"));
                    return Err(CtlError::map(names::FLOWS, "batch lookup", e));
                }
            }
            token_in = token_out;
            first = false;
        }
    }

    /// The walk with one `next key` and one lookup per entry.
    fn flows_one_by_one(&self) -> Result<Vec<FlowEntry>> {
        let mut out = Vec::new();
        for item in self.flows.iter() {
            match item {
                Ok((key, values)) => {
                    let (stats, cpus_seen) = FlowStats::merge(values.iter());
                    out.push(FlowEntry {
                        key,
                        stats,
                        cpus_seen,
                    });
                }
                Err(e) if not_found(&e) => continue,
                Err(e) => return Err(err(names::FLOWS, "iterate", e)),
            }
        }
        Ok(out)
    }

    /// Removes a flow; false when it was already gone.
    pub fn remove_flow(&mut self, key: &FlowKey) -> Result<bool> {
        match self.flows.remove(key) {
            Ok(()) => Ok(true),
            Err(e) if not_found(&e) => Ok(false),
            Err(e) => Err(err(names::FLOWS, "delete", e)),
        }
    }

    /// Entries and capacity of every map, in [`names::ALL`] order. Counting walks the
    /// keys (aya 0.14 has no batch lookup), so it costs one syscall per entry.
    pub fn fill(&self) -> Result<Vec<MapFill>> {
        fn count<I: Iterator<Item = std::result::Result<T, MapError>>, T>(it: I) -> u64 {
            it.filter(|r| r.is_ok()).count() as u64
        }
        let counts: BTreeMap<&str, (u64, u32)> = [
            (
                names::ALLOW_V4,
                count(self.allow4.keys()),
                max(&self.allow4),
            ),
            (
                names::ALLOW_V6,
                count(self.allow6.keys()),
                max(&self.allow6),
            ),
            (
                names::BLOCK_V4,
                count(self.block4.keys()),
                max(&self.block4),
            ),
            (
                names::BLOCK_V6,
                count(self.block6.keys()),
                max(&self.block6),
            ),
            (
                names::BLOCK_HOST_V4,
                count(self.host4.keys()),
                max(&self.host4),
            ),
            (
                names::BLOCK_HOST_V6,
                count(self.host6.keys()),
                max(&self.host6),
            ),
            (names::RATE, count(self.rate.keys()), max(&self.rate)),
            (names::FLOWS, count(self.flows.keys()), max(&self.flows)),
            (names::COUNTERS, COUNTER_SLOTS as u64, COUNTER_SLOTS),
            (names::CONFIG, 1, 1),
            evidence_fill(&self.dir, names::EVIDENCE_SRC),
            evidence_fill(&self.dir, names::EVIDENCE_DST),
            // A ring buffer has no entries to count: its size in bytes, nothing
            // pending (the daemon drains it as events arrive).
            (names::EVENTS, 0, names::EVENTS_BYTES),
        ]
        .into_iter()
        .map(|(n, c, m)| (n, (c, m)))
        .collect();
        Ok(names::ALL
            .iter()
            .map(|n| {
                // A map this function does not know yet: its capacity, entries
                // not counted.
                let (entries, max_entries) = counts
                    .get(n)
                    .copied()
                    .unwrap_or_else(|| (0, capacity_of(&self.dir, n)));
                MapFill {
                    name: n.to_string(),
                    entries,
                    max_entries: max_entries as u64,
                }
            })
            .collect())
    }

    /// Inserts many blocks; stops at the first failure and reports how many went in.
    pub fn put_blocks<'a>(
        &mut self,
        entries: impl IntoIterator<Item = (&'a IpNet, &'a BlockEntry)>,
    ) -> (usize, Result<()>) {
        let mut n = 0;
        for (net, e) in entries {
            if let Err(e) = self.put_block(net, e) {
                return (n, Err(e));
            }
            n += 1;
        }
        (n, Ok(()))
    }
}

/// `max_entries` of the pinned map `name` (0 when it cannot be opened).
fn capacity_of(dir: &PinDir, name: &str) -> u32 {
    MapData::from_pin(dir.map(name))
        .and_then(|m| m.info())
        .map(|i| i.max_entries())
        .unwrap_or(0)
}

/// Slots in use (epoch != 0) and slots of an evidence array; `(0, 0)` when it
/// cannot be opened.
fn evidence_fill(dir: &PinDir, name: &'static str) -> (&'static str, u64, u32) {
    match EvidenceTable::open(dir, name) {
        Ok(t) => {
            let mut v = Vec::new();
            let used = match t.read_all(&mut v) {
                Ok(()) => v.iter().filter(|s| s.epoch != 0).count() as u64,
                Err(_) => 0,
            };
            (name, used, t.slots())
        }
        Err(_) => (name, 0, 0),
    }
}

/// Opens the pinned `EVENTS` ring buffer of `dir` (aya's [`RingBuf`]: poll its fd
/// for readability, e.g. through `tokio::io::unix::AsyncFd`, then take records
/// with `next` until it returns `None`; decode each with [`decode_event`]).
///
/// # Errors
/// [`CtlError::NotLoaded`] when it is not pinned; a map of another type or a
/// failing mmap of its pages.
pub fn open_events(dir: &PinDir) -> Result<RingBuf<MapData>> {
    typed(dir, names::EVENTS)
}

/// An [`EvidenceEvent`] from one ring buffer record; `None` when the record is
/// shorter than the event (a program of another version).
pub fn decode_event(bytes: &[u8]) -> Option<EvidenceEvent> {
    if bytes.len() < std::mem::size_of::<EvidenceEvent>() {
        return None;
    }
    // SAFETY: length checked; `EvidenceEvent` is plain integers (any bit pattern
    // is valid); read_unaligned copes with any alignment.
    Some(unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast::<EvidenceEvent>()) })
}

pub(crate) fn max<M: aya::maps::IterableMap<K, V>, K: aya::Pod, V>(m: &M) -> u32 {
    m.map().info().map(|i| i.max_entries()).unwrap_or(0)
}

fn same_but_hits_block(a: &BlockEntry, b: &BlockEntry) -> bool {
    (a.expires_ns, a.rule_id, a.reason, a.origin) == (b.expires_ns, b.rule_id, b.reason, b.origin)
}

fn same_but_hits_allow(a: &AllowEntry, b: &AllowEntry) -> bool {
    (a.rule_id, a.origin) == (b.rule_id, b.origin)
}

/// Appends every entry of a map walk to `out`, the key turned into its prefix;
/// entries that vanish during the walk are skipped.
fn walk<K, V>(
    entries: impl Iterator<Item = std::result::Result<(K, V), MapError>>,
    map: &str,
    net: impl Fn(&K) -> IpNet,
    out: &mut Vec<(IpNet, V)>,
) -> Result<()> {
    for r in entries {
        match r {
            Ok((k, v)) => out.push((net(&k), v)),
            Err(e) if not_found(&e) => {}
            Err(e) => return Err(err(map, "iterate", e)),
        }
    }
    Ok(())
}

/// Whether `net` is a single address (kept in the host maps).
fn is_host(net: &IpNet) -> bool {
    names::is_host_prefix(net.prefix_len(), matches!(net, IpNet::V6(_)))
}

/// Lookup in a host map; `None` when absent.
fn host_get<const N: usize>(
    map: &HashMap<MapData, [u8; N], BlockEntry>,
    addr: [u8; N],
    name: &str,
) -> Result<Option<BlockEntry>> {
    match map.get(&addr, 0) {
        Ok(v) => Ok(Some(v)),
        Err(e) if not_found(&e) => Ok(None),
        Err(e) => Err(err(name, "lookup", e)),
    }
}

/// Exact-prefix lookup in an LPM trie (see the module docs).
fn exact<K: aya::Pod, V: aya::Pod>(
    trie: &LpmTrie<MapData, K, V>,
    key: Key<K>,
    same: fn(&V, &V) -> bool,
    map: &str,
) -> Result<Option<V>> {
    let v = match trie.get(&key, 0) {
        Ok(v) => v,
        Err(e) if not_found(&e) => return Ok(None),
        Err(e) => return Err(err(map, "lookup", e)),
    };
    if key.prefix_len() == 0 {
        return Ok(Some(v));
    }
    let shorter = Key::new(key.prefix_len() - 1, key.data());
    match trie.get(&shorter, 0) {
        Ok(s) if same(&s, &v) => Ok(None),
        Ok(_) => Ok(Some(v)),
        Err(e) if not_found(&e) => Ok(Some(v)),
        Err(e) => Err(err(map, "lookup", e)),
    }
}

/// `entry` as stored in a blocklist trie under `net`: tagged with its prefix
/// length ([`BlockEntry::lpm_tag`]).
fn tagged(entry: &BlockEntry, net: &IpNet) -> BlockEntry {
    BlockEntry {
        lpm_tag: net.prefix_len() + 1,
        ..*entry
    }
}

/// `entry` as fw-ctl's reads return it (tag cleared).
fn untagged(entry: BlockEntry) -> BlockEntry {
    BlockEntry {
        lpm_tag: 0,
        ..entry
    }
}

/// The blocklist entry stored under exactly `key`, if any. A tagged entry says
/// its own prefix length; an untagged one (written by an older version) falls back
/// to [`exact`]'s comparison with the next shorter prefix.
fn exact_block<K: aya::Pod>(
    trie: &LpmTrie<MapData, K, BlockEntry>,
    key: Key<K>,
    map: &str,
) -> Result<Option<BlockEntry>> {
    let v = match trie.get(&key, 0) {
        Ok(v) => v,
        Err(e) if not_found(&e) => return Ok(None),
        Err(e) => return Err(err(map, "lookup", e)),
    };
    if v.lpm_tag != 0 {
        let own = u32::from(v.lpm_tag) - 1;
        return Ok((own == key.prefix_len()).then(|| untagged(v)));
    }
    Ok(exact(trie, key, same_but_hits_block, map)?.map(untagged))
}

fn insert_err(map: &str, e: MapError, max_entries: u32) -> CtlError {
    let io = io_of(e);
    if io.raw_os_error() == Some(libc::ENOSPC) || io.raw_os_error() == Some(libc::E2BIG) {
        CtlError::MapFull {
            map: map.to_string(),
            max_entries,
        }
    } else {
        CtlError::map(map, "insert", io)
    }
}

fn removed(r: std::result::Result<(), MapError>, map: &str) -> Result<bool> {
    match r {
        Ok(()) => Ok(true),
        Err(e) if not_found(&e) => Ok(false),
        Err(e) => Err(err(map, "delete", e)),
    }
}

impl Lists for Pinned {
    fn blocks(&self) -> Result<Vec<(IpNet, BlockEntry)>> {
        let mut out = Vec::new();
        walk(self.block4.iter(), names::BLOCK_V4, net_of_v4, &mut out)?;
        walk(self.block6.iter(), names::BLOCK_V6, net_of_v6, &mut out)?;
        let host = |a: &[u8; 4]| IpNet::from(IpAddr::from(*a));
        walk(self.host4.iter(), names::BLOCK_HOST_V4, host, &mut out)?;
        let host = |a: &[u8; 16]| IpNet::from(IpAddr::from(*a));
        walk(self.host6.iter(), names::BLOCK_HOST_V6, host, &mut out)?;
        Ok(out.into_iter().map(|(n, e)| (n, untagged(e))).collect())
    }

    fn allows(&self) -> Result<Vec<(IpNet, AllowEntry)>> {
        let mut out = Vec::new();
        walk(self.allow4.iter(), names::ALLOW_V4, net_of_v4, &mut out)?;
        walk(self.allow6.iter(), names::ALLOW_V6, net_of_v6, &mut out)?;
        Ok(out)
    }

    fn get_block(&self, net: &IpNet) -> Result<Option<BlockEntry>> {
        let in_host_map = match net {
            IpNet::V4(n) if is_host(net) => {
                host_get(&self.host4, n.addr().octets(), names::BLOCK_HOST_V4)?
            }
            IpNet::V6(n) if is_host(net) => {
                host_get(&self.host6, n.addr().octets(), names::BLOCK_HOST_V6)?
            }
            _ => None,
        };
        if in_host_map.is_some() {
            return Ok(in_host_map);
        }
        match net {
            IpNet::V4(n) => exact_block(&self.block4, key_v4(n), names::BLOCK_V4),
            IpNet::V6(n) => exact_block(&self.block6, key_v6(n), names::BLOCK_V6),
        }
    }

    fn put_block(&mut self, net: &IpNet, entry: &BlockEntry) -> Result<()> {
        match net {
            IpNet::V4(n) if is_host(net) => {
                let m = max(&self.host4);
                self.host4
                    .insert(n.addr().octets(), entry, 0)
                    .map_err(|e| insert_err(names::BLOCK_HOST_V4, e, m))
            }
            IpNet::V6(n) if is_host(net) => {
                let m = max(&self.host6);
                self.host6
                    .insert(n.addr().octets(), entry, 0)
                    .map_err(|e| insert_err(names::BLOCK_HOST_V6, e, m))
            }
            IpNet::V4(n) => {
                let m = max(&self.block4);
                self.block4
                    .insert(&key_v4(n), tagged(entry, net), 0)
                    .map_err(|e| insert_err(names::BLOCK_V4, e, m))
            }
            IpNet::V6(n) => {
                let m = max(&self.block6);
                self.block6
                    .insert(&key_v6(n), tagged(entry, net), 0)
                    .map_err(|e| insert_err(names::BLOCK_V6, e, m))
            }
        }
    }

    fn del_block(&mut self, net: &IpNet) -> Result<bool> {
        // A host entry may also sit in the trie (maps of an older version reused).
        let from_host = match net {
            IpNet::V4(n) if is_host(net) => {
                removed(self.host4.remove(&n.addr().octets()), names::BLOCK_HOST_V4)?
            }
            IpNet::V6(n) if is_host(net) => {
                removed(self.host6.remove(&n.addr().octets()), names::BLOCK_HOST_V6)?
            }
            _ => false,
        };
        let from_trie = match net {
            IpNet::V4(n) => removed(self.block4.remove(&key_v4(n)), names::BLOCK_V4)?,
            IpNet::V6(n) => removed(self.block6.remove(&key_v6(n)), names::BLOCK_V6)?,
        };
        Ok(from_host || from_trie)
    }

    fn get_allow(&self, net: &IpNet) -> Result<Option<AllowEntry>> {
        match net {
            IpNet::V4(n) => exact(
                &self.allow4,
                key_v4(n),
                same_but_hits_allow,
                names::ALLOW_V4,
            ),
            IpNet::V6(n) => exact(
                &self.allow6,
                key_v6(n),
                same_but_hits_allow,
                names::ALLOW_V6,
            ),
        }
    }

    fn put_allow(&mut self, net: &IpNet, entry: &AllowEntry) -> Result<()> {
        match net {
            IpNet::V4(n) => {
                let m = max(&self.allow4);
                self.allow4
                    .insert(&key_v4(n), entry, 0)
                    .map_err(|e| insert_err(names::ALLOW_V4, e, m))
            }
            IpNet::V6(n) => {
                let m = max(&self.allow6);
                self.allow6
                    .insert(&key_v6(n), entry, 0)
                    .map_err(|e| insert_err(names::ALLOW_V6, e, m))
            }
        }
    }

    fn del_allow(&mut self, net: &IpNet) -> Result<bool> {
        match net {
            IpNet::V4(n) => removed(self.allow4.remove(&key_v4(n)), names::ALLOW_V4),
            IpNet::V6(n) => removed(self.allow6.remove(&key_v6(n)), names::ALLOW_V6),
        }
    }

    fn protections(&self) -> Result<Vec<(std::net::SocketAddr, SynAuthEntry)>> {
        let h = syn_auth(&self.dir)?;
        let mut out = Vec::new();
        for kv in h.iter() {
            let (k, e) = kv.map_err(|e| err(names::SYN_AUTH, "iterate", e))?;
            out.push((service_of(&k), e));
        }
        Ok(out)
    }

    fn put_protection(
        &mut self,
        service: std::net::SocketAddr,
        entry: &SynAuthEntry,
    ) -> Result<()> {
        let mut h = syn_auth(&self.dir)?;
        let m = max(&h);
        h.insert(service_key(service), entry, 0)
            .map_err(|e| insert_err(names::SYN_AUTH, e, m))
    }

    fn del_protection(&mut self, service: std::net::SocketAddr) -> Result<bool> {
        let mut h = syn_auth(&self.dir)?;
        removed(h.remove(&service_key(service)), names::SYN_AUTH)
    }
}

/// `SYN_AUTH`, opened from its pin for one call (it is used rarely: a mitigation
/// verdict, a state poll).
fn syn_auth(dir: &PinDir) -> Result<HashMap<MapData, ServiceKey, SynAuthEntry>> {
    typed(dir, names::SYN_AUTH)
}

/// The `SYN_AUTH` key of `address:port` (IPv4-mapped, `fw_common::synauth`).
fn service_key(service: std::net::SocketAddr) -> ServiceKey {
    let addr = match service.ip() {
        IpAddr::V4(a) => fw_common::flow::v4_mapped(a.octets()),
        IpAddr::V6(a) => a.octets(),
    };
    ServiceKey {
        addr,
        port: service.port(),
        _pad: [0; 2],
    }
}

fn service_of(k: &ServiceKey) -> std::net::SocketAddr {
    let a = std::net::Ipv6Addr::from(k.addr);
    let ip = a.to_ipv4_mapped().map_or(IpAddr::V6(a), IpAddr::V4);
    std::net::SocketAddr::new(ip, k.port)
}
