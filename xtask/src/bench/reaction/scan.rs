//! The scan-to-drop half of the reaction benchmark: one nmap scan per round from a
//! fresh attacker source, at a device (answered) or an absent host (unanswered),
//! every SYN of it captured with its kernel timestamp by tcpdump, the block map
//! read until the source's entry is there and has dropped a packet; see the
//! parent module's docs.
use std::{
    io::{BufRead as _, BufReader},
    net::{IpAddr, Ipv4Addr},
    path::{Path, PathBuf},
    process::{Child, Stdio},
    sync::mpsc,
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail, ensure};
use fw_common::filter::BlockEntry;
use fw_ctl::lists::Origin;

use super::{
    BlockReader, DEVICES, ReactionArgs, SCAN_POLL, check_deadline, ms_between, round_source,
    run_fw_ctl, set_thread_nice, unanswered_target, unix_ns,
};
use crate::testbed::{
    self,
    netns::{self, Proc, in_ns},
    nodes::DETECTOR_ID,
    stack::Stack,
};

/// Extra address on the attacker's interface for one round; removed on drop.
struct ExtraAddr(String);

impl ExtraAddr {
    fn add(a: Ipv4Addr) -> anyhow::Result<ExtraAddr> {
        let cidr = format!("{a}/24");
        netns::ip_in(
            testbed::NS_ATTACKER,
            &["addr", "add", &cidr, "dev", testbed::HOST_IF],
        )
        .with_context(|| format!("adding {cidr} to {}/eth0", testbed::NS_ATTACKER))?;
        Ok(ExtraAddr(cidr))
    }
}

impl Drop for ExtraAddr {
    fn drop(&mut self) {
        if let Err(e) = netns::ip_in(
            testbed::NS_ATTACKER,
            &["addr", "del", &self.0, "dev", testbed::HOST_IF],
        ) {
            eprintln!("reaction: removing {}: {e:#}", self.0);
        }
    }
}

/// tcpdump writing every SYN (without ACK) of one source to a pcap file with
/// nanosecond timestamps; stopped by its PID on drop.
struct SynCapture {
    child: Child,
    file: PathBuf,
    /// tcpdump's stderr lines after "listening on" (its closing statistics).
    stderr: mpsc::Receiver<String>,
}

impl SynCapture {
    /// Starts the capture in the attacker namespace and returns once it listens.
    fn start(src: Ipv4Addr, file: PathBuf) -> anyhow::Result<SynCapture> {
        let filter = format!("src host {src} and tcp[tcpflags] & (tcp-syn|tcp-ack) == tcp-syn");
        let mut cmd = in_ns(testbed::NS_ATTACKER, "tcpdump");
        cmd.args([
            "-n",
            "-Z",
            "root",
            "-s",
            "96",
            "-U",
            "--time-stamp-precision=nano",
            "--immediate-mode",
            "-i",
            testbed::HOST_IF,
            "-w",
        ])
        .arg(&file)
        .arg(&filter)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
        std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
        let mut child = cmd
            .spawn()
            .context("cannot start tcpdump (Debian package tcpdump)")?;
        let stderr = child.stderr.take().context("tcpdump stderr")?;
        let (tx, rx) = mpsc::channel::<String>();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut cap = SynCapture {
            child,
            file,
            stderr: rx,
        };
        let end = Instant::now() + Duration::from_secs(10);
        let mut seen = Vec::new();
        loop {
            netns::check_interrupt()?;
            match cap.stderr.recv_timeout(Duration::from_millis(100)) {
                Ok(l) if l.contains("listening on") => return Ok(cap),
                Ok(l) => seen.push(l),
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    bail!("tcpdump exited before listening: {}", seen.join(" | "))
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {}
            }
            if Instant::now() > end {
                cap.stop();
                bail!(
                    "tcpdump did not report listening within 10 s: {}",
                    seen.join(" | ")
                );
            }
        }
    }

