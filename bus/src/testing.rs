//! Test helper: a real `mosquitto` (Debian package, 2.0) on a free 127.0.0.1 port
//! with freshly generated certificates, the production config and ACL
//! ([`crate::broker`]), in a temporary directory. For integration tests of this
//! crate and of fw-ctl, detector and dashboard.
//!
//! ```no_run
//! # async fn t() -> Result<(), Box<dyn std::error::Error>> {
//! use tad_bus::{testing::TestBroker, BusClient};
//! let broker = TestBroker::start()?;              // waits until it accepts TLS
//! let gw = BusClient::connect(broker.config("gateway-1")?).await?;
//! # Ok(()) }
//! ```
//!
//! The broker is always stopped: [`TestBroker`]'s `Drop` sends SIGTERM, waits up to
//! 5 s, then SIGKILLs and reaps it; the temporary directory is removed. Nothing is
//! skipped: without `mosquitto` [`TestBroker::start`] fails with
//! [`TestBrokerError::MosquittoMissing`] ("run `cargo xtask setup`").
//!
//! The ACL covers the node ids given at start ([`TestBroker::start_with`]; default
//! [`DEFAULT_NODES`]); a certificate for any other id connects but may do nothing.

use std::{
    fs,
    io::{Read, Write},
    net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{
        Arc,
        atomic::{AtomicU32, Ordering},
    },
    time::{Duration, Instant},
};

use crate::{
    BusConfig,
    broker::{BrokerConfig, BrokerConfigError, render_acl},
    pki::{CertificateAuthority, IssuedCert, PkiError, Validity, write_private, write_public},
};

/// Node ids the test broker's ACL knows by default.
pub const DEFAULT_NODES: &[&str] = &[
    "gateway-1",
    "gateway-2",
    "detector-1",
    "detector-2",
    "dashboard",
    "dashboard-2",
];

/// How long [`TestBroker::start`] waits for the broker to accept TLS.
const READY_TIMEOUT: Duration = Duration::from_secs(15);

/// Errors starting or controlling the test broker.
#[derive(Debug, thiserror::Error)]
pub enum TestBrokerError {
    #[error(
        "mosquitto not found (looked for `mosquitto` in PATH and /usr/sbin/mosquitto): run `cargo xtask setup` (installs the Debian package `mosquitto`)"
    )]
    MosquittoMissing,
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Pki(#[from] PkiError),
    #[error(transparent)]
    Config(#[from] BrokerConfigError),
    #[error(
        "mosquitto did not accept TLS on 127.0.0.1:{port} within {READY_TIMEOUT:?}: {why}\n--- mosquitto log ---\n{log}"
    )]
    NotReady { port: u16, why: String, log: String },
    #[error("mosquitto is not running")]
    NotRunning,
}

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> TestBrokerError {
    let what = what.into();
    move |source| TestBrokerError::Io { what, source }
}

/// Options of [`TestBroker::start_with_options`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TestBrokerOptions {
    /// Node ids the ACL covers (default [`DEFAULT_NODES`]).
    pub nodes: Vec<String>,
    /// Keep sessions and queued messages across [`TestBroker::restart`] (default
    /// true, as in production). False makes a restart lose every session.
    pub persistence: bool,
}

impl Default for TestBrokerOptions {
    fn default() -> Self {
        Self {
            nodes: DEFAULT_NODES.iter().map(|s| s.to_string()).collect(),
            persistence: true,
        }
    }
}

/// A running mosquitto for one test. See the module docs.
pub struct TestBroker {
    dir: tempfile::TempDir,
    ca: CertificateAuthority,
    port: u16,
    child: Option<Child>,
    conf: PathBuf,
    broker_cfg: BrokerConfig,
    bin: PathBuf,
    probe: Arc<rustls::ClientConfig>,
    serial: AtomicU32,
}

impl std::fmt::Debug for TestBroker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestBroker")
            .field("port", &self.port)
            .field("dir", &self.dir.path())
            .finish_non_exhaustive()
    }
}

fn find_mosquitto() -> Option<PathBuf> {
    let mut candidates: Vec<PathBuf> = std::env::var_os("PATH")
        .map(|p| {
            std::env::split_paths(&p)
                .map(|d| d.join("mosquitto"))
                .collect()
        })
        .unwrap_or_default();
    candidates.push("/usr/sbin/mosquitto".into());
    candidates.into_iter().find(|p| p.is_file())
}

