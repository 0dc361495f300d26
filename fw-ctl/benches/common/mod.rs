//! What the trafgen benchmarks (`filters`, `flood`) share: running commands in a
//! namespace, the trafgen process (its own process group, always stopped), the
//! interrupt flag (SIGINT/SIGTERM/SIGHUP end a run cleanly) and the per-CPU
//! busy/softirq ticks of /proc/stat the softirq ns/packet figures come from.
#![allow(dead_code)]

use std::{
    fs::File,
    io::Write as _,
    os::unix::process::CommandExt,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::atomic::{AtomicBool, Ordering},
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail, ensure};

/// Set by [`catch_signals`]' handler.
pub static INTERRUPTED: AtomicBool = AtomicBool::new(false);

/// Runs a command to completion; its stdout, or an error naming the command.
pub fn run(cmd: &mut Command) -> anyhow::Result<String> {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("run {cmd:?}"))?;
    ensure!(
        out.status.success(),
        "{cmd:?} failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr).trim()
    );
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

pub fn in_ns(ns: &str, program: &str) -> Command {
    let mut c = Command::new("ip");
    c.args(["netns", "exec", ns, program]);
    c
}

extern "C" fn on_signal(_: libc::c_int) {
    INTERRUPTED.store(true, Ordering::SeqCst);
}

pub fn catch_signals() {
    for sig in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
        // SAFETY: the handler only stores to an atomic (async-signal-safe).
        unsafe { libc::signal(sig, on_signal as *const () as libc::sighandler_t) };
    }
}

pub fn sleep_unless_interrupted(d: Duration) -> anyhow::Result<()> {
    let end = Instant::now() + d;
    while Instant::now() < end {
        ensure!(
            !INTERRUPTED.load(Ordering::SeqCst),
            "interrupted; cleaning up"
        );
        std::thread::sleep((end - Instant::now()).min(Duration::from_millis(50)));
    }
    Ok(())
}

/// Per-CPU (busy, softirq) clock ticks from /proc/stat.
pub fn cpu_ticks() -> anyhow::Result<Vec<(u64, u64)>> {
    let stat = std::fs::read_to_string("/proc/stat").context("read /proc/stat")?;
    let mut out = Vec::new();
    for line in stat
        .lines()
        .filter(|l| l.starts_with("cpu") && !l.starts_with("cpu "))
    {
        let v: Vec<u64> = line
            .split_whitespace()
            .skip(1)
            .map(|x| x.parse().unwrap_or(0))
            .collect();
        ensure!(v.len() >= 7, "short /proc/stat line {line:?}");
        // user nice system idle iowait irq softirq [steal ...]; guest is inside user.
        out.push((v[0] + v[1] + v[2] + v[5] + v[6], v[6]));
    }
    Ok(out)
}

/// A running trafgen in its own process group; stopped on drop (also on panic).
pub struct Generator {
    child: Child,
    stderr: PathBuf,
}

impl Generator {
    /// Starts `trafgen --conf conf` on `dev` in namespace `ns` (one CPU, high
    /// priority), its stderr to `stderr`.
    ///
    /// # Errors
    /// trafgen missing (Debian package netsniff-ng) or not starting.
    pub fn start(ns: &str, dev: &str, conf: &Path, stderr: PathBuf) -> anyhow::Result<Generator> {
        let child = in_ns(ns, "trafgen")
            .args(["--dev", dev, "--conf"])
            .arg(conf)
            .args([
                "--cpus",
                "1",
                "--prio-high",
                "--no-sock-mem",
                "--notouch-irq",
                "--no-cpu-stats",
            ])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(File::create(&stderr)?)
            // Own process group (pgid = pid): the workers trafgen forks stay in it.
            .process_group(0)
            .spawn()
            .context("start trafgen (Debian package netsniff-ng)")?;
        Ok(Generator { child, stderr })
    }

    /// Fails with trafgen's stderr when it has exited.
    pub fn ensure_running(&mut self) -> anyhow::Result<()> {
        if let Some(st) = self.child.try_wait()? {
            let err = std::fs::read_to_string(&self.stderr).unwrap_or_default();
            bail!("trafgen exited early ({st}): {}", err.trim());
        }
        Ok(())
    }
}

impl Drop for Generator {
    fn drop(&mut self) {
        let pgid = self.child.id() as i32;
        // SAFETY: signals our own process group. The leader is not reaped before
        // the SIGKILL below, so the group id cannot have been reused.
        unsafe { libc::kill(-pgid, libc::SIGINT) };
        let deadline = Instant::now() + Duration::from_secs(2);
        while Instant::now() < deadline {
            // Has the leader exited? (WNOWAIT: leave it unreaped.)
            let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
            let rc = unsafe {
                libc::waitid(
                    libc::P_PID,
                    pgid as libc::id_t,
                    &mut info,
                    libc::WEXITED | libc::WNOHANG | libc::WNOWAIT,
                )
            };
            if rc != 0 || unsafe { info.si_pid() } != 0 {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        // Workers that outlived the leader, or a leader that ignored SIGINT.
        unsafe { libc::kill(-pgid, libc::SIGKILL) };
        let _ = self.child.wait();
    }
}

/// Writes `doc` pretty-printed to `path` (its directory made if missing) and
/// says so on stdout.
///
/// # Errors
/// The directory or the file cannot be written.
pub fn write_json(path: &Path, doc: &serde_json::Value) -> anyhow::Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
    }
    let mut f = File::create(path).with_context(|| format!("create {}", path.display()))?;
    writeln!(f, "{}", serde_json::to_string_pretty(doc)?)?;
    println!("wrote {}", path.display());
    Ok(())
}
