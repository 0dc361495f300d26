//! Scheduled threat-feed refresh (`[[feeds]]` in gateway.toml).
//!
//! One thread (its own pinned-map handles, like the collector) refreshes every
//! configured feed at start and then every `interval_s`: it reads the feed from a
//! local file or downloads it over HTTP(S) (ureq, rustls with the webpki roots,
//! one `timeout_s` for the whole request, at most `max_bytes`), checks the text
//! ([`crate::feed::check_text`]) and applies the DIFF against the blocks this feed
//! made before ([`crate::feed::refresh`]): new prefixes blocked, prefixes that left
//! the feed unblocked, the rest untouched; other origins are never changed.
//!
//! A failed fetch, an empty feed or a text that is mostly not prefixes changes
//! nothing in the maps: the blocks in force stay, the failure is logged (`feed`,
//! `error` fields) and counted in the feed's [`FeedStatus`] (in the status file,
//! `fw-ctl status --json` `daemon.feeds`), and the next period tries again. The
//! enforced-state publication picks the changes up from the maps like any other.

use std::{
    path::{Path, PathBuf},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use serde::{Deserialize, Serialize};

use crate::{
    clock,
    config::Feed,
    error::CtlError,
    feed::{self, FeedTextError, RefreshOptions, RefreshReport},
    kernel::Pinned,
    lists::Lists,
    pin::PinDir,
};

/// Why one refresh of a feed changed nothing.
#[derive(Debug, thiserror::Error)]
pub enum FeedError {
    /// The local file cannot be read.
    #[error("feed {feed:?}: cannot read {path}: {source}")]
    File {
        feed: String,
        path: PathBuf,
        source: std::io::Error,
    },
    /// The local file is larger than `max_bytes`.
    #[error("feed {feed:?}: {path} is {bytes} bytes, over max_bytes {max_bytes}")]
    FileTooBig {
        feed: String,
        path: PathBuf,
        bytes: u64,
        max_bytes: u64,
    },
    /// The download failed (connection, TLS, HTTP status, timeout, size limit,
    /// not UTF-8).
    #[error("feed {feed:?}: downloading {url}: {why}")]
    Http {
        feed: String,
        url: String,
        why: String,
    },
    /// The text cannot be a feed.
    #[error("feed {feed:?} ({source_name}): {error}")]
    Text {
        feed: String,
        source_name: String,
        error: FeedTextError,
    },
    /// Applying the diff failed (state file, map full).
    #[error("feed {feed:?}: applying the refresh: {error}")]
    Apply { feed: String, error: CtlError },
}

/// One feed's refresh record, in the daemon's status file.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FeedStatus {
    pub name: String,
    /// The file path or URL.
    pub source: String,
    /// Refreshes applied.
    pub refreshes_total: u64,
    /// Refreshes that changed nothing because of an error.
    pub failures_total: u64,
    /// Last applied refresh, Unix ms.
    #[serde(default)]
    pub last_ok_unix_ms: Option<u64>,
    /// The last error (cleared by the next applied refresh).
    #[serde(default)]
    pub last_error: Option<String>,
    /// What the last applied refresh did.
    #[serde(default)]
    pub last: Option<RefreshReport>,
}

/// The feeds' status, shared with the daemon's status writer.
pub type Shared = Arc<Mutex<Vec<FeedStatus>>>;

/// Reads (file) or downloads (http/https URL) a feed's text.
///
/// # Errors
/// [`FeedError::File`], [`FeedError::FileTooBig`], [`FeedError::Http`].
pub fn fetch(f: &Feed) -> Result<String, FeedError> {
    if f.is_url() {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .timeout_global(Some(Duration::from_secs(f.timeout_s)))
            .build()
            .into();
        let http = |why: String| FeedError::Http {
            feed: f.name.clone(),
            url: f.source.clone(),
            why,
        };
        let mut resp = agent
            .get(&f.source)
            .call()
            .map_err(|e| http(e.to_string()))?;
        return resp
            .body_mut()
            .with_config()
            .limit(f.max_bytes)
            .read_to_string()
            .map_err(|e| http(e.to_string()));
    }
    let path = Path::new(&f.source);
    let file_err = |source| FeedError::File {
        feed: f.name.clone(),
        path: path.to_path_buf(),
        source,
    };
    let bytes = std::fs::metadata(path).map_err(file_err)?.len();
    if bytes > f.max_bytes {
        return Err(FeedError::FileTooBig {
            feed: f.name.clone(),
            path: path.to_path_buf(),
            bytes,
            max_bytes: f.max_bytes,
        });
    }
    std::fs::read_to_string(path).map_err(file_err)
}

/// Fetches one feed, checks it and applies the diff (see the module docs).
///
/// # Errors
/// [`FeedError`]; nothing was changed unless the error is [`FeedError::Apply`]
/// (then what was applied before the failing entry stays).
pub fn refresh_once<L: Lists + ?Sized>(
    lists: &mut L,
    state_path: &Path,
    f: &Feed,
) -> Result<RefreshReport, FeedError> {
    let text = fetch(f)?;
    let parsed = feed::check_text(&text).map_err(|error| FeedError::Text {
        feed: f.name.clone(),
        source_name: f.source.clone(),
        error,
    })?;
    let opts = RefreshOptions {
        name: f.name.clone(),
        ttl: f.ttl_s.map(Duration::from_secs),
        renew: f.renew,
    };
    feed::refresh(lists, state_path, &parsed, &opts).map_err(|error| FeedError::Apply {
        feed: f.name.clone(),
        error,
    })
}