fn free_port() -> Result<u16, TestBrokerError> {
    let l = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).map_err(io("bind a free port"))?;
    Ok(l.local_addr().map_err(io("read the free port"))?.port())
}

impl TestBroker {
    /// Starts a broker whose ACL covers [`DEFAULT_NODES`].
    pub fn start() -> Result<TestBroker, TestBrokerError> {
        Self::start_with(DEFAULT_NODES)
    }

    /// Starts a broker whose ACL covers `nodes` (ids with a role prefix).
    pub fn start_with(nodes: &[&str]) -> Result<TestBroker, TestBrokerError> {
        Self::start_with_options(&TestBrokerOptions {
            nodes: nodes.iter().map(|s| s.to_string()).collect(),
            ..TestBrokerOptions::default()
        })
    }

    /// Starts a broker with `opts`.
    pub fn start_with_options(opts: &TestBrokerOptions) -> Result<TestBroker, TestBrokerError> {
        let bin = find_mosquitto().ok_or(TestBrokerError::MosquittoMissing)?;
        let dir = tempfile::Builder::new()
            .prefix("tad-mosquitto-")
            .tempdir()
            .map_err(io("create the broker's temp dir"))?;
        let p = |f: &str| dir.path().join(f);
        let ca = CertificateAuthority::generate("tad test CA", Validity::days(2))?;
        write_public(&p("ca.pem"), ca.cert_pem())?;
        let server = ca.issue_broker(&[], Validity::days(2))?;
        write_public(&p("broker.pem"), &server.cert_pem)?;
        write_private(&p("broker.key"), &server.key_pem)?;
        fs::write(p("acl"), render_acl(&opts.nodes)?).map_err(io("write the ACL"))?;
        fs::create_dir(p("persist")).map_err(io("create the persistence dir"))?;
        fs::create_dir(p("nodes")).map_err(io("create the nodes dir"))?;
        // The probe is a valid client; its CN is in no ACL block, so it may do nothing.
        let probe = ca.issue_client("tls-probe", Validity::days(2))?;
        write_public(&p("nodes/tls-probe.pem"), &probe.cert_pem)?;
        write_private(&p("nodes/tls-probe.key"), &probe.key_pem)?;
        let probe_cfg = BusConfig {
            node_id: "tls-probe".parse().unwrap(),
            ca_file: p("ca.pem"),
            cert_file: p("nodes/tls-probe.pem"),
            key_file: p("nodes/tls-probe.key"),
            ..BusConfig::default()
        };
        let probe =
            Arc::new(
                crate::client::tls_config(&probe_cfg).map_err(|e| TestBrokerError::Io {
                    what: "build the TLS probe".into(),
                    source: std::io::Error::other(e.to_string()),
                })?,
            );
        // SAFETY: geteuid(2) has no preconditions and cannot fail.
        let run_as_user = (unsafe { libc::geteuid() } == 0).then(|| "root".to_string());
        let broker_cfg = BrokerConfig {
            bind: Ipv4Addr::LOCALHOST.into(),
            port: free_port()?,
            cafile: p("ca.pem"),
            certfile: p("broker.pem"),
            keyfile: p("broker.key"),
            acl_file: p("acl"),
            persistence_dir: opts.persistence.then(|| p("persist")),
            log_file: None,
            // As root mosquitto would switch to the `mosquitto` account, which cannot
            // read the 0700 temp dir.
            run_as_user,
            max_queued_messages: 100_000,
        };
        let mut b = TestBroker {
            port: broker_cfg.port,
            conf: p("mosquitto.conf"),
            broker_cfg,
            ca,
            child: None,
            bin,
            probe,
            serial: AtomicU32::new(0),
            dir,
        };
        // A port found free may be taken before mosquitto binds it: retry on another.
        let mut attempts = 0;
        loop {
            fs::write(&b.conf, b.broker_cfg.render()).map_err(io("write mosquitto.conf"))?;
            match b.spawn() {
                Ok(()) => return Ok(b),
                Err(e) if attempts >= 2 => return Err(e),
                Err(e) => {
                    tracing::debug!(error = %e, "mosquitto did not start, trying another port");
                    b.kill();
                    attempts += 1;
                    b.broker_cfg.port = free_port()?;
                    b.port = b.broker_cfg.port;
                }
            }
        }
    }

