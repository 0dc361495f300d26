//! Helpers for fw-ctl's privileged tests: a pair of network namespaces joined by a
//! veth pair (always removed, also on panic), the fw-ctl binary run inside the
//! gateway namespace with `nsenter --net` (not `ip netns exec`, which remounts /sys
//! and hides bpffs), and an instance guard that unloads the program.
//!
//! Addresses: gateway side 198.51.100.1/24 (`gw0`), peer side 198.51.100.2-.4/24
//! (`peer0`); management network 192.0.2.0/28. Every test uses its own instance
//! name, pin directory and state file so tests can run in parallel.
#![allow(dead_code)]

use std::{
    path::{Path, PathBuf},
    process::{Child, Command, Output, Stdio},
    time::{Duration, Instant},
};

pub const BIN: &str = env!("CARGO_BIN_EXE_fw-ctl");
pub const GW_ADDR: &str = "198.51.100.1";
pub const PEER_ADDRS: [&str; 3] = ["198.51.100.2", "198.51.100.3", "198.51.100.4"];
pub const MGMT: &str = "192.0.2.0/28";

/// Fails the test unless run as root, and mounts bpffs when it is missing.
pub fn setup() {
    // SAFETY: geteuid has no preconditions.
    assert_eq!(
        unsafe { libc::geteuid() },
        0,
        "fw-ctl's kernel tests need root (run them through `cargo xtask test`)"
    );
    let mounted = Command::new("mountpoint")
        .args(["-q", "/sys/fs/bpf"])
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    if !mounted {
        let _ = Command::new("mount")
            .args(["-t", "bpf", "bpf", "/sys/fs/bpf"])
            .status();
    }
}

