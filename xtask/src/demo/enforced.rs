//! The demo's check of the gateway's own view (issue 16): what the gateway
//! enforces reaches the dashboard whoever made it, and the two agree.
//!
//! 1. A block made with `fw-ctl block` on the router and prefixes loaded with
//!    `fw-ctl feed load` (no bus involved: they change the pinned maps and the
//!    state file) are in the dashboard's `GET /api/v1/blocks` within
//!    [`VISIBLE_WITHIN`], with origin `cli` / `feed`; the latency is reported.
//! 2. A block with a 6 s TTL (long enough for the browser to show it first) disappears from the dashboard once it expires.
//!    The Blocks page in headless Chromium (`dashboard/e2e/blocks.mjs`) shows the
//!    CLI and feed rows and the TTL block, and no longer the TTL block once it
//!    has expired.
//! 3. The gateway's own `/health` and `/metrics` (Prometheus text) answer on its
//!    local port.
//! 4. At the end ([`compare_blocklists`]): the blocklist the gateway holds
//!    (`fw-ctl list blocks`) and the dashboard's list for that gateway are the
//!    same set of prefixes.
use std::{
    collections::BTreeSet,
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};

use crate::testbed::{self, netns, nodes::GATEWAY_ID, stack::Stack};

/// A gateway-side change must be on the dashboard within this (issue 16).
pub const VISIBLE_WITHIN: Duration = Duration::from_secs(2);

/// Where the fw-ctl daemon serves `/health` and `/metrics` in the router
/// namespace (the `[http] listen` default).
pub const GATEWAY_HTTP: &str = "127.0.0.1:9102";

const CLI_BLOCK: &str = "203.0.113.200/32";
const TTL_BLOCK: &str = "203.0.113.201/32";
const FEED_PREFIXES: [&str; 2] = ["203.0.113.208/29", "203.0.113.216/30"];

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .timeout_global(Some(Duration::from_secs(5)))
        .proxy(None)
        .http_status_as_error(false)
        .build()
        .into()
}

/// One entry of the dashboard's `GET /api/v1/blocks` (the enforced list).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct DashboardBlock {
    pub gateway_id: String,
    pub prefix: String,
    pub origin: String,
}

/// The enforced entries of `GET /api/v1/blocks` (the `blocks` array).
///
/// # Errors
/// No connection, a status other than 200, a body without a `blocks` array of
/// objects with `gateway_id`, `prefix` and `origin`.
pub fn dashboard_blocks(url: &str) -> anyhow::Result<Vec<DashboardBlock>> {
    let url = format!("{}/api/v1/blocks", url.trim_end_matches('/'));
    let mut r = agent()
        .get(&url)
        .call()
        .with_context(|| format!("GET {url}"))?;
    if r.status() != 200 {
        bail!("GET {url}: HTTP {}", r.status());
    }
    let v: serde_json::Value = r.body_mut().read_json().context("blocks are not JSON")?;
    let arr = v["blocks"]
        .as_array()
        .with_context(|| format!("GET {url}: no `blocks` array in {v}"))?;
    arr.iter()
        .map(|b| {
            let s = |k: &str| {
                b[k].as_str()
                    .map(String::from)
                    .with_context(|| format!("GET {url}: a block without `{k}`: {b}"))
            };
            Ok(DashboardBlock {
                gateway_id: s("gateway_id")?,
                prefix: s("prefix")?,
                origin: s("origin")?,
            })
        })
        .collect()
}

/// Polls the dashboard every 100 ms until `done` holds for its list of this
/// gateway's blocks or `limit` passes; returns the time it took.
fn wait_dashboard(
    url: &str,
    limit: Duration,
    done: impl Fn(&[DashboardBlock]) -> bool,
) -> anyhow::Result<Option<Duration>> {
    let t0 = Instant::now();
    loop {
        let bs: Vec<DashboardBlock> = dashboard_blocks(url)?
            .into_iter()
            .filter(|b| b.gateway_id == GATEWAY_ID)
            .collect();
        if done(&bs) {
            return Ok(Some(t0.elapsed()));
        }
        if t0.elapsed() > limit {
            return Ok(None);
        }
        netns::sleep(Duration::from_millis(100))?;
    }
}

fn has(bs: &[DashboardBlock], prefix: &str, origin: &str) -> bool {
    bs.iter().any(|b| b.prefix == prefix && b.origin == origin)
}

