//! The one harness every whole-system run starts its processes with: the testbed
//! [`Stack`](super::stack::Stack) (demo, eval, the reaction benchmark) and the
//! two-namespace bed of the footprint and pipeline benchmarks.
//!
//! - [`Daemons`]: the started processes, each with its log, stopped by PID in
//!   reverse order when dropped; [`Daemons::check_alive`] names the first that died
//!   with the end of its log.
//! - [`wait_tcp`]: waits until something listens on an address inside a namespace.
//! - [`start_broker`]: Mosquitto with the config `crate::certs` wrote.
//! - [`fw_ctl_load`] / [`fw_ctl_unload`]: the XDP program of an fw-ctl instance.
//! - [`Subscriber`]: a bus client on its own thread inside a namespace, handing every
//!   message of one topic filter to a callback until it is dropped.
use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    process::Command,
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};

use super::netns::{self, Proc, in_ns};
use crate::util;

/// Path of a release binary (`target/release/<name>`; `cargo xtask build`).
pub fn bin(name: &str) -> PathBuf {
    util::workspace_root().join("target/release").join(name)
}

/// A command for the release binary `name` running in namespace `ns`.
pub fn in_ns_bin(ns: &str, name: &str) -> Command {
    in_ns(ns, bin(name))
}

/// Waits until a TCP connection to `addr` from inside `ns` succeeds, at most
/// `limit`; `what` names the service in the error. Wakes early on Ctrl-C.
///
/// # Errors
/// Nothing listening after `limit`, no such namespace, or Ctrl-C.
pub fn wait_tcp(ns: &str, addr: SocketAddr, limit: Duration, what: &str) -> anyhow::Result<()> {
    let ns = ns.to_string();
    std::thread::spawn(move || -> anyhow::Result<()> {
        netns::enter_thread(&ns)?;
        let end = Instant::now() + limit;
        loop {
            if std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(300)).is_ok() {
                return Ok(());
            }
            netns::check_interrupt()?;
            if Instant::now() > end {
                bail!("nothing listens on {addr} in {ns} after {limit:?}");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    })
    .join()
    .map_err(|_| anyhow::anyhow!("probe thread panicked"))?
    .with_context(|| format!("{what} did not come up"))
}

/// One started process and its log.
struct Daemon {
    proc: Proc,
    log: PathBuf,
}

/// Started processes, stopped (SIGTERM, then SIGKILL) in reverse start order when
/// dropped. With `record`, each is also written to the testbed state file
/// ([`super::record_process`]) so `cargo xtask testbed down` stops it even after a
/// crash of xtask.
pub struct Daemons {
    dir: PathBuf,
    record: bool,
    procs: Vec<Daemon>,
}

impl Daemons {
    /// No processes yet; logs go to `dir/<log>.log`.
    pub fn new(dir: &Path, record: bool) -> Daemons {
        Daemons {
            dir: dir.to_path_buf(),
            record,
            procs: Vec::new(),
        }
    }

    /// Starts `cmd` as `name`, stdout and stderr appended to `<dir>/<log>.log`;
    /// returns its PID.
    ///
    /// # Errors
    /// The log cannot be opened, the program cannot start, or the state file
    /// cannot be written.
    pub fn spawn(&mut self, name: &str, log: &str, cmd: &mut Command) -> anyhow::Result<i32> {
        let log = self.dir.join(format!("{log}.log"));
        let proc = Proc::spawn(name, cmd, Some(&log))?;
        let pid = proc.pid();
        if self.record {
            super::record_process(pid, name)?;
        }
        self.procs.push(Daemon { proc, log });
        Ok(pid)
    }

    /// Names and PIDs of the running processes, in start order.
    pub fn pids(&self) -> Vec<(String, i32)> {
        self.procs
            .iter()
            .map(|d| (d.proc.name.clone(), d.proc.pid()))
            .collect()
    }

    /// Stops the process started as `name` (waits for it); false when there is none.
    pub fn stop(&mut self, name: &str) -> bool {
        let Some(i) = self.procs.iter().position(|d| d.proc.name == name) else {
            return false;
        };
        let d = self.procs.remove(i);
        self.finish(d);
        true
    }

    fn finish(&self, mut d: Daemon) {
        d.proc.stop();
        if self.record {
            let _ = super::forget_process(d.proc.pid());
        }
    }

    /// Fails naming the first process that has exited, with the last lines of its
    /// log.
    ///
    /// # Errors
    /// A process has exited.
    pub fn check_alive(&mut self) -> anyhow::Result<()> {
        for d in &mut self.procs {
            if let Some(st) = d.proc.exited() {
                let tail = std::fs::read_to_string(&d.log).unwrap_or_default();
                let tail: Vec<&str> = tail.lines().rev().take(8).collect();
                bail!(
                    "{} exited ({st}); last lines of {}:\n{}",
                    d.proc.name,
                    d.log.display(),
                    tail.into_iter().rev().collect::<Vec<_>>().join("\n")
                );
            }
        }
        Ok(())
    }
}

impl Drop for Daemons {
    fn drop(&mut self) {
        while let Some(d) = self.procs.pop() {
            self.finish(d);
        }
    }
}

/// Starts Mosquitto in `ns` with `<certs>/mosquitto/mosquitto.conf` (TLS, ACL; see
/// `crate::certs`) as `mosquitto` in `daemons`, and waits until `listen` accepts.
///
/// # Errors
/// Mosquitto does not start or does not listen within 20 s.
pub fn start_broker(
    daemons: &mut Daemons,
    ns: &str,
    certs: &Path,
    listen: SocketAddr,
) -> anyhow::Result<()> {
    let conf = certs.join("mosquitto/mosquitto.conf");
    daemons.spawn(
        "mosquitto",
        "mosquitto",
        in_ns(ns, "mosquitto").arg("-c").arg(&conf),
    )?;
    wait_tcp(ns, listen, Duration::from_secs(20), "mosquitto")
}

/// How `fw-ctl load` attaches the program.
pub struct Load<'a> {
    /// Namespace of the interface.
    pub ns: &'a str,
    /// fw-ctl instance (pin directory `/sys/fs/bpf/<instance>`).
    pub instance: &'a str,
    /// The gateway config file.
    pub config: &'a Path,
    /// Interface to attach to.
    pub iface: &'a str,
    /// `native` or `skb`.
    pub xdp_mode: &'a str,
    /// Load in observe mode (count would-drops, drop nothing).
    pub observe: bool,
}

