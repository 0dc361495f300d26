//! Command vetting (seed 004: "device control commands are vetted against trust";
//! seed 002: "if anomalous: command blocked, alert generated"). Every control
//! command to a device passes [`vet`] on the gateway before it is forwarded.
//!
//! A command is refused, with a [`CommandRefusal`], when (in this order):
//! 1. its arguments are invalid (`set` key syntax or a non-finite value, a
//!    firmware hash that is not 64 hex digits, a firmware URL that is not https);
//! 2. the device's trust is below [`VetConfig::min_trust`] (below
//!    [`VetConfig::firmware_min_trust`] for `firmware`, the riskiest kind);
//! 3. it would be more than [`VetConfig::burst_max`] commands to this device within
//!    [`VetConfig::burst_window_ms`] (attempts count, refused ones included, so a
//!    burst stays refused while it goes on);
//! 4. its kind was never accepted for this device and is not in the device's
//!    enrolled `commands` (a device that has only ever been rebooted is not
//!    suddenly sent firmware);
//! 5. it is `firmware` from a URL outside [`VetConfig::firmware_url_prefixes`] or
//!    with a SHA-256 not in [`VetConfig::firmware_sha256`].
//!
//! The history ([`CommandHistory`]) is per device and in memory: the integrator
//! keeps one per device and calls [`CommandHistory::record`] with every attempt.

use std::collections::{BTreeSet, VecDeque};

use serde::{Deserialize, Serialize};

/// Kinds of device commands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CommandKind {
    Set,
    Reboot,
    Firmware,
}

impl CommandKind {
    pub fn as_str(self) -> &'static str {
        match self {
            CommandKind::Set => "set",
            CommandKind::Reboot => "reboot",
            CommandKind::Firmware => "firmware",
        }
    }
}

impl std::str::FromStr for CommandKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "set" => Ok(CommandKind::Set),
            "reboot" => Ok(CommandKind::Reboot),
            "firmware" => Ok(CommandKind::Firmware),
            _ => Err(format!(
                "command kind {s:?} is not one of set, reboot, firmware"
            )),
        }
    }
}

/// A control command for a device.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum DeviceCommand {
    /// Set configuration key `key` (1 to 32 of a-z, 0-9, `_`) to `value`.
    Set { key: String, value: f64 },
    /// Restart the device (a struct variant so that unknown fields are refused).
    Reboot {},
    /// Install the image at `url` (https) whose SHA-256 is `sha256` (64 hex digits).
    Firmware { url: String, sha256: String },
}

impl DeviceCommand {
    pub fn kind(&self) -> CommandKind {
        match self {
            DeviceCommand::Set { .. } => CommandKind::Set,
            DeviceCommand::Reboot {} => CommandKind::Reboot,
            DeviceCommand::Firmware { .. } => CommandKind::Firmware,
        }
    }
}

/// Vetting policy.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct VetConfig {
    /// Least trust (0..100) for any command (default 50, seed 003's "warning").
    pub min_trust: f64,
    /// Least trust for `firmware` (default 75, "normal").
    pub firmware_min_trust: f64,
    /// Most commands per device within `burst_window_ms`.
    pub burst_max: usize,
    /// Burst window, ms.
    pub burst_window_ms: u64,
    /// Firmware URLs must start with one of these (e.g. `https://fw.example/esp32/`).
    pub firmware_url_prefixes: Vec<String>,
    /// Approved firmware images, SHA-256 lowercase hex.
    pub firmware_sha256: Vec<String>,
}

impl Default for VetConfig {
    fn default() -> Self {
        VetConfig {
            min_trust: 50.0,
            firmware_min_trust: 75.0,
            burst_max: 3,
            burst_window_ms: 60_000,
            firmware_url_prefixes: Vec::new(),
            firmware_sha256: Vec::new(),
        }
    }
}

/// Why a command was refused.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, thiserror::Error)]
#[serde(tag = "reason", rename_all = "snake_case")]
pub enum CommandRefusal {
    #[error("invalid argument: {what}")]
    BadArgument { what: String },
    #[error("device trust {trust:.1} is below {min:.1} for {kind:?}")]
    LowTrust {
        kind: CommandKind,
        trust: f64,
        min: f64,
    },
    #[error("{count} commands within {window_ms} ms (at most {max})")]
    Burst {
        count: usize,
        max: usize,
        window_ms: u64,
    },
    #[error("command kind {kind:?} was never accepted for this device and is not enrolled for it")]
    NovelKind { kind: CommandKind },
    #[error("firmware not approved: {what}")]
    UnapprovedFirmware { what: String },
}

