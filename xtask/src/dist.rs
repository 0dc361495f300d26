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
enum Src {
    File(PathBuf),
    Text(String),
    Symlink(&'static str),
}

struct Entry {
    /// Absolute path on the installed system.
    dest: String,
    src: Src,
    mode: u32,
}

struct Pkg {
    name: &'static str,
    summary: &'static str,
    description: &'static str,
    /// Depends beyond what the binaries need.
    depends: &'static [&'static str],
    recommends: &'static [&'static str],
    entries: Vec<Entry>,
}

fn file(dest: &str, src: PathBuf, mode: u32) -> Entry {
    Entry {
        dest: dest.to_string(),
        src: Src::File(src),
        mode,
    }
}

fn text(dest: &str, s: String) -> Entry {
    Entry {
        dest: dest.to_string(),
        src: Src::Text(s),
        mode: 0o644,
    }
}

/// The three packages' contents, from the binaries in `bins`.
fn packages(bins: &Path) -> anyhow::Result<Vec<Pkg>> {
    let root = util::workspace_root();
    let p = root.join("packaging");
    let doc = |pkg: &str, rest: &str| format!("/usr/share/doc/{pkg}/{rest}");
    let common = |pkg: &'static str| -> Vec<Entry> {
        vec![
            file(
                &format!("/usr/lib/{pkg}/precheck"),
                p.join("scripts/precheck"),
                0o755,
            ),
            file(&doc(pkg, "deploy.md"), root.join("docs/deploy.md"), 0o644),
            text(&doc(pkg, "copyright"), copyright()),
        ]
    };
    let mut router = common("tad-router");
    router.extend([
        file("/usr/sbin/fw-ctl", bins.join("fw-ctl"), 0o755),
        file("/usr/lib/tad-router/fw.bpf.o", xdp_object(bins)?, 0o644),
        file(
            "/lib/systemd/system/tad-gateway.service",
            p.join("systemd/tad-gateway.service"),
            0o644,
        ),
        file("/etc/tad/gateway.toml", p.join("etc/gateway.toml"), 0o644),
        Entry {
            dest: "/etc/fw-ctl/gateway.toml".into(),
            src: Src::Symlink("../tad/gateway.toml"),
            mode: 0o777,
        },
        file(
            &doc("tad-router", "examples/gateway.toml.example"),
            root.join("fw-ctl/gateway.toml.example"),
            0o644,
        ),
    ]);
    let mut detector = common("tad-detector");
    detector.extend([
        file("/usr/bin/detector", bins.join("detector"), 0o755),
        file(
            "/usr/share/tad/detector/model.onnx",
            root.join("detector/model/model.onnx"),
            0o644,
        ),
        file(
            "/usr/share/tad/detector/model.json",
            root.join("detector/model/model.json"),
            0o644,
        ),
        file(
            "/lib/systemd/system/tad-detector.service",
            p.join("systemd/tad-detector.service"),
            0o644,
        ),
        file("/etc/tad/detector.toml", p.join("etc/detector.toml"), 0o644),
        file(
            &doc("tad-detector", "examples/detector.toml.example"),
            root.join("detector/detector.toml.example"),
            0o644,
        ),
    ]);
    let nodes: Vec<String> = DEFAULT_NODES.iter().map(|n| n.to_string()).collect();
    let acl = tad_bus::broker::render_acl(&nodes).context("rendering the default ACL")?;
    let broker = tad_bus::broker::BrokerConfig {
        cafile: "/etc/tad/pki/ca.pem".into(),
        certfile: "/etc/tad/pki/broker.pem".into(),
        keyfile: "/etc/tad/pki/broker.key".into(),
        acl_file: "/etc/tad/mosquitto/acl".into(),
        // tad-mosquitto.service's StateDirectory, owned by the mosquitto user.
        persistence_dir: Some("/var/lib/tad-mosquitto/".into()),
        // The unit starts it as the mosquitto user already.
        run_as_user: None,
        ..tad_bus::broker::BrokerConfig::debian_template()
    };
    let mut monitor = common("tad-monitor");
    monitor.extend([
        file("/usr/bin/dashboard", bins.join("dashboard"), 0o755),
        file(
            "/lib/systemd/system/tad-dashboard.service",
            p.join("systemd/tad-dashboard.service"),
            0o644,
        ),
        file(
            "/lib/systemd/system/tad-mosquitto.service",
            p.join("systemd/tad-mosquitto.service"),
            0o644,
        ),
        file(
            "/etc/tad/dashboard.toml",
            p.join("etc/dashboard.toml"),
            0o644,
        ),
        text("/etc/tad/mosquitto/mosquitto.conf", broker.render()),
        text("/etc/tad/mosquitto/acl", acl),
        file(
            &doc("tad-monitor", "examples/dashboard.toml.example"),
            root.join("dashboard/dashboard.toml.example"),
            0o644,
        ),
        file(
            &doc("tad-monitor", "examples/mosquitto.conf.example"),
            root.join("bus/mosquitto/mosquitto.conf.example"),
            0o644,
        ),
    ]);
    Ok(vec![
        Pkg {
            name: "tad-router",
            summary: "TAD router: XDP packet filter, operator CLI and gateway daemon",
            description: "fw-ctl loads the XDP program on the LAN interface, keeps its\n\
                          blocklists, exports flow records and applies the detectors'\n\
                          signed verdicts (tad-gateway.service).",
            depends: &[],
            recommends: &["bpftool"],
            entries: router,
        },
        Pkg {
            name: "tad-detector",
            summary: "TAD detector: detection rules, autoencoder and verdicts",
            description: "The detector reads the gateways' flow records and evidence from\n\
                          the MQTT bus, runs the rule families and the ONNX autoencoder and\n\
                          publishes alerts and signed verdicts (tad-detector.service).",
            depends: &["adduser"],
            recommends: &[],
            entries: detector,
        },
        Pkg {
            name: "tad-monitor",
            summary: "TAD monitor: dashboard and the MQTT/TLS broker",
            description: "The dashboard (web UI, REST API, history, hash-chained audit log;\n\
                          tad-dashboard.service) and Mosquitto with the bus's TLS listener\n\
                          and per-node ACL (tad-mosquitto.service).",
            depends: &["adduser", "mosquitto (>= 2.0)"],
            recommends: &[],
            entries: monitor,
        },
    ])
}