/// The initial status of every feed (zero counts).
pub fn initial_status(feeds: &[Feed]) -> Vec<FeedStatus> {
    feeds
        .iter()
        .map(|f| FeedStatus {
            name: f.name.clone(),
            source: f.source.clone(),
            ..Default::default()
        })
        .collect()
}

fn record(stats: &Shared, i: usize, r: Result<RefreshReport, String>) {
    let mut s = stats.lock().unwrap_or_else(|p| p.into_inner());
    let Some(st) = s.get_mut(i) else { return };
    match r {
        Ok(rep) => {
            st.refreshes_total += 1;
            st.last_ok_unix_ms = Some(clock::unix_ms());
            st.last_error = None;
            st.last = Some(rep);
        }
        Err(e) => {
            st.failures_total += 1;
            st.last_error = Some(e);
        }
    }
}

/// Refreshes every feed in `feeds` on its schedule until `stop` is set (checked
/// at least every 200 ms). Opens its own handles on the pinned maps in `dir`;
/// while they cannot be opened, each due refresh counts as a failure. `stats`
/// must hold [`initial_status`] of `feeds`.
pub fn run(
    dir: PinDir,
    state_path: PathBuf,
    feeds: Vec<Feed>,
    stats: Shared,
    stop: Arc<AtomicBool>,
) {
    let mut due: Vec<Instant> = vec![Instant::now(); feeds.len()];
    let mut maps: Option<Pinned> = None;
    while !stop.load(Ordering::SeqCst) {
        let now = Instant::now();
        for (i, f) in feeds.iter().enumerate() {
            if due[i] > now {
                continue;
            }
            due[i] = now + Duration::from_secs(f.interval_s);
            if maps.is_none() {
                match Pinned::open(&dir) {
                    Ok(m) => maps = Some(m),
                    Err(e) => {
                        let e = format!("feed {:?}: cannot open the pinned maps: {e}", f.name);
                        tracing::warn!(feed = %f.name, error = %e, "feed refresh failed; blocks in force kept");
                        record(&stats, i, Err(e));
                        continue;
                    }
                }
            }
            let m = maps.as_mut().expect("opened above");
            let t = Instant::now();
            match refresh_once(m, &state_path, f) {
                Ok(rep) => {
                    tracing::info!(
                        feed = %f.name,
                        prefixes = rep.prefixes,
                        added = rep.added,
                        removed = rep.removed,
                        unchanged = rep.unchanged,
                        renewed = rep.renewed,
                        held_by_others = rep.held_by_others,
                        allowlisted = rep.allowlisted,
                        bad_lines = rep.bad_lines,
                        ms = t.elapsed().as_millis() as u64,
                        "feed refreshed"
                    );
                    record(&stats, i, Ok(rep));
                }
                Err(e) => {
                    tracing::warn!(feed = %f.name, error = %e, "feed refresh failed; blocks in force kept");
                    record(&stats, i, Err(e.to_string()));
                }
            }
        }
        let next = due
            .iter()
            .min()
            .copied()
            .unwrap_or(now + Duration::from_secs(1));
        let wait = next
            .saturating_duration_since(Instant::now())
            .min(Duration::from_millis(200));
        std::thread::sleep(wait);
    }
}

#[cfg(test)]
mod tests {
    use crate::config::GatewayFile;

    #[test]
    fn feeds_section_parses_and_bad_entries_are_named() {
        let cfg = GatewayFile::parse(
            "[[feeds]]\nname = \"drop\"\nsource = \"/var/lib/feeds/drop.txt\"\n\
             [[feeds]]\nname = \"edrop\"\nsource = \"https://feeds.example/edrop.txt\"\n\
             interval_s = 600\nttl_s = 86400\nrenew = true\n",
        )
        .unwrap();
        assert_eq!(cfg.feeds.len(), 2);
        assert_eq!((cfg.feeds[0].interval_s, cfg.feeds[0].ttl_s), (3600, None));
        assert!(cfg.feeds[1].is_url() && !cfg.feeds[0].is_url());
        assert!(cfg.feeds.iter().all(|f| f.check(0).is_empty()));

        let bad = GatewayFile::parse(
            "[[feeds]]\nname = \"a b\"\nsource = \"ftp://x/y\"\ninterval_s = 0\nrenew = true\n\
             [[feeds]]\nname = \"a b\"\nsource = \"/f\"\n",
        )
        .unwrap();
        let p = bad.check().join("\n");
        for key in [
            "feeds[0].name",
            "feeds[0].source",
            "feeds[0].interval_s",
            "feeds[0].renew",
            "feeds[1].name \"a b\": used twice",
        ] {
            assert!(p.contains(key), "{key} missing in:\n{p}");
        }
        assert!(
            GatewayFile::parse("[[feeds]]\nname = \"x\"\nsource = \"/f\"\nurl = \"/g\"\n").is_err()
        );
    }
}
