//! The XDP program's ELF object, built by `build.rs` (aya-build) and embedded in
//! the binary so that `fw-ctl load` needs no file next to it.

/// The compiled `fw-ebpf` object (BTF included), 8-byte aligned as the ELF parser
/// requires.
pub static EBPF_OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/fw"));
