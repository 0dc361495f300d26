//! `cargo xtask eval FILE... [--json OUT] [--check-manifest]`: real captures
//! through the whole pipeline.
//!
//! For each capture, from clean state (fresh broker data, XDP maps, fw-ctl state
//! and detector): bring up the testbed stack (XDP + fw-ctl daemon, Mosquitto,
//! detector, all in enforce mode), replay the capture from the replay host at its
//! original timing with gaps capped (5 s by default), wait for verdicts to settle,
//! and report with addresses mapped back to the capture's own:
//! - the sources blocked, each with the seconds from that source's first packet to
//!   the first time its block was seen (polled every 200 ms) and the number of its
//!   packets that passed before (packets injected from it minus the packets its
//!   block entry dropped);
//! - the alerts raised (kind, source, target), as seen on the bus;
//! - the packets replayed.
//!
//! JSON: `{"captures": [{"file", "packets", "blocked": [{"addr", "after_s",
//! "passed_before"}], "alerts": [{"kind", "source", "target"}]}]}`.
//!
//! `--check-manifest` compares each capture with its row in MANIFEST.tsv (in the
//! capture's directory): every `must_block` source blocked, no other address
//! blocked, the `expect_alert` kind raised naming that address; exits non-zero on
//! any mismatch.
pub mod report;

use std::{
    collections::{BTreeMap, HashMap},
    net::IpAddr,
    path::{Path, PathBuf},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use anyhow::{Context as _, bail};
use serde::Serialize;

use crate::{
    replay::{self, AddrMap, Macs, Timing},
    testbed::{
        self, Testbed,
        netns::{self},
        stack::{Stack, StackOptions},
    },
    util,
};

#[derive(clap::Args)]
pub struct EvalArgs {
    /// Captures to evaluate (pcap/pcapng). Default: every capture in ../shared/pcaps.
    files: Vec<PathBuf>,
    /// Also write the results as JSON here.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Longest pause between replayed packets (original timing otherwise).
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    max_gap: Duration,
    /// Quiet time after the last packet before the results are read.
    #[arg(long, default_value = "8s", value_parser = humantime::parse_duration)]
    settle: Duration,
    /// Check every capture against MANIFEST.tsv; exit non-zero on a mismatch.
    #[arg(long)]
    check_manifest: bool,
    /// XDP attach mode on the router.
    #[arg(long, default_value = "native")]
    xdp_mode: String,
    /// Skip building the release binaries.
    #[arg(long)]
    no_build: bool,
    /// Instead of the testbed: every capture of the corpus (../shared/pcaps and
    /// eval/corpus) offline through meter and engine, per class and split
    /// (eval/split.toml), written to EVALUATION.md ([`report`]).
    #[arg(long)]
    report: bool,
    /// With --report: fail when EVALUATION.md is not what it would write.
    #[arg(long, requires = "report")]
    check: bool,
}

/// One blocked source.
#[derive(Serialize, Clone, Debug)]
pub struct Blocked {
    /// The capture's own address.
    pub addr: String,
    /// Seconds from the source's first replayed packet to its block.
    pub after_s: f64,
    /// Its packets that passed before the block.
    pub passed_before: u64,
}

/// One alert.
#[derive(Serialize, Clone, Debug)]
pub struct AlertOut {
    pub kind: String,
    pub source: Option<String>,
    pub target: Option<String>,
}

/// Results of one capture.
#[derive(Serialize, Clone, Debug)]
pub struct CaptureResult {
    pub file: String,
    pub packets: u64,
    pub blocked: Vec<Blocked>,
    pub alerts: Vec<AlertOut>,
}

#[derive(Serialize)]
struct Output {
    captures: Vec<CaptureResult>,
}

/// The shared captures directory (`<workspace>/../shared/pcaps`).
pub fn pcaps_dir() -> PathBuf {
    util::workspace_root().join("../shared/pcaps")
}

pub fn run(a: &EvalArgs) -> anyhow::Result<()> {
    if a.report {
        return report::run(&util::workspace_root().join("EVALUATION.md"), a.check);
    }
    netns::install_interrupt_handler();
    let files = if a.files.is_empty() {
        all_captures()?
    } else {
        a.files.clone()
    };
    for f in &files {
        anyhow::ensure!(f.exists(), "capture {} does not exist", f.display());
    }
    let manifest = if a.check_manifest {
        Some(Manifest::load_for(&files)?)
    } else {
        None
    };
    if !a.no_build {
        crate::build::run()?;
    }
    let _ = testbed::down();
    let tb = Testbed::up(3)?;
    let mut results = Vec::new();
    for f in &files {
        eprintln!("eval: === {} ===", f.display());
        let r = eval_one(a, f).with_context(|| format!("evaluating {}", f.display()))?;
        print_result(&r);
        results.push(r);
    }
    drop(tb);
    let out = Output { captures: results };
    if let Some(p) = &a.json {
        std::fs::write(p, serde_json::to_vec_pretty(&out)?)
            .with_context(|| format!("cannot write {}", p.display()))?;
        eprintln!("eval: results written to {}", p.display());
    }
    if let Some(m) = manifest {
        let mut bad = 0;
        for r in &out.captures {
            let problems = m.check(r);
            if problems.is_empty() {
                println!("MANIFEST ok       {}", r.file);
            } else {
                bad += 1;
                for p in problems {
                    println!("MANIFEST MISMATCH {}: {p}", r.file);
                }
            }
        }
        if bad > 0 {
            bail!(
                "{bad} of {} captures do not match MANIFEST.tsv",
                out.captures.len()
            );
        }
    }
    Ok(())
}

fn all_captures() -> anyhow::Result<Vec<PathBuf>> {
    let dir = pcaps_dir();
    let mut v: Vec<PathBuf> = std::fs::read_dir(&dir)
        .with_context(|| format!("cannot read {}", dir.display()))?
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "pcap" || x == "pcapng"))
        .collect();
    v.sort();
    Ok(v)
}

