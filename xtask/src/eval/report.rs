//! `cargo xtask eval --report`: per-class detection figures of the whole
//! evaluation corpus, by split, written to `EVALUATION.md` (issue 15).
//!
//! Corpus: the captures of `../shared/pcaps/MANIFEST.tsv` and of
//! `eval/corpus/MANIFEST.tsv` (`cargo xtask corpus`), each assigned to one split
//! by `eval/split.toml` (an error names a capture that is missing from the split,
//! listed twice, or unknown). Every capture goes offline through the project's
//! own flow meter and the kernel-equivalent evidence into a default-configured
//! engine with the committed model (`detector::replay`, the path of
//! `detector/tests/captures.rs`), in capture time; nothing is tuned here.
//!
//! Figures per capture: for each `must_block` source, whether a blocking verdict
//! (block or quarantine) names it, the capture time from its first frame to that
//! verdict (s) and its frames before it; whether each `expect_alert` is raised;
//! false-positive sources (blocked, or any alert naming them as source, while not
//! an attacker of the row); `anomaly` alerts. Per class (the `labelled_attack`
//! column up to its first `;`, `benign` for benign rows) and split: detection
//! rate, median and worst time to block and frames before it; for benign rows:
//! hours of traffic, false-positive sources and `anomaly` alerts per hour.
//!
//! What this does not measure: the bus and the gateway (the demo and `eval` on
//! the testbed do, with the same captures replayed in real time).

use std::{
    collections::{BTreeMap, BTreeSet},
    fmt::Write as _,
    net::{IpAddr, Ipv6Addr},
    path::{Path, PathBuf},
};

use anyhow::{Context as _, bail};
use detector::{config::Config, engine::Engine, model::Autoencoder, replay};
use flow_meter::{
    capture::for_each_frame,
    parse::{LinkType, parse_frame},
};
use serde::Deserialize;

use super::{Manifest, ManifestRow, norm_kind, pcaps_dir};
use crate::util;

/// The generated part of the corpus.
pub fn corpus_dir() -> PathBuf {
    util::workspace_root().join("eval/corpus")
}

/// `eval/split.toml`.
pub fn split_file() -> PathBuf {
    util::workspace_root().join("eval/split.toml")
}

/// One split.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Split {
    Train,
    Validation,
    Test,
}