    fn spawn(&mut self) -> Result<(), TestBrokerError> {
        let log = self.dir.path().join("mosquitto.log");
        let out = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .map_err(io("open the mosquitto log"))?;
        let err = out.try_clone().map_err(io("open the mosquitto log"))?;
        let child = Command::new(&self.bin)
            .arg("-c")
            .arg(&self.conf)
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .map_err(io(format!("run {}", self.bin.display())))?;
        self.child = Some(child);
        self.wait_ready()
    }

    fn wait_ready(&mut self) -> Result<(), TestBrokerError> {
        let start = Instant::now();
        let mut why = String::from("no attempt");
        while start.elapsed() < READY_TIMEOUT {
            if let Some(c) = self.child.as_mut()
                && let Ok(Some(status)) = c.try_wait()
            {
                self.child = None;
                return Err(TestBrokerError::NotReady {
                    port: self.port,
                    why: format!("mosquitto exited with {status}"),
                    log: self.log(),
                });
            }
            match self.tls_probe() {
                Ok(()) => return Ok(()),
                Err(e) => why = e,
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Err(TestBrokerError::NotReady {
            port: self.port,
            why,
            log: self.log(),
        })
    }

    /// One TLS handshake with the probe certificate.
    fn tls_probe(&self) -> Result<(), String> {
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, self.port));
        let mut sock = TcpStream::connect_timeout(&addr, Duration::from_secs(1))
            .map_err(|e| format!("TCP connect: {e}"))?;
        sock.set_read_timeout(Some(Duration::from_secs(2))).ok();
        let name = rustls::pki_types::ServerName::try_from("127.0.0.1")
            .map_err(|e| e.to_string())?
            .to_owned();
        let mut conn = rustls::ClientConnection::new(self.probe.clone(), name)
            .map_err(|e| format!("TLS setup: {e}"))?;
        while conn.is_handshaking() {
            conn.complete_io(&mut sock)
                .map_err(|e| format!("TLS handshake: {e}"))?;
        }
        conn.send_close_notify();
        let _ = conn.complete_io(&mut sock);
        let _ = sock.flush();
        let mut sink = [0u8; 64];
        let _ = sock.set_read_timeout(Some(Duration::from_millis(100)));
        let _ = sock.read(&mut sink);
        Ok(())
    }

    /// The broker's TLS port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The temporary directory (config, ACL, certificates, log, persistence).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The CA that signed the broker's and the nodes' certificates.
    pub fn ca(&self) -> &CertificateAuthority {
        &self.ca
    }

    /// The CA certificate file.
    pub fn ca_file(&self) -> PathBuf {
        self.dir.path().join("ca.pem")
    }

    /// A client config for `node_id` with a valid certificate from this broker's CA
    /// (issued once, then reused), fast reconnects (100 ms .. 1 s) and a 5 s connect
    /// timeout.
    pub fn config(&self, node_id: &str) -> Result<BusConfig, TestBrokerError> {
        let cert = self.dir.path().join("nodes").join(format!("{node_id}.pem"));
        let key = self.dir.path().join("nodes").join(format!("{node_id}.key"));
        if !cert.exists() {
            let c = self.ca.issue_client(node_id, Validity::days(2))?;
            write_private(&key, &c.key_pem)?;
            write_public(&cert, &c.cert_pem)?;
        }
        Ok(self.config_files(node_id, cert, key))
    }

    /// A client config for `node_id` presenting `cert` (e.g. one from another CA, or
    /// an expired one: [`Validity::expired`]).
    pub fn config_with_cert(
        &self,
        node_id: &str,
        cert: &IssuedCert,
    ) -> Result<BusConfig, TestBrokerError> {
        let n = self.serial.fetch_add(1, Ordering::Relaxed);
        let base = self
            .dir
            .path()
            .join("nodes")
            .join(format!("custom-{n}-{node_id}"));
        let (c, k) = (base.with_extension("pem"), base.with_extension("key"));
        write_private(&k, &cert.key_pem)?;
        write_public(&c, &cert.cert_pem)?;
        Ok(self.config_files(node_id, c, k))
    }

