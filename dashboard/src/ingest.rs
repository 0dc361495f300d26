//! Ingestion: a bus message (topic + payload) in, rows in the store, records in
//! the audit log, a live event out to the pages, lines to the Influx export.
//!
//! [`App::ingest`] is the single entry point the MQTT subscriber (topic filter
//! `tad/v1/#`) calls; tests call it directly. The topic decides the payload type
//! (see the table in `tad_wire`, parsed by `tad_wire::topic::TopicKind`); a payload whose gateway/detector/node id
//! differs from the id in its topic is refused, since the broker's ACL vouches for
//! the topic, not for the payload.
//!
//! Verdicts and commands are signed (a JWS by the sender's certificate key,
//! `tad_bus::signing`) and believed only once verified against the bus CA: the
//! signing certificate's identity must equal the topic's sender level
//! (`.../verdicts/<detector>`, `.../commands/<dashboard>`) and, for a verdict, the
//! payload's `detector_id`. A refused one is never stored as a verdict or command:
//! it is counted by reason (`tad_dashboard_refused_total`) and written to the
//! audit log as a `refusal` record naming the claimed sender and why.
//!
//! Gateway state (`.../state` retained snapshots, `.../state/delta` deltas) is
//! what the Blocks page shows: a snapshot replaces the held state, a delta is
//! applied when it follows it (`GatewayState::apply`), and changes (entries
//! added, changed or removed, refusal counters that went up) are audited as
//! `gateway_state` records.
//!
//! Alerts, verdicts, commands, threshold settings and detector settings acks are
//! audited before they are stored, and each only once: a QoS 1 redelivery with a
//! known id is ignored; so is every gateway ack (a redelivery is the same ack:
//! gateway, request id, time and body). Settings schemas and acks are handled by
//! [`crate::settings`].

use std::collections::BTreeMap;

use serde::Serialize;
use tad_bus::signing::Unverified;
use tad_wire::{
    self, Ack, Alert, Command, CountersSnapshot, EnforcedBlock, FlowBatch, GatewayState,
    GatewayStateDelta, Message, NodeStatus, RefusalCounts, RefusalReason, ThresholdSettings,
    TrustUpdate, Verdict, now_ms, state::ProtectedService, topic::TopicKind,
};

use crate::{
    app::{App, LiveEvent},
    audit::{AuditError, RecordKind},
    influx,
    metrics::inc,
    store::{AlertView, DeltaOutcome, SeriesPoint, StoreError, alert_is_newer},
};

/// Errors ingesting one message. None of them stops the subscriber.
#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    #[error("topic {topic} is not part of the tad/v1 scheme")]
    UnknownTopic { topic: String },
    #[error("topic {topic}: {source}")]
    Decode {
        topic: String,
        #[source]
        source: tad_wire::WireError,
    },
    #[error("topic {topic} names {in_topic}, but the payload says {in_payload}")]
    IdMismatch {
        topic: String,
        in_topic: String,
        in_payload: String,
    },
    /// An alert id already stored for another detector (merged alerts are
    /// updated only by the detector that raised them).
    #[error("topic {topic}: alert {id} was raised by {owner}, not by {sender}")]
    AlertOwner {
        topic: String,
        id: String,
        owner: String,
        sender: String,
    },
    /// A verdict or command whose signature or identity does not hold; counted
    /// and audited, not stored.
    #[error("topic {topic}: {kind} refused ({reason:?}): {why}")]
    Refused {
        topic: String,
        /// `verdict` or `command`.
        kind: &'static str,
        reason: RefusalReason,
        why: String,
    },
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Audit(#[from] AuditError),
}

/// What a message was, once ingested.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ingested {
    Stored(&'static str),
    /// A redelivered alert, verdict, command or settings already stored, or a
    /// state delta already applied.
    Duplicate(&'static str),
    /// A topic the dashboard does not store (e.g. its own status echo), or a
    /// state delta that does not follow the held state (the next snapshot will).
    Ignored,
}

/// The audit record of a refused verdict or command.
#[derive(Serialize)]
struct RefusalRecord<'a> {
    kind: &'static str,
    topic: &'a str,
    gateway_id: &'a str,
    /// The sender the topic names (its identity level).
    claimed_sender: &'a str,
    /// The signing certificate's CN as written (unverified), if any.
    claimed_signer: Option<String>,
    /// The id of the message, if its payload could be read at all.
    message_id: Option<String>,
    reason: RefusalReason,
    error: &'a str,
}