impl Split {
    fn name(self) -> &'static str {
        match self {
            Split::Train => "train",
            Split::Validation => "validation",
            Split::Test => "test",
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SplitFile {
    capture: Vec<SplitEntry>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SplitEntry {
    file: String,
    split: Split,
}

/// A capture of the corpus with its ground truth.
#[derive(Clone, Debug)]
pub struct Capture {
    pub path: PathBuf,
    pub file: String,
    pub split: Split,
    pub benign: bool,
    /// `labelled_attack` up to its first `;` (`benign` for benign rows).
    pub class: String,
    pub truth: ManifestRow,
}

/// Extra columns of a manifest: file -> (role, labelled_attack).
fn roles(text: &str) -> anyhow::Result<BTreeMap<String, (String, String)>> {
    let mut lines = text.lines();
    let header: Vec<&str> = lines
        .next()
        .context("empty manifest")?
        .split('\t')
        .collect();
    let col = |n: &str| {
        header
            .iter()
            .position(|h| *h == n)
            .with_context(|| format!("manifest has no column {n:?}"))
    };
    let (cf, cr, cl) = (col("file")?, col("role")?, col("labelled_attack")?);
    Ok(lines
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let f: Vec<&str> = l.split('\t').collect();
            let g = |c: usize| f.get(c).copied().unwrap_or("").trim().to_string();
            (g(cf), (g(cr), g(cl)))
        })
        .collect())
}

/// Joins the manifests in `dirs` with the split text: every capture exactly once.
///
/// # Errors
/// A manifest that does not parse, a split entry naming no capture or one named
/// twice, a capture without a split.
pub fn corpus(dirs: &[PathBuf], split_text: &str) -> anyhow::Result<Vec<Capture>> {
    let split: SplitFile = toml::from_str(split_text).context("eval/split.toml")?;
    let mut assigned: BTreeMap<String, Split> = BTreeMap::new();
    for e in split.capture {
        if assigned.insert(e.file.clone(), e.split).is_some() {
            bail!("eval/split.toml lists {} twice", e.file);
        }
    }
    let mut out = Vec::new();
    for dir in dirs {
        let m = dir.join("MANIFEST.tsv");
        let text =
            std::fs::read_to_string(&m).with_context(|| format!("reading {}", m.display()))?;
        let truth = Manifest::parse(&text).with_context(|| m.display().to_string())?;
        for (file, (role, label)) in roles(&text)? {
            let split = assigned.remove(&file).with_context(|| {
                format!(
                    "{file} (in {}) has no split in eval/split.toml",
                    m.display()
                )
            })?;
            let benign = role == "benign";
            let class = if benign {
                "benign".to_string()
            } else {
                label.split(';').next().unwrap_or("").trim().to_string()
            };
            out.push(Capture {
                path: dir.join(&file),
                truth: truth.row(&file).cloned().unwrap_or_default(),
                file,
                split,
                benign,
                class: if class.is_empty() { role } else { class },
            });
        }
    }
    if let Some(f) = assigned.keys().next() {
        bail!("eval/split.toml names {f}, which is in no manifest");
    }
    Ok(out)
}

/// One must-block source's outcome.
#[derive(Clone, Debug, PartialEq)]
pub struct Attacker {
    pub addr: IpAddr,
    /// (seconds from its first frame, its frames before the verdict).
    pub blocked: Option<(f64, u64)>,
}

/// One capture's outcome.
#[derive(Clone, Debug)]
pub struct Outcome {
    pub capture: Capture,
    pub duration_s: f64,
    pub attackers: Vec<Attacker>,
    /// Expected alerts (kind list joined by `|`, address) and whether raised.
    pub alerts_met: Vec<(String, bool)>,
    /// Addresses not attackers of the row that were blocked or named as an
    /// alert's source.
    pub false_positives: BTreeSet<IpAddr>,
    pub anomaly_alerts: usize,
    /// Alert kinds raised, normalised, with counts.
    pub kinds: BTreeMap<String, usize>,
}

fn addr_of(a: [u8; 16]) -> IpAddr {
    let v6 = Ipv6Addr::from(a);
    v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4)
}

/// First frame time (ns) and per-source frame times, IPv4/IPv6 by source
/// address and ARP by sender protocol address.
fn frames(path: &Path) -> anyhow::Result<(u64, u64, BTreeMap<IpAddr, Vec<u64>>)> {
    let mut by: BTreeMap<IpAddr, Vec<u64>> = BTreeMap::new();
    let (mut first, mut last) = (None, 0u64);
    for_each_frame(path, |fr| {
        first.get_or_insert(fr.ts_ns);
        last = fr.ts_ns;
        let Some(link) = LinkType::of(fr.linktype) else {
            return Ok(());
        };
        if let Some(p) = parse_frame(link, fr.data) {
            by.entry(addr_of(p.src)).or_default().push(fr.ts_ns);
        } else if link == LinkType::Ethernet
            && fr.data.len() >= 32
            && fr.data[12..14] == [0x08, 0x06]
        {
            let s: [u8; 4] = fr.data[28..32].try_into().expect("4 bytes");
            by.entry(IpAddr::from(s)).or_default().push(fr.ts_ns);
        }
        Ok(())
    })
    .with_context(|| format!("reading {}", path.display()))?;
    let first = first.unwrap_or(0);
    Ok((first, last, by))
}

fn kind_name(k: tad_wire::AlertKind) -> String {
    norm_kind(
        serde_json::to_value(k)
            .ok()
            .and_then(|v| v.as_str().map(String::from))
            .unwrap_or_default()
            .as_str(),
    )
}