    /// Stops tcpdump (SIGTERM: it flushes the file and prints its statistics)
    /// and returns the captured SYNs' timestamps (Unix ns, in capture order) and
    /// the packets tcpdump reported as dropped by the kernel. The file is removed.
    fn finish(mut self) -> anyhow::Result<(Vec<u64>, Option<u64>)> {
        self.stop();
        let mut dropped = None;
        while let Ok(l) = self.stderr.recv_timeout(Duration::from_millis(500)) {
            if let Some(n) = parse_kernel_drops(&l) {
                dropped = Some(n);
            }
        }
        let ts = read_pcap_ns(&self.file)
            .with_context(|| format!("reading the SYN capture {}", self.file.display()))?;
        let _ = std::fs::remove_file(&self.file);
        Ok((ts, dropped))
    }

    fn stop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            netns::terminate(&[self.child.id() as i32], Duration::from_secs(2));
        }
        let _ = self.child.wait();
    }
}

impl Drop for SynCapture {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The packet timestamps (Unix ns) of a pcap file, in file order.
fn read_pcap_ns(path: &Path) -> anyhow::Result<Vec<u64>> {
    let f = std::fs::File::open(path)?;
    let mut r = pcap_file::pcap::PcapReader::new(BufReader::new(f))
        .map_err(|e| anyhow::anyhow!("not a pcap file: {e}"))?;
    let mut out = Vec::new();
    while let Some(p) = r.next_packet() {
        let p = p.map_err(|e| anyhow::anyhow!("bad pcap record: {e}"))?;
        out.push(p.timestamp.as_nanos() as u64);
    }
    Ok(out)
}

/// `N` of tcpdump's closing line `N packets dropped by kernel`.
fn parse_kernel_drops(line: &str) -> Option<u64> {
    line.trim()
        .strip_suffix("packets dropped by kernel")?
        .trim()
        .parse()
        .ok()
}

/// How many of the timestamps `ts` (any order) are before `t` (same clock, ns).
pub fn count_before(ts: &[u64], t: u64) -> u64 {
    ts.iter().filter(|&&x| x < t).count() as u64
}

/// Which set a round belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// A device's ports: every probe answered (RST, or SYN-ACK and nmap's RST).
    Answered,
    /// An absent host in [`testbed::EMPTY_SPACE`], blackholed by the router: no
    /// probe gets any answer.
    Unanswered,
}

impl Kind {
    /// `answered` / `unanswered` (JSON keys, messages).
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Answered => "answered",
            Kind::Unanswered => "unanswered",
        }
    }
}

/// The nmap command line of a round. Unanswered rounds add `--min-rate` equal to
/// the cap: without it nmap -T4 slows down to ~20 probes/s against a target that
/// never answers (measured), which no fast scanner does.
pub fn scan_command(kind: Kind, src: &str, target: &str, a: &ReactionArgs) -> Vec<String> {
    let mut v: Vec<String> = format!(
        "nmap -sS -n -Pn -e {} -S {src} -T4 --max-retries 1 -p {}",
        testbed::HOST_IF,
        a.scan_ports
    )
    .split_whitespace()
    .map(String::from)
    .collect();
    if a.scan_rate > 0 {
        if kind == Kind::Unanswered {
            v.extend(["--min-rate".into(), a.scan_rate.to_string()]);
        }
        v.extend(["--max-rate".into(), a.scan_rate.to_string()]);
    }
    v.push(target.into());
    v
}