/// A block entry as audited (no hit counter: it changes all the time).
#[derive(Serialize)]
struct EntryRecord<'a> {
    prefix: String,
    origin: tad_wire::BlockOrigin,
    reason: tad_wire::BlockReason,
    #[serde(skip_serializing_if = "Option::is_none")]
    rule: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    by: Option<&'a str>,
    expires_at_ms: Option<u64>,
}

impl<'a> From<&'a EnforcedBlock> for EntryRecord<'a> {
    fn from(b: &'a EnforcedBlock) -> Self {
        EntryRecord {
            prefix: b.prefix.to_string(),
            origin: b.origin,
            reason: b.reason,
            rule: b.rule.as_deref(),
            by: b.by.as_deref(),
            expires_at_ms: b.expires_at_ms,
        }
    }
}

/// Whether two entries differ in anything but their hit counter.
fn entry_changed(a: &EnforcedBlock, b: &EnforcedBlock) -> bool {
    (
        a.origin,
        a.reason,
        &a.rule,
        &a.by,
        a.created_ms,
        a.expires_at_ms,
    ) != (
        b.origin,
        b.reason,
        &b.rule,
        &b.by,
        b.created_ms,
        b.expires_at_ms,
    )
}

/// Refusal counters that went up from `before` to `after`: reason → increase.
fn refusal_increases(
    before: &RefusalCounts,
    after: &RefusalCounts,
) -> BTreeMap<RefusalReason, u64> {
    after
        .iter()
        .filter_map(|(r, n)| {
            let was = before.get(r).copied().unwrap_or(0);
            (*n > was).then(|| (*r, n - was))
        })
        .collect()
}

/// A protected service switched on (or changed) in an audited state change.
#[derive(Serialize)]
struct ProtectionRecord<'a> {
    service: String,
    origin: tad_wire::BlockOrigin,
    rule: Option<&'a str>,
    by: Option<&'a str>,
    expires_at_ms: Option<u64>,
}

/// The SYN-authentication protections switched on or changed (expiry, origin,
/// rule) and the services switched off between two states. Counters alone are
/// not news.
fn protection_changes<'a>(
    before: &[ProtectedService],
    after: &'a [ProtectedService],
) -> (Vec<ProtectionRecord<'a>>, Vec<String>) {
    let same_service =
        |a: &ProtectedService, b: &ProtectedService| a.addr == b.addr && a.port == b.port;
    let on = after
        .iter()
        .filter(|p| {
            before
                .iter()
                .find(|o| same_service(o, p))
                .is_none_or(|o| !o.same_but_counters(p))
        })
        .map(|p| ProtectionRecord {
            service: p.service(),
            origin: p.origin,
            rule: p.rule.as_deref(),
            by: p.by.as_deref(),
            expires_at_ms: p.expires_at_ms,
        })
        .collect();
    let off = before
        .iter()
        .filter(|o| !after.iter().any(|p| same_service(o, p)))
        .map(ProtectedService::service)
        .collect();
    (on, off)
}

impl App {
    /// Ingests one bus message. Errors are counted in the metrics and returned;
    /// the caller logs them and goes on.
    pub fn ingest(&self, topic: &str, payload: &[u8]) -> Result<Ingested, IngestError> {
        let res = self.ingest_inner(topic, payload);
        match &res {
            Ok(Ingested::Stored(kind) | Ingested::Duplicate(kind)) => self.metrics.message(kind),
            Ok(Ingested::Ignored) => {}
            Err(IngestError::UnknownTopic { .. }) => self.metrics.message("unknown"),
            Err(IngestError::Decode { .. }) => inc(&self.metrics.decode_errors),
            Err(IngestError::IdMismatch { .. } | IngestError::AlertOwner { .. }) => {
                inc(&self.metrics.topic_mismatches)
            }
            Err(IngestError::Refused { kind, reason, .. }) => self.metrics.refused(kind, *reason),
            Err(IngestError::Store(_)) => inc(&self.metrics.store_errors),
            Err(IngestError::Audit(_)) => {}
        }
        res
    }

