//! The incoming side: what a subscription can decode ([`Inbound`]: every
//! `tad_wire::Message`, [`AnyMessage`] by topic, [`RawPayload`] undecoded), the
//! per-subscription bounded queues, routing of each incoming publish to every
//! matching filter, and [`Subscription`], which decodes on the consumer side and
//! drops, counts and (rate-limited) logs malformed payloads.

use std::{
    fmt,
    marker::PhantomData,
    sync::{Arc, atomic::Ordering},
    time::{Duration, Instant},
};

use bytes::Bytes;
use rumqttc::v5::mqttbytes::{QoS, v5::Publish};
use tad_wire::{
    self, Ack, Alert, Command, CountersSnapshot, FlowBatch, GatewayState, GatewayStateDelta,
    Message, NodeStatus, SettingsAck, SettingsSchema, ThresholdSettings, TrustUpdate, Verdict,
    WireError,
    topic::{TopicKind, topic_matches},
};
use tokio::sync::mpsc;

use super::Shared;
#[cfg(doc)]
use super::{BusClient, BusConfig, BusMetrics};
use crate::signing::Unverified;

/// A payload type a subscription can decode: every `tad_wire::Message`,
/// [`AnyMessage`] (picks the type from the topic) and [`RawPayload`] (no decoding).
pub trait Inbound: Sized + Send + 'static {
    /// Decodes the payload received on `topic`.
    fn decode_from(topic: &str, payload: &[u8]) -> Result<Self, WireError>;
}

impl<M: Message + Send + 'static> Inbound for M {
    fn decode_from(_topic: &str, payload: &[u8]) -> Result<Self, WireError> {
        tad_wire::decode(payload)
    }
}

/// A payload taken as it arrived, bytes undecoded: for consumers that decode it
/// themselves so they can count (and, where possible, answer) malformed messages
/// (the gateway's enforcer on verdicts and commands, the dashboard's ingest on
/// `tad/v1/#`). Never counted as malformed by the client.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RawPayload(pub Vec<u8>);

impl Inbound for RawPayload {
    fn decode_from(_topic: &str, payload: &[u8]) -> Result<Self, WireError> {
        Ok(RawPayload(payload.to_vec()))
    }
}

/// Any message of the topic scheme, decoded according to its topic
/// ([`TopicKind`]); for subscribers of several kinds at once (the dashboard on
/// `tad/v1/#`).
#[derive(Clone, Debug, PartialEq)]
pub enum AnyMessage {
    Flows(FlowBatch),
    Evidence(tad_wire::EvidenceBatch),
    Counters(CountersSnapshot),
    Status(NodeStatus),
    Ack(Ack),
    /// Signed: verify before believing it.
    Verdict(Unverified<Verdict>),
    /// Signed: verify before believing it.
    Command(Unverified<Command>),
    GatewayState(GatewayState),
    GatewayStateDelta(GatewayStateDelta),
    SettingsSchema(SettingsSchema),
    SettingsAck(SettingsAck),
    Alert(Alert),
    Trust(TrustUpdate),
    Thresholds(ThresholdSettings),
}

