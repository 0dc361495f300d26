//! `cargo xtask corpus`: records the generated part of the evaluation corpus
//! (issue 15) into `eval/corpus/`, with real clients, servers and attack tools
//! between two network namespaces of its own, and writes
//! `eval/corpus/MANIFEST.tsv` (the columns of `../shared/pcaps/MANIFEST.tsv`).
//!
//! Layout: `tadc-cli-<pid>` (198.18.10.1, the client or attacker) and
//! `tadc-srv-<pid>` (198.18.10.2, the server or victim, also 198.18.20.50 on its
//! loopback) joined by one veth pair; the client routes 198.18.20.0/24 through
//! the server, whose forwarding is off, so a sweep of that /24 reaches the wire
//! and only 198.18.20.50 answers (a mostly empty address space). Neither
//! namespace has any other route. `tcpdump` records on the server's end of the
//! pair (every frame, both directions, ARP included). Namespaces and processes
//! are removed when the run ends, also on failure.
//!
//! | capture | tool | role | ground truth |
//! |---|---|---|---|
//! | `gen__mqtt.pcap` | mosquitto broker, `mosquitto_pub -l` (one session, 60 messages at 2/s) and `mosquitto_sub` | benign | none blocked, no alert |
//! | `gen__http_ota.pcap` | `python3 -m http.server`, `curl`: 20 status polls and one 512 KiB firmware download | benign | none blocked, no alert |
//! | `gen__dns.pcap` | `dnsmasq`, `dig`: 40 lookups at 2/s | benign | none blocked, no alert |
//! | `gen__coap.pcap` | `coap-server-notls`, `coap-client-notls`: 30 GETs at 2/s | benign | none blocked, no alert |
//! | `gen__ssh.pcap` | `sshd`, `ssh` (key login, a 10 s session) and `scp -O` of 256 KiB | benign | none blocked, no alert |
//! | `gen__nmap_maimon.pcap` | `nmap -sM -p 1-1000 -T4` | attack | client blocked, `portscan` |
//! | `gen__nmap_ack.pcap` | `nmap -sA -p 1-1000 -T4` | attack | client blocked, `portscan` |
//! | `gen__nmap_window.pcap` | `nmap -sW -p 1-1000 -T4` | attack | client blocked, `portscan` |
//! | `gen__nmap_udp_default.pcap` | `nmap -sU --top-ports 50` at nmap's default timing (the server's ICMP rate limit slows it) | attack | client blocked, `portscan` |
//! | `gen__nmap_synping_sweep.pcap` | `nmap -sn -PS22,80,443 --randomize-hosts 198.18.20.0/24` | attack | client blocked, `host_sweep` |
//! | `gen__nmap_icmp_sweep.pcap` | `nmap -sn -PE 198.18.20.0/24` | attack | client blocked, `host_sweep` |
//! | `gen__nmap_arp_sweep.pcap` | `nmap -sn -PR 198.18.10.0/24` | attack | `host_sweep` alert (on the LAN the router sees it), no block required |
//! | `gen__nmap_version_os.pcap` | `nmap -sV -O -p 22,80,1883` | attack | client blocked, `portscan` |
//!
//! The captures are committed; rerun this after changing a scenario (timings and
//! so bytes differ from run to run: the manifest's SHA-256 is of this run's file).
//! Installs the Debian packages it needs ([`PACKAGES`]) when they are missing.

use std::{
    io::Write as _,
    path::{Path, PathBuf},
    process::Command,
    time::Duration,
};

use anyhow::{Context as _, bail};

use crate::{
    testbed::netns::{self, Proc, in_ns, ip, ip_in, run_quiet},
    util,
};

/// Record the generated evaluation captures.
#[derive(Debug, clap::Args)]
pub struct CorpusArgs {
    /// Output directory (captures and MANIFEST.tsv).
    #[arg(long, default_value = "eval/corpus")]
    out: PathBuf,
    /// Only these captures (names without `gen__` and `.pcap`); the manifest
    /// keeps the other rows it already has.
    #[arg(long = "only")]
    only: Vec<String>,
}

/// The client's (attacker's) address.
pub const CLIENT: &str = "198.18.10.1";
/// The server's (victim's) address.
pub const SERVER: &str = "198.18.10.2";
/// The routed, mostly empty /24 behind the server, and its one live host.
const SWEPT: &str = "198.18.20.0/24";
const SWEPT_LIVE: &str = "198.18.20.50";

