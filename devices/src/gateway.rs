//! The gateway's `[devices]` table: where the registry is, the station's settings
//! ([`crate::StationConfig`]'s parts), command vetting and the active scan. The
//! gateway daemon (`fw-ctl/src/daemon/devices.rs`) runs them; without the table
//! the device guard is off.
//!
//! ```toml
//! [devices]
//! registry = "/etc/tad/devices/registry.toml"   # tad-device enroll writes it
//! outbox_batches = 1024
//! publish_interval_ms = 1000   # refusals, trust changes, device state
//! max_refusals_per_message = 256
//! [devices.guard]      # tad_devices::GuardConfig
//! [devices.batch]      # tad_devices::batch::BatchConfig
//! [devices.trust]      # tad_devices::TrustConfig
//! [devices.anomaly]    # tad_devices::anomaly::ForestConfig (omit: scoring off)
//! [devices.commands]   # tad_devices::VetConfig
//! [devices.scan]       # tad_devices::vulnscan::ScanConfig
//! ```

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::{
    anomaly::ForestConfig, batch::BatchConfig, command::VetConfig, guard::GuardConfig,
    station::StationConfig, trust::TrustConfig, vulnscan::ScanConfig,
};

/// The `[devices]` table (module docs); every key has a default.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DevicesConfig {
    /// The enrollment registry (TOML, `tad_devices::Registry`); re-read when it
    /// changes (checked every `publish_interval_ms`).
    pub registry: PathBuf,
    pub guard: GuardConfig,
    pub batch: BatchConfig,
    /// Closed batches held while the broker is unavailable (then drop-oldest, counted).
    pub outbox_batches: usize,
    pub trust: TrustConfig,
    /// Per-device Isolation Forest; on by default: in a file, an absent
    /// `[devices.anomaly]` table (or key) takes `ForestConfig::default()`'s
    /// values. `None` (from code only) turns scoring off.
    pub anomaly: Option<ForestConfig>,
    /// Command vetting policy.
    pub commands: VetConfig,
    /// The active vulnerability check.
    pub scan: ScanConfig,
    /// How often refusals, trust changes and the device state are published, ms.
    pub publish_interval_ms: u64,
    /// Refusals listed per published message at most (the rest are counted).
    pub max_refusals_per_message: usize,
}

impl Default for DevicesConfig {
    fn default() -> Self {
        let s = StationConfig::default();
        DevicesConfig {
            registry: "/etc/tad/devices/registry.toml".into(),
            guard: s.guard,
            batch: s.batch,
            outbox_batches: s.outbox_batches,
            trust: s.trust,
            anomaly: s.anomaly,
            commands: VetConfig::default(),
            scan: ScanConfig::default(),
            publish_interval_ms: 1000,
            max_refusals_per_message: 256,
        }
    }
}

impl DevicesConfig {
    /// The station's part.
    pub fn station(&self) -> StationConfig {
        StationConfig {
            guard: self.guard.clone(),
            batch: self.batch,
            outbox_batches: self.outbox_batches,
            trust: self.trust.clone(),
            anomaly: self.anomaly,
        }
    }

    /// Problems with the values, each naming its key (empty when fine).
    pub fn check(&self) -> Vec<String> {
        let mut p = Vec::new();
        if !(100..=60_000).contains(&self.publish_interval_ms) {
            p.push(format!(
                "devices.publish_interval_ms {}: must be in 100..=60000 (ms)",
                self.publish_interval_ms
            ));
        }
        if self.outbox_batches == 0 {
            p.push("devices.outbox_batches: must be at least 1".into());
        }
        if self.max_refusals_per_message == 0 {
            p.push("devices.max_refusals_per_message: must be at least 1".into());
        }
        p.extend(self.scan.check());
        p
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_table_is_the_defaults_and_unknown_keys_are_refused() {
        let c: DevicesConfig = toml::from_str("").unwrap();
        assert_eq!(c, DevicesConfig::default());
        assert!(c.check().is_empty());
        let e = toml::from_str::<DevicesConfig>("registy = \"x\"\n").unwrap_err();
        assert!(e.to_string().contains("registy"), "{e}");
        let c: DevicesConfig = toml::from_str("publish_interval_ms = 5\n").unwrap();
        assert!(c.check()[0].contains("publish_interval_ms"));
    }
}