impl Inbound for AnyMessage {
    fn decode_from(topic: &str, payload: &[u8]) -> Result<Self, WireError> {
        let Some(kind) = TopicKind::parse(topic) else {
            return Err(WireError::Invalid {
                kind: "message",
                what: format!("topic {topic:?} is not part of the tad/v1 scheme"),
            });
        };
        Ok(match kind {
            TopicKind::Flows { .. } => AnyMessage::Flows(tad_wire::decode(payload)?),
            TopicKind::Evidence { .. } => AnyMessage::Evidence(tad_wire::decode(payload)?),
            TopicKind::Counters { .. } => AnyMessage::Counters(tad_wire::decode(payload)?),
            TopicKind::GatewayStatus { .. }
            | TopicKind::DetectorStatus { .. }
            | TopicKind::DashboardStatus { .. } => AnyMessage::Status(tad_wire::decode(payload)?),
            TopicKind::Acks { .. } => AnyMessage::Ack(tad_wire::decode(payload)?),
            TopicKind::Verdicts { .. } => AnyMessage::Verdict(Unverified::parse(payload)?),
            TopicKind::Commands { .. } => AnyMessage::Command(Unverified::parse(payload)?),
            TopicKind::GatewayState { .. } => AnyMessage::GatewayState(tad_wire::decode(payload)?),
            TopicKind::GatewayStateDelta { .. } => {
                AnyMessage::GatewayStateDelta(tad_wire::decode(payload)?)
            }
            TopicKind::SettingsSchema { .. } => {
                AnyMessage::SettingsSchema(tad_wire::decode(payload)?)
            }
            TopicKind::SettingsAck { .. } => AnyMessage::SettingsAck(tad_wire::decode(payload)?),
            TopicKind::Alerts { .. } => AnyMessage::Alert(tad_wire::decode(payload)?),
            TopicKind::Trust { .. } => AnyMessage::Trust(tad_wire::decode(payload)?),
            TopicKind::Thresholds => AnyMessage::Thresholds(tad_wire::decode(payload)?),
        })
    }
}

/// A decoded message and where it came from.
#[derive(Clone, Debug, PartialEq)]
pub struct Received<M> {
    /// Concrete topic it was published on.
    pub topic: String,
    /// True when the broker delivered it as the topic's retained message (on
    /// subscribe), false for a live publish.
    pub retained: bool,
    /// MQTT v5 content type the publisher set (`application/json` from this client).
    pub content_type: Option<String>,
    /// The decoded payload.
    pub message: M,
}

/// One incoming message for a subscription, not yet decoded (decoding happens on
/// the consumer side, in [`Subscription::recv`]).
pub(super) struct Delivery {
    topic: String,
    payload: Bytes,
    retained: bool,
    content_type: Option<String>,
}

/// A registered subscription: its filter, QoS, and the sending end of its queue.
pub(super) struct SubEntry {
    pub(super) filter: String,
    pub(super) qos: QoS,
    tx: mpsc::Sender<Delivery>,
}

/// A subscription's stream of decoded messages (see [`BusClient::subscribe`]).
pub struct Subscription<M> {
    filter: String,
    rx: mpsc::Receiver<Delivery>,
    shared: Arc<Shared>,
    last_log: Option<Instant>,
    suppressed: u64,
    _m: PhantomData<fn() -> M>,
}

impl<M> fmt::Debug for Subscription<M> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Subscription")
            .field("filter", &self.filter)
            .finish_non_exhaustive()
    }
}

impl<M: Inbound> Subscription<M> {
    /// The filter this subscription was made with.
    pub fn filter(&self) -> &str {
        &self.filter
    }

    /// The next message that decodes as `M`. Malformed payloads are skipped,
    /// counted and logged (rate-limited). `None` once the client is shut down.
    pub async fn recv(&mut self) -> Option<Received<M>> {
        loop {
            let raw = self.rx.recv().await?;
            if let Some(r) = self.decode(raw) {
                return Some(r);
            }
        }
    }

    /// Like [`recv`](Self::recv) but returns `None` at once when no message is
    /// waiting (malformed ones are skipped and counted as in `recv`).
    pub fn try_recv(&mut self) -> Option<Received<M>> {
        loop {
            let raw = self.rx.try_recv().ok()?;
            if let Some(r) = self.decode(raw) {
                return Some(r);
            }
        }
    }

    fn decode(&mut self, raw: Delivery) -> Option<Received<M>> {
        match M::decode_from(&raw.topic, &raw.payload) {
            Ok(message) => Some(Received {
                topic: raw.topic,
                retained: raw.retained,
                content_type: raw.content_type,
                message,
            }),
            Err(e) => {
                self.malformed(&raw, &e);
                None
            }
        }
    }

