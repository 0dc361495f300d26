//! Mmapable BPF arrays (`BPF_F_MMAPABLE`) read through a shared mapping of the map
//! fd (`mmap(PROT_READ, MAP_SHARED)`, kernel `array_map_mmap`; value `i` at byte
//! `i * size_of::<T>()`): reading every slot is a memory copy, not one syscall per
//! slot. The program updates the slots with plain stores while they are read: a
//! copy may be torn (half of an update). When the kernel refuses the mapping (a map
//! made without the flag by an older version, kept by `unload --keep-maps`), each
//! slot is read with a lookup instead.
//!
//! The arrays: `EVIDENCE_SRC` / `EVIDENCE_DST` ([`EvidenceTable`], 4,096
//! `EvidenceSlot`s of 232 bytes) and `PENDING` ([`PendingTable`], 65,536
//! `PendingFlow`s of 64 bytes, `fw_common::admission`).

use std::io;

use aya::maps::{Array, MapData};
use fw_common::{admission::PendingFlow, evidence::EvidenceSlot};

use super::{err, max, typed};
use crate::{error::Result, pin::PinDir};

/// A read-only shared mapping of an mmapable BPF array.
struct Mapping {
    ptr: std::ptr::NonNull<u8>,
    len: usize,
}

// SAFETY: the mapping is read-only and owned by this value; reads are volatile
// copies, so sharing it between threads reads what the kernel wrote.
unsafe impl Send for Mapping {}
unsafe impl Sync for Mapping {}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: `ptr`/`len` are exactly what mmap returned.
        unsafe { libc::munmap(self.ptr.as_ptr().cast(), self.len) };
    }
}

/// One mmapable array of a loaded instance, read through a shared read-only
/// mapping (see the module docs) or, when the kernel refuses it, by lookups.
pub struct MappedArray<T: aya::Pod> {
    name: &'static str,
    map: Array<MapData, T>,
    mapping: Option<Mapping>,
    slots: u32,
}

/// An evidence array (`EVIDENCE_SRC` or `EVIDENCE_DST`).
pub type EvidenceTable = MappedArray<EvidenceSlot>;
/// The pending array of the admission rule (`PENDING`).
pub type PendingTable = MappedArray<PendingFlow>;

impl<T: aya::Pod> MappedArray<T> {
    /// Opens the pinned array `name` and maps it.
    ///
    /// # Errors
    /// [`crate::error::CtlError::NotLoaded`] when it is not pinned; a map of
    /// another type or value size. A refused `mmap` is not an error: the table
    /// falls back to lookups ([`Self::mapped`] tells which) and logs why.
    pub fn open(dir: &PinDir, name: &'static str) -> Result<Self> {
        const { assert!(std::mem::size_of::<T>().is_multiple_of(8)) };
        let map: Array<MapData, T> = typed(dir, name)?;
        let slots = max(&map);
        let len = slots as usize * std::mem::size_of::<T>();
        let mapping = if len == 0 {
            None
        } else {
            use std::os::fd::{AsFd as _, AsRawFd as _};
            let fd = aya::maps::IterableMap::map(&map).fd().as_fd().as_raw_fd();
            // SAFETY: mapping a BPF map fd read-only and shared at offset 0 for
            // `len` bytes (the kernel checks the range against the map size); the
            // mapping lives until `Mapping::drop`.
            let p = unsafe {
                libc::mmap(
                    std::ptr::null_mut(),
                    len,
                    libc::PROT_READ,
                    libc::MAP_SHARED,
                    fd,
                    0,
                )
            };
            if p == libc::MAP_FAILED {
                let e = io::Error::last_os_error();
                tracing::warn!(map = name, error = %e, "cannot mmap the array; reading it slot by slot");
                None
            } else {
                std::ptr::NonNull::new(p.cast()).map(|ptr| Mapping { ptr, len })
            }
        };
        Ok(MappedArray {
            name,
            map,
            mapping,
            slots,
        })
    }

    /// Whether the table is read through the shared mapping.
    pub fn mapped(&self) -> bool {
        self.mapping.is_some()
    }

    /// Number of slots (the map's `max_entries`).
    pub fn slots(&self) -> u32 {
        self.slots
    }

    /// Copies every slot into `out` (cleared first), in index order.
    ///
    /// # Errors
    /// Only on the lookup fallback: a lookup that fails.
    pub fn read_all(&self, out: &mut Vec<T>) -> Result<()> {
        out.clear();
        out.reserve(self.slots as usize);
        match &self.mapping {
            Some(m) => {
                let base = m.ptr.as_ptr().cast::<T>();
                for i in 0..self.slots as usize {
                    // SAFETY: `i < slots` keeps the read inside the mapping; the
                    // kernel aligns array values to 8 bytes (sizes are multiples
                    // of 8, checked in `open`), and `T: Pod` makes every bit
                    // pattern a valid value (plain integers).
                    out.push(unsafe { std::ptr::read_volatile(base.add(i)) });
                }
            }
            None => {
                for i in 0..self.slots {
                    let s = self
                        .map
                        .get(&i, 0)
                        .map_err(|e| err(self.name, "lookup", e))?;
                    out.push(s);
                }
            }
        }
        Ok(())
    }

    /// Overwrites slot `index` (tests; the program owns the slots otherwise).
    ///
    /// # Errors
    /// An index past the end or a failing update.
    pub fn write(&mut self, index: u32, slot: &T) -> Result<()> {
        self.map
            .set(index, slot, 0)
            .map_err(|e| err(self.name, "write", e))
    }
}