/// One capture to record.
struct Scenario {
    name: &'static str,
    benign: bool,
    /// `must_block` column.
    must_block: &'static str,
    /// `expect_alert` column (`kind:addr`).
    expect_alert: &'static str,
    /// `labelled_attack` column: class; details.
    label: &'static str,
    description: &'static str,
    run: fn(&Pair, &Path) -> anyhow::Result<()>,
}

const SCENARIOS: &[Scenario] = &[
    Scenario {
        name: "mqtt",
        benign: true,
        must_block: "",
        expect_alert: "",
        label: "",
        description: "MQTT 3.1.1 telemetry: one mosquitto_pub session sending 60 messages at 2/s (QoS 1) to a mosquitto broker, one mosquitto_sub session",
        run: mqtt,
    },
    Scenario {
        name: "http_ota",
        benign: true,
        must_block: "",
        expect_alert: "",
        label: "",
        description: "HTTP: 20 status polls at 1/s with curl and one 512 KiB firmware download (OTA) from python3 -m http.server",
        run: http_ota,
    },
    Scenario {
        name: "dns",
        benign: true,
        must_block: "",
        expect_alert: "",
        label: "",
        description: "DNS: 40 A lookups at 2/s with dig against dnsmasq",
        run: dns,
    },
    Scenario {
        name: "coap",
        benign: true,
        must_block: "",
        expect_alert: "",
        label: "",
        description: "CoAP: 30 confirmable GETs of /.well-known/core and /time at 2/s (libcoap's coap-client against coap-server)",
        run: coap,
    },
    Scenario {
        name: "ssh",
        benign: true,
        must_block: "",
        expect_alert: "",
        label: "",
        description: "SSH: a 10 s interactive-style session with key login, then scp of 256 KiB (OpenSSH)",
        run: ssh,
    },
    Scenario {
        name: "nmap_maimon",
        benign: false,
        must_block: CLIENT,
        expect_alert: "portscan:198.18.10.1",
        label: "portscan-tcp-maimon; attacker 198.18.10.1; victim 198.18.10.2",
        description: "nmap -sM (FIN/ACK probes) of ports 1-1000, -T4; open ports 22, 80, 1883",
        run: |p, _| nmap(p, &["-sM", "-p", "1-1000", "-T4", SERVER]),
    },
    Scenario {
        name: "nmap_ack",
        benign: false,
        must_block: CLIENT,
        expect_alert: "portscan:198.18.10.1",
        label: "portscan-tcp-ack; attacker 198.18.10.1; victim 198.18.10.2",
        description: "nmap -sA (ACK probes, firewall mapping) of ports 1-1000, -T4",
        run: |p, _| nmap(p, &["-sA", "-p", "1-1000", "-T4", SERVER]),
    },
    Scenario {
        name: "nmap_window",
        benign: false,
        must_block: CLIENT,
        expect_alert: "portscan:198.18.10.1",
        label: "portscan-tcp-window; attacker 198.18.10.1; victim 198.18.10.2",
        description: "nmap -sW (ACK probes, RST window inspection) of ports 1-1000, -T4",
        run: |p, _| nmap(p, &["-sW", "-p", "1-1000", "-T4", SERVER]),
    },
    Scenario {
        name: "nmap_udp_default",
        benign: false,
        must_block: CLIENT,
        expect_alert: "portscan:198.18.10.1",
        label: "portscan-udp-slow; attacker 198.18.10.1; victim 198.18.10.2",
        description: "nmap -sU --top-ports 50 at nmap's default timing (T3), slowed by the server's ICMP unreachable rate limit; DNS 53 and CoAP 5683 open",
        run: |p, _| {
            nmap(
                p,
                &["-sU", "--top-ports", "50", "--max-retries", "1", SERVER],
            )
        },
    },
    Scenario {
        name: "nmap_synping_sweep",
        benign: false,
        must_block: CLIENT,
        expect_alert: "host_sweep:198.18.10.1",
        label: "sweep-tcp-syn-ping; attacker 198.18.10.1; 256 targets in 198.18.20.0/24, one live (198.18.20.50)",
        description: "nmap -sn -PS22,80,443 --randomize-hosts of a routed /24 with one live host (SYN ping sweep, unanswered)",
        run: |p, _| nmap(p, &["-sn", "-PS22,80,443", "--randomize-hosts", SWEPT]),
    },
    Scenario {
        name: "nmap_icmp_sweep",
        benign: false,
        must_block: CLIENT,
        expect_alert: "host_sweep:198.18.10.1",
        label: "sweep-icmp-echo; attacker 198.18.10.1; 256 targets in 198.18.20.0/24, one live (198.18.20.50)",
        description: "nmap -sn -PE of a routed /24 with one live host (ICMP echo sweep, unanswered)",
        run: |p, _| nmap(p, &["-sn", "-PE", SWEPT]),
    },
    Scenario {
        name: "nmap_arp_sweep",
        benign: false,
        must_block: "",
        expect_alert: "host_sweep:198.18.10.1",
        label: "sweep-arp; attacker 198.18.10.1; the on-link /24 198.18.10.0/24",
        description: "nmap -sn -PR of the on-link /24 (ARP requests only)",
        run: |p, _| nmap(p, &["-sn", "-PR", "198.18.10.0/24"]),
    },
    Scenario {
        name: "nmap_version_os",
        benign: false,
        must_block: CLIENT,
        expect_alert: "portscan:198.18.10.1",
        label: "service-os-detection; attacker 198.18.10.1; victim 198.18.10.2",
        description: "nmap -sV -O of ports 22, 80, 1883 (version probes, OS fingerprint probes T1-T7, U1, IE)",
        run: |p, _| nmap(p, &["-sV", "-O", "-p", "22,80,1883", SERVER]),
    },
];