    fn ingest_inner(&self, topic: &str, payload: &[u8]) -> Result<Ingested, IngestError> {
        // IoT device topics (issue 17): `crate::devices`.
        if let Some(k) = tad_wire::devices::DeviceTopicKind::parse(topic) {
            return self.ingest_device(topic, k, payload);
        }
        let t = TopicKind::parse(topic).ok_or_else(|| IngestError::UnknownTopic {
            topic: topic.to_owned(),
        })?;
        match &t {
            TopicKind::Counters { gateway: gw } => {
                let s: CountersSnapshot = decode(topic, payload)?;
                same(topic, gw, &s.gateway_id)?;
                self.on_counters(&s)?;
                Ok(Ingested::Stored("counters"))
            }
            // Kernel evidence is for the detectors; the dashboard shows its outcome
            // (alerts, provisional quarantines in the gateway state).
            TopicKind::Evidence { .. } => Ok(Ingested::Ignored),
            TopicKind::Flows { gateway: gw, .. } => {
                let b: FlowBatch = decode(topic, payload)?;
                same(topic, gw, &b.gateway_id)?;
                self.store.insert_flows(&b, now_ms())?;
                Ok(Ingested::Stored("flows"))
            }
            TopicKind::GatewayStatus { gateway: id }
            | TopicKind::DetectorStatus { detector: id }
            | TopicKind::DashboardStatus { dashboard: id } => {
                let s: NodeStatus = decode(topic, payload)?;
                same(topic, id, &s.node_id)?;
                self.store.upsert_status(&s)?;
                tracing::info!(node = %s.node_id, online = s.online, "node status");
                self.emit(LiveEvent::Status(s));
                Ok(Ingested::Stored("status"))
            }
            TopicKind::Acks { gateway: gw } => {
                let a: Ack = decode(topic, payload)?;
                same(topic, gw, &a.gateway_id)?;
                if self.store.has_ack(&a)? {
                    return Ok(Ingested::Duplicate("ack"));
                }
                // Every ack is audited (gateway, request id, outcome, error).
                self.audit(RecordKind::Ack, &a)?;
                self.store.insert_ack(&a)?;
                self.emit(LiveEvent::Blocks);
                Ok(Ingested::Stored("ack"))
            }
            TopicKind::Verdicts {
                gateway: gw,
                detector: det,
            } => {
                let v: Verdict =
                    self.verified(topic, "verdict", gw, det, payload, |v: &Verdict| {
                        Some(v.detector_id.to_string())
                    })?;
                if self.store.has_verdict(&v.id)? {
                    return Ok(Ingested::Duplicate("verdict"));
                }
                let hash = self.audit(
                    RecordKind::Verdict,
                    &serde_json::json!({
                        "gateway_id": gw, "signed_by": det, "verdict": &v,
                    }),
                )?;
                self.store.insert_verdict(gw, &v, &hash)?;
                Ok(Ingested::Stored("verdict"))
            }
            TopicKind::Commands {
                gateway: gw,
                dashboard: dash,
            } => {
                let c: Command = self.verified(topic, "command", gw, dash, payload, |_| None)?;
                if self.store.has_command(&c.id)? {
                    // Our own command coming back from the broker.
                    return Ok(Ingested::Duplicate("command"));
                }
                self.record_command(gw, &c)?;
                Ok(Ingested::Stored("command"))
            }
            TopicKind::GatewayState { gateway: gw } => {
                let s: GatewayState = decode(topic, payload)?;
                same(topic, gw, &s.gateway_id)?;
                let before = self.store.put_gateway_state(&s, now_ms())?;
                self.audit_snapshot(before.as_ref(), &s)?;
                self.emit(LiveEvent::Blocks);
                Ok(Ingested::Stored("state"))
            }
            TopicKind::GatewayStateDelta { gateway: gw } => {
                let d: GatewayStateDelta = decode(topic, payload)?;
                same(topic, gw, &d.gateway_id)?;
                match self.store.apply_gateway_delta(&d, now_ms())? {
                    DeltaOutcome::Applied {
                        refusals_before,
                        protected_before,
                    } => {
                        self.audit_delta(&d, &refusals_before, &protected_before)?;
                        self.emit(LiveEvent::Blocks);
                        Ok(Ingested::Stored("state_delta"))
                    }
                    DeltaOutcome::Old => Ok(Ingested::Duplicate("state_delta")),
                    DeltaOutcome::Gap { held_rev } => {
                        tracing::info!(gateway = %gw, held_rev = ?held_rev, delta_rev = d.rev,
                            "state delta does not follow the held state; waiting for a snapshot");
                        Ok(Ingested::Ignored)
                    }
                }
            }
            // Detector settings: `crate::settings`.
            TopicKind::SettingsSchema { detector: det } => {
                self.on_settings_schema(topic, det, payload)
            }
            TopicKind::SettingsAck { detector: det } => self.on_settings_ack(topic, det, payload),
            TopicKind::Alerts { detector: det } => {
                let a: Alert = decode(topic, payload)?;
                same(topic, det, &a.detector_id)?;
                // A merged alert is published again under its id while the attack
                // goes on: a later version replaces the stored one (and is audited);
                // anything else with a known id is a redelivery.
                let update = match self.store.alert(&a.id)? {
                    Some(old) if old.detector_id != a.detector_id => {
                        return Err(IngestError::AlertOwner {
                            topic: topic.to_owned(),
                            id: a.id,
                            owner: old.detector_id.to_string(),
                            sender: a.detector_id.to_string(),
                        });
                    }
                    Some(old) if !alert_is_newer(&a, &old) => {
                        return Ok(Ingested::Duplicate("alert"));
                    }
                    Some(_) => true,
                    None => false,
                };
                let hash = self.audit(RecordKind::Alert, &a)?;
                self.store.insert_alert(&a, &hash)?;
                tracing::info!(alert = %a.id, kind = ?a.kind, severity = ?a.severity,
                    source = ?a.source, count = a.count, update, audit_hash = %hash, "alert");
                if let Some(sink) = &self.influx {
                    sink.send(vec![influx::alert_line(&a)]);
                }
                self.emit(LiveEvent::Alert(Box::new(AlertView {
                    alert: a,
                    audit_hash: hash,
                })));
                Ok(Ingested::Stored("alert"))
            }
            TopicKind::Trust { detector: det } => {
                let t: TrustUpdate = decode(topic, payload)?;
                same(topic, det, &t.detector_id)?;
                self.store.upsert_trust(&t)?;
                if let Some(sink) = &self.influx {
                    sink.send(vec![influx::trust_line(&t)]);
                }
                self.emit(LiveEvent::Trust(t));
                Ok(Ingested::Stored("trust"))
            }
            TopicKind::Thresholds => {
                let t: ThresholdSettings = decode(topic, payload)?;
                let _changing = crate::settings::changing_thresholds();
                // An echo of a set recorded here before (this dashboard's own
                // publish, heard back after a newer one was recorded) or a set
                // issued before the one in force is stale: the detectors hear
                // the broker's order, whose last word is the newer set.
                let stale = self.store.thresholds_recorded(&t.id)?
                    || self
                        .store
                        .thresholds()?
                        .is_some_and(|cur| t.issued_at_ms < cur.issued_at_ms);
                if stale {
                    return Ok(Ingested::Duplicate("thresholds"));
                }
                self.record_thresholds(&t, "bus")?;
                Ok(Ingested::Stored("thresholds"))
            }
        }
    }