fn sh(args: &[&str]) {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .expect("spawn");
    assert!(
        out.status.success(),
        "{:?} failed: {}",
        args,
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Two namespaces joined by a veth pair.
pub struct Net {
    pub gw: String,
    pub peer: String,
}

impl Net {
    pub fn new(tag: &str) -> Net {
        setup();
        let id = std::process::id();
        let net = Net {
            gw: format!("tadctl-{tag}-{id}-g"),
            peer: format!("tadctl-{tag}-{id}-p"),
        };
        for ns in [&net.gw, &net.peer] {
            sh(&["ip", "netns", "add", ns]);
            // No IPv6 neighbour/MLD chatter: only the traffic a test makes.
            sh(&[
                "nsenter",
                &format!("--net=/run/netns/{ns}"),
                "sysctl",
                "-qw",
                "net.ipv6.conf.all.disable_ipv6=1",
                "net.ipv6.conf.default.disable_ipv6=1",
            ]);
        }
        sh(&[
            "ip", "link", "add", "gw0", "netns", &net.gw, "type", "veth", "peer", "name", "peer0",
            "netns", &net.peer,
        ]);
        sh(&[
            "ip",
            "-n",
            &net.gw,
            "addr",
            "add",
            &format!("{GW_ADDR}/24"),
            "dev",
            "gw0",
        ]);
        for a in PEER_ADDRS {
            sh(&[
                "ip",
                "-n",
                &net.peer,
                "addr",
                "add",
                &format!("{a}/24"),
                "dev",
                "peer0",
            ]);
        }
        for (ns, dev) in [(&net.gw, "gw0"), (&net.peer, "peer0")] {
            sh(&["ip", "-n", ns, "link", "set", dev, "up"]);
            sh(&["ip", "-n", ns, "link", "set", "lo", "up"]);
        }
        net
    }

    /// `count` pings from the peer (source `src`) to the gateway; whether any
    /// reply came back.
    pub fn ping(&self, src: &str, count: u32) -> bool {
        ping_from(&self.peer, src, count)
    }
}

/// `count` pings from namespace `peer` (source `src`) to the gateway address.
pub fn ping_from(peer: &str, src: &str, count: u32) -> bool {
    {
        Command::new("nsenter")
            .arg(format!("--net=/run/netns/{peer}"))
            .args([
                "ping",
                "-n",
                "-q",
                "-c",
                &count.to_string(),
                "-i",
                "0.2",
                "-W",
                "1",
                "-I",
                src,
                GW_ADDR,
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .expect("run ping (iputils-ping)")
            .success()
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        for ns in [&self.gw, &self.peer] {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
    }
}

/// A command's outcome.
#[derive(Debug)]
pub struct Out {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Out {
    fn from(o: Output) -> Out {
        Out {
            code: o.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
        }
    }

    /// The stdout as JSON.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.stdout).unwrap_or_else(|e| {
            panic!(
                "stdout is not JSON ({e}): {}\nstderr: {}",
                self.stdout, self.stderr
            )
        })
    }
}

/// One fw-ctl instance: its name, state file and scratch directory. Unloads the
/// program and removes its pins on drop.
pub struct Ctl {
    pub instance: String,
    pub netns: String,
    pub dir: tempfile::TempDir,
}

impl Ctl {
    pub fn new(tag: &str, netns: &str) -> Ctl {
        Ctl {
            instance: format!("tctl-{tag}-{}", std::process::id()),
            netns: netns.to_string(),
            dir: tempfile::tempdir().expect("tempdir"),
        }
    }

    pub fn state_path(&self) -> PathBuf {
        self.dir.path().join("state.json")
    }

    pub fn status_path(&self) -> PathBuf {
        self.dir.path().join("daemon.json")
    }

    pub fn pin_dir(&self) -> PathBuf {
        Path::new("/sys/fs/bpf").join(&self.instance)
    }

    fn base(&self, in_netns: bool) -> Command {
        let mut c = if in_netns {
            let mut c = Command::new("nsenter");
            c.arg(format!("--net=/run/netns/{}", self.netns)).arg(BIN);
            c
        } else {
            Command::new(BIN)
        };
        // No configuration file: a gateway.toml installed on the machine
        // (/etc/fw-ctl, e.g. by the router package) changes nothing.
        c.env_remove("FW_CTL_CONFIG")
            .arg("--no-config")
            .arg("--instance")
            .arg(&self.instance)
            .arg("--state")
            .arg(self.state_path());
        c
    }

    /// Runs fw-ctl inside the gateway namespace.
    pub fn run(&self, args: &[&str]) -> Out {
        Out::from(self.base(true).args(args).output().expect("run fw-ctl"))
    }

    /// Runs fw-ctl with `--json`, asserts success, returns the parsed output.
    pub fn json(&self, args: &[&str]) -> serde_json::Value {
        let o = self.run(&[&["--json"], args].concat());
        assert_eq!(
            o.code, 0,
            "fw-ctl {args:?} failed: {}{}",
            o.stdout, o.stderr
        );
        o.json()
    }

    /// Starts fw-ctl (e.g. the daemon) in the background, in the namespace or not.
    pub fn spawn(&self, args: &[&str], in_netns: bool) -> Child {
        let log = std::fs::File::create(self.dir.path().join("daemon.log")).expect("log file");
        self.base(in_netns)
            .args(args)
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn fw-ctl")
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("daemon.log")).unwrap_or_default()
    }

    /// Active blocks, as `list blocks --json` shows them.
    pub fn blocks(&self) -> Vec<serde_json::Value> {
        self.json(&["list", "blocks"])
            .as_array()
            .cloned()
            .unwrap_or_default()
    }

    /// The block of `prefix`, if listed.
    pub fn block_of(&self, prefix: &str) -> Option<serde_json::Value> {
        self.blocks().into_iter().find(|b| b["prefix"] == prefix)
    }
}

impl Drop for Ctl {
    fn drop(&mut self) {
        let _ = self.base(true).arg("unload").output();
        let _ = std::fs::remove_dir_all(self.pin_dir());
    }
}

/// A background process killed (SIGKILL) on drop unless already reaped.
pub struct Proc(pub Option<Child>);

impl Proc {
    pub fn pid(&self) -> i32 {
        self.0.as_ref().map(|c| c.id() as i32).unwrap_or(0)
    }

    /// Sends a signal.
    pub fn signal(&self, sig: i32) {
        // SAFETY: signalling our own child by pid.
        unsafe { libc::kill(self.pid(), sig) };
    }

    /// Waits for the exit code (up to `limit`).
    pub fn wait(&mut self, limit: Duration) -> Option<i32> {
        let c = self.0.as_mut()?;
        let end = Instant::now() + limit;
        while Instant::now() < end {
            if let Ok(Some(st)) = c.try_wait() {
                self.0 = None;
                return Some(st.code().unwrap_or(-1));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        None
    }

    /// Whether the process still runs.
    pub fn running(&mut self) -> bool {
        matches!(self.0.as_mut().map(|c| c.try_wait()), Some(Ok(None)))
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Some(mut c) = self.0.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// `GET path` over HTTP/1.0 from `addr` (`host:port`): status code and body.
pub fn http_get(addr: &str, path: &str) -> (u16, String) {
    use std::io::{Read as _, Write as _};
    let mut s =
        std::net::TcpStream::connect(addr).unwrap_or_else(|e| panic!("connect {addr}: {e}"));
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    write!(s, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").unwrap();
    let mut raw = String::new();
    s.read_to_string(&mut raw).unwrap();
    let (head, body) = raw
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("no HTTP header end: {raw}"));
    let code = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("no status code: {head}"));
    (code, body.to_string())
}

/// Polls `f` until it returns `Some` or `limit` passes.
pub fn wait_for<T>(limit: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let end = Instant::now() + limit;
    loop {
        if let Some(t) = f() {
            return Some(t);
        }
        if Instant::now() >= end {
            return None;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A gateway.toml for tests: short export timeouts, own addresses not allowlisted
/// (the daemon may run outside the gateway namespace), the management network,
/// `/metrics` and `/health` on a free port (the status file's `http_listen`).
/// `extra` goes before the first table (top-level keys, or whole tables).
pub fn gateway_toml(ctl: &Ctl, bus: Option<&str>, extra: &str) -> PathBuf {
    let (enabled, bus_table) = match bus {
        Some(b) => (true, b.to_string()),
        None => (false, String::new()),
    };
    let text = format!(
        r#"gateway_id = "gateway-1"
instance = "{inst}"
interfaces = ["gw0"]
xdp_mode = "skb"
state_file = "{state}"
status_file = "{status}"
management = ["{MGMT}"]
allow_own_addresses = false
bus_enabled = {enabled}
{extra}
[export]
poll_interval_ms = 200
idle_timeout_s = 1.0
active_timeout_s = 30.0
end_grace_ms = 200
counters_interval_ms = 500
sweep_interval_ms = 300

[trust]
detectors = ["detector-1"]
dashboards = ["dashboard"]

[verdicts]
max_ttl_s = 3600

[http]
listen = "127.0.0.1:0"
{bus_table}
"#,
        inst = ctl.instance,
        state = ctl.state_path().display(),
        status = ctl.status_path().display(),
    );
    let p = ctl.dir.path().join("gateway.toml");
    std::fs::write(&p, text).expect("write config");
    p
}
