//! Network-namespace plumbing for the testbed, the demo and eval: running `ip`,
//! running programs inside a namespace, moving a thread into one, the Ctrl-C flag,
//! and child processes that are always stopped (by their own PID) when dropped.
//!
//! Programs that touch pinned BPF objects (fw-ctl) must not run under
//! `ip netns exec`, which remounts /sys and hides bpffs; [`in_ns`] uses
//! `nsenter --net=/run/netns/NAME` instead, which only switches the network
//! namespace.
use std::{
    fs::File,
    os::fd::AsRawFd as _,
    path::Path,
    process::{Child, Command, Stdio},
    sync::atomic::{AtomicBool, Ordering},
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};

use crate::util::show;

/// Set by the Ctrl-C / SIGTERM handler; long-running steps poll it.
static INTERRUPTED: AtomicBool = AtomicBool::new(false);

/// Installs the SIGINT/SIGTERM handler once; later calls do nothing.
pub fn install_interrupt_handler() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let _ = ctrlc::set_handler(|| {
            if INTERRUPTED.swap(true, Ordering::SeqCst) {
                eprintln!("xtask: interrupted again, exiting without cleanup");
                std::process::exit(130);
            }
            eprintln!("xtask: interrupted, cleaning up (Ctrl-C again to skip)");
        });
    });
}

/// Whether Ctrl-C or SIGTERM was received.
pub fn interrupted() -> bool {
    INTERRUPTED.load(Ordering::SeqCst)
}

/// Fails with "interrupted" after Ctrl-C, so `?` unwinds into the cleanup guards.
pub fn check_interrupt() -> anyhow::Result<()> {
    if interrupted() {
        bail!("interrupted");
    }
    Ok(())
}

/// Sleeps for `d`, waking early (with an error) on Ctrl-C.
pub fn sleep(d: Duration) -> anyhow::Result<()> {
    let end = Instant::now() + d;
    loop {
        check_interrupt()?;
        let now = Instant::now();
        if now >= end {
            return Ok(());
        }
        std::thread::sleep((end - now).min(Duration::from_millis(100)));
    }
}

/// Runs a command quietly; on failure the error carries its command line and stderr.
pub fn run_quiet(cmd: &mut Command) -> anyhow::Result<String> {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("cannot start {}", show(cmd)))?;
    if !out.status.success() {
        bail!(
            "`{}` failed ({}): {}",
            show(cmd),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// `ip ARGS` in the root namespace.
pub fn ip(args: &[&str]) -> anyhow::Result<String> {
    run_quiet(Command::new("ip").args(args))
}

/// `ip -n NS ARGS`.
pub fn ip_in(ns: &str, args: &[&str]) -> anyhow::Result<String> {
    run_quiet(Command::new("ip").arg("-n").arg(ns).args(args))
}

/// Sets a sysctl inside namespace `ns` (`key` in dotted form).
pub fn sysctl(ns: &str, key: &str, value: &str) -> anyhow::Result<()> {
    run_quiet(in_ns(ns, "sysctl").args(["-q", "-w", &format!("{key}={value}")]))?;
    Ok(())
}

/// Path of a named namespace.
pub fn ns_path(ns: &str) -> String {
    format!("/run/netns/{ns}")
}

/// Whether the named namespace exists.
pub fn ns_exists(ns: &str) -> bool {
    Path::new(&ns_path(ns)).exists()
}

/// A command for `program` running in namespace `ns` (network namespace only;
/// bpffs stays visible).
pub fn in_ns(ns: &str, program: impl AsRef<std::ffi::OsStr>) -> Command {
    let mut c = Command::new("nsenter");
    c.arg(format!("--net={}", ns_path(ns)))
        .arg("--")
        .arg(program);
    c
}

/// Moves the calling thread into network namespace `ns` (setns(2) affects only the
/// calling thread). Sockets opened afterwards belong to that namespace.
pub fn enter_thread(ns: &str) -> anyhow::Result<()> {
    let f = File::open(ns_path(ns)).with_context(|| format!("no network namespace {ns:?}"))?;
    // SAFETY: setns with a valid namespace fd and CLONE_NEWNET; affects this thread.
    let rc = unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) };
    if rc != 0 {
        bail!(
            "setns into {ns:?} failed: {}",
            std::io::Error::last_os_error()
        );
    }
    Ok(())
}

