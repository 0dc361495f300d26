//! `cargo xtask setup`: makes a fresh machine of this kind ready, and is safe to
//! run again (each step checks first and only acts when something is missing).
//!
//! 1. Debian packages ([`APT_PACKAGES`]): the broker, attack and traffic tools,
//!    iproute2/bpftool, nftables/iptables/ipset for the benchmarks, chromium for
//!    the dashboard's browser test, nfdump (nfcapd) for the IPFIX export test.
//!    Node.js and npm come with the machine image.
//! 2. The `nightly` toolchain with `rust-src` (aya-build compiles the XDP program
//!    with `-Z build-std=core`).
//! 3. bpf-linker 0.13 built against the nightly's own LLVM (feature `llvm-<major>`
//!    from `rustc +nightly -vV`), through a prefix directory whose `lib/` links
//!    `libLLVM.so` and the full soname to the nightly's library, so bpf-linker gets
//!    an rpath and runs without LD_LIBRARY_PATH. Rebuilt when the nightly (and so
//!    its LLVM soname) changes.
//! 4. bpffs mounted at /sys/fs/bpf.
//! 5. The dashboard browser test's npm packages (`npm ci` in dashboard/e2e).
//! 6. The model's pinned training environment: a Python venv in
//!    `target/train-venv` with `detector/train/requirements.txt` (the test that the
//!    committed model is what `detector/train/train.py` makes runs it); recreated
//!    when the requirements change.
//!
//! Between 3 and 4, the stable toolchain's cross targets ([`RUST_TARGETS`]) for
//! `cargo xtask dist`; the aarch64 cross compiler, sysroot and qemu-user come
//! with the Debian packages.
use std::{
    fs,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, bail, ensure};

use crate::util::{is_root, run_cmd, stdout_of, workspace_root};

/// Debian packages the project's tests, demo and benchmarks use.
pub const APT_PACKAGES: &[&str] = &[
    "mosquitto",
    "mosquitto-clients",
    "iproute2",
    "iputils-ping",
    "bpftool",
    "ethtool",
    "nmap",
    "hping3",
    "netsniff-ng",
    // xdp-filter, the peer of `bench xdp` (its BPF objects come with libxdp1).
    "xdp-tools",
    "tcpdump",
    "tcpreplay",
    "nftables",
    "iptables",
    "ipset",
    "netcat-openbsd",
    "procps",
    "util-linux",
    "chromium",
    "python3-venv",
    "prometheus",
    // nfcapd/nfdump: the IPFIX collector fw-ctl/tests/ipfix.rs checks the export against.
    "nfdump",
    // `cargo xtask dist --target aarch64-unknown-linux-gnu`: the cross linker and
    // C compiler (SQLite, ring), the arm64 libc to link against and to run the
    // binaries with under qemu-aarch64, and systemd-analyze for the unit check.
    "gcc-aarch64-linux-gnu",
    "libc6-dev-arm64-cross",
    "qemu-user",
    "systemd",
];

/// The Rust targets `cargo xtask dist` cross-builds for (stable toolchain).
pub const RUST_TARGETS: &[&str] = &["aarch64-unknown-linux-gnu"];

/// bpf-linker version built by setup.
const BPF_LINKER_VERSION: &str = "0.13.0";

#[derive(clap::Args, Default)]
pub struct SetupArgs {
    /// Skip the Debian packages.
    #[arg(long)]
    pub no_apt: bool,
}

pub fn run(a: &SetupArgs) -> anyhow::Result<()> {
    if !a.no_apt {
        ensure_apt_packages(APT_PACKAGES)?;
    }
    ensure_ebpf_toolchain()?;
    ensure_rust_targets(RUST_TARGETS)?;
    ensure_bpffs()?;
    ensure_e2e_packages()?;
    ensure_train_env()?;
    eprintln!("setup: ready");
    Ok(())
}

fn step(what: &str) {
    eprintln!("setup: {what}");
}

/// Installs the missing ones of `pkgs` with apt-get (one `apt-get update` first).
pub fn ensure_apt_packages(pkgs: &[&str]) -> anyhow::Result<()> {
    let missing: Vec<&str> = pkgs
        .iter()
        .copied()
        .filter(|p| {
            stdout_of(Command::new("dpkg-query").args(["-W", "-f=${Status}", p]))
                .is_none_or(|s| !s.ends_with("installed"))
        })
        .collect();
    if missing.is_empty() {
        step("Debian packages present");
        return Ok(());
    }
    step(&format!(
        "installing Debian packages: {}",
        missing.join(" ")
    ));
    ensure!(
        is_root(),
        "installing {} needs root: run `sudo cargo xtask setup`",
        missing.join(" ")
    );
    run_cmd(Command::new("apt-get").args(["update", "-qq"]))
        .context("apt-get update failed: check the machine's package sources")?;
    run_cmd(
        Command::new("apt-get")
            .args(["install", "-y", "-qq", "--no-install-recommends"])
            .args(&missing)
            .env("DEBIAN_FRONTEND", "noninteractive"),
    )
    .with_context(|| format!("apt-get could not install {}", missing.join(" ")))
}