/// The two namespaces; dropping it stops their processes and deletes them.
struct Pair {
    cli: String,
    srv: String,
    dir: tempfile_dir::Dir,
}

mod tempfile_dir {
    /// A scratch directory removed on drop.
    pub struct Dir(pub std::path::PathBuf);
    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

impl Pair {
    fn up() -> anyhow::Result<Pair> {
        let id = std::process::id();
        let p = Pair {
            cli: format!("tadc-cli-{id}"),
            srv: format!("tadc-srv-{id}"),
            dir: tempfile_dir::Dir(std::env::temp_dir().join(format!("tad-corpus-{id}"))),
        };
        std::fs::create_dir_all(&p.dir.0)?;
        for ns in [&p.cli, &p.srv] {
            ip(&["netns", "add", ns])?;
            ip_in(ns, &["link", "set", "lo", "up"])?;
        }
        let (c_if, s_if) = (format!("tc{id}"), format!("ts{id}"));
        ip(&[
            "link", "add", &c_if, "netns", &p.cli, "type", "veth", "peer", "name", &s_if, "netns",
            &p.srv,
        ])?;
        ip_in(&p.cli, &["link", "set", &c_if, "name", "c0"])?;
        ip_in(&p.srv, &["link", "set", &s_if, "name", "s0"])?;
        ip_in(
            &p.cli,
            &["addr", "add", &format!("{CLIENT}/24"), "dev", "c0"],
        )?;
        ip_in(
            &p.srv,
            &["addr", "add", &format!("{SERVER}/24"), "dev", "s0"],
        )?;
        ip_in(
            &p.srv,
            &["addr", "add", &format!("{SWEPT_LIVE}/32"), "dev", "lo"],
        )?;
        ip_in(&p.cli, &["link", "set", "c0", "up"])?;
        ip_in(&p.srv, &["link", "set", "s0", "up"])?;
        ip_in(&p.cli, &["route", "add", SWEPT, "via", SERVER])?;
        // Wire-sized frames: no TSO/GSO/GRO super-packets in the capture.
        for (ns, dev) in [(&p.cli, "c0"), (&p.srv, "s0")] {
            run_quiet(in_ns(ns, "ethtool").args([
                "-K", dev, "tso", "off", "gso", "off", "gro", "off", "tx", "off",
            ]))?;
        }
        netns::sysctl(&p.srv, "net.ipv4.ip_forward", "0")?;
        Ok(p)
    }