fn copyright() -> String {
    format!(
        "TuringAnamolyDetection {}\nLicense: {}\n\
         The full license texts: /usr/share/common-licenses/Apache-2.0 and the MIT\n\
         license (https://opensource.org/license/mit).\n",
        env!("CARGO_PKG_VERSION"),
        env!("CARGO_PKG_LICENSE"),
    )
}

/// The XDP object fw-ctl's build script made for these binaries: `OUT_DIR/fw` of
/// the newest `build/fw-ctl-*` under the binaries' profile directory.
fn xdp_object(bins: &Path) -> anyhow::Result<PathBuf> {
    let build = bins.join("build");
    let newest = fs::read_dir(&build)
        .with_context(|| format!("cannot read {}", build.display()))?
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().starts_with("fw-ctl-"))
        .map(|e| e.path().join("out/fw"))
        .filter_map(|p| Some((fs::metadata(&p).ok()?.modified().ok()?, p)))
        .max();
    newest.map(|(_, p)| p).with_context(|| {
        format!(
            "no XDP object (build/fw-ctl-*/out/fw) under {}: build fw-ctl first",
            bins.display()
        )
    })
}

/// Stages and builds every package into `out`; returns the .deb paths.
fn package(t: &Target, profile: &str, out: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let bins = bin_dir(t, profile);
    for (_, b) in BINARIES {
        let p = bins.join(b);
        ensure!(
            p.exists(),
            "{} is missing: build it (cargo xtask dist without --no-build)",
            p.display()
        );
    }
    let version = env!("CARGO_PKG_VERSION");
    let stage_root = out.join("stage");
    let _ = fs::remove_dir_all(&stage_root);
    fs::create_dir_all(&stage_root)
        .with_context(|| format!("creating {}", stage_root.display()))?;
    let mut debs = Vec::new();
    for pkg in packages(&bins)? {
        let stage = stage_root.join(pkg.name);
        let mut conffiles = Vec::new();
        let mut elfs = Vec::new();
        for e in &pkg.entries {
            let dest = stage.join(e.dest.trim_start_matches('/'));
            fs::create_dir_all(dest.parent().expect("absolute path"))?;
            match &e.src {
                Src::File(src) => {
                    fs::copy(src, &dest).with_context(|| {
                        format!("copying {} to {}", src.display(), dest.display())
                    })?;
                    if e.mode & 0o111 != 0 && is_elf(src) {
                        elfs.push(src.clone());
                    }
                }
                Src::Text(s) => fs::write(&dest, s)?,
                Src::Symlink(to) => std::os::unix::fs::symlink(to, &dest)?,
            }
            if !matches!(e.src, Src::Symlink(_)) {
                use std::os::unix::fs::PermissionsExt as _;
                fs::set_permissions(&dest, fs::Permissions::from_mode(e.mode))?;
                if e.dest.starts_with("/etc/") {
                    conffiles.push(e.dest.clone());
                }
            }
        }
        let debian = stage.join("DEBIAN");
        fs::create_dir_all(&debian)?;
        let depends = depends_of(&elfs, pkg.depends)?;
        let installed_kib = du_kib(&stage)?;
        let mut control = format!(
            "Package: {}\nVersion: {version}\nArchitecture: {}\n\
             Maintainer: TuringAnamolyDetection developers <tad@example.invalid>\n\
             Installed-Size: {installed_kib}\nDepends: {}\n",
            pkg.name,
            t.deb_arch,
            depends.join(", "),
        );
        if !pkg.recommends.is_empty() {
            control.push_str(&format!("Recommends: {}\n", pkg.recommends.join(", ")));
        }
        control.push_str("Section: net\nPriority: optional\n");
        if let Some(home) = option_env!("CARGO_PKG_REPOSITORY").filter(|h| !h.is_empty()) {
            control.push_str(&format!("Homepage: {home}\n"));
        }
        control.push_str(&format!("Description: {}\n", pkg.summary));
        for l in pkg.description.lines() {
            control.push(' ');
            control.push_str(l.trim());
            control.push('\n');
        }
        fs::write(debian.join("control"), control)?;
        fs::write(debian.join("conffiles"), conffiles.join("\n") + "\n")?;
        for script in ["postinst", "prerm", "postrm"] {
            let src = util::workspace_root()
                .join("packaging/maintainer")
                .join(format!("{}.{script}", pkg.name));
            if src.exists() {
                let dest = debian.join(script);
                fs::copy(&src, &dest)?;
                use std::os::unix::fs::PermissionsExt as _;
                fs::set_permissions(&dest, fs::Permissions::from_mode(0o755))?;
            }
        }
        let deb = out.join(format!("{}_{version}_{}.deb", pkg.name, t.deb_arch));
        util::run_cmd(
            Command::new("dpkg-deb")
                .args(["--root-owner-group", "-Zgzip", "--build"])
                .arg(&stage)
                .arg(&deb),
        )?;
        debs.push(deb);
    }
    Ok(debs)
}

