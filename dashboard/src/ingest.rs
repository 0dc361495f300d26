//! Ingestion: a bus message (topic + payload) in, rows in the store, records in
//! the audit log, a live event out to the pages, lines to the Influx export.
//!
//! [`App::ingest`] is the single entry point the MQTT subscriber (topic filter
//! `tad/v1/#`) calls; tests call it directly. The topic decides the payload type
//! (see the table in `tad_wire`, parsed by `tad_wire::topic::TopicKind`); a payload whose gateway/detector/node id
//! differs from the id in its topic is refused, since the broker's ACL vouches for
//! the topic, not for the payload.
//!
//! Alerts, verdicts, commands and threshold settings are audited before they are
//! stored, and each only once: a QoS 1 redelivery with a known id is ignored.

use tad_wire::{
    self, Ack, Alert, Command, CountersSnapshot, FlowBatch, Message, NodeStatus, ThresholdSettings,
    TrustUpdate, Verdict, now_ms, topic::TopicKind,
};

use crate::{
    app::{App, LiveEvent},
    audit::{AuditError, RecordKind},
    influx,
    metrics::inc,
    store::{AlertView, SeriesPoint, StoreError},
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
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Audit(#[from] AuditError),
}

/// What a message was, once ingested.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ingested {
    Stored(&'static str),
    /// A redelivered alert, verdict, command or settings already stored.
    Duplicate(&'static str),
    /// A topic the dashboard does not store (e.g. its own status echo).
    Ignored,
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
            Err(IngestError::IdMismatch { .. }) => inc(&self.metrics.topic_mismatches),
            Err(IngestError::Store(_)) => inc(&self.metrics.store_errors),
            Err(IngestError::Audit(_)) => {}
        }
        res
    }

    fn ingest_inner(&self, topic: &str, payload: &[u8]) -> Result<Ingested, IngestError> {
        let t = TopicKind::parse(topic).ok_or_else(|| IngestError::UnknownTopic {
            topic: topic.to_owned(),
        })?;
        match &t {
            TopicKind::Counters { gateway: gw } => {
                let s: CountersSnapshot = self.decode(topic, payload)?;
                self.same(topic, gw, &s.gateway_id)?;
                self.on_counters(&s)?;
                Ok(Ingested::Stored("counters"))
            }
            TopicKind::Flows { gateway: gw, .. } => {
                let b: FlowBatch = self.decode(topic, payload)?;
                self.same(topic, gw, &b.gateway_id)?;
                self.store.insert_flows(&b, now_ms())?;
                Ok(Ingested::Stored("flows"))
            }
            TopicKind::GatewayStatus { gateway: id }
            | TopicKind::DetectorStatus { detector: id }
            | TopicKind::DashboardStatus { dashboard: id } => {
                let s: NodeStatus = self.decode(topic, payload)?;
                self.same(topic, id, &s.node_id)?;
                self.store.upsert_status(&s)?;
                tracing::info!(node = %s.node_id, online = s.online, "node status");
                self.emit(LiveEvent::Status(s));
                Ok(Ingested::Stored("status"))
            }
            TopicKind::Acks { gateway: gw } => {
                let a: Ack = self.decode(topic, payload)?;
                self.same(topic, gw, &a.gateway_id)?;
                self.store.insert_ack(&a)?;
                self.emit(LiveEvent::Blocks);
                Ok(Ingested::Stored("ack"))
            }
            TopicKind::Verdicts { gateway: gw } => {
                let v: Verdict = self.decode(topic, payload)?;
                if self.store.has_verdict(&v.id)? {
                    return Ok(Ingested::Duplicate("verdict"));
                }
                let hash = self.audit(
                    RecordKind::Verdict,
                    &serde_json::json!({
                        "gateway_id": gw, "verdict": &v,
                    }),
                )?;
                self.store.insert_verdict(gw, &v, &hash)?;
                self.emit(LiveEvent::Blocks);
                Ok(Ingested::Stored("verdict"))
            }
            TopicKind::Commands { gateway: gw } => {
                let c: Command = self.decode(topic, payload)?;
                if self.store.has_command(&c.id)? {
                    // Our own command coming back from the broker.
                    return Ok(Ingested::Duplicate("command"));
                }
                self.record_command(gw, &c)?;
                Ok(Ingested::Stored("command"))
            }
            TopicKind::Alerts { detector: det } => {
                let a: Alert = self.decode(topic, payload)?;
                self.same(topic, det, &a.detector_id)?;
                if self.store.has_alert(&a.id)? {
                    return Ok(Ingested::Duplicate("alert"));
                }
                let hash = self.audit(RecordKind::Alert, &a)?;
                self.store.insert_alert(&a, &hash)?;
                tracing::info!(alert = %a.id, kind = ?a.kind, severity = ?a.severity,
                    source = ?a.source, audit_hash = %hash, "alert");
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
                let t: TrustUpdate = self.decode(topic, payload)?;
                self.same(topic, det, &t.detector_id)?;
                self.store.upsert_trust(&t)?;
                if let Some(sink) = &self.influx {
                    sink.send(vec![influx::trust_line(&t)]);
                }
                self.emit(LiveEvent::Trust(t));
                Ok(Ingested::Stored("trust"))
            }
            TopicKind::Thresholds => {
                let t: ThresholdSettings = self.decode(topic, payload)?;
                if self.store.thresholds()?.is_some_and(|cur| cur.id == t.id) {
                    return Ok(Ingested::Duplicate("thresholds"));
                }
                self.audit(RecordKind::Thresholds, &t)?;
                self.store.set_thresholds(&t)?;
                Ok(Ingested::Stored("thresholds"))
            }
        }
    }

    fn decode<M: Message>(&self, topic: &str, payload: &[u8]) -> Result<M, IngestError> {
        tad_wire::decode(payload).map_err(|source| IngestError::Decode {
            topic: topic.to_owned(),
            source,
        })
    }

    fn same(&self, topic: &str, in_topic: &str, in_payload: &str) -> Result<(), IngestError> {
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
                (V::Drop, Reason::SynRate) => p.drop_syn_rate_pps += c.pps,
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
