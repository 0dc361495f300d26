//! The package trees: what each role's package holds ([`packages`]), how it is
//! laid out and built with `dpkg-deb` ([`package`]), and its `Depends` read from
//! the binaries.
use super::*;

pub(super) enum Src {
    File(PathBuf),
    Text(String),
    Symlink(&'static str),
}

pub(super) struct Entry {
    /// Absolute path on the installed system.
    dest: String,
    src: Src,
    mode: u32,
}

pub(super) struct Pkg {
    name: &'static str,
    summary: &'static str,
    description: &'static str,
    /// Depends beyond what the binaries need.
    depends: &'static [&'static str],
    recommends: &'static [&'static str],
    entries: Vec<Entry>,
}

pub(super) fn file(dest: &str, src: PathBuf, mode: u32) -> Entry {
    Entry {
        dest: dest.to_string(),
        src: Src::File(src),
        mode,
    }
}

pub(super) fn text(dest: &str, s: String) -> Entry {
    Entry {
        dest: dest.to_string(),
        src: Src::Text(s),
        mode: 0o644,
    }
}

/// The three packages' contents, from the binaries in `bins`.
pub(super) fn packages(bins: &Path) -> anyhow::Result<Vec<Pkg>> {
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

pub(super) fn copyright() -> String {
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
pub(super) fn xdp_object(bins: &Path) -> anyhow::Result<PathBuf> {
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
pub(super) fn package(t: &Target, profile: &str, out: &Path) -> anyhow::Result<Vec<PathBuf>> {
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

pub(super) fn is_elf(p: &Path) -> bool {
    use std::io::Read as _;
    let mut magic = [0u8; 4];
    fs::File::open(p)
        .and_then(|mut f| f.read_exact(&mut magic))
        .is_ok_and(|()| magic == *b"\x7fELF")
}

pub(super) fn du_kib(dir: &Path) -> anyhow::Result<u64> {
    let out = util::stdout_of(Command::new("du").args(["-sk", "--apparent-size"]).arg(dir))
        .with_context(|| format!("du {}", dir.display()))?;
    out.split_whitespace()
        .next()
        .and_then(|n| n.parse().ok())
        .with_context(|| format!("du printed {out:?}"))
}

/// Debian package of a shared library a Rust binary may need.
pub(super) fn deb_of_library(soname: &str) -> Option<&'static str> {
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
pub(super) fn depends_of(elfs: &[PathBuf], extra: &[&str]) -> anyhow::Result<Vec<String>> {
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

#[cfg(test)]
mod tests {
    use super::*;

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
}