/// Runs one capture through a fresh default engine (module docs).
pub fn evaluate(c: &Capture) -> anyhow::Result<Outcome> {
    let model = Autoencoder::load(&detector::model::default_model_path())
        .context("loading the committed model")?;
    let mut engine = Engine::new(Config::default(), Some(model));
    let (recs, ev) = replay::records_and_evidence(&c.path)
        .with_context(|| format!("metering {}", c.path.display()))?;
    let outs = replay::run_with_evidence(&mut engine, &recs, &ev);
    let (t0, t1, by) = frames(&c.path)?;
    let must: BTreeSet<IpAddr> = c
        .truth
        .must_block
        .iter()
        .map(|s| {
            s.parse()
                .with_context(|| format!("{}: must_block {s:?}", c.file))
        })
        .collect::<anyhow::Result<_>>()?;
    let mut first_block: BTreeMap<IpAddr, u64> = BTreeMap::new();
    let mut alerts: Vec<(String, Option<IpAddr>, Option<IpAddr>)> = Vec::new();
    for (at, o) in &outs {
        for v in &o.verdicts {
            if matches!(
                v.verdict.action,
                tad_wire::Action::Block | tad_wire::Action::Quarantine
            ) {
                first_block.entry(v.verdict.target.addr()).or_insert(*at);
            }
        }
        for a in &o.alerts {
            alerts.push((kind_name(a.kind), a.source, a.target));
        }
    }
    let attackers = must
        .iter()
        .map(|a| {
            let times = by.get(a).map(Vec::as_slice).unwrap_or(&[]);
            let blocked = first_block.get(a).map(|at| {
                let start = times.first().copied().unwrap_or(t0);
                let before = times.iter().filter(|t| **t < *at).count() as u64;
                (at.saturating_sub(start) as f64 / 1e9, before)
            });
            Attacker { addr: *a, blocked }
        })
        .collect();
    let alerts_met = c
        .truth
        .expect_alert
        .iter()
        .map(|(kinds, addr)| {
            let ip: Option<IpAddr> = addr.parse().ok();
            let met = alerts
                .iter()
                .any(|(k, s, t)| kinds.contains(k) && (ip.is_none() || *s == ip || *t == ip));
            (format!("{}:{addr}", kinds.join("|")), met)
        })
        .collect();
    let mut false_positives: BTreeSet<IpAddr> = first_block
        .keys()
        .filter(|a| !must.contains(a))
        .copied()
        .collect();
    // Sources named by an alert that the row does not expect to be alerted on.
    let expected: BTreeSet<IpAddr> = c
        .truth
        .expect_alert
        .iter()
        .filter_map(|(_, a)| a.parse().ok())
        .chain(must.iter().copied())
        .collect();
    false_positives.extend(
        alerts
            .iter()
            .filter_map(|(_, s, _)| *s)
            .filter(|s| !expected.contains(s)),
    );
    let mut kinds = BTreeMap::new();
    for (k, _, _) in &alerts {
        *kinds.entry(k.clone()).or_insert(0) += 1;
    }
    Ok(Outcome {
        duration_s: t1.saturating_sub(t0) as f64 / 1e9,
        anomaly_alerts: *kinds.get("anomaly").unwrap_or(&0),
        capture: c.clone(),
        attackers,
        alerts_met,
        false_positives,
        kinds,
    })
}

fn median(v: &mut [f64]) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    Some(if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    })
}

fn fmt_opt(v: Option<f64>, unit: &str) -> String {
    v.map_or("–".into(), |x| format!("{x:.2}{unit}"))
}