    fn scratch(&self) -> &Path {
        &self.dir.0
    }
}

impl Drop for Pair {
    fn drop(&mut self) {
        for ns in [&self.cli, &self.srv] {
            if netns::ns_exists(ns) {
                netns::terminate(&netns::ns_pids(ns), Duration::from_secs(2));
                let _ = ip(&["netns", "del", ns]);
            }
        }
    }
}

fn spawn(ns: &str, name: &str, program: &str, args: &[&str]) -> anyhow::Result<Proc> {
    Proc::spawn(name, in_ns(ns, program).args(args), None)
}

/// Runs `program args` in `ns` to completion; its output is discarded unless it fails.
fn run_in(ns: &str, program: &str, args: &[&str]) -> anyhow::Result<String> {
    run_quiet(in_ns(ns, program).args(args))
}

fn pause(ms: u64) -> anyhow::Result<()> {
    netns::sleep(Duration::from_millis(ms))
}

fn nmap(p: &Pair, args: &[&str]) -> anyhow::Result<()> {
    let mut a = vec!["-n", "-Pn", "--host-timeout", "120s"];
    if args.contains(&"-sn") {
        a.retain(|x| *x != "-Pn");
    }
    a.extend_from_slice(args);
    // The victim has services to find.
    let _srv = services(p)?;
    run_in(&p.cli, "nmap", &a).map(drop)
}

/// sshd, an HTTP server and a broker on the server (the scans' open ports).
fn services(p: &Pair) -> anyhow::Result<Vec<Proc>> {
    Ok(vec![
        sshd(p)?,
        spawn(
            &p.srv,
            "http.server",
            "python3",
            &["-m", "http.server", "80", "--bind", SERVER],
        )?,
        mosquitto(p)?,
        spawn(
            &p.srv,
            "dnsmasq",
            "dnsmasq",
            &[
                "--no-daemon",
                "--no-resolv",
                "--no-hosts",
                "--bind-interfaces",
                "--listen-address",
                SERVER,
                "--address=/iot.example/198.18.10.2",
                "--pid-file=",
            ],
        )?,
        spawn(&p.srv, "coap-server", "coap-server-notls", &["-A", SERVER])?,
    ])
    .inspect(|_| std::thread::sleep(Duration::from_millis(500)))
}

fn mosquitto(p: &Pair) -> anyhow::Result<Proc> {
    let conf = p.scratch().join("mosquitto.conf");
    std::fs::write(
        &conf,
        format!("listener 1883 {SERVER}\nallow_anonymous true\npersistence false\nuser root\n"),
    )?;
    Proc::spawn(
        "mosquitto",
        in_ns(&p.srv, "mosquitto").arg("-c").arg(&conf),
        None,
    )
}

fn sshd(p: &Pair) -> anyhow::Result<Proc> {
    let d = p.scratch();
    let host = d.join("host_ed25519");
    let user = d.join("id_ed25519");
    for k in [&host, &user] {
        if !k.exists() {
            run_quiet(
                Command::new("ssh-keygen")
                    .args(["-q", "-t", "ed25519", "-N", "", "-f"])
                    .arg(k),
            )?;
        }
    }
    std::fs::copy(d.join("id_ed25519.pub"), d.join("authorized_keys"))?;
    std::fs::create_dir_all("/run/sshd")?;
    Proc::spawn(
        "sshd",
        in_ns(&p.srv, "/usr/sbin/sshd")
            .args(["-D", "-e", "-f", "/dev/null", "-h"])
            .arg(&host)
            .arg("-o")
            .arg(format!(
                "AuthorizedKeysFile={}",
                d.join("authorized_keys").display()
            ))
            .args([
                "-o",
                &format!("ListenAddress={SERVER}"),
                "-o",
                "PidFile=none",
                "-o",
                "UsePAM=no",
                "-o",
                "StrictModes=no",
                "-o",
                "PermitRootLogin=prohibit-password",
            ]),
        None,
    )
}

fn mqtt(p: &Pair, _: &Path) -> anyhow::Result<()> {
    let _broker = mosquitto(p)?;
    pause(500)?;
    let _sub = spawn(
        &p.cli,
        "mosquitto_sub",
        "mosquitto_sub",
        &[
            "-h",
            SERVER,
            "-t",
            "sensors/#",
            "-q",
            "1",
            "-i",
            "dashboard-sub",
        ],
    )?;
    let mut publ = in_ns(&p.cli, "mosquitto_pub")
        .args([
            "-h",
            SERVER,
            "-t",
            "sensors/esp32-1/telemetry",
            "-q",
            "1",
            "-l",
            "-i",
            "esp32-1",
        ])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .spawn()
        .context("mosquitto_pub")?;
    let mut stdin = publ.stdin.take().expect("piped");
    for i in 0..60 {
        writeln!(
            stdin,
            "{{\"seq\":{i},\"temperature\":{:.1},\"humidity\":{}}}",
            20.0 + (i % 7) as f64 * 0.3,
            40 + i % 5
        )?;
        pause(500)?;
    }
    drop(stdin);
    publ.wait()?;
    pause(500)
}

fn http_ota(p: &Pair, _: &Path) -> anyhow::Result<()> {
    let www = p.scratch().join("www");
    std::fs::create_dir_all(&www)?;
    std::fs::write(www.join("status"), "ok\n")?;
    let fw: Vec<u8> = (0..512u32 << 10)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8)
        .collect();
    std::fs::write(www.join("firmware.bin"), fw)?;
    let _srv = Proc::spawn(
        "http.server",
        in_ns(&p.srv, "python3")
            .args(["-m", "http.server", "80", "--bind", SERVER, "--directory"])
            .arg(&www),
        None,
    )?;
    pause(800)?;
    for i in 0..20 {
        run_in(
            &p.cli,
            "curl",
            &["-s", "-o", "/dev/null", &format!("http://{SERVER}/status")],
        )?;
        if i == 10 {
            run_in(
                &p.cli,
                "curl",
                &[
                    "-s",
                    "-o",
                    "/dev/null",
                    &format!("http://{SERVER}/firmware.bin"),
                ],
            )?;
        }
        pause(1000)?;
    }
    Ok(())
}

