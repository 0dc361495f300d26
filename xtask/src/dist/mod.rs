//! `cargo xtask dist [--target aarch64-unknown-linux-gnu]`: one Debian package per
//! Turing Pi role, built with `dpkg-deb` from the binaries of a cargo build and the
//! files under `packaging/` (docs/deploy.md walks an install).
//!
//! | package | board | contents |
//! |---|---|---|
//! | `tad-router` | CM4 router | `fw-ctl` (the XDP object embedded, and a copy in `/usr/lib/tad-router/fw.bpf.o`), `tad-gateway.service`, `/etc/tad/gateway.toml` |
//! | `tad-detector` | Jetson | `detector`, the autoencoder in `/usr/share/tad/detector/`, `tad-detector.service`, `/etc/tad/detector.toml` |
//! | `tad-monitor` | CM4 monitor | `dashboard` (pages compiled in), `tad-dashboard.service`, `tad-mosquitto.service` with `/etc/tad/mosquitto/{mosquitto.conf,acl}` rendered by `tad_bus::broker` |
//!
//! A cross build (a `--target` other than the host) links with Debian's
//! `aarch64-linux-gnu-gcc` through `CARGO_TARGET_<TRIPLE>_LINKER` and
//! `CC_<triple>`/`AR_<triple>` (the C parts: rusqlite's bundled SQLite, ring), set
//! here rather than in a committed `.cargo/config.toml` so plain host builds see
//! nothing of it. The XDP object is the same bpfel-unknown-none build either way:
//! fw-ctl's build script runs aya-build, which compiles fw-ebpf with the nightly
//! for its own target whatever `--target` the userspace build has.
//!
//! `Depends` comes from the binaries themselves: the `NEEDED` libraries
//! (`readelf -d`) mapped to their Debian packages, and `libc6 (>= 2.N)` from the
//! highest `GLIBC_2.N` symbol version they reference.
//!
//! `--check` (and [`finish_test`], run by `cargo xtask test`) then verifies what can be
//! verified on this machine: `systemd-analyze verify` on every unit inside the
//! package tree, and the packaged binaries run from the unpacked package (under
//! `qemu-aarch64 -L /usr/aarch64-linux-gnu` for arm64): `--version`, every config
//! check against the shipped `/etc/tad` files, and the detector on a capture with
//! the shipped model, whose alerts and verdicts must equal the host build's.
use std::{
    collections::BTreeSet,
    fs,
    path::{Path, PathBuf},
    process::Command,
    time::Instant,
};

use anyhow::{Context as _, bail, ensure};

use crate::{build, util};

mod check;
mod package;

use check::check;
use package::package;

/// Build the Debian packages (router, detector, monitor) for a target.
#[derive(clap::Args)]
pub struct DistArgs {
    /// Rust target triple: x86_64-unknown-linux-gnu (amd64) or
    /// aarch64-unknown-linux-gnu (arm64, the Turing Pi boards). Default: the host's.
    #[arg(long)]
    pub target: Option<String>,
    /// Cargo profile of the binaries (`dev` builds faster, for checks only).
    #[arg(long, default_value = "release")]
    pub profile: String,
    /// Output directory of the .deb files.
    #[arg(long, default_value = "target/dist")]
    pub out: PathBuf,
    /// Package the binaries already built instead of running cargo.
    #[arg(long)]
    pub no_build: bool,
    /// Verify the packages: unit files, binaries run from the package (emulated for
    /// arm64), config checks, the detector on a capture.
    #[arg(long)]
    pub check: bool,
    /// Run only the package step of `cargo xtask test` (amd64 from the release
    /// build, arm64 cross-built in the dev profile, both checked); other options
    /// are ignored.
    #[arg(long)]
    pub test_step: bool,
}

/// A target this verb packages for.
#[derive(Clone, Debug)]
struct Target {
    triple: String,
    /// Debian architecture name.
    deb_arch: &'static str,
    /// Whether it differs from the machine running xtask.
    cross: bool,
}

const HOST_TRIPLE: &str = if cfg!(target_arch = "aarch64") {
    "aarch64-unknown-linux-gnu"
} else {
    "x86_64-unknown-linux-gnu"
};

/// Debian's cross toolchain for aarch64 (package gcc-aarch64-linux-gnu).
const AARCH64_GCC: &str = "aarch64-linux-gnu-gcc";
/// Debian's aarch64 sysroot (package libc6-dev-arm64-cross), qemu's `-L`.
const AARCH64_SYSROOT: &str = "/usr/aarch64-linux-gnu";