fn is_elf(p: &Path) -> bool {
    use std::io::Read as _;
    let mut magic = [0u8; 4];
    fs::File::open(p)
        .and_then(|mut f| f.read_exact(&mut magic))
        .is_ok_and(|()| magic == *b"\x7fELF")
}

fn du_kib(dir: &Path) -> anyhow::Result<u64> {
    let out = util::stdout_of(Command::new("du").args(["-sk", "--apparent-size"]).arg(dir))
        .with_context(|| format!("du {}", dir.display()))?;
    out.split_whitespace()
        .next()
        .and_then(|n| n.parse().ok())
        .with_context(|| format!("du printed {out:?}"))
}

/// Debian package of a shared library a Rust binary may need.
fn deb_of_library(soname: &str) -> Option<&'static str> {
    match soname {
        "libc.so.6"
        | "libm.so.6"
        | "libdl.so.2"
        | "libpthread.so.0"
        | "librt.so.1"
        | "ld-linux-aarch64.so.1"
        | "ld-linux-x86-64.so.2" => Some("libc6"),
        "libgcc_s.so.1" => Some("libgcc-s1"),
        _ => None,
    }
}

/// `Depends` of the ELF files: their NEEDED libraries' packages, libc6 versioned
/// by the highest GLIBC_2.N symbol version referenced, then `extra`.
fn depends_of(elfs: &[PathBuf], extra: &[&str]) -> anyhow::Result<Vec<String>> {
    let mut pkgs = BTreeSet::new();
    let mut glibc: Option<(u32, u32)> = None;
    for elf in elfs {
        let dynamic = util::stdout_of(Command::new("readelf").arg("-dW").arg(elf))
            .with_context(|| format!("readelf -d {} (binutils) failed", elf.display()))?;
        for l in dynamic.lines().filter(|l| l.contains("(NEEDED)")) {
            let soname = l
                .split('[')
                .nth(1)
                .and_then(|s| s.split(']').next())
                .unwrap_or_default();
            let deb = deb_of_library(soname).with_context(|| {
                format!(
                    "{} needs {soname}, which no Debian package is known for here (dist.rs deb_of_library)",
                    elf.display()
                )
            })?;
            pkgs.insert(deb);
        }
        // The version needs (`.gnu.version_r`): "Name: GLIBC_2.34  Flags: ...".
        let versions = util::stdout_of(Command::new("readelf").arg("-VW").arg(elf))
            .with_context(|| format!("readelf -V {} failed", elf.display()))?;
        for v in versions
            .split_whitespace()
            .filter_map(|w| w.strip_prefix("GLIBC_2."))
        {
            let mut parts = v.split('.').map(|n| n.parse::<u32>());
            if let Some(Ok(minor)) = parts.next() {
                let patch = parts.next().and_then(Result::ok).unwrap_or(0);
                glibc = glibc.max(Some((minor, patch)));
            }
        }
    }
    let mut out: Vec<String> = pkgs
        .into_iter()
        .map(|p| match (p, glibc) {
            ("libc6", Some((m, 0))) => format!("libc6 (>= 2.{m})"),
            ("libc6", Some((m, p))) => format!("libc6 (>= 2.{m}.{p})"),
            (p, _) => p.to_string(),
        })
        .collect();
    out.extend(extra.iter().map(|s| s.to_string()));
    Ok(out)
}