/// Steps 1-3 of the module docs; unmet expectations go to `failures`.
pub(super) fn gateway_side(stack: &Stack, failures: &mut Vec<String>) -> anyhow::Result<()> {
    println!("\ngateway-side actions as the dashboard sees them:");
    if let Some(url) = &stack.dashboard_url {
        // 1. The CLI.
        stack.fw_ctl_json(&[
            "block",
            CLI_BLOCK,
            "--ttl",
            "10m",
            "--reason",
            "demo: an operator on the router",
        ])?;
        let cli = wait_dashboard(url, Duration::from_secs(10), |bs| has(bs, CLI_BLOCK, "cli"))?;
        report_latency("fw-ctl block", cli, failures);

        // 1. A feed.
        let feed = stack.dir.join("demo-feed.txt");
        std::fs::write(
            &feed,
            format!("# demo feed\n{}\n", FEED_PREFIXES.join("\n")),
        )
        .with_context(|| format!("writing {}", feed.display()))?;
        let feed_s = feed.display().to_string();
        stack.fw_ctl_json(&["feed", "load", &feed_s, "--ttl", "10m"])?;
        let fed = wait_dashboard(url, Duration::from_secs(10), |bs| {
            FEED_PREFIXES.iter().all(|p| has(bs, p, "feed"))
        })?;
        report_latency("fw-ctl feed load (2 prefixes)", fed, failures);

        // 2. Expiry.
        stack.fw_ctl_json(&[
            "block",
            TTL_BLOCK,
            "--ttl",
            "6s",
            "--reason",
            "demo: expires",
        ])?;
        let made = Instant::now();
        let shown = wait_dashboard(url, Duration::from_secs(10), |bs| has(bs, TTL_BLOCK, "cli"))?;
        report_latency("fw-ctl block --ttl 6s", shown, failures);
        let mut want: Vec<(&str, &str)> = vec![(CLI_BLOCK, "cli"), (TTL_BLOCK, "cli")];
        want.extend(FEED_PREFIXES.iter().map(|p| (*p, "feed")));
        page_check(url, &want, &[], failures);
        let gone = wait_dashboard(url, Duration::from_secs(15), |bs| {
            !bs.iter().any(|b| b.prefix == TTL_BLOCK)
        })?;
        match gone {
            Some(_) => {
                println!(
                    "  {TTL_BLOCK} (TTL 6 s) gone from the dashboard {:.2} s after it was made",
                    made.elapsed().as_secs_f64()
                );
                want.retain(|(p, _)| *p != TTL_BLOCK);
                page_check(url, &want, &[TTL_BLOCK], failures);
            }
            None => failures.push(format!(
                "{TTL_BLOCK} with a 6 s TTL still on the dashboard {:.0} s after it was made",
                made.elapsed().as_secs_f64()
            )),
        }
    } else {
        println!("  (no dashboard)");
    }

    // 3. The gateway's own endpoints.
    match gateway_http() {
        Ok((health, metrics)) => {
            println!("  gateway /health: {health}");
            println!("  gateway /metrics: {metrics} samples");
        }
        Err(e) => failures.push(format!("gateway HTTP endpoints: {e:#}")),
    }
    Ok(())
}

/// The Blocks page as headless Chromium shows it (`dashboard/e2e/blocks.mjs`
/// with playwright-core, the browser test's harness): every `(prefix, origin)`
/// of `present` has its row, no prefix of `absent` does. Unmet expectations go
/// to `failures`.
fn page_check(url: &str, present: &[(&str, &str)], absent: &[&str], failures: &mut Vec<String>) {
    let rows = match page_rows(url) {
        Ok(r) => r,
        Err(e) => {
            failures.push(format!("the Blocks page in headless Chromium: {e:#}"));
            return;
        }
    };
    let shown = |p: &str, o: Option<&str>| {
        rows.iter().any(|r| {
            r["prefix"].as_str() == Some(p)
                && r["gateway"].as_str() == Some(GATEWAY_ID)
                && o.is_none_or(|o| r["origin"].as_str() == Some(o))
        })
    };
    let missing: Vec<String> = present
        .iter()
        .filter(|(p, o)| !shown(p, Some(o)))
        .map(|(p, o)| format!("{p} ({o})"))
        .collect();
    let stale: Vec<&str> = absent.iter().copied().filter(|p| shown(p, None)).collect();
    if missing.is_empty() && stale.is_empty() {
        println!(
            "  Blocks page (headless Chromium): {} rows, the {} expected shown{}",
            rows.len(),
            present.len(),
            if absent.is_empty() {
                String::new()
            } else {
                format!(", {} gone", absent.join(", "))
            }
        );
    } else {
        failures.push(format!(
            "the Blocks page in headless Chromium: rows missing {missing:?}, rows that should be gone {stale:?}"
        ));
    }
}