/// `fw-ctl --instance I --config C load --iface IF --mode M [--observe]` in `ns`.
///
/// # Errors
/// fw-ctl failing (its stderr in the message).
pub fn fw_ctl_load(l: &Load) -> anyhow::Result<()> {
    let mut cmd = in_ns(l.ns, bin("fw-ctl"));
    cmd.args(["--instance", l.instance, "--config"])
        .arg(l.config)
        .args(["load", "--iface", l.iface, "--mode", l.xdp_mode]);
    if l.observe {
        cmd.arg("--observe");
    }
    netns::run_quiet(&mut cmd).context("fw-ctl load")?;
    Ok(())
}

/// `fw-ctl --instance I unload` in `ns`, best effort (nothing to do when the
/// namespace or the binary is gone).
pub fn fw_ctl_unload(ns: &str, instance: &str) {
    let fw = bin("fw-ctl");
    if fw.exists() && netns::ns_exists(ns) {
        let _ = netns::run_quiet(in_ns(ns, &fw).args(["--instance", instance, "unload"]));
    }
}

/// A bus client subscribed to one topic filter on its own thread (moved into a
/// namespace), calling `on_message` for every message until dropped.
pub struct Subscriber {
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Subscriber {
    /// Connects `cfg` from inside `ns`, subscribes to `filter` (QoS 1) and returns
    /// once connected.
    ///
    /// # Errors
    /// The namespace, the config or the connection failing, or no connection
    /// within 20 s.
    pub fn start<M: tad_bus::Inbound + Send + 'static>(
        ns: &str,
        cfg: tad_bus::BusConfig,
        filter: &str,
        mut on_message: impl FnMut(tad_bus::client::Received<M>) + Send + 'static,
    ) -> anyhow::Result<Subscriber> {
        let (ns, filter) = (ns.to_string(), filter.to_string());
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let (ready_tx, ready_rx) = std::sync::mpsc::channel::<anyhow::Result<()>>();
        let thread = std::thread::spawn(move || {
            let ready = ready_tx.clone();
            let run = move || -> anyhow::Result<()> {
                netns::enter_thread(&ns)?;
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()?;
                rt.block_on(async move {
                    let mut b = tad_bus::BusClient::builder(cfg)?;
                    let mut sub = b.subscribe::<M>(&filter, tad_bus::QoS::AtLeastOnce);
                    let bus = tokio::time::timeout(Duration::from_secs(15), b.connect())
                        .await
                        .context("connecting timed out")??;
                    let _ = ready.send(Ok(()));
                    let mut stop_rx = stop_rx;
                    loop {
                        tokio::select! {
                            _ = &mut stop_rx => break,
                            m = sub.recv() => match m {
                                Some(m) => on_message(m),
                                None => break,
                            },
                        }
                    }
                    let _ = bus.shutdown(Duration::from_secs(2)).await;
                    Ok::<(), anyhow::Error>(())
                })
            };
            if let Err(e) = run() {
                let _ = ready_tx.send(Err(e));
            }
        });
        let s = Subscriber {
            stop: Some(stop_tx),
            thread: Some(thread),
        };
        match ready_rx.recv_timeout(Duration::from_secs(20)) {
            Ok(r) => r.map(|()| s),
            Err(_) => bail!("did not connect within 20 s"),
        }
    }
}

impl Drop for Subscriber {
    fn drop(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(h) = self.thread.take() {
            let _ = h.join();
        }
    }
}