impl CommandRefusal {
    /// The snake_case reason (metrics label).
    pub fn reason(&self) -> &'static str {
        match self {
            CommandRefusal::BadArgument { .. } => "bad_argument",
            CommandRefusal::LowTrust { .. } => "low_trust",
            CommandRefusal::Burst { .. } => "burst",
            CommandRefusal::NovelKind { .. } => "novel_kind",
            CommandRefusal::UnapprovedFirmware { .. } => "unapproved_firmware",
        }
    }
}

/// One device's recent command history.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommandHistory {
    /// Times of recent attempts, Unix ms, oldest first (kept for the burst window).
    pub attempts_ms: VecDeque<u64>,
    /// Kinds accepted at least once.
    pub accepted_kinds: BTreeSet<CommandKind>,
}

impl CommandHistory {
    /// Records an attempt at `at_ms` (call for every vetted command, refused or
    /// not) and, when it was accepted, its kind. Attempts older than
    /// `window_ms` are forgotten.
    pub fn record(&mut self, kind: CommandKind, accepted: bool, at_ms: u64, window_ms: u64) {
        self.attempts_ms.push_back(at_ms);
        while self
            .attempts_ms
            .front()
            .is_some_and(|t| t.saturating_add(window_ms) <= at_ms)
        {
            self.attempts_ms.pop_front();
        }
        if accepted {
            self.accepted_kinds.insert(kind);
        }
    }

    fn attempts_within(&self, now_ms: u64, window_ms: u64) -> usize {
        self.attempts_ms
            .iter()
            .filter(|t| t.saturating_add(window_ms) > now_ms)
            .count()
    }
}

