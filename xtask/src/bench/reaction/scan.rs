//! The scan-to-drop half of the reaction benchmark: one nmap scan per round from a
//! fresh attacker source, its first SYN timed by tcpdump, the block map read until
//! the source's entry is there and has dropped a packet; see the parent module's
//! docs.
use std::{
    io::{BufRead as _, BufReader, Read as _},
    net::{IpAddr, Ipv4Addr},
    process::{Child, Stdio},
    sync::mpsc,
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail, ensure};

use super::{
    BlockReader, DEVICES, ReactionArgs, SCAN_POLL, check_deadline, ms_between, round_source,
    run_fw_ctl, set_thread_nice, unix_ns,
};
use crate::testbed::{
    self,
    netns::{self, Proc, in_ns},
    nodes::DETECTOR_ID,
    stack::Stack,
};

/// One scan round.
pub struct Round {
    pub source: Ipv4Addr,
    pub device: Ipv4Addr,
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

/// tcpdump waiting for the first SYN of one source; stopped by its PID on drop.
struct FirstSyn {
    child: Child,
}

impl FirstSyn {
    /// Starts the capture in the attacker namespace and returns once it listens.
    fn start(src: Ipv4Addr) -> anyhow::Result<FirstSyn> {
        let filter = format!("src host {src} and tcp[tcpflags] & tcp-syn != 0");
        let mut cmd = in_ns(testbed::NS_ATTACKER, "tcpdump");
        cmd.args([
            "-c",
            "1",
            "-n",
            "-tt",
            "--time-stamp-precision=nano",
            "--immediate-mode",
            "-i",
            testbed::HOST_IF,
            &filter,
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
        std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
        let mut child = cmd
            .spawn()
            .context("cannot start tcpdump (Debian package tcpdump)")?;
        let stderr = child.stderr.take().context("tcpdump stderr")?;
        let mut cap = FirstSyn { child };
        let (tx, rx) = mpsc::channel::<String>();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let end = Instant::now() + Duration::from_secs(10);
        let mut seen = Vec::new();
        loop {
            netns::check_interrupt()?;
            match rx.recv_timeout(Duration::from_millis(100)) {
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

    /// The captured packet's timestamp (Unix ns); waits up to `wait` for tcpdump
    /// to exit after its one packet.
    fn first_ns(&mut self, wait: Duration) -> anyhow::Result<u64> {
        let end = Instant::now() + wait;
        while self.child.try_wait()?.is_none() {
            if Instant::now() > end {
                self.stop();
                bail!("tcpdump captured no SYN from the scan source");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let mut out = String::new();
        if let Some(mut s) = self.child.stdout.take() {
            s.read_to_string(&mut out)?;
        }
        let line = out.lines().next().unwrap_or("");
        parse_tcpdump_ns(line)
            .with_context(|| format!("cannot read the timestamp of tcpdump's line {line:?}"))
    }

    fn stop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            netns::terminate(&[self.child.id() as i32], Duration::from_secs(2));
        }
        let _ = self.child.wait();
    }
}

impl Drop for FirstSyn {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Unix ns of a `tcpdump -tt --time-stamp-precision=nano` line
/// (`1763784000.123456789 IP ...`).
fn parse_tcpdump_ns(line: &str) -> Option<u64> {
    let ts = line.split_whitespace().next()?;
    let (s, frac) = ts.split_once('.')?;
    if frac.is_empty() || frac.len() > 9 || !frac.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let secs: u64 = s.parse().ok()?;
    let frac_ns: u64 = format!("{frac:0<9}").parse().ok()?;
    secs.checked_mul(1_000_000_000)?.checked_add(frac_ns)
}

/// The nmap command line of a round.
pub fn scan_command(src: &str, device: &str, a: &ReactionArgs) -> Vec<String> {
    let mut v: Vec<String> = format!(
        "nmap -sS -n -Pn -e {} -S {src} -T4 --max-retries 1 -p {}",
        testbed::HOST_IF,
        a.scan_ports
    )
    .split_whitespace()
    .map(String::from)
    .collect();
    if a.scan_rate > 0 {
        v.extend(["--max-rate".into(), a.scan_rate.to_string()]);
    }
    v.push(device.into());
    v
}

pub fn round(
    stack: &Stack,
    reader: &BlockReader,
    i: usize,
    a: &ReactionArgs,
    deadline: Instant,
) -> anyhow::Result<Round> {
    let src = round_source(i)?;
    let device = testbed::device_addr((i % DEVICES as usize) as u8 + 1);
    ensure!(
        reader.get(src)?.is_none(),
        "{src} is blocked before its scan started"
    );
    let _addr = ExtraAddr::add(src)?;
    let mut cap = FirstSyn::start(src)?;
    let argv = scan_command(&src.to_string(), &device.to_string(), a);
    let started = Instant::now();
    let mut nmap = Proc::spawn(
        "nmap",
        in_ns(testbed::NS_ATTACKER, &argv[0]).args(&argv[1..]),
        Some(&stack.dir.join("reaction-nmap.log")),
    )?;
    let (mut t_block, mut t_drop) = (None::<u64>, None::<u64>);
    let mut nmap_exit: Option<Instant> = None;
    let mut last = unix_ns();
    let mut gap = 0u64;
    let (mut block_res, mut drop_res) = (None::<u64>, None::<u64>);
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
    let t_first = cap.first_ns(Duration::from_secs(2)).with_context(|| {
        format!(
            "no first packet of the scan from {src} (nmap's output: {})",
            stack.dir.join("reaction-nmap.log").display()
        )
    })?;
    drop(cap);

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
        source: src,
        device,
        t_first_ns: t_first,
        scan_to_block_ms: t_block.map(|t| ms_between(t_first, t)),
        scan_to_drop_ms: t_drop.map(|t| ms_between(t_first, t)),
        poll_gap_ms: gap as f64 / 1e6,
        block_resolution_ms: block_res.map(|g| g as f64 / 1e6),
        drop_resolution_ms: drop_res.map(|g| g as f64 / 1e6),
        nmap_ms,
        nmap_exited_before_drop,
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
    use super::*;

    #[test]
    fn tcpdump_nanosecond_timestamps() {
        assert_eq!(
            parse_tcpdump_ns(
                "1763784000.123456789 IP 192.0.2.150.51234 > 192.0.2.11.80: Flags [S], seq 1"
            ),
            Some(1_763_784_000_123_456_789)
        );
        assert_eq!(parse_tcpdump_ns("12.5 IP"), Some(12_500_000_000));
        assert_eq!(parse_tcpdump_ns("tcpdump: listening"), None);
        assert_eq!(parse_tcpdump_ns(""), None);
    }
}
