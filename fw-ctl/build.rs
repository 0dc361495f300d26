//! With feature `ebpf` (the default; cargo sets `CARGO_FEATURE_EBPF` and
//! `cfg(feature = "ebpf")`), builds the XDP program (`fw-ebpf`, target
//! bpfel-unknown-none) with aya-build, which runs `rustup run nightly cargo build
//! -Z build-std=core` and links with bpf-linker. `cargo xtask setup` installs what
//! that needs; without it this fails with aya-build's message, so run
//! `cargo xtask setup` first. Without the feature (`default-features = false`, as
//! xtask depends on fw-ctl) it does nothing, so the pinned-map library builds on
//! stable before bpf-linker exists.

#[cfg(feature = "ebpf")]
fn main() -> anyhow::Result<()> {
    use anyhow::{Context as _, anyhow};

    let meta = cargo_metadata::MetadataCommand::new()
        .no_deps()
        .exec()
        .context("cargo metadata")?;
    let ebpf = meta
        .packages
        .into_iter()
        .find(|p| p.name.as_str() == "fw-ebpf")
        .ok_or_else(|| anyhow!("fw-ebpf package not found in the workspace"))?;
    let root = ebpf
        .manifest_path
        .parent()
        .ok_or_else(|| anyhow!("fw-ebpf manifest has no parent directory"))?;
    aya_build::build_ebpf(
        [aya_build::Package {
            name: ebpf.name.as_str(),
            root_dir: root.as_str(),
            ..Default::default()
        }],
        aya_build::Toolchain::default(),
    )
}

#[cfg(not(feature = "ebpf"))]
fn main() {
    // Nothing to build; without this line cargo would rerun the script whenever
    // any file of the package changes.
    println!("cargo::rerun-if-changed=build.rs");
}