/// PIDs of the processes living in namespace `ns` (`ip netns pids`).
pub fn ns_pids(ns: &str) -> Vec<i32> {
    ip(&["netns", "pids", ns])
        .map(|s| {
            s.split_whitespace()
                .filter_map(|p| p.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

/// Sends `sig` to `pid` (no error when it is gone).
pub fn kill(pid: i32, sig: i32) {
    // SAFETY: kill(2) with a specific positive PID has no memory-safety preconditions.
    unsafe {
        libc::kill(pid, sig);
    }
}

/// Whether `pid` is still alive (and not a zombie we could reap).
pub fn alive(pid: i32) -> bool {
    // SAFETY: signal 0 only checks for existence.
    unsafe { libc::kill(pid, 0) == 0 }
}

/// Terminates `pids` (SIGTERM, then SIGKILL after `grace`).
pub fn terminate(pids: &[i32], grace: Duration) {
    for &p in pids {
        kill(p, libc::SIGTERM);
    }
    let end = Instant::now() + grace;
    while Instant::now() < end && pids.iter().any(|&p| alive(p) && !is_zombie(p)) {
        std::thread::sleep(Duration::from_millis(50));
    }
    for &p in pids {
        if alive(p) && !is_zombie(p) {
            kill(p, libc::SIGKILL);
        }
    }
}

fn is_zombie(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| {
            s.rsplit(')')
                .next()
                .is_some_and(|r| r.trim_start().starts_with('Z'))
        })
        .unwrap_or(true)
}

/// A child process started by us, stopped by its own PID (SIGTERM, then SIGKILL)
/// when dropped.
pub struct Proc {
    /// What it is, for messages.
    pub name: String,
    child: Child,
}

impl Proc {
    /// Starts `cmd`, with stdout/stderr appended to `log` when given (else discarded).
    pub fn spawn(name: &str, cmd: &mut Command, log: Option<&Path>) -> anyhow::Result<Proc> {
        cmd.stdin(Stdio::null());
        match log {
            Some(p) => {
                let f = std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(p)
                    .with_context(|| format!("cannot open log {}", p.display()))?;
                cmd.stdout(f.try_clone()?).stderr(f);
            }
            None => {
                cmd.stdout(Stdio::null()).stderr(Stdio::null());
            }
        }
        // Own process group: the terminal's Ctrl-C reaches only us, and we stop the
        // children in order.
        std::os::unix::process::CommandExt::process_group(cmd, 0);
        let child = cmd
            .spawn()
            .with_context(|| format!("cannot start {name}: {}", show(cmd)))?;
        Ok(Proc {
            name: name.to_string(),
            child,
        })
    }

    /// Its PID.
    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    /// `Some(status)` once it has exited.
    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// SIGTERM, then SIGKILL after 3 s; reaps it.
    pub fn stop(&mut self) {
        if self.exited().is_none() {
            terminate(&[self.pid()], Duration::from_secs(3));
        }
        let _ = self.child.wait();
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The MAC address of `iface` in namespace `ns`.
pub fn mac_of(ns: &str, iface: &str) -> anyhow::Result<[u8; 6]> {
    let out = ip_in(ns, &["-j", "link", "show", "dev", iface])?;
    let v: serde_json::Value = serde_json::from_str(&out).context("parsing `ip -j link`")?;
    let s = v[0]["address"]
        .as_str()
        .with_context(|| format!("{iface} in {ns} has no MAC address"))?;
    parse_mac(s)
}

/// Parses `aa:bb:cc:dd:ee:ff`.
pub fn parse_mac(s: &str) -> anyhow::Result<[u8; 6]> {
    let parts: Vec<&str> = s.split(':').collect();
    if parts.len() != 6 {
        bail!("bad MAC address {s:?}: expected six hex bytes separated by ':'");
    }
    let mut mac = [0u8; 6];
    for (m, p) in mac.iter_mut().zip(parts) {
        *m = u8::from_str_radix(p, 16).with_context(|| format!("bad MAC address {s:?}"))?;
    }
    Ok(mac)
}