/// How to run a binary of `t` on this machine.
fn runner(t: &Target, bin: &Path) -> Command {
    if t.cross {
        let mut c = Command::new("qemu-aarch64");
        c.arg("-L").arg(AARCH64_SYSROOT).arg(bin);
        c
    } else {
        Command::new(bin)
    }
}

/// Output of a packaged binary run (emulated for a foreign target); fails with
/// its stderr when it exits non-zero.
fn run_packaged(
    t: &Target,
    bin: &Path,
    args: &[&str],
    env: &[(&str, String)],
) -> anyhow::Result<String> {
    let mut c = runner(t, bin);
    c.args(args);
    for (k, v) in env {
        c.env(k, v);
    }
    eprintln!("+ {}", util::show(&c));
    let out = c
        .output()
        .with_context(|| format!("cannot start {}", util::show(&c)))?;
    ensure!(
        out.status.success(),
        "`{}` failed with {}: {}",
        util::show(&c),
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The shared capture the detector check replays, and the address it must block
/// (its MANIFEST row's `must_block`).
const CHECK_CAPTURE: &str = "Montimage__40.TCP_SYN_scan.pcap";

fn must_block_of(capture: &str) -> anyhow::Result<String> {
    let manifest = crate::eval::pcaps_dir().join("MANIFEST.tsv");
    let text =
        fs::read_to_string(&manifest).with_context(|| format!("reading {}", manifest.display()))?;
    let mut lines = text.lines();
    let header: Vec<&str> = lines.next().unwrap_or_default().split('\t').collect();
    let col = header
        .iter()
        .position(|h| *h == "must_block")
        .context("MANIFEST.tsv has no must_block column")?;
    lines
        .map(|l| l.split('\t').collect::<Vec<_>>())
        .find(|f| f.first() == Some(&capture))
        .and_then(|f| f.get(col).map(|s| s.to_string()))
        .filter(|s| !s.is_empty())
        .with_context(|| format!("{capture} has no must_block address in MANIFEST.tsv"))
}

/// The alerts (kind, rule, source, severity) and verdicts (action, target, rule,
/// observe-only) of a `detector replay-pcap` run, one line each, without scores
/// and ids (floating point may differ in the last bits between the architectures'
/// SIMD kernels; the decisions must not).
fn decisions(jsonl: &str) -> anyhow::Result<Vec<String>> {
    let field = |v: &serde_json::Value, path: &[&str]| -> String {
        let mut v = v;
        for k in path {
            match v.get(k) {
                Some(x) => v = x,
                None => return "-".into(),
            }
        }
        v.to_string()
    };
    let mut out = Vec::new();
    for l in jsonl.lines() {
        let v: serde_json::Value =
            serde_json::from_str(l).with_context(|| format!("replay line {l:?}"))?;
        if let Some(a) = v.get("alert") {
            out.push(format!(
                "alert {} {} {} {}",
                field(a, &["kind"]),
                field(a, &["explanation", "rule"]),
                field(a, &["source"]),
                field(a, &["severity"]),
            ));
        } else if let Some(vd) = v.get("verdict") {
            out.push(format!(
                "verdict {} {} {} {}",
                field(vd, &["action"]),
                field(vd, &["target"]),
                field(vd, &["rule"]),
                field(vd, &["observe_only"]),
            ));
        }
    }
    Ok(out)
}

/// Verifies the packages `debs` of target `t` (see the module docs).
fn check(t: &Target, debs: &[PathBuf]) -> anyhow::Result<()> {
    let dir = debs
        .first()
        .and_then(|d| d.parent())
        .context("no packages")?
        .join("unpacked");
    let _ = fs::remove_dir_all(&dir);
    for deb in debs {
        let name = deb
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.split('_').next())
            .context("package file name")?;
        let root = dir.join(name);
        fs::create_dir_all(&root)?;
        util::run_cmd(Command::new("dpkg-deb").arg("-x").arg(deb).arg(&root))?;
        verify_units(&root)?;
    }
    let router = dir.join("tad-router");
    let detector = dir.join("tad-detector");
    let monitor = dir.join("tad-monitor");
    for (root, bin) in [
        (&router, "usr/sbin/fw-ctl"),
        (&detector, "usr/bin/detector"),
        (&monitor, "usr/bin/dashboard"),
    ] {
        let v = run_packaged(t, &root.join(bin), &["--version"], &[])?;
        ensure!(
            v.contains(env!("CARGO_PKG_VERSION")),
            "{bin} --version printed {v:?}, not version {}",
            env!("CARGO_PKG_VERSION")
        );
    }
    run_packaged(
        t,
        &router.join("usr/sbin/fw-ctl"),
        &["config", "check"],
        &[],
    )
    .err()
    .context("`fw-ctl config check` without a file must fail")?;
    run_packaged(
        t,
        &router.join("usr/sbin/fw-ctl"),
        &[
            "config",
            "check",
            &router.join("etc/tad/gateway.toml").to_string_lossy(),
        ],
        &[],
    )?;
    run_packaged(
        t,
        &detector.join("usr/bin/detector"),
        &[
            "check-config",
            &detector.join("etc/tad/detector.toml").to_string_lossy(),
        ],
        &[],
    )?;
    // The detector on a capture with the shipped config and model (paths moved into
    // the unpacked tree through the config's environment overrides).
    let capture = crate::eval::pcaps_dir().join(CHECK_CAPTURE);
    let model = detector.join("usr/share/tad/detector/model.onnx");
    let out = run_packaged(
        t,
        &detector.join("usr/bin/detector"),
        &[
            "replay-pcap",
            &capture.to_string_lossy(),
            "--config",
            &detector.join("etc/tad/detector.toml").to_string_lossy(),
        ],
        &[(
            "TAD_DETECTOR_ML__MODEL",
            model.to_string_lossy().into_owned(),
        )],
    )?;
    let got = decisions(&out)?;
    let attacker = must_block_of(CHECK_CAPTURE)?;
    ensure!(
        got.iter()
            .any(|d| d.starts_with("verdict") && d.contains(&attacker)),
        "the packaged detector did not block {attacker} on {CHECK_CAPTURE}: {got:?}"
    );
    if t.cross {
        // The same capture through the host's own detector build: the board's binary
        // must decide exactly what the tested one does.
        let host_bin = target_dir().join("release/detector");
        ensure!(
            host_bin.exists(),
            "{} is missing (cargo xtask build)",
            host_bin.display()
        );
        let host = Target::parse(None)?;
        let want = decisions(&run_packaged(
            &host,
            &host_bin,
            &[
                "replay-pcap",
                &capture.to_string_lossy(),
                "--config",
                &detector.join("etc/tad/detector.toml").to_string_lossy(),
            ],
            &[(
                "TAD_DETECTOR_ML__MODEL",
                model.to_string_lossy().into_owned(),
            )],
        )?)?;
        ensure!(
            got == want,
            "the {} detector decided differently from the host build on {CHECK_CAPTURE}:\n{got:#?}\nhost:\n{want:#?}",
            t.deb_arch
        );
    }
    eprintln!(
        "dist: {} packages verified ({} decisions on {CHECK_CAPTURE})",
        t.deb_arch,
        got.len()
    );
    Ok(())
}

/// `systemd-analyze verify` of every unit in an unpacked package. The tree gets
/// the host's units (the targets the units order against) and the host's copies
/// of programs the units run that other packages ship (mosquitto, kill), then is
/// verified with `--root`, so the unit's own paths must exist in the package.
fn verify_units(root: &Path) -> anyhow::Result<()> {
    let units_dir = root.join("lib/systemd/system");
    let Ok(rd) = fs::read_dir(&units_dir) else {
        return Ok(());
    };
    let units: Vec<String> = rd
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".service"))
        .collect();
    let vroot = root.with_extension("verify");
    let _ = fs::remove_dir_all(&vroot);
    util::run_cmd(Command::new("cp").arg("-a").arg(root).arg(&vroot))?;
    util::run_cmd(
        Command::new("cp")
            .args(["-rn", "/lib/systemd/system/."])
            .arg(vroot.join("lib/systemd/system")),
    )?;
    for unit in &units {
        let text = fs::read_to_string(units_dir.join(unit))?;
        for l in text.lines() {
            let Some((k, v)) = l.split_once('=') else {
                continue;
            };
            if !k.starts_with("Exec") {
                continue;
            }
            let prog = v
                .trim_start_matches(['-', '+', '@', '!', ':'])
                .split_whitespace()
                .next();
            let Some(prog) = prog.filter(|p| p.starts_with('/')) else {
                continue;
            };
            let inside = vroot.join(prog.trim_start_matches('/'));
            if !inside.exists() && Path::new(prog).exists() {
                fs::create_dir_all(inside.parent().expect("absolute"))?;
                fs::copy(prog, &inside).with_context(|| format!("copying {prog}"))?;
            }
        }
    }
    let mut cmd = Command::new("systemd-analyze");
    cmd.args(["verify", "--man=no"])
        .arg(format!("--root={}", vroot.display()));
    cmd.args(&units);
    eprintln!("+ {}", util::show(&cmd));
    let out = cmd
        .output()
        .context("cannot run systemd-analyze (Debian systemd)")?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    // Host units that are symlinks are refused inside --root; that says nothing
    // about ours.
    let problems: Vec<&str> = stderr
        .lines()
        .filter(|l| !l.contains("symlinks are not allowed"))
        .collect();
    ensure!(
        out.status.success() && problems.is_empty(),
        "systemd-analyze verify {}: {}",
        units.join(" "),
        problems.join("\n")
    );
    let _ = fs::remove_dir_all(&vroot);
    Ok(())
}

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

    #[test]
    fn depends_of_a_rust_binary_versions_libc() {
        // This test binary is a dynamically linked Rust program like the packaged ones.
        let me = std::env::current_exe().unwrap();
        let deps = depends_of(&[me], &["adduser"]).unwrap();
        assert!(
            deps.iter().any(|d| d.starts_with("libc6 (>= 2.")),
            "{deps:?}"
        );
        assert_eq!(deps.last().map(String::as_str), Some("adduser"));
    }

    #[test]
    fn decisions_keep_rules_and_targets_but_not_scores() {
        let a = r#"{"alert":{"kind":"anomaly","source":"192.0.2.7","severity":"medium","explanation":{"rule":"ml.autoencoder","observed":{"score":415.8}}}}"#;
        let b = r#"{"alert":{"kind":"anomaly","source":"192.0.2.7","severity":"medium","explanation":{"rule":"ml.autoencoder","observed":{"score":415.9}}}}"#;
        let v = r#"{"verdict":{"action":"quarantine","target":"192.0.2.7/32","rule":"portscan.vertical","observe_only":false}}"#;
        let t = r#"{"trust":{"score":90.0}}"#;
        let da = decisions(&format!("{a}\n{v}\n{t}")).unwrap();
        assert_eq!(da, decisions(&format!("{b}\n{v}")).unwrap());
        assert_eq!(da.len(), 2);
        assert!(da[1].contains("192.0.2.7/32") && da[1].contains("portscan.vertical"));
        assert!(decisions("not json").is_err());
    }
}