    /// Verifies a signed verdict or command (see the module docs): the signature
    /// against the bus CA, the signer's identity against the topic's `sender`
    /// level and against the id the payload names (`named`, if it names one). A
    /// refusal is audited and returned as [`IngestError::Refused`].
    fn verified<M: Message>(
        &self,
        topic: &str,
        kind: &'static str,
        gateway: &str,
        sender: &str,
        payload: &[u8],
        named: impl Fn(&M) -> Option<String>,
    ) -> Result<M, IngestError> {
        let checked = match &self.keys {
            None => Err((
                RefusalReason::BadSignature,
                "no bus CA configured to verify signatures".to_owned(),
            )),
            Some(k) => k
                .verifier
                .verify::<M>(payload)
                .map_err(|e| (e.refusal(), e.to_string())),
        }
        .and_then(|signed| {
            if signed.signer.as_str() != sender {
                return Err((
                    RefusalReason::IdentityMismatch,
                    format!(
                        "signed by {}, but the topic names {sender}",
                        signed.signer.as_str()
                    ),
                ));
            }
            if let Some(n) = named(&signed.message)
                && n != sender
            {
                return Err((
                    RefusalReason::IdentityMismatch,
                    format!("signed by {sender}, but the payload names {n}"),
                ));
            }
            Ok(signed.message)
        });
        let (reason, why) = match checked {
            Ok(m) => return Ok(m),
            Err(e) => e,
        };
        let unverified = Unverified::<M>::parse(payload).ok();
        let message_id = unverified.as_ref().and_then(|u| {
            serde_json::to_value(&u.message)
                .ok()
                .and_then(|v| v.get("id")?.as_str().map(str::to_owned))
        });
        let hash = self.audit(
            RecordKind::Refusal,
            &RefusalRecord {
                kind,
                topic,
                gateway_id: gateway,
                claimed_sender: sender,
                claimed_signer: unverified.and_then(|u| u.claimed_signer),
                message_id,
                reason,
                error: &why,
            },
        )?;
        // Logged (rate-limited) by the caller; here only the audit link.
        tracing::debug!(topic, kind, claimed_sender = sender, ?reason, error = %why,
            audit_hash = %hash, "signed message refused");
        Err(IngestError::Refused {
            topic: topic.to_owned(),
            kind,
            reason,
            why,
        })
    }