fn unix_s(t: SystemTime) -> f64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

fn eval_one(a: &EvalArgs, file: &Path) -> anyhow::Result<CaptureResult> {
    let dir = testbed::run_dir("eval")?;
    let stack = Stack::start(&StackOptions {
        dir,
        dashboard: false,
        xdp_mode: a.xdp_mode.clone(),
        devices: 0,
    })?;
    let macs = Macs {
        src: netns::mac_of(testbed::NS_REPLAY, testbed::HOST_IF)?,
        dst: replay::testbed_router_mac()?,
    };
    let prepared = replay::prepare_with(file, macs, AddrMap::default())?;

    // Poll the blocklist while replaying: first time each address is seen blocked.
    let first_blocked: Arc<Mutex<HashMap<IpAddr, f64>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let stack = Arc::new(stack);
    let poller = {
        let (fb, stop, stack) = (first_blocked.clone(), stop.clone(), stack.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::SeqCst) {
                if let Ok(bs) = stack.blocks() {
                    let now = unix_s(SystemTime::now());
                    let mut m = fb.lock().expect("lock");
                    for b in bs {
                        m.entry(b.addr).or_insert(now);
                    }
                }
                std::thread::sleep(Duration::from_millis(200));
            }
        })
    };

    let mut sent_by_src: HashMap<IpAddr, (u64, f64)> = HashMap::new();
    let report = replay::inject(
        &prepared,
        Some(testbed::NS_REPLAY),
        testbed::HOST_IF,
        Timing::Original(a.max_gap),
        |i, t| {
            if let Some(src) = prepared.frames[i].src {
                let e = sent_by_src.entry(src).or_insert((0, unix_s(t)));
                e.0 += 1;
            }
        },
    );
    let settle = settle(&stack, &first_blocked, a.settle);
    stop.store(true, Ordering::SeqCst);
    let _ = poller.join();
    let report = report?;
    settle?;

    let blocks = stack.blocks()?;
    let recorded = stack.recorded();
    let first = first_blocked.lock().expect("lock").clone();
    let map = &prepared.map;
    let back = |a: IpAddr| map.original_of(a).unwrap_or(a).to_string();
    let mut blocked: Vec<Blocked> = blocks
        .iter()
        .filter(|b| b.origin != "config")
        .map(|b| {
            let (sent, first_pkt) = sent_by_src.get(&b.addr).copied().unwrap_or((0, 0.0));
            let at = first.get(&b.addr).copied().unwrap_or(0.0);
            Blocked {
                addr: back(b.addr),
                after_s: if first_pkt > 0.0 && at > 0.0 {
                    ((at - first_pkt) * 1000.0).round() / 1000.0
                } else {
                    0.0
                },
                passed_before: sent.saturating_sub(b.hits),
            }
        })
        .collect();
    blocked.sort_by(|x, y| x.addr.cmp(&y.addr));
    let mut alerts: Vec<AlertOut> = recorded
        .alerts
        .iter()
        .map(|(_, al)| AlertOut {
            kind: serde_json::to_value(al.kind)
                .ok()
                .and_then(|v| v.as_str().map(String::from))
                .unwrap_or_default(),
            source: al.source.map(back),
            target: al.target.map(back),
        })
        .collect();
    // One entry per distinct (kind, source, target), in order of first arrival.
    let mut distinct = std::collections::HashSet::new();
    alerts.retain(|x| distinct.insert((x.kind.clone(), x.source.clone(), x.target.clone())));
    let stack = Arc::try_unwrap(stack).map_err(|_| anyhow::anyhow!("stack still shared"))?;
    drop(stack);
    Ok(CaptureResult {
        file: file
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default(),
        packets: report.sent,
        blocked,
        alerts,
    })
}