/// Adds the missing ones of `targets` to the stable toolchain (rustup).
pub fn ensure_rust_targets(targets: &[&str]) -> anyhow::Result<()> {
    let installed = stdout_of(Command::new("rustup").args([
        "target",
        "list",
        "--installed",
        "--toolchain",
        "stable",
    ]))
    .context("`rustup target list` failed: is rustup installed?")?;
    let missing: Vec<&str> = targets
        .iter()
        .copied()
        .filter(|t| !installed.lines().any(|l| l.trim() == *t))
        .collect();
    if missing.is_empty() {
        step("Rust cross targets present");
        return Ok(());
    }
    step(&format!("adding Rust targets: {}", missing.join(" ")));
    run_cmd(
        Command::new("rustup")
            .args(["target", "add", "--toolchain", "stable"])
            .args(&missing),
    )
    .with_context(|| format!("rustup could not add {}", missing.join(" ")))
}

/// Facts about the nightly toolchain that builds the XDP program.
struct Nightly {
    /// `lib/` of the nightly's sysroot.
    lib: PathBuf,
    /// File name of its LLVM library, e.g. `libLLVM.so.22.1-rust-1.97.0-nightly`.
    llvm_soname: String,
    /// LLVM major version, e.g. 22.
    llvm_major: u32,
}

fn nightly() -> anyhow::Result<Nightly> {
    let has_nightly = stdout_of(Command::new("rustup").args(["toolchain", "list"]))
        .is_some_and(|l| l.lines().any(|t| t.starts_with("nightly")));
    if !has_nightly {
        step("installing the nightly toolchain (minimal profile)");
        run_cmd(Command::new("rustup").args([
            "toolchain",
            "install",
            "nightly",
            "--profile",
            "minimal",
        ]))
        .context("rustup could not install the nightly toolchain")?;
    }
    let sysroot = stdout_of(Command::new("rustc").args(["+nightly", "--print", "sysroot"]))
        .context(
            "`rustc +nightly --print sysroot` failed: is rustup's nightly toolchain installed?",
        )?;
    let lib = PathBuf::from(sysroot).join("lib");
    let llvm_soname = fs::read_dir(&lib)
        .with_context(|| format!("cannot read {}", lib.display()))?
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .find(|n| n.starts_with("libLLVM.so."))
        .with_context(|| {
            format!(
                "no libLLVM.so.* in {}: the nightly lacks its LLVM library (`rustup component add llvm-tools --toolchain nightly` may help)",
                lib.display()
            )
        })?;
    let vv =
        stdout_of(Command::new("rustc").args(["+nightly", "-vV"])).context("rustc +nightly -vV")?;
    let llvm_major = vv
        .lines()
        .find_map(|l| l.strip_prefix("LLVM version: "))
        .and_then(|v| v.split('.').next())
        .and_then(|m| m.parse().ok())
        .context("`rustc +nightly -vV` names no LLVM version")?;
    Ok(Nightly {
        lib,
        llvm_soname,
        llvm_major,
    })
}

/// rust-src for the nightly and a bpf-linker that links the nightly's LLVM.
pub fn ensure_ebpf_toolchain() -> anyhow::Result<()> {
    let n = nightly()?;
    let has_src = stdout_of(Command::new("rustup").args([
        "component",
        "list",
        "--toolchain",
        "nightly",
        "--installed",
    ]))
    .is_some_and(|l| l.lines().any(|c| c.starts_with("rust-src")));
    if has_src {
        step("nightly rust-src present");
    } else {
        step("adding rust-src to the nightly toolchain");
        run_cmd(Command::new("rustup").args([
            "component",
            "add",
            "rust-src",
            "--toolchain",
            "nightly",
        ]))
        .context("rustup could not add rust-src to nightly")?;
    }
    if bpf_linker_matches(&n) {
        step(&format!("bpf-linker present, linked to {}", n.llvm_soname));
        return Ok(());
    }
    build_bpf_linker(&n)
}

fn cargo_home() -> PathBuf {
    std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var("HOME").unwrap_or_else(|_| "/root".into())).join(".cargo")
        })
}

/// Whether the installed bpf-linker has the right version and loads the nightly's
/// current LLVM library.
fn bpf_linker_matches(n: &Nightly) -> bool {
    let bin = cargo_home().join("bin/bpf-linker");
    if !bin.exists() {
        return false;
    }
    let version_ok = stdout_of(Command::new(&bin).arg("--version"))
        .is_some_and(|v| v.contains(BPF_LINKER_VERSION));
    let ldd = stdout_of(Command::new("ldd").arg(&bin)).unwrap_or_default();
    version_ok && ldd.contains(&n.llvm_soname) && !ldd.contains("not found")
}