/// The enforced rows of the Blocks page: `node dashboard/e2e/blocks.mjs` from
/// the root namespace (Debian's chromium and the e2e packages from `cargo xtask
/// setup`), 60 s at most.
///
/// # Errors
/// node or chromium missing, the script's `fail` line, no `ok` line.
fn page_rows(url: &str) -> anyhow::Result<Vec<serde_json::Value>> {
    let script = crate::util::workspace_root().join("dashboard/e2e/blocks.mjs");
    let child = std::process::Command::new("timeout")
        .args(["60", "node"])
        .arg(&script)
        .env("DASHBOARD_URL", url.trim_end_matches('/'))
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .with_context(|| format!("running node {}", script.display()))?;
    let out = child
        .wait_with_output()
        .context("waiting for the browser script")?;
    let text = String::from_utf8_lossy(&out.stdout);
    let last = text.lines().last().unwrap_or("");
    match last.strip_prefix("ok ") {
        Some(json) => serde_json::from_str(json).context("the browser script's rows"),
        None => bail!(
            "{}: {} {}",
            script.display(),
            if last.is_empty() { "no output" } else { last },
            String::from_utf8_lossy(&out.stderr)
                .lines()
                .last()
                .unwrap_or("")
        ),
    }
}

fn report_latency(what: &str, took: Option<Duration>, failures: &mut Vec<String>) {
    match took {
        Some(d) if d <= VISIBLE_WITHIN => println!(
            "  {what}: on the dashboard {:.0} ms after the command returned",
            d.as_secs_f64() * 1e3
        ),
        Some(d) => failures.push(format!(
            "{what}: on the dashboard only after {:.0} ms (limit {} ms)",
            d.as_secs_f64() * 1e3,
            VISIBLE_WITHIN.as_millis()
        )),
        None => failures.push(format!("{what}: never on the dashboard")),
    }
}

/// GET `/health` and `/metrics` of the daemon from inside the router namespace:
/// (health's `status` field, number of samples in the exposition).
///
/// # Errors
/// No answer, a status other than 200, a health body without `status`, an
/// exposition without a `tad_gateway_` sample.
fn gateway_http() -> anyhow::Result<(String, usize)> {
    std::thread::scope(|s| {
        s.spawn(|| -> anyhow::Result<(String, usize)> {
            netns::enter_thread(testbed::NS_ROUTER)?;
            let a = agent();
            let url = format!("http://{GATEWAY_HTTP}/health");
            let mut r = a.get(&url).call().with_context(|| format!("GET {url}"))?;
            if r.status() != 200 {
                bail!("GET {url}: HTTP {}", r.status());
            }
            let h: serde_json::Value = r.body_mut().read_json().context("health is not JSON")?;
            let status = h["status"]
                .as_str()
                .with_context(|| format!("GET {url}: no status in {h}"))?
                .to_string();
            let url = format!("http://{GATEWAY_HTTP}/metrics");
            let mut r = a.get(&url).call().with_context(|| format!("GET {url}"))?;
            if r.status() != 200 {
                bail!("GET {url}: HTTP {}", r.status());
            }
            let text = r.body_mut().read_to_string()?;
            let samples = text
                .lines()
                .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
                .count();
            if !text.lines().any(|l| l.starts_with("tad_gateway_")) {
                bail!("GET {url}: no tad_gateway_ sample");
            }
            Ok((status, samples))
        })
        .join()
        .map_err(|_| anyhow::anyhow!("gateway HTTP thread panicked"))?
    })
}

/// Step 4: the gateway's blocklist (`fw-ctl list blocks`, config entries left
/// out) and the dashboard's list for it must be the same prefixes.
pub(super) fn compare_blocklists(stack: &Stack, failures: &mut Vec<String>) -> anyhow::Result<()> {
    let Some(url) = &stack.dashboard_url else {
        return Ok(());
    };
    let gateway: BTreeSet<String> = stack
        .blocks()?
        .into_iter()
        .filter(|b| b.origin != "config")
        .map(|b| b.prefix)
        .collect();
    // The dashboard may be one poll behind: give it VISIBLE_WITHIN to agree.
    let mut shown = BTreeSet::new();
    let t0 = Instant::now();
    while t0.elapsed() <= VISIBLE_WITHIN {
        shown = dashboard_blocks(url)?
            .into_iter()
            .filter(|b| b.gateway_id == GATEWAY_ID && b.origin != "config")
            .map(|b| b.prefix)
            .collect();
        if shown == gateway {
            break;
        }
        netns::sleep(Duration::from_millis(200))?;
    }
    println!(
        "\nblocklist of {GATEWAY_ID}: {} prefixes on the gateway, {} on the dashboard",
        gateway.len(),
        shown.len()
    );
    for p in &gateway {
        println!("  {p}");
    }
    if shown != gateway {
        let only_gw: Vec<&String> = gateway.difference(&shown).collect();
        let only_dash: Vec<&String> = shown.difference(&gateway).collect();
        failures.push(format!(
            "the dashboard's blocklist differs from the gateway's: only on the gateway {only_gw:?}, only on the dashboard {only_dash:?}"
        ));
    }
    Ok(())
}
