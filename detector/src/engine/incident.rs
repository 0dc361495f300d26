//! One attack, one alert: every detection about the same source and kind (or,
//! without a source, the same victim and kind) at one gateway while the attack
//! goes on (a detection within `policy.alert_cooldown_s` of the previous one)
//! merges into one [`Alert`]: one id, `first_seen_ms`, a `count` of the
//! detections that would each have been an alert of their own (each rule and
//! target once per cooldown, or when its number doubled), the
//! latest (or strongest) explanation, and the number of distinct targets named
//! (`observed["targets"]`, the target itself dropped once there are several).
//!
//! Publication: an alert goes out at the end of the engine call that raised it
//! (detections of one call coalesce), and again, as an update under the same id,
//! when it changed: at once when a verdict was issued for it, otherwise no sooner
//! than 1 s after the previous publication, the gap doubling with each update up
//! to the cooldown (a long attack costs a few updates a minute at most); a last
//! update goes out once the attack has been quiet for the cooldown.

use std::{collections::BTreeSet, net::IpAddr};

use tad_wire::{Alert, AlertKind, NodeId};

use super::{Engine, Output};
use crate::{
    HashMap,
    rules::{self, Detection},
};

/// Key of one attack: (gateway, kind, source, victim when there is no source).
pub(super) type IncidentKey = (NodeId, AlertKind, Option<IpAddr>, Option<IpAddr>);

/// Most distinct targets remembered per alert.
const MAX_TARGETS: usize = 4096;
/// Shortest gap between two publications of one alert, ms.
const FIRST_UPDATE_MS: u64 = 1_000;

/// One attack's alert.
pub(super) struct Incident {
    alert: Alert,
    /// The main number of the detection whose explanation the alert carries.
    main: f64,
    targets: BTreeSet<IpAddr>,
    /// Last detection merged, ms.
    last_ms: u64,
    /// Last publication, ms, and publications so far.
    published: Option<u64>,
    updates: u32,
    /// Changed since its last publication; `urgent`: publish at once.
    dirty: bool,
    urgent: bool,
}

/// Every attack's alert, and those waiting to be published.
#[derive(Default)]
pub(super) struct Incidents {
    map: HashMap<IncidentKey, Incident>,
    pending: Vec<IncidentKey>,
    /// Last versions of ended attacks replaced before they were published.
    /// (alert, whether it was never published).
    ended: Vec<(Alert, bool)>,
}

fn key_of(gw: &NodeId, d: &Detection) -> IncidentKey {
    let victim = if d.source.is_none() { d.target } else { None };
    (gw.clone(), d.kind, d.source, victim)
}

impl Incidents {
    /// The id of the alert `d` merges into, if its attack is still going on.
    pub(super) fn active(
        &self,
        gw: &NodeId,
        d: &Detection,
        now_ms: u64,
        cool_ms: u64,
    ) -> Option<&str> {
        self.map
            .get(&key_of(gw, d))
            .filter(|i| now_ms.saturating_sub(i.last_ms) < cool_ms)
            .map(|i| i.alert.id.as_str())
    }

    /// Merges `d` into its attack's alert, or starts one from `fresh` (an alert
    /// made of `d` alone, used when the attack is not going on). `renews`: `d`
    /// renews the alert (a detection the cooldown would have let through as an
    /// alert of its own), counted in `count`; else it only updates the numbers.
    pub(super) fn merge(
        &mut self,
        gw: &NodeId,
        d: &Detection,
        now_ms: u64,
        renews: bool,
        fresh: Option<Alert>,
    ) {
        let key = key_of(gw, d);
        let inc = match fresh {
            Some(alert) => {
                if let Some(old) = self.map.get(&key)
                    && old.dirty
                {
                    self.ended
                        .push((old.alert.clone(), old.published.is_none()));
                }
                let mut targets = BTreeSet::new();
                targets.extend(d.target);
                self.map.insert(
                    key.clone(),
                    Incident {
                        alert,
                        main: d.main,
                        targets,
                        last_ms: now_ms,
                        published: None,
                        updates: 0,
                        dirty: true,
                        urgent: true,
                    },
                );
                self.pending.push(key);
                return;
            }
            None => match self.map.get_mut(&key) {
                Some(i) => i,
                None => return,
            },
        };
        let a = &mut inc.alert;
        a.count = a.count.saturating_add(renews as u32);
        a.at_ms = a.at_ms.max(now_ms);
        inc.last_ms = now_ms;
        if let Some(t) = d.target
            && inc.targets.len() < MAX_TARGETS
        {
            inc.targets.insert(t);
        }
        if d.severity > a.severity || (d.severity == a.severity && d.main >= inc.main) {
            a.severity = d.severity;
            inc.main = d.main;
            a.explanation.rule = d.rule.to_string();
            a.explanation.window_s = d.window_s;
            a.explanation.observed = d.observed.clone();
            a.explanation.thresholds = d.thresholds.clone();
            a.explanation.text = d.text.clone();
            if !d.flows.is_empty() {
                a.flows = d.flows.clone();
            }
        }
        if inc.targets.len() > 1 {
            a.target = None;
            if a.kind != AlertKind::HostSweep {
                a.explanation
                    .observed
                    .insert("targets".to_string(), inc.targets.len() as f64);
            }
        }
        if !inc.dirty {
            inc.dirty = true;
            self.pending.push(key);
        }
    }

