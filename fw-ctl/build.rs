//! Builds the XDP program (`fw-ebpf`, target bpfel-unknown-none) with aya-build,
//! which runs `rustup run nightly cargo build -Z build-std=core` and links with
//! bpf-linker. `cargo xtask setup` installs what that needs; without it this fails
//! with aya-build's message, so run `cargo xtask setup` first.
use anyhow::{Context as _, anyhow};

fn main() -> anyhow::Result<()> {
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