    /// Audits what a snapshot changed against the state held before it (all of
    /// it for a gateway's first snapshot); nothing when only hit counters moved.
    fn audit_snapshot(
        &self,
        before: Option<&GatewayState>,
        s: &GatewayState,
    ) -> Result<(), IngestError> {
        let old: &[EnforcedBlock] = before.map_or(&[], |b| &b.blocks);
        let upserted: Vec<EntryRecord<'_>> = s
            .blocks
            .iter()
            .filter(|b| {
                old.iter()
                    .find(|o| o.prefix == b.prefix)
                    .is_none_or(|o| entry_changed(o, b))
            })
            .map(EntryRecord::from)
            .collect();
        let removed: Vec<String> = old
            .iter()
            .filter(|o| !s.blocks.iter().any(|b| b.prefix == o.prefix))
            .map(|o| o.prefix.to_string())
            .collect();
        let empty = RefusalCounts::new();
        // A restarted gateway counts from zero again: only increases are news.
        let increases = refusal_increases(before.map_or(&empty, |b| &b.refusals), &s.refusals);
        let (on, off) = protection_changes(before.map_or(&[], |b| &b.protected), &s.protected);
        if upserted.is_empty()
            && removed.is_empty()
            && increases.is_empty()
            && on.is_empty()
            && off.is_empty()
        {
            return Ok(());
        }
        self.audit(
            RecordKind::GatewayState,
            &serde_json::json!({
                "gateway_id": s.gateway_id, "via": "snapshot", "rev": s.rev, "at_ms": s.at_ms,
                "upserted": upserted, "removed": removed,
                "refusals_increased": increases,
                "protected_on": on, "protected_off": off,
            }),
        )?;
        Ok(())
    }