impl Target {
    fn parse(triple: Option<&str>) -> anyhow::Result<Self> {
        let triple = triple.unwrap_or(HOST_TRIPLE);
        let deb_arch = match triple {
            "x86_64-unknown-linux-gnu" => "amd64",
            "aarch64-unknown-linux-gnu" => "arm64",
            other => bail!(
                "--target {other}: packages are made for x86_64-unknown-linux-gnu or aarch64-unknown-linux-gnu"
            ),
        };
        Ok(Self {
            triple: triple.to_string(),
            deb_arch,
            cross: triple != HOST_TRIPLE,
        })
    }

    /// `CARGO_TARGET_<TRIPLE>_LINKER`, `CC_<triple>`, `AR_<triple>` for a cross build.
    fn cross_env(&self) -> Vec<(String, String)> {
        if !self.cross {
            return Vec::new();
        }
        let (gcc, ar) = (AARCH64_GCC, "aarch64-linux-gnu-ar");
        let up = self.triple.to_uppercase().replace('-', "_");
        let low = self.triple.replace('-', "_");
        vec![
            (format!("CARGO_TARGET_{up}_LINKER"), gcc.into()),
            (format!("CC_{low}"), gcc.into()),
            (format!("AR_{low}"), ar.into()),
        ]
    }
}

/// The packaged binaries (cargo package, binary name).
const BINARIES: &[(&str, &str)] = &[
    ("fw-ctl", "fw-ctl"),
    ("detector", "detector"),
    ("dashboard", "dashboard"),
];

/// Node ids of the ACL shipped as `/etc/tad/mosquitto/acl` (the defaults of
/// `cargo xtask certs`; the operator replaces it with the one `certs` writes).
const DEFAULT_NODES: &[&str] = &["gateway-1", "detector-1", "dashboard"];

pub fn run(a: &DistArgs) -> anyhow::Result<()> {
    if a.test_step {
        let cross = start_cross_build()?;
        build::run()?;
        return finish_test(cross);
    }
    let t = Target::parse(a.target.as_deref())?;
    if !a.no_build {
        build_binaries(&t, &a.profile)?;
        if a.check && t.cross {
            // The check compares the detector's decisions with the host build's.
            build_binaries(&Target::parse(None)?, "release")?;
        }
    }
    let out = util::workspace_root().join(&a.out);
    let debs = package(&t, &a.profile, &out)?;
    for d in &debs {
        println!("{}", d.display());
    }
    if a.check {
        check(&t, &debs)?;
    }
    Ok(())
}

/// The arm64 cross build `cargo xtask test` starts after its release build and
/// lets run (at nice 19, output in `target/dist/test/cross-build.log`) while the
/// demo and eval run; [`finish_test`] waits for it.
pub struct CrossBuild {
    child: std::process::Child,
    log: PathBuf,
    started: Instant,
}

fn test_out() -> PathBuf {
    util::workspace_root().join("target/dist/test")
}

/// Starts the dev-profile arm64 build of [`BINARIES`] (see [`build_binaries`]).
///
/// # Errors
/// The cross toolchain missing (run `cargo xtask setup`), or cargo not starting.
pub fn start_cross_build() -> anyhow::Result<CrossBuild> {
    let arm = Target::parse(Some("aarch64-unknown-linux-gnu"))?;
    let cmd = cross_build_cmd(&arm, "dev")?;
    let out = test_out();
    fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;
    let log = out.join("cross-build.log");
    let f = fs::File::create(&log).with_context(|| format!("creating {}", log.display()))?;
    let mut nice = Command::new("nice");
    nice.args(["-n", "19"])
        .arg(cmd.get_program())
        .args(cmd.get_args())
        .current_dir(util::workspace_root())
        .stdout(f.try_clone()?)
        .stderr(f);
    for (k, v) in cmd.get_envs() {
        if let Some(v) = v {
            nice.env(k, v);
        }
    }
    eprintln!("+ {} (log: {})", util::show(&nice), log.display());
    let child = nice.spawn().context("cannot start the arm64 cross build")?;
    Ok(CrossBuild {
        child,
        log,
        started: Instant::now(),
    })
}

/// Waits for the cross build, then makes and checks the amd64 packages (from the
/// release binaries `cargo xtask build` made) and the arm64 ones.
///
/// # Errors
/// The cross build, a packaging step or a check failing.
pub fn finish_test(mut b: CrossBuild) -> anyhow::Result<()> {
    let status = b
        .child
        .wait()
        .context("waiting for the arm64 cross build")?;
    let built = b.started.elapsed();
    if !status.success() {
        let log = fs::read_to_string(&b.log).unwrap_or_default();
        let tail: Vec<&str> = log.lines().rev().take(40).collect();
        bail!(
            "the arm64 cross build failed ({status}); end of {}:\n{}",
            b.log.display(),
            tail.into_iter().rev().collect::<Vec<_>>().join("\n")
        );
    }
    eprintln!("dist: arm64 cross build finished {built:.0?} after it started");
    let start = Instant::now();
    let host = Target::parse(None)?;
    let debs = package(&host, "release", &test_out().join(host.deb_arch))?;
    check(&host, &debs)?;
    let arm = Target::parse(Some("aarch64-unknown-linux-gnu"))?;
    let debs = package(&arm, "dev", &test_out().join(arm.deb_arch))?;
    check(&arm, &debs)?;
    eprintln!(
        "dist: amd64 and arm64 packages made and checked in {:.0?}",
        start.elapsed()
    );
    Ok(())
}

fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .map(|p| {
            if p.is_absolute() {
                p
            } else {
                util::workspace_root().join(p)
            }
        })
        .unwrap_or_else(|| util::workspace_root().join("target"))
}

/// Where cargo put the binaries of `profile` for `t`.
fn bin_dir(t: &Target, profile: &str) -> PathBuf {
    let dir = match profile {
        "dev" | "test" => "debug",
        "release" | "bench" => "release",
        other => other,
    };
    let base = target_dir();
    if t.cross {
        base.join(&t.triple).join(dir)
    } else {
        base.join(dir)
    }
}

/// Builds [`BINARIES`] for `t`. A host release build is exactly `cargo xtask build`
/// (the same package set, so nothing is rebuilt after it); a cross build compiles
/// only the three packages (in the dev profile without debug info, see
/// [`cross_build_cmd`]).
fn build_binaries(t: &Target, profile: &str) -> anyhow::Result<()> {
    crate::setup::ensure_ebpf_toolchain()?;
    if !t.cross {
        return if profile == "release" {
            build::release(&["--bins"])
        } else {
            let mut args = vec!["build", "--profile", profile];
            args.extend_from_slice(util::WORKSPACE);
            args.push("--bins");
            util::cargo(&args)
        };
    }
    util::run_cmd(&mut cross_build_cmd(t, profile)?)
}

/// The cargo command of a cross build of [`BINARIES`] (see [`build_binaries`]),
/// after checking the cross toolchain is there.
fn cross_build_cmd(t: &Target, profile: &str) -> anyhow::Result<Command> {
    ensure!(
        util::stdout_of(Command::new(AARCH64_GCC).arg("--version")).is_some(),
        "{AARCH64_GCC} is missing: run `cargo xtask setup` (Debian gcc-aarch64-linux-gnu, libc6-dev-arm64-cross)"
    );
    let installed = util::stdout_of(Command::new("rustup").args([
        "target",
        "list",
        "--installed",
        "--toolchain",
        "stable",
    ]))
    .unwrap_or_default();
    ensure!(
        installed.lines().any(|l| l.trim() == t.triple),
        "the Rust target {} is not installed: run `cargo xtask setup` (rustup target add {})",
        t.triple,
        t.triple
    );
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(util::workspace_root()).args([
        "build",
        "--target",
        &t.triple,
        "--profile",
        profile,
    ]);
    if profile == "dev" {
        // No debug info for the target's units only: these rustflags reach neither
        // build scripts nor proc macros, which stay the very units host dev builds
        // (`cargo test`) use, so neither build makes the other rebuild them.
        let up = t.triple.to_uppercase().replace('-', "_");
        cmd.env(format!("CARGO_TARGET_{up}_RUSTFLAGS"), "-Cdebuginfo=0");
    }
    for (p, _) in BINARIES {
        cmd.args(["-p", p]);
    }
    cmd.arg("--bins");
    for (k, v) in t.cross_env() {
        cmd.env(k, v);
    }
    Ok(cmd)
}

/// One file of a package.
#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_map_to_debian_architectures() {
        let arm = Target::parse(Some("aarch64-unknown-linux-gnu")).unwrap();
        assert_eq!(arm.deb_arch, "arm64");
        assert_eq!(arm.cross, HOST_TRIPLE != "aarch64-unknown-linux-gnu");
        let err = Target::parse(Some("riscv64gc-unknown-linux-gnu")).unwrap_err();
        assert!(
            err.to_string().contains("riscv64gc-unknown-linux-gnu"),
            "{err}"
        );
    }

    #[test]
    fn cross_env_names_the_linker_and_c_compiler_of_the_triple() {
        let mut t = Target::parse(Some("aarch64-unknown-linux-gnu")).unwrap();
        t.cross = true;
        let env = t.cross_env();
        let keys: Vec<&str> = env.iter().map(|(k, _)| k.as_str()).collect();
        assert!(keys.contains(&"CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER"));
        assert!(keys.contains(&"CC_aarch64_unknown_linux_gnu"));
        t.cross = false;
        assert!(t.cross_env().is_empty());
    }
}