/// The EVALUATION.md text of `outcomes` (module docs for the figures).
pub fn render(outcomes: &[Outcome]) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "# Evaluation\n\n\
         Written by `cargo xtask eval --report` (`xtask/src/eval/report.rs`); do not edit.\n\
         Every capture of `../shared/pcaps` and `eval/corpus` (recorded by `cargo xtask corpus`)\n\
         goes offline through the project's flow meter and kernel-equivalent evidence into a\n\
         default-configured engine with the committed model, in capture time. Splits are by\n\
         capture (`eval/split.toml`); nothing is tuned on the test split. Times are capture\n\
         time from the source's first frame to the first blocking verdict naming it; the bus\n\
         and the gateway are not included (the demo and `eval` on the testbed measure them).\n\n\
         Caveat: the committed autoencoder was trained on all six benign captures of\n\
         `../shared/pcaps` (`detector/train/train.py` predates the split), so for those the\n\
         `anomaly` figures are in-sample whatever their split says.\n"
    );
    for split in [Split::Test, Split::Validation, Split::Train] {
        let rows: Vec<&Outcome> = outcomes
            .iter()
            .filter(|o| o.capture.split == split)
            .collect();
        if rows.is_empty() {
            continue;
        }
        let _ = writeln!(s, "## {} split\n", split.name());
        let _ = writeln!(
            s,
            "| class | captures | attackers blocked | median / worst time to block | median / worst frames before block | expected alerts raised |\n|---|---|---|---|---|---|"
        );
        let mut classes: BTreeMap<&str, Vec<&Outcome>> = BTreeMap::new();
        for o in rows.iter().filter(|o| !o.capture.benign) {
            classes.entry(o.capture.class.as_str()).or_default().push(o);
        }
        for (class, os) in &classes {
            let att: Vec<&Attacker> = os.iter().flat_map(|o| &o.attackers).collect();
            let blocked: Vec<(f64, u64)> = att.iter().filter_map(|a| a.blocked).collect();
            let mut t: Vec<f64> = blocked.iter().map(|b| b.0).collect();
            let mut f: Vec<f64> = blocked.iter().map(|b| b.1 as f64).collect();
            let worst_t = t
                .iter()
                .copied()
                .fold(None, |m: Option<f64>, x| Some(m.map_or(x, |m| m.max(x))));
            let worst_f = f
                .iter()
                .copied()
                .fold(None, |m: Option<f64>, x| Some(m.map_or(x, |m| m.max(x))));
            let alerts: Vec<bool> = os
                .iter()
                .flat_map(|o| o.alerts_met.iter().map(|a| a.1))
                .collect();
            let _ = writeln!(
                s,
                "| {class} | {} | {} of {} | {} / {} | {} / {} | {} of {} |",
                os.len(),
                blocked.len(),
                att.len(),
                fmt_opt(median(&mut t), " s"),
                fmt_opt(worst_t, " s"),
                median(&mut f).map_or("–".into(), |x| format!("{x:.0}")),
                worst_f.map_or("–".into(), |x| format!("{x:.0}")),
                alerts.iter().filter(|a| **a).count(),
                alerts.len()
            );
        }
        let benign: Vec<&&Outcome> = rows.iter().filter(|o| o.capture.benign).collect();
        if !benign.is_empty() {
            let hours: f64 = benign.iter().map(|o| o.duration_s).sum::<f64>() / 3600.0;
            let fp: usize = benign.iter().map(|o| o.false_positives.len()).sum();
            let anomaly: usize = benign.iter().map(|o| o.anomaly_alerts).sum();
            let _ = writeln!(
                s,
                "\nBenign traffic: {} captures, {:.3} h; false-positive sources (blocked or alerted on) {} ({}); `anomaly` alerts {} ({}).",
                benign.len(),
                hours,
                fp,
                per_hour(fp, hours),
                anomaly,
                per_hour(anomaly, hours)
            );
        }
        let _ = writeln!(
            s,
            "\n| capture | class | s | attackers: time to block (frames before) | expected alerts | false-positive sources | alerts raised |\n|---|---|---|---|---|---|---|"
        );
        for o in &rows {
            let att = if o.attackers.is_empty() {
                "–".to_string()
            } else {
                o.attackers
                    .iter()
                    .map(|a| match a.blocked {
                        Some((t, n)) => format!("{} {t:.2} s ({n})", a.addr),
                        None => format!("{} **not blocked**", a.addr),
                    })
                    .collect::<Vec<_>>()
                    .join("; ")
            };
            let alerts = if o.alerts_met.is_empty() {
                "–".to_string()
            } else {
                o.alerts_met
                    .iter()
                    .map(|(a, met)| {
                        if *met {
                            a.clone()
                        } else {
                            format!("**missing** {a}")
                        }
                    })
                    .collect::<Vec<_>>()
                    .join("; ")
            };
            let fp = if o.false_positives.is_empty() {
                "none".to_string()
            } else {
                o.false_positives
                    .iter()
                    .map(|a| a.to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            let kinds = if o.kinds.is_empty() {
                "none".to_string()
            } else {
                o.kinds
                    .iter()
                    .map(|(k, n)| format!("{k} ×{n}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            let _ = writeln!(
                s,
                "| {} | {} | {:.1} | {att} | {alerts} | {fp} | {kinds} |",
                o.capture.file, o.capture.class, o.duration_s
            );
        }
        s.push('\n');
    }
    s
}

fn per_hour(n: usize, hours: f64) -> String {
    if hours > 0.0 {
        format!("{:.1}/h", n as f64 / hours)
    } else {
        "–".into()
    }
}

/// `--report`: evaluates the corpus and writes `out`; with `check`, compares with
/// the file instead and fails when it differs.
///
/// # Errors
/// The corpus or split is inconsistent, a capture cannot be read, the file
/// cannot be written, or (`check`) it is not what the code produces now.
pub fn run(out: &Path, check: bool) -> anyhow::Result<()> {
    let split = std::fs::read_to_string(split_file()).context("reading eval/split.toml")?;
    let caps = corpus(&[pcaps_dir(), corpus_dir()], &split)?;
    let mut outcomes = Vec::new();
    for c in &caps {
        eprintln!("eval: {} ({})", c.file, c.split.name());
        outcomes.push(evaluate(c)?);
    }
    let text = render(&outcomes);
    if check {
        let have = std::fs::read_to_string(out).unwrap_or_default();
        if have != text {
            bail!(
                "{} is not what `cargo xtask eval --report` writes now: run it and commit the result",
                out.display()
            );
        }
        eprintln!("eval: {} is up to date", out.display());
        return Ok(());
    }
    std::fs::write(out, &text).with_context(|| format!("writing {}", out.display()))?;
    eprintln!("eval: wrote {}", out.display());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEADER: &str = "file\trole\tmust_block\texpect_alert\tlabelled_attack";

    fn dir_with(rows: &[&str]) -> tempfile::TempDir {
        let d = tempfile::tempdir().unwrap();
        let mut t = format!("{HEADER}\n");
        for r in rows {
            t.push_str(r);
            t.push('\n');
        }
        std::fs::write(d.path().join("MANIFEST.tsv"), t).unwrap();
        d
    }

    #[test]
    fn every_capture_needs_exactly_one_split() {
        let d = dir_with(&[
            "a.pcap\tattack\t198.18.0.1\tportscan:198.18.0.1\tportscan-tcp-syn; attacker",
            "b.pcap\tbenign\t\t\t",
        ]);
        let dirs = [d.path().to_path_buf()];
        let ok = "[[capture]]\nfile = \"a.pcap\"\nsplit = \"test\"\n[[capture]]\nfile = \"b.pcap\"\nsplit = \"train\"\n";
        let c = corpus(&dirs, ok).unwrap();
        assert_eq!(c.len(), 2);
        assert_eq!(
            (c[0].class.as_str(), c[0].split, c[0].benign),
            ("portscan-tcp-syn", Split::Test, false)
        );
        assert_eq!((c[1].class.as_str(), c[1].benign), ("benign", true));
        let missing = "[[capture]]\nfile = \"a.pcap\"\nsplit = \"test\"\n";
        let e = corpus(&dirs, missing).unwrap_err().to_string();
        assert!(e.contains("b.pcap") && e.contains("no split"), "{e}");
        let twice = format!("{ok}[[capture]]\nfile = \"a.pcap\"\nsplit = \"validation\"\n");
        let e = corpus(&dirs, &twice).unwrap_err().to_string();
        assert!(e.contains("a.pcap twice"), "{e}");
        let unknown = format!("{ok}[[capture]]\nfile = \"c.pcap\"\nsplit = \"test\"\n");
        let e = corpus(&dirs, &unknown).unwrap_err().to_string();
        assert!(e.contains("c.pcap") && e.contains("no manifest"), "{e}");
        let bad = "[[capture]]\nfile = \"a.pcap\"\nsplit = \"holdout\"\n";
        assert!(corpus(&dirs, bad).is_err());
    }

    #[test]
    fn the_committed_split_covers_the_committed_corpus() {
        let split = std::fs::read_to_string(split_file()).unwrap();
        let c = corpus(&[pcaps_dir(), corpus_dir()], &split).unwrap();
        assert!(c.iter().any(|c| c.split == Split::Test && c.benign));
        assert!(c.iter().any(|c| c.split == Split::Test && !c.benign));
    }

    /// EVALUATION.md says what the code gives now (every capture evaluated).
    #[test]
    fn the_committed_evaluation_is_what_the_report_writes() {
        run(&util::workspace_root().join("EVALUATION.md"), true).unwrap();
    }

    #[test]
    fn median_of_even_and_odd_counts() {
        assert_eq!(median(&mut [3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(&mut [4.0, 1.0, 2.0, 3.0]), Some(2.5));
        assert_eq!(median(&mut []), None);
    }
}