    fn malformed(&mut self, raw: &Delivery, e: &WireError) {
        self.shared
            .counters
            .malformed
            .fetch_add(1, Ordering::Relaxed);
        let interval = Duration::from_secs(self.shared.cfg.malformed_log_interval_s);
        let due = self.last_log.is_none_or(|t| t.elapsed() >= interval);
        if due {
            tracing::warn!(
                topic = %raw.topic,
                filter = %self.filter,
                bytes = raw.payload.len(),
                error = %e,
                suppressed_since_last = self.suppressed,
                "malformed payload rejected"
            );
            self.last_log = Some(Instant::now());
            self.suppressed = 0;
        } else {
            self.suppressed += 1;
        }
    }
}

/// Adds a subscription to `filter` (with a queue of `subscription_capacity`
/// messages) to the ones routed to and (re)sent to the broker on connect.
pub(super) fn register<M: Inbound>(
    shared: &Arc<Shared>,
    filter: &str,
    qos: QoS,
) -> Subscription<M> {
    let (tx, rx) = mpsc::channel(shared.cfg.subscription_capacity.max(1));
    shared.subs.lock().unwrap().push(SubEntry {
        filter: filter.to_owned(),
        qos,
        tx,
    });
    Subscription {
        filter: filter.to_owned(),
        rx,
        shared: shared.clone(),
        last_log: None,
        suppressed: 0,
        _m: PhantomData,
    }
}

/// Hands an incoming publish to every matching subscription (waiting while a
/// subscription queue is full).
pub(super) async fn route(s: &Shared, p: Publish) {
    let topic = String::from_utf8_lossy(&p.topic).into_owned();
    let targets: Vec<mpsc::Sender<Delivery>> = {
        let mut subs = s.subs.lock().unwrap();
        subs.retain(|e| !e.tx.is_closed());
        subs.iter()
            .filter(|e| topic_matches(&e.filter, &topic))
            .map(|e| e.tx.clone())
            .collect()
    };
    if targets.is_empty() {
        s.counters.unrouted.fetch_add(1, Ordering::Relaxed);
        tracing::debug!(node = %s.cfg.node_id, %topic, "message matches no subscription");
        return;
    }
    s.counters.received.fetch_add(1, Ordering::Relaxed);
    for tx in targets {
        let raw = Delivery {
            topic: topic.clone(),
            payload: p.payload.clone(),
            retained: p.retain,
            content_type: p.properties.as_ref().and_then(|pr| pr.content_type.clone()),
        };
        match tx.try_send(raw) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(raw)) => {
                s.counters.receive_waits.fetch_add(1, Ordering::Relaxed);
                let _ = tx.send(raw).await;
            }
            Err(mpsc::error::TrySendError::Closed(_)) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use tad_wire::{SCHEMA_VERSION, topic};

    use super::*;

    #[test]
    fn raw_payload_keeps_the_bytes_undecoded() {
        let bytes = b"\xffnot json{";
        let raw =
            RawPayload::decode_from(&topic::verdicts("gateway-1", "detector-1"), bytes).unwrap();
        assert_eq!(raw, RawPayload(bytes.to_vec()));
        assert_eq!(
            RawPayload::decode_from("x", b"").unwrap().0,
            Vec::<u8>::new()
        );
    }

    #[test]
    fn any_message_picks_the_type_from_the_topic() {
        let settings = ThresholdSettings {
            v: SCHEMA_VERSION,
            id: "t-1".into(),
            operator: "ops".into(),
            issued_at_ms: 1,
            values: BTreeMap::from([("score".to_owned(), 0.5)]),
        };
        let payload = tad_wire::encode(&settings);
        assert_eq!(
            AnyMessage::decode_from(&topic::thresholds(), &payload).unwrap(),
            AnyMessage::Thresholds(settings)
        );
        // The same payload on another kind's topic does not decode as that kind.
        assert!(
            AnyMessage::decode_from(&topic::verdicts("gateway-1", "detector-1"), &payload).is_err()
        );
        assert!(AnyMessage::decode_from("elsewhere/thresholds", &payload).is_err());
    }
}