/// One scan round.
pub struct Round {
    pub kind: Kind,
    pub source: Ipv4Addr,
    /// The device (answered) or the absent host (unanswered) scanned.
    pub target: Ipv4Addr,
    pub t_first_ns: u64,
    pub scan_to_block_ms: Option<f64>,
    pub scan_to_drop_ms: Option<f64>,
    /// Largest gap between two map reads during the round, ms.
    pub poll_gap_ms: f64,
    /// Time between the read before and the read that saw the entry (resp. its
    /// first hit): how exactly t_block (t_drop) is known, ms.
    pub block_resolution_ms: Option<f64>,
    pub drop_resolution_ms: Option<f64>,
    /// nmap's run time, ms (until it exited or was stopped).
    pub nmap_ms: f64,
    pub nmap_exited_before_drop: bool,
    /// Origin (`datapath`, `detector`, ...) of the entry when first seen, whether
    /// it dropped new flows only (a provisional quarantine), and its origin when
    /// the round stopped (a detector's confirmation replaces the datapath entry).
    pub block_origin: Option<&'static str>,
    pub block_new_flows_only: Option<bool>,
    pub origin_at_stop: Option<&'static str>,
    /// SYNs the source sent during the round (captured in the attacker namespace).
    pub probes_sent: u64,
    /// Of them, with a timestamp before t_block; before the read preceding it
    /// (`t_block - block_resolution`: these passed for certain); before t_drop.
    pub probes_before_block: Option<u64>,
    pub probes_before_block_min: Option<u64>,
    pub probes_before_drop: Option<u64>,
    /// Flows of the source in the flow map right after nmap was stopped: the
    /// probes that passed the XDP program (each opened a flow; dropped ones none).
    pub probes_passed: u64,
    /// Packets tcpdump reported as dropped by the kernel (capture loss).
    pub capture_dropped: Option<u64>,
    /// Alert `at_ms` - t_first.
    pub first_to_detector_ms: Option<f64>,
    /// Ack `at_ms` - verdict `issued_at_ms`.
    pub detector_to_map_ms: Option<f64>,
    /// The gateway's receipt-to-map time for the verdict.
    pub apply_ms: Option<f64>,
    pub block_to_drop_ms: Option<f64>,
    pub alert_rule: Option<String>,
    pub verdict_action: Option<String>,
    pub hits_at_stop: u64,
}

fn origin_name(e: &BlockEntry) -> &'static str {
    Origin::from_code(e.origin).as_str()
}