fn dns(p: &Pair, _: &Path) -> anyhow::Result<()> {
    let _srv = services(p)?;
    for i in 0..40 {
        run_in(
            &p.cli,
            "dig",
            &[
                &format!("@{SERVER}"),
                "+tries=1",
                "+time=1",
                &format!("sensor{}.iot.example", i % 8),
                "A",
            ],
        )?;
        pause(500)?;
    }
    Ok(())
}

fn coap(p: &Pair, _: &Path) -> anyhow::Result<()> {
    let _srv = spawn(&p.srv, "coap-server", "coap-server-notls", &["-A", SERVER])?;
    pause(500)?;
    for i in 0..30 {
        let path = if i % 2 == 0 {
            ".well-known/core"
        } else {
            "time"
        };
        run_in(
            &p.cli,
            "coap-client-notls",
            &["-m", "get", "-B", "3", &format!("coap://{SERVER}/{path}")],
        )?;
        pause(500)?;
    }
    Ok(())
}

fn ssh(p: &Pair, _: &Path) -> anyhow::Result<()> {
    let _srv = sshd(p)?;
    pause(800)?;
    let key = p.scratch().join("id_ed25519");
    let opts = [
        "-o",
        "StrictHostKeyChecking=no",
        "-o",
        "UserKnownHostsFile=/dev/null",
        "-o",
        "BatchMode=yes",
        "-o",
        "LogLevel=ERROR",
    ];
    let key_s = key.to_string_lossy().into_owned();
    let mut a: Vec<&str> = vec!["-i", &key_s];
    a.extend(opts);
    let target = format!("root@{SERVER}");
    let mut s = a.clone();
    s.extend([
        target.as_str(),
        "for i in 1 2 3 4 5 6 7 8 9 10; do uptime; sleep 1; done",
    ]);
    run_in(&p.cli, "ssh", &s)?;
    let blob = p.scratch().join("blob.bin");
    std::fs::write(&blob, vec![0x5au8; 256 << 10])?;
    let blob_s = blob.to_string_lossy().into_owned();
    let dest = format!("{target}:/dev/null");
    // -O: the classic scp protocol (this sshd runs no sftp subsystem).
    let mut c = vec!["-O"];
    c.extend(a.iter().copied());
    c.extend([blob_s.as_str(), dest.as_str()]);
    run_in(&p.cli, "scp", &c)?;
    Ok(())
}

/// Packets and first/last timestamps (s) of a classic pcap.
fn pcap_stats(path: &Path) -> anyhow::Result<(u64, f64)> {
    let f = std::fs::File::open(path)?;
    let mut r = pcap_file::pcap::PcapReader::new(f)
        .with_context(|| format!("{} is not a pcap", path.display()))?;
    let (mut n, mut first, mut last) = (0u64, None, 0f64);
    while let Some(p) = r.next_packet() {
        let p = p?;
        let t = p.timestamp.as_secs_f64();
        first.get_or_insert(t);
        last = t;
        n += 1;
    }
    Ok((n, last - first.unwrap_or(last)))
}

fn sha256_of(path: &Path) -> anyhow::Result<String> {
    let out = run_quiet(Command::new("sha256sum").arg(path))?;
    Ok(out
        .split_whitespace()
        .next()
        .unwrap_or_default()
        .to_string())
}