/// Waits until neither blocks nor alerts changed for `quiet` (at most 6 x quiet).
fn settle(
    stack: &Stack,
    blocked: &Mutex<HashMap<IpAddr, f64>>,
    quiet: Duration,
) -> anyhow::Result<()> {
    let end = Instant::now() + quiet * 6;
    let snapshot = || {
        (
            blocked.lock().expect("lock").len(),
            stack.recorded().alerts.len(),
        )
    };
    let mut last = snapshot();
    let mut since = Instant::now();
    while Instant::now() < end {
        netns::sleep(Duration::from_millis(500))?;
        let now = snapshot();
        if now != last {
            last = now;
            since = Instant::now();
        } else if since.elapsed() >= quiet {
            break;
        }
    }
    Ok(())
}

fn print_result(r: &CaptureResult) {
    println!("{}: {} packets replayed", r.file, r.packets);
    if r.blocked.is_empty() {
        println!("  blocked: none");
    }
    for b in &r.blocked {
        println!(
            "  blocked {:<40} after {:>7.3} s, {} packets passed before",
            b.addr, b.after_s, b.passed_before
        );
    }
    for al in &r.alerts {
        println!(
            "  alert   {:<20} source {:<20} target {}",
            al.kind,
            al.source.as_deref().unwrap_or("-"),
            al.target.as_deref().unwrap_or("-")
        );
    }
}

/// Ground truth of MANIFEST.tsv, by file name.
pub struct Manifest {
    rows: BTreeMap<String, ManifestRow>,
}

/// One row's ground truth.
#[derive(Clone, Debug, Default)]
pub struct ManifestRow {
    /// Sources a correct gateway blocks.
    pub must_block: Vec<String>,
    /// Expected alerts: (accepted kinds, address).
    pub expect_alert: Vec<(Vec<String>, String)>,
}

/// `port_scan`, `portscan`, `Port-Scan` -> `portscan`.
fn norm_kind(k: &str) -> String {
    k.chars()
        .filter(|c| c.is_ascii_alphanumeric())
        .collect::<String>()
        .to_ascii_lowercase()
}