pub fn round(
    stack: &Stack,
    reader: &BlockReader,
    kind: Kind,
    i: usize,
    a: &ReactionArgs,
    deadline: Instant,
) -> anyhow::Result<Round> {
    let src = round_source(kind, i)?;
    let target = match kind {
        Kind::Answered => testbed::device_addr((i % DEVICES as usize) as u8 + 1),
        Kind::Unanswered => unanswered_target(i)?,
    };
    ensure!(
        reader.get(src)?.is_none(),
        "{src} is blocked before its scan started"
    );
    let _addr = ExtraAddr::add(src)?;
    let cap = SynCapture::start(
        src,
        stack
            .dir
            .join(format!("reaction-syn-{}-{}.pcap", kind.as_str(), i + 1)),
    )?;
    let argv = scan_command(kind, &src.to_string(), &target.to_string(), a);
    let log = stack.dir.join("reaction-nmap.log");
    let started = Instant::now();
    let mut nmap = Proc::spawn(
        "nmap",
        in_ns(testbed::NS_ATTACKER, &argv[0]).args(&argv[1..]),
        Some(&log),
    )?;
    let (mut t_block, mut t_drop) = (None::<u64>, None::<u64>);
    let mut nmap_exit: Option<Instant> = None;
    let mut last = unix_ns();
    let mut gap = 0u64;
    let (mut block_res, mut drop_res) = (None::<u64>, None::<u64>);
    let (mut block_origin, mut new_flows_only) = (None, None);
    // Reads on time while nmap and the receive path load both CPUs (reset to 0
    // before the next round spawns nmap from this thread: children inherit it).
    set_thread_nice(-10);
    let mut hits = 0;
    loop {
        let e = reader.get(src)?;
        let now = unix_ns();
        let since = now.saturating_sub(last);
        gap = gap.max(since);
        last = now;
        if let Some(e) = e {
            if t_block.is_none() {
                t_block = Some(now);
                block_res = Some(since);
                block_origin = Some(origin_name(&e));
                new_flows_only = Some(e.new_flows_only());
            }
            hits = e.hits;
            if e.hits > 0 {
                t_drop = Some(now);
                drop_res = Some(since);
                break;
            }
        }
        if nmap_exit.is_none() && nmap.exited().is_some() {
            nmap_exit = Some(Instant::now());
        }
        // After nmap has exited no packet of this source comes any more: wait for
        // the block a while (to time it), then give up on a drop.
        if let Some(x) = nmap_exit {
            let wait = if t_block.is_some() { 1 } else { 15 };
            if x.elapsed() > Duration::from_secs(wait) {
                break;
            }
        }
        if started.elapsed() > Duration::from_secs(60) {
            break;
        }
        if let Err(e) = check_deadline(deadline, a.time_limit) {
            set_thread_nice(0);
            return Err(e);
        }
        std::thread::sleep(SCAN_POLL);
    }
    set_thread_nice(0);
    let nmap_exited_before_drop = nmap_exit.is_some();
    let nmap_ms = nmap_exit
        .map(|x| x - started)
        .unwrap_or_else(|| started.elapsed())
        .as_secs_f64()
        * 1e3;
    nmap.stop();
    let probes_passed = reader.flows_of(src)?;
    // Packets still in flight from the stopped nmap are in the capture within
    // microseconds; a short pause keeps none of them out.
    std::thread::sleep(Duration::from_millis(50));
    let (syns, capture_dropped) = cap.finish()?;
    let t_first = syns.iter().copied().min().with_context(|| {
        format!(
            "no SYN of the scan from {src} captured (nmap's output: {})",
            log.display()
        )
    })?;
    let origin_at_stop = reader.get(src)?.map(|e| origin_name(&e));

    // Where the time went, from the bus recorder (give the ack a moment).
    netns::sleep(Duration::from_millis(300))?;
    let rec = stack.recorded();
    let ip = IpAddr::V4(src);
    let alert = rec
        .alerts
        .iter()
        .filter(|(_, al)| al.source == Some(ip))
        .min_by_key(|(_, al)| al.at_ms)
        .map(|(_, al)| al.clone());
    let verdict = rec
        .verdicts
        .iter()
        .filter(|(_, v)| v.detector_id == DETECTOR_ID && v.target.contains(&ip))
        .min_by_key(|(_, v)| v.issued_at_ms)
        .map(|(_, v)| v.clone());
    let ack = verdict.as_ref().and_then(|v| {
        rec.acks
            .iter()
            .find(|(_, k)| k.id == v.id)
            .map(|(_, k)| k.clone())
    });
    let t_first_ms = t_first as f64 / 1e6;

    // Unblock the source (its address goes with `_addr`).
    if reader.get(src)?.is_some() {
        run_fw_ctl(stack, &["unblock", &format!("{src}/32")])
            .with_context(|| format!("unblocking {src}"))?;
    }
    Ok(Round {
        kind,
        source: src,
        target,
        t_first_ns: t_first,
        scan_to_block_ms: t_block.map(|t| ms_between(t_first, t)),
        scan_to_drop_ms: t_drop.map(|t| ms_between(t_first, t)),
        poll_gap_ms: gap as f64 / 1e6,
        block_resolution_ms: block_res.map(|g| g as f64 / 1e6),
        drop_resolution_ms: drop_res.map(|g| g as f64 / 1e6),
        nmap_ms,
        nmap_exited_before_drop,
        block_origin,
        block_new_flows_only: new_flows_only,
        origin_at_stop,
        probes_sent: syns.len() as u64,
        probes_passed,
        probes_before_block: t_block.map(|t| count_before(&syns, t)),
        probes_before_block_min: t_block
            .zip(block_res)
            .map(|(t, r)| count_before(&syns, t - r)),
        probes_before_drop: t_drop.map(|t| count_before(&syns, t)),
        capture_dropped,
        first_to_detector_ms: alert.as_ref().map(|al| al.at_ms as f64 - t_first_ms),
        detector_to_map_ms: match (&verdict, &ack) {
            (Some(v), Some(k)) => Some(k.at_ms as f64 - v.issued_at_ms as f64),
            _ => None,
        },
        apply_ms: ack.as_ref().map(|k| k.apply_us as f64 / 1e3),
        block_to_drop_ms: match (t_block, t_drop) {
            (Some(b), Some(d)) => Some(ms_between(b, d)),
            _ => None,
        },
        alert_rule: alert.map(|al| al.explanation.rule),
        verdict_action: verdict.map(|v| format!("{:?}", v.action).to_lowercase()),
        hits_at_stop: hits,
    })
}