    /// Records the verdict issued for the alert `d` merged into (published at once).
    pub(super) fn verdict(&mut self, gw: &NodeId, d: &Detection, verdict_id: &str) {
        if let Some(i) = self.map.get_mut(&key_of(gw, d)) {
            i.alert.verdict_id = Some(verdict_id.to_string());
            i.urgent = true;
            if !i.dirty {
                i.dirty = true;
                self.pending.push(key_of(gw, d));
            }
        }
    }

    /// Publishes every changed alert that is due (see the module docs) into `out`;
    /// returns (new alerts, updates) published.
    fn publish(&mut self, now_ms: u64, cool_ms: u64, out: &mut Output) -> (u64, u64) {
        let (mut new, mut updates) = (0, 0);
        for (mut a, first) in self.ended.drain(..) {
            a.first_seen_ms = Some(a.first_seen_ms.unwrap_or(a.at_ms));
            out.alerts.push(a);
            if first {
                new += 1;
            } else {
                updates += 1;
            }
        }
        let map = &mut self.map;
        self.pending.retain(|k| {
            let Some(i) = map.get_mut(k).filter(|i| i.dirty) else {
                return false;
            };
            let gap = (FIRST_UPDATE_MS << i.updates.saturating_sub(1).min(16)).min(cool_ms.max(1));
            let due = i.urgent
                || i.published.is_none_or(|p| now_ms.saturating_sub(p) >= gap)
                || now_ms.saturating_sub(i.last_ms) >= cool_ms;
            if !due {
                return true;
            }
            if i.published.is_none() {
                new += 1;
            } else {
                updates += 1;
            }
            i.alert.first_seen_ms = Some(i.alert.first_seen_ms.unwrap_or(i.alert.at_ms));
            out.alerts.push(i.alert.clone());
            i.published = Some(now_ms);
            i.updates += 1;
            i.dirty = false;
            i.urgent = false;
            false
        });
        (new, updates)
    }

    /// Forgets attacks quiet for `cool_ms` whose last version was published.
    fn gc(&mut self, now_ms: u64, cool_ms: u64) {
        self.map
            .retain(|_, i| i.dirty || now_ms.saturating_sub(i.last_ms) <= cool_ms);
    }

    pub(super) fn len(&self) -> usize {
        self.map.len()
    }
}

impl Engine {
    /// Publishes the alerts that are due into `out` (end of every engine call).
    pub(super) fn publish_alerts(&mut self, now_ms: u64, out: &mut Output) {
        let cool_ms = (self.cfg.policy.alert_cooldown_s * 1000.0) as u64;
        let (new, updates) = self.incidents.publish(now_ms, cool_ms, out);
        self.counters.alerts += new;
        self.counters.alert_updates += updates;
    }

    pub(super) fn gc_incidents(&mut self, now_ms: u64) {
        let cool_ms = (self.cfg.policy.alert_cooldown_s * 1000.0) as u64;
        self.incidents.gc(now_ms, cool_ms);
        if self.incidents.len() >= rules::MAX_TRACKED {
            tracing::warn!(
                alerts = self.incidents.len(),
                "merged alert table at its bound"
            );
        }
    }
}
