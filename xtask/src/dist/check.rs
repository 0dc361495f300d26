//! `--check`: the packaged binaries run from the unpacked packages (under
//! qemu-aarch64 for arm64) and `systemd-analyze verify` on every unit.
use super::*;

/// How to run a binary of `t` on this machine.
pub(super) fn runner(t: &Target, bin: &Path) -> Command {
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
pub(super) fn run_packaged(
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
pub(super) const CHECK_CAPTURE: &str = "Montimage__40.TCP_SYN_scan.pcap";

pub(super) fn must_block_of(capture: &str) -> anyhow::Result<String> {
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
pub(super) fn decisions(jsonl: &str) -> anyhow::Result<Vec<String>> {
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
pub(super) fn check(t: &Target, debs: &[PathBuf]) -> anyhow::Result<()> {
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
pub(super) fn verify_units(root: &Path) -> anyhow::Result<()> {
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