impl Manifest {
    /// Parses MANIFEST.tsv text (tab-separated, header row naming the columns).
    pub fn parse(text: &str) -> anyhow::Result<Manifest> {
        let mut lines = text.lines();
        let header: Vec<&str> = lines
            .next()
            .context("MANIFEST.tsv is empty")?
            .split('\t')
            .collect();
        let col = |n: &str| {
            header
                .iter()
                .position(|h| *h == n)
                .with_context(|| format!("MANIFEST.tsv has no column {n:?}"))
        };
        let (cf, cb, ca) = (col("file")?, col("must_block")?, col("expect_alert")?);
        let mut rows = BTreeMap::new();
        for (i, l) in lines.enumerate() {
            if l.trim().is_empty() {
                continue;
            }
            let f: Vec<&str> = l.split('\t').collect();
            let get = |c: usize| f.get(c).copied().unwrap_or("").trim();
            if get(cf).is_empty() {
                bail!("MANIFEST.tsv line {}: no file name", i + 2);
            }
            let must_block = get(cb)
                .split([',', ' ', ';'])
                .filter(|s| !s.is_empty())
                .map(String::from)
                .collect();
            let mut expect_alert = Vec::new();
            // "kind:addr (comment, ...)"; comments dropped first; the kind may be "a-or-b".
            let mut depth = 0;
            let bare: String = get(ca)
                .chars()
                .filter(|&c| {
                    match c {
                        '(' => depth += 1,
                        ')' => depth -= 1,
                        _ => return depth == 0,
                    }
                    false
                })
                .collect();
            for item in bare.split([',', ';']) {
                let item = item.trim();
                if item.is_empty() {
                    continue;
                }
                let (kind, addr) = item.split_once(':').with_context(|| {
                    format!(
                        "MANIFEST.tsv line {}: expect_alert {item:?} is not kind:address",
                        i + 2
                    )
                })?;
                let kinds = kind.split("-or-").map(norm_kind).collect();
                expect_alert.push((kinds, addr.trim().to_string()));
            }
            rows.insert(
                get(cf).to_string(),
                ManifestRow {
                    must_block,
                    expect_alert,
                },
            );
        }
        Ok(Manifest { rows })
    }

    /// The row of capture file `name`.
    pub fn row(&self, name: &str) -> Option<&ManifestRow> {
        self.rows.get(name)
    }

    /// Loads the MANIFEST.tsv beside the captures (they must share one directory).
    fn load_for(files: &[PathBuf]) -> anyhow::Result<Manifest> {
        let dir = files
            .first()
            .and_then(|f| f.parent())
            .map(Path::to_path_buf)
            .unwrap_or_else(pcaps_dir);
        let p = dir.join("MANIFEST.tsv");
        let m = Manifest::parse(
            &std::fs::read_to_string(&p).with_context(|| format!("cannot read {}", p.display()))?,
        )?;
        for f in files {
            let n = f
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            anyhow::ensure!(m.rows.contains_key(&n), "{n} has no row in {}", p.display());
        }
        Ok(m)
    }

