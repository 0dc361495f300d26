//! `cargo xtask build`: the release binaries the testbed, the demo, eval and the
//! benchmarks run (`target/release/{fw-ctl,detector,dashboard}`; the XDP object is
//! built by fw-ctl's build script).
use crate::{setup, util};

/// Release build of every binary of the workspace (the eBPF toolchain first).
///
/// # Errors
/// The toolchain check or the cargo build failing.
pub fn run() -> anyhow::Result<()> {
    setup::ensure_ebpf_toolchain()?;
    release(&["--bins"])
}

/// `cargo build --release` of the workspace package set ([`util::WORKSPACE`])
/// with `extra` (`--bins`, `--bin NAME`, ...).
///
/// # Errors
/// The cargo build failing.
pub fn release(extra: &[&str]) -> anyhow::Result<()> {
    let mut args = vec!["build", "--release"];
    args.extend_from_slice(util::WORKSPACE);
    args.extend_from_slice(extra);
    util::cargo(&args)
}