/// Debian packages of the scenarios' tools.
const PACKAGES: &[&str] = &[
    "nmap",
    "tcpdump",
    "ethtool",
    "mosquitto",
    "mosquitto-clients",
    "curl",
    "dnsmasq-base",
    "bind9-dnsutils",
    "libcoap3-bin",
    "openssh-server",
    "openssh-client",
];

/// The manifest's header (as `../shared/pcaps/MANIFEST.tsv`).
pub const HEADER: &str = "file\trepo\tcommit\tpath\tsha256\tbytes\tpackets\tfile_format\trole\tmust_block\texpect_alert\tlabelled_attack\tlicense\tdescription";

pub fn run(a: &CorpusArgs) -> anyhow::Result<()> {
    netns::install_interrupt_handler();
    if !util::is_root() {
        bail!("the corpus is recorded between network namespaces: run as root");
    }
    crate::setup::ensure_apt_packages(PACKAGES)?;
    let out = if a.out.is_absolute() {
        a.out.clone()
    } else {
        util::workspace_root().join(&a.out)
    };
    std::fs::create_dir_all(&out)?;
    let manifest = out.join("MANIFEST.tsv");
    let mut rows: Vec<(String, String)> = std::fs::read_to_string(&manifest)
        .unwrap_or_default()
        .lines()
        .skip(1)
        .filter_map(|l| Some((l.split('\t').next()?.to_string(), l.to_string())))
        .collect();
    for s in SCENARIOS {
        if !a.only.is_empty() && !a.only.iter().any(|o| o == s.name) {
            continue;
        }
        let file = format!("gen__{}.pcap", s.name);
        let path = out.join(&file);
        println!("corpus: recording {file}");
        let pair = Pair::up()?;
        // Snap length 2048 (whole frames at MTU 1500) and a 32 MiB buffer: with
        // the default 256 KiB snap length a line-rate nmap burst overflows the
        // ring and the kernel drops most of it.
        let log = pair.scratch().join("tcpdump.log");
        let mut dump = Proc::spawn(
            "tcpdump",
            in_ns(&pair.srv, "tcpdump")
                .args([
                    "-i", "s0", "-n", "-U", "-Z", "root", "-s", "2048", "-B", "32768", "-w",
                ])
                .arg(&path),
            Some(&log),
        )?;
        pause(1500)?;
        let r = (s.run)(&pair, &path);
        pause(1000)?;
        dump.stop();
        let report = std::fs::read_to_string(&log).unwrap_or_default();
        drop(pair);
        r.with_context(|| format!("scenario {}", s.name))?;
        let dropped = report
            .lines()
            .find_map(|l| l.strip_suffix(" packets dropped by kernel"))
            .and_then(|n| n.trim().parse::<u64>().ok());
        match dropped {
            Some(0) => {}
            Some(n) => bail!("{file}: tcpdump lost {n} packets (kernel drops); record it again"),
            None => bail!("{file}: tcpdump did not report its drop count:\n{report}"),
        }
        let (packets, secs) = pcap_stats(&path)?;
        let bytes = std::fs::metadata(&path)?.len();
        println!("corpus:   {packets} packets, {secs:.1} s, {bytes} bytes");
        let row = [
            file.clone(),
            "generated".into(),
            String::new(),
            format!("cargo xtask corpus --only {}", s.name),
            sha256_of(&path)?,
            bytes.to_string(),
            packets.to_string(),
            "pcap".into(),
            if s.benign { "benign" } else { "attack" }.into(),
            s.must_block.into(),
            s.expect_alert.into(),
            s.label.into(),
            "CC0-1.0 (generated by this project)".into(),
            s.description.into(),
        ]
        .join("\t");
        match rows.iter_mut().find(|(f, _)| *f == file) {
            Some(r) => r.1 = row,
            None => rows.push((file, row)),
        }
    }
    let order = |f: &str| {
        SCENARIOS
            .iter()
            .position(|s| format!("gen__{}.pcap", s.name) == f)
    };
    rows.sort_by_key(|(f, _)| order(f));
    let mut text = String::from(HEADER);
    text.push('\n');
    for (_, r) in &rows {
        text.push_str(r);
        text.push('\n');
    }
    std::fs::write(&manifest, text)?;
    println!("corpus: wrote {}", manifest.display());
    Ok(())
}