/// Vets `cmd` for a device whose trust is `trust` (0..100), whose enrollment
/// expects the kinds `enrolled`, with its `history`, at `now_ms` (module docs).
/// Does not record the attempt: call [`CommandHistory::record`] afterwards.
pub fn vet(
    cmd: &DeviceCommand,
    trust: f64,
    enrolled: &[CommandKind],
    history: &CommandHistory,
    cfg: &VetConfig,
    now_ms: u64,
) -> Result<(), CommandRefusal> {
    let bad = |what: String| Err(CommandRefusal::BadArgument { what });
    match cmd {
        DeviceCommand::Set { key, value } => {
            let ok = !key.is_empty()
                && key.len() <= 32
                && key
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
            if !ok {
                return bad(format!("set key {key:?}: use 1 to 32 of a-z, 0-9, '_'"));
            }
            if !value.is_finite() {
                return bad(format!("set value {value} is not finite"));
            }
        }
        DeviceCommand::Reboot {} => {}
        DeviceCommand::Firmware { url, sha256 } => {
            if !url.starts_with("https://") {
                return bad(format!("firmware url {url:?} is not https"));
            }
            if sha256.len() != 64 || !sha256.chars().all(|c| c.is_ascii_hexdigit()) {
                return bad(format!("firmware sha256 {sha256:?} is not 64 hex digits"));
            }
        }
    }
    let kind = cmd.kind();
    let min = if kind == CommandKind::Firmware {
        cfg.firmware_min_trust.max(cfg.min_trust)
    } else {
        cfg.min_trust
    };
    if trust < min {
        return Err(CommandRefusal::LowTrust { kind, trust, min });
    }
    let count = history.attempts_within(now_ms, cfg.burst_window_ms) + 1;
    if count > cfg.burst_max {
        return Err(CommandRefusal::Burst {
            count,
            max: cfg.burst_max,
            window_ms: cfg.burst_window_ms,
        });
    }
    if !history.accepted_kinds.contains(&kind) && !enrolled.contains(&kind) {
        return Err(CommandRefusal::NovelKind { kind });
    }
    if let DeviceCommand::Firmware { url, sha256 } = cmd {
        if !cfg
            .firmware_url_prefixes
            .iter()
            .any(|p| url.starts_with(p.as_str()))
        {
            return Err(CommandRefusal::UnapprovedFirmware {
                what: format!("url {url:?} is not under an approved prefix"),
            });
        }
        if !cfg
            .firmware_sha256
            .iter()
            .any(|h| h.eq_ignore_ascii_case(sha256))
        {
            return Err(CommandRefusal::UnapprovedFirmware {
                what: format!("sha256 {sha256} is not an approved image"),
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: u64 = 1_000_000;
    const H: &str = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08";

    fn cfg() -> VetConfig {
        VetConfig {
            firmware_url_prefixes: vec!["https://fw.example/esp32/".into()],
            firmware_sha256: vec![H.into()],
            ..VetConfig::default()
        }
    }

    fn fw(url: &str, h: &str) -> DeviceCommand {
        DeviceCommand::Firmware {
            url: url.into(),
            sha256: h.into(),
        }
    }

    #[test]
    fn low_trust_refuses_and_firmware_needs_more() {
        let h = CommandHistory::default();
        let all = [CommandKind::Reboot, CommandKind::Firmware];
        let c = cfg();
        assert!(vet(&DeviceCommand::Reboot {}, 50.0, &all, &h, &c, T).is_ok());
        let e = vet(&DeviceCommand::Reboot {}, 49.0, &all, &h, &c, T).unwrap_err();
        assert!(
            matches!(e, CommandRefusal::LowTrust { min, .. } if min == 50.0),
            "{e}"
        );
        let ok = fw("https://fw.example/esp32/v2.bin", H);
        assert!(vet(&ok, 75.0, &all, &h, &c, T).is_ok());
        assert_eq!(
            vet(&ok, 60.0, &all, &h, &c, T).unwrap_err().reason(),
            "low_trust"
        );
    }

    #[test]
    fn a_burst_is_refused_while_it_lasts_and_allowed_after_the_window() {
        let c = cfg();
        let mut h = CommandHistory::default();
        let mut verdicts = vec![];
        for i in 0..6 {
            let r = vet(
                &DeviceCommand::Reboot {},
                90.0,
                &[CommandKind::Reboot],
                &h,
                &c,
                T + i,
            );
            h.record(CommandKind::Reboot, r.is_ok(), T + i, c.burst_window_ms);
            verdicts.push(r.map_err(|e| e.reason()));
        }
        assert_eq!(
            verdicts,
            [
                Ok(()),
                Ok(()),
                Ok(()),
                Err("burst"),
                Err("burst"),
                Err("burst")
            ]
        );
        let later = T + 5 + c.burst_window_ms;
        assert!(
            vet(
                &DeviceCommand::Reboot {},
                90.0,
                &[CommandKind::Reboot],
                &h,
                &c,
                later
            )
            .is_ok()
        );
    }

    #[test]
    fn a_kind_never_seen_is_refused_until_enrolled_or_accepted() {
        let c = cfg();
        let mut h = CommandHistory::default();
        let set = DeviceCommand::Set {
            key: "interval_s".into(),
            value: 30.0,
        };
        assert_eq!(
            vet(&set, 100.0, &[CommandKind::Reboot], &h, &c, T),
            Err(CommandRefusal::NovelKind {
                kind: CommandKind::Set
            })
        );
        assert!(vet(&set, 100.0, &[CommandKind::Set], &h, &c, T).is_ok());
        h.record(CommandKind::Set, true, T, c.burst_window_ms);
        assert!(vet(&set, 100.0, &[], &h, &c, T + c.burst_window_ms).is_ok());
    }

    #[test]
    fn firmware_must_come_from_an_approved_url_with_an_approved_hash() {
        let c = cfg();
        let h = CommandHistory::default();
        let k = [CommandKind::Firmware];
        let other = "0".repeat(64);
        for (cmd, reason, needle) in [
            (
                fw("https://evil.example/esp32/x.bin", H),
                "unapproved_firmware",
                "url",
            ),
            (
                fw("https://fw.example/esp32/x.bin", &other),
                "unapproved_firmware",
                "sha256",
            ),
            (
                fw("http://fw.example/esp32/x.bin", H),
                "bad_argument",
                "https",
            ),
            (
                fw("https://fw.example/esp32/x.bin", "abc"),
                "bad_argument",
                "64 hex",
            ),
        ] {
            let e = vet(&cmd, 100.0, &k, &h, &c, T).unwrap_err();
            assert_eq!(e.reason(), reason, "{e}");
            assert!(e.to_string().contains(needle), "{e}");
        }
        let bad_set = DeviceCommand::Set {
            key: "a/b".into(),
            value: 1.0,
        };
        assert_eq!(
            vet(&bad_set, 100.0, &[CommandKind::Set], &h, &c, T)
                .unwrap_err()
                .reason(),
            "bad_argument"
        );
    }

    #[test]
    fn commands_parse_from_json_with_their_arguments() {
        let c: DeviceCommand =
            serde_json::from_str(r#"{"kind":"firmware","url":"https://x/y","sha256":"00"}"#)
                .unwrap();
        assert_eq!(c.kind(), CommandKind::Firmware);
        assert!(serde_json::from_str::<DeviceCommand>(r#"{"kind":"reboot","now":true}"#).is_err());
        assert!(serde_json::from_str::<DeviceCommand>(r#"{"kind":"format"}"#).is_err());
    }
}