    /// Audits an applied delta: its entries added/changed (with origin) and
    /// removed (with cause), and refusal counters that went up.
    fn audit_delta(
        &self,
        d: &GatewayStateDelta,
        refusals_before: &RefusalCounts,
        protected_before: &[ProtectedService],
    ) -> Result<(), IngestError> {
        let increases = d
            .refusals
            .as_ref()
            .map(|r| refusal_increases(refusals_before, r))
            .unwrap_or_default();
        let (on, off) = d
            .protected
            .as_ref()
            .map(|p| protection_changes(protected_before, p))
            .unwrap_or_default();
        if d.upserted.is_empty()
            && d.removed.is_empty()
            && increases.is_empty()
            && on.is_empty()
            && off.is_empty()
        {
            return Ok(());
        }
        let upserted: Vec<EntryRecord<'_>> = d.upserted.iter().map(EntryRecord::from).collect();
        self.audit(
            RecordKind::GatewayState,
            &serde_json::json!({
                "gateway_id": d.gateway_id, "via": "delta", "rev": d.rev, "at_ms": d.at_ms,
                "upserted": upserted, "removed": d.removed,
                "refusals_increased": increases,
                "protected_on": on, "protected_off": off,
            }),
        )?;
        Ok(())
    }

    /// Audits and stores an operator command (issued here or by another
    /// dashboard); returns the audit hash.
    pub fn record_command(&self, gw: &str, c: &Command) -> Result<String, IngestError> {
        let hash = self.audit(
            RecordKind::Command,
            &serde_json::json!({
                "gateway_id": gw, "command": c,
            }),
        )?;
        self.store.insert_command(gw, c, &hash)?;
        self.emit(LiveEvent::Blocks);
        Ok(hash)
    }

    fn on_counters(&self, s: &CountersSnapshot) -> Result<(), IngestError> {
        use fw_common::counters::{Reason, Verdict as V};
        let prev_ms = self.store.last_sample_ms(&s.gateway_id)?;
        // Interval since the previous snapshot; the gateway publishes every
        // second, so that is assumed for the first one (or after a clock step).
        let interval_s = prev_ms
            .filter(|p| *p < s.at_ms)
            .map_or(1.0, |p| (s.at_ms - p) as f64 / 1000.0);
        let mut p = SeriesPoint {
            at_ms: s.at_ms,
            gateway_id: s.gateway_id.to_string(),
            flows_per_s: s.flows_exported as f64 / interval_s,
            alerts_per_min: self.store.alerts_between(
                &s.gateway_id,
                s.at_ms.saturating_sub(60_000),
                s.at_ms,
            )? as f64,
            ..SeriesPoint::default()
        };
        for c in &s.counters {
            match (c.verdict, c.reason) {
                (V::Pass, _) => p.pass_pps += c.pps,
                // SYNs that never reached their server: the per-source SYN limit,
                // a protected service's fallback rate, a SYN-authentication challenge.
                (V::Drop, Reason::SynRate | Reason::VictimRate) | (V::Tx, _) => {
                    p.drop_syn_rate_pps += c.pps
                }
                (V::Drop, Reason::PktRate) => p.drop_pkt_rate_pps += c.pps,
                (V::Drop, _) => p.drop_blocklist_pps += c.pps,
                (V::WouldDrop, _) => p.would_drop_pps += c.pps,
            }
        }
        self.store.insert_counters(s, &p)?;
        if let Some(sink) = &self.influx {
            sink.send(influx::counters_lines(s, &p));
        }
        self.emit(LiveEvent::Sample(p));
        Ok(())
    }
}

/// The node id in a topic level and the one in its payload must be the same.
///
/// # Errors
/// [`IngestError::IdMismatch`] naming the topic and both ids.
pub(crate) fn same(topic: &str, in_topic: &str, in_payload: &str) -> Result<(), IngestError> {
    if in_topic == in_payload {
        Ok(())
    } else {
        Err(IngestError::IdMismatch {
            topic: topic.to_owned(),
            in_topic: in_topic.to_owned(),
            in_payload: in_payload.to_owned(),
        })
    }
}

/// Decodes a payload received on `topic`.
///
/// # Errors
/// [`IngestError::Decode`] naming the topic.
pub(crate) fn decode<M: Message>(topic: &str, payload: &[u8]) -> Result<M, IngestError> {
    tad_wire::decode(payload).map_err(|source| IngestError::Decode {
        topic: topic.to_owned(),
        source,
    })
}
