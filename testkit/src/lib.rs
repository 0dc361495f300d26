//! Support for fw-ctl's kernel tests (`fw-ctl/tests/`) and benchmarks
//! (`fw-ctl/benches/`): the real XDP object loaded (not attached) and run through
//! BPF_PROG_TEST_RUN with its maps read and written directly ([`harness`]), and
//! frames crafted byte by byte so that every header variant, malformed ones
//! included, is exact ([`frames`]). Tests need root (loading a BPF program).
//!
//! Everything is re-exported at the top, so a test says `use fw_testkit::*;`. The
//! machine line of a benchmark figure is `fw_ctl::bench_env::machine` (shared with
//! xtask, which cannot depend on this crate's XDP object).

pub mod frames;
pub mod harness;
pub mod synauth;

pub use frames::*;
pub use harness::*;
pub use synauth::*;

/// XDP action `XDP_DROP` (`enum xdp_action`, include/uapi/linux/bpf.h).
pub const XDP_DROP: u32 = 1;
/// XDP action `XDP_PASS`.
pub const XDP_PASS: u32 = 2;