#[cfg(test)]
mod tests {
    use pcap_file::{
        DataLink, TsResolution,
        pcap::{PcapHeader, PcapPacket, PcapWriter},
    };

    use super::*;

    #[test]
    fn syn_capture_timestamps_keep_nanoseconds() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("syn.pcap");
        let header = PcapHeader {
            datalink: DataLink::ETHERNET,
            ts_resolution: TsResolution::NanoSecond,
            ..Default::default()
        };
        let mut w = PcapWriter::with_header(std::fs::File::create(&path).unwrap(), header).unwrap();
        let frame = [0u8; 60];
        for ns in [1_763_784_000_123_456_789u64, 1_763_784_000_123_456_790] {
            w.write_packet(&PcapPacket::new(
                Duration::from_nanos(ns),
                frame.len() as u32,
                &frame,
            ))
            .unwrap();
        }
        drop(w);
        assert_eq!(
            read_pcap_ns(&path).unwrap(),
            vec![1_763_784_000_123_456_789, 1_763_784_000_123_456_790]
        );
        std::fs::write(&path, b"not a capture").unwrap();
        assert!(read_pcap_ns(&path).is_err());
    }

    #[test]
    fn probes_before_a_time_are_counted_strictly_before() {
        let ts = [30, 10, 20, 20, 40];
        assert_eq!(count_before(&ts, 20), 1);
        assert_eq!(count_before(&ts, 21), 3);
        assert_eq!(count_before(&ts, 5), 0);
        assert_eq!(count_before(&ts, 41), 5);
        assert_eq!(count_before(&[], 41), 0);
    }

    #[test]
    fn tcpdump_kernel_drop_line() {
        assert_eq!(parse_kernel_drops("0 packets dropped by kernel"), Some(0));
        assert_eq!(
            parse_kernel_drops("  17 packets dropped by kernel"),
            Some(17)
        );
        assert_eq!(parse_kernel_drops("39752 packets captured"), None);
        assert_eq!(parse_kernel_drops("x packets dropped by kernel"), None);
    }

    #[test]
    fn unanswered_scans_keep_their_rate() {
        let a = ReactionArgs {
            rounds: 1,
            verdicts: 1,
            verdict_gap_ms: 100,
            time_limit: Duration::from_secs(60),
            scan_ports: "1-65535".into(),
            scan_rate: 10_000,
            no_build: true,
        };
        let ans = scan_command(Kind::Answered, "192.0.2.150", "192.0.2.11", &a).join(" ");
        let un = scan_command(Kind::Unanswered, "192.0.2.175", "198.19.254.10", &a).join(" ");
        assert!(ans.ends_with("--max-rate 10000 192.0.2.11"), "{ans}");
        assert!(!ans.contains("--min-rate"), "{ans}");
        assert!(un.contains("--min-rate 10000 --max-rate 10000"), "{un}");
        assert!(un.ends_with(" 198.19.254.10"), "{un}");
        let uncapped = ReactionArgs { scan_rate: 0, ..a };
        let un0 = scan_command(Kind::Unanswered, "s", "t", &uncapped).join(" ");
        assert!(!un0.contains("-rate"), "{un0}");
    }
}