    /// What in `r` contradicts the manifest (empty: all good).
    pub fn check(&self, r: &CaptureResult) -> Vec<String> {
        let Some(row) = self.rows.get(&r.file) else {
            return vec!["no row in MANIFEST.tsv".into()];
        };
        let mut problems = Vec::new();
        for m in &row.must_block {
            if !r.blocked.iter().any(|b| &b.addr == m) {
                problems.push(format!("{m} must be blocked but was not"));
            }
        }
        for b in &r.blocked {
            if !row.must_block.contains(&b.addr) {
                problems.push(format!("{} was blocked but is innocent", b.addr));
            }
        }
        for (kinds, addr) in &row.expect_alert {
            let hit = r.alerts.iter().any(|a| {
                kinds.contains(&norm_kind(&a.kind))
                    && (a.source.as_deref() == Some(addr.as_str())
                        || a.target.as_deref() == Some(addr.as_str()))
            });
            if !hit {
                problems.push(format!("no {} alert naming {addr}", kinds.join(" or ")));
            }
        }
        problems
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TSV: &str = "file\trepo\tmust_block\texpect_alert\trole\n\
        a.pcap\tx\t172.16.0.8\tportscan:172.16.0.8\tattack\n\
        b.pcap\tx\t\tsynflood:10.10.10.10 (victim; spoofed, none blocked)\tattack\n\
        c.pcap\tx\t10.0.2.15\tsynflood-or-portscan:10.0.2.15\tattack\n\
        d.pcap\tx\t\t\tbenign\n";

    fn result(
        file: &str,
        blocked: &[&str],
        alerts: &[(&str, Option<&str>, Option<&str>)],
    ) -> CaptureResult {
        CaptureResult {
            file: file.into(),
            packets: 10,
            blocked: blocked
                .iter()
                .map(|a| Blocked {
                    addr: a.to_string(),
                    after_s: 1.0,
                    passed_before: 3,
                })
                .collect(),
            alerts: alerts
                .iter()
                .map(|(k, s, t)| AlertOut {
                    kind: k.to_string(),
                    source: s.map(String::from),
                    target: t.map(String::from),
                })
                .collect(),
        }
    }

    #[test]
    fn manifest_rows_parse_with_comments_and_alternatives() {
        let m = Manifest::parse(TSV).unwrap();
        assert_eq!(m.rows["a.pcap"].must_block, ["172.16.0.8"]);
        assert_eq!(
            m.rows["b.pcap"].expect_alert,
            [(vec!["synflood".to_string()], "10.10.10.10".to_string())]
        );
        assert_eq!(m.rows["c.pcap"].expect_alert[0].0, ["synflood", "portscan"]);
        assert!(m.rows["d.pcap"].must_block.is_empty() && m.rows["d.pcap"].expect_alert.is_empty());
    }

    #[test]
    fn check_accepts_the_ground_truth_and_names_each_mismatch() {
        let m = Manifest::parse(TSV).unwrap();
        let good = result(
            "a.pcap",
            &["172.16.0.8"],
            &[("port_scan", Some("172.16.0.8"), Some("64.13.134.52"))],
        );
        assert!(m.check(&good).is_empty());
        let victim = result("b.pcap", &[], &[("syn_flood", None, Some("10.10.10.10"))]);
        assert!(m.check(&victim).is_empty());
        let either = result(
            "c.pcap",
            &["10.0.2.15"],
            &[("port_scan", Some("10.0.2.15"), None)],
        );
        assert!(m.check(&either).is_empty());

        let missed = result("a.pcap", &[], &[]);
        let p = m.check(&missed);
        assert_eq!(p.len(), 2, "{p:?}");
        let innocent = result("d.pcap", &["10.0.0.9"], &[]);
        assert_eq!(m.check(&innocent), ["10.0.0.9 was blocked but is innocent"]);
        let wrong_kind = result(
            "a.pcap",
            &["172.16.0.8"],
            &[("brute_force", Some("172.16.0.8"), None)],
        );
        assert_eq!(m.check(&wrong_kind).len(), 1);
        assert_eq!(m.check(&result("zzz.pcap", &[], &[])).len(), 1);
    }

    #[test]
    fn shared_manifest_parses_and_names_every_capture() {
        let p = pcaps_dir().join("MANIFEST.tsv");
        let Ok(text) = std::fs::read_to_string(&p) else {
            return;
        };
        let m = Manifest::parse(&text).unwrap();
        for f in all_captures().unwrap() {
            let n = f.file_name().unwrap().to_string_lossy().into_owned();
            assert!(m.rows.contains_key(&n), "{n} missing from the manifest");
        }
        assert_eq!(m.rows["ntop__synscan.pcap"].must_block, ["172.16.0.8"]);
    }
}