fn build_bpf_linker(n: &Nightly) -> anyhow::Result<()> {
    let prefix = PathBuf::from(std::env::var("HOME").unwrap_or_else(|_| "/root".into()))
        .join(".cache/tad/llvm-prefix");
    let lib = prefix.join("lib");
    fs::create_dir_all(&lib).with_context(|| format!("cannot create {}", lib.display()))?;
    let target = n.lib.join(&n.llvm_soname);
    for name in ["libLLVM.so", n.llvm_soname.as_str()] {
        relink(&lib.join(name), &target)?;
    }
    let feature = format!("llvm-{}", n.llvm_major);
    step(&format!(
        "building bpf-linker {BPF_LINKER_VERSION} against the nightly's LLVM {} ({feature}, about a minute)",
        n.llvm_major
    ));
    run_cmd(
        Command::new("cargo")
            .args(["install", "bpf-linker", "--force", "--version", BPF_LINKER_VERSION])
            .args(["--no-default-features", "--features", &feature])
            .env("LLVM_PREFIX", &prefix),
    )
    .with_context(|| {
        format!(
            "building bpf-linker failed: LLVM_PREFIX={} must hold the nightly's LLVM; if feature {feature} is unknown to bpf-linker {BPF_LINKER_VERSION}, the nightly is newer than it supports",
            prefix.display()
        )
    })?;
    ensure!(
        bpf_linker_matches(n),
        "bpf-linker was built but does not load {}",
        n.llvm_soname
    );
    Ok(())
}

fn relink(link: &Path, target: &Path) -> anyhow::Result<()> {
    if fs::read_link(link).is_ok_and(|t| t == target) {
        return Ok(());
    }
    let _ = fs::remove_file(link);
    std::os::unix::fs::symlink(target, link)
        .with_context(|| format!("cannot link {} -> {}", link.display(), target.display()))
}

/// Mounts bpffs at /sys/fs/bpf when it is not mounted.
pub fn ensure_bpffs() -> anyhow::Result<()> {
    let mounts = fs::read_to_string("/proc/mounts").context("cannot read /proc/mounts")?;
    if mounts.lines().any(|l| {
        let mut f = l.split_whitespace();
        matches!(
            (f.next(), f.next(), f.next()),
            (_, Some("/sys/fs/bpf"), Some("bpf"))
        )
    }) {
        step("bpffs mounted at /sys/fs/bpf");
        return Ok(());
    }
    step("mounting bpffs at /sys/fs/bpf");
    ensure!(
        is_root(),
        "mounting bpffs needs root: run `sudo mount -t bpf bpf /sys/fs/bpf`"
    );
    fs::create_dir_all("/sys/fs/bpf").ok();
    run_cmd(Command::new("mount").args(["-t", "bpf", "bpf", "/sys/fs/bpf"]))
        .context("could not mount bpffs: the kernel needs CONFIG_BPF_SYSCALL")
}

/// The model's training environment (step 6): `target/train-venv`, holding a
/// copy of the requirements it was made from; recreated (`venv --clear`, `pip
/// install -r`) when that copy differs from `detector/train/requirements.txt`.
pub fn ensure_train_env() -> anyhow::Result<()> {
    let root = workspace_root();
    let req_file = root.join("detector/train/requirements.txt");
    let req =
        fs::read_to_string(&req_file).with_context(|| format!("reading {}", req_file.display()))?;
    let venv = root.join("target/train-venv");
    let stamp = venv.join("tad-requirements.txt");
    if fs::read_to_string(&stamp).is_ok_and(|s| s == req) && venv.join("bin/python").exists() {
        step("model training environment present (target/train-venv)");
        return Ok(());
    }
    step(
        "creating the model training environment (target/train-venv, pip install -r detector/train/requirements.txt)",
    );
    run_cmd(
        Command::new("python3")
            .args(["-m", "venv", "--clear"])
            .arg(&venv),
    )
    .context("python3 -m venv failed (Debian package python3-venv)")?;
    run_cmd(
        Command::new(venv.join("bin/pip"))
            .args(["install", "--disable-pip-version-check", "-q", "-r"])
            .arg(&req_file),
    )
    .context("pip install of the pinned training requirements failed")?;
    fs::write(&stamp, req).with_context(|| format!("writing {}", stamp.display()))
}

/// `npm ci` for the dashboard's browser test when its packages are missing.
pub fn ensure_e2e_packages() -> anyhow::Result<()> {
    let dir = workspace_root().join("dashboard/e2e");
    if !dir.join("package-lock.json").exists() {
        return Ok(());
    }
    if dir.join("node_modules").exists() {
        step("dashboard browser-test packages present");
        return Ok(());
    }
    step("installing the dashboard browser-test packages (npm ci)");
    if Command::new("npm").arg("--version").output().is_err() {
        bail!("npm is missing: install Debian's npm package");
    }
    run_cmd(
        Command::new("npm")
            .args(["ci", "--no-audit", "--no-fund"])
            .current_dir(&dir),
    )
    .context("npm ci failed in dashboard/e2e")
}