    fn config_files(&self, node_id: &str, cert: PathBuf, key: PathBuf) -> BusConfig {
        BusConfig {
            node_id: node_id.into(),
            host: "127.0.0.1".into(),
            port: self.port,
            ca_file: self.ca_file(),
            cert_file: cert,
            key_file: key,
            connect_timeout_s: 5,
            reconnect_min_ms: 100,
            reconnect_max_ms: 1000,
            ..BusConfig::default()
        }
    }

    /// True while the mosquitto process runs.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.as_mut().map(|c| c.try_wait()), Some(Ok(None)))
    }

    /// Stops the broker gracefully (SIGTERM: mosquitto saves its persistence file
    /// with sessions and queued messages) and waits for it to exit (SIGKILL after
    /// 5 s). The port stays reserved for [`restart`](Self::restart) only by
    /// convention.
    pub fn stop(&mut self) {
        self.kill();
    }

    /// Starts the broker again on the same port with the same config, certificates
    /// and persistence, and waits until it accepts TLS.
    pub fn restart(&mut self) -> Result<(), TestBrokerError> {
        self.kill();
        let start = Instant::now();
        loop {
            match self.spawn() {
                Ok(()) => return Ok(()),
                // The old socket may linger a moment; mosquitto then exits.
                Err(e) if start.elapsed() < Duration::from_secs(10) => {
                    tracing::debug!(error = %e, "mosquitto restart failed, retrying");
                    self.kill();
                    std::thread::sleep(Duration::from_millis(200));
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Freezes the broker (SIGSTOP): connections stay open but nothing is read or
    /// acknowledged. [`resume`](Self::resume), [`crash`](Self::crash),
    /// [`restart`](Self::restart) and `Drop` all work on a frozen broker.
    pub fn pause(&mut self) -> Result<(), TestBrokerError> {
        self.signal(libc::SIGSTOP)
    }

    /// Lets a paused broker run again (SIGCONT).
    pub fn resume(&mut self) -> Result<(), TestBrokerError> {
        self.signal(libc::SIGCONT)
    }

    /// Kills the broker without letting it save anything (SIGKILL), like a crash or
    /// power loss; [`restart`](Self::restart) brings it back.
    pub fn crash(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    fn signal(&mut self, sig: libc::c_int) -> Result<(), TestBrokerError> {
        if !self.is_running() {
            return Err(TestBrokerError::NotRunning);
        }
        let pid = self.child.as_ref().map(|c| c.id()).unwrap_or(0) as libc::pid_t;
        // SAFETY: kill(2) on the pid of our own, not yet reaped, child.
        if unsafe { libc::kill(pid, sig) } != 0 {
            return Err(io("signal mosquitto")(std::io::Error::last_os_error()));
        }
        Ok(())
    }

    /// The broker's log so far (for assertion messages).
    pub fn log(&self) -> String {
        fs::read_to_string(self.dir.path().join("mosquitto.log")).unwrap_or_default()
    }

    fn kill(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        let pid = child.id() as libc::pid_t;
        // SAFETY: kill(2) on the pid of our own, not yet reaped, child.
        // SIGCONT too: a paused broker acts on SIGTERM only once continued.
        unsafe {
            libc::kill(pid, libc::SIGTERM);
            libc::kill(pid, libc::SIGCONT);
        }
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(5) {
            if let Ok(Some(_)) = child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        let _ = child.wait();
    }
}

impl Drop for TestBroker {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Checks `exposition` with Prometheus's own `promtool check metrics` (Debian
/// package `prometheus`, installed by `cargo xtask setup`): the text exposition
/// format 0.0.4 as Prometheus parses it, plus promtool's lint rules (HELP and TYPE
/// for every family, counter names ending in `_total`, base units). For the
/// `/metrics` tests of fw-ctl and the dashboard.
///
/// # Errors
/// promtool's own report (its stdout and stderr) when it refuses the text, or a
/// message naming the missing package when promtool cannot be run.
pub fn promtool_check(exposition: &str) -> Result<(), String> {
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| {
            format!(
                "cannot run promtool ({e}): run `cargo xtask setup` (Debian package `prometheus`)"
            )
        })?;
    child
        .stdin
        .take()
        .expect("piped stdin")
        .write_all(exposition.as_bytes())
        .map_err(|e| format!("writing to promtool: {e}"))?;
    let out = child
        .wait_with_output()
        .map_err(|e| format!("waiting for promtool: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "promtool check metrics: {}\n{}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}
