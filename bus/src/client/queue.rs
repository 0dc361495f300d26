//! The outgoing side: per-message [`PublishOptions`] and [`Overflow`] policy, the
//! bounded outgoing queue ([`BusConfig::queue_capacity`] messages) with its
//! drop-oldest / wait rule, the forwarder task that drains it into rumqttc's
//! request channel, and the client's counters ([`BusMetrics`]).
//!
//! [`BusConfig::queue_capacity`]: super::BusConfig::queue_capacity

use std::sync::{
    Arc,
    atomic::{AtomicU64, Ordering},
};

use bytes::Bytes;
use rumqttc::v5::{
    AsyncClient,
    mqttbytes::{QoS, v5::PublishProperties},
};
use serde::{Deserialize, Serialize};

use super::Shared;
#[cfg(doc)]
use super::{BusClient, BusError};

/// What a publish does when the outgoing queue is full.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Overflow {
    /// Evict the oldest queued `DropOldest` message (or this one, when none is
    /// queued) and count it in [`BusMetrics::dropped`]. For data that a newer
    /// message supersedes (counters, trust, flow batches).
    DropOldest,
    /// Take the place of the oldest queued `DropOldest` message (counted as
    /// dropped); when the queue holds only `Wait` messages, wait until there is
    /// room ([`BusClient::publish`]) or fail with [`BusError::QueueFull`]
    /// ([`BusClient::try_publish`]). For messages that must not be lost (verdicts,
    /// acks, commands, alerts, settings, status).
    Wait,
}

/// How to publish one message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PublishOptions {
    /// MQTT QoS of the publish (this client uses 0 and 1).
    pub qos: QoS,
    /// Keep as the topic's retained message.
    pub retain: bool,
    /// MQTT v5 message expiry interval, seconds: the broker discards the message
    /// if it cannot deliver it within this time (verdicts: stale decisions must not
    /// be applied long after the fact).
    pub message_expiry_s: Option<u32>,
    /// What the publish does when the outgoing queue is full.
    pub overflow: Overflow,
}

impl PublishOptions {
    /// QoS 1, not retained, waits for room when the queue is full.
    pub const fn reliable() -> Self {
        Self {
            qos: QoS::AtLeastOnce,
            retain: false,
            message_expiry_s: None,
            overflow: Overflow::Wait,
        }
    }

    /// QoS 0, drop-oldest when the queue is full (counters, trust updates).
    pub const fn best_effort() -> Self {
        Self {
            qos: QoS::AtMostOnce,
            retain: false,
            message_expiry_s: None,
            overflow: Overflow::DropOldest,
        }
    }

    /// Flow batches: QoS 1 (a detector must see every exported flow while the link
    /// is up), drop-oldest when the queue is full (the gateway counts the loss).
    pub const fn flows() -> Self {
        Self {
            qos: QoS::AtLeastOnce,
            retain: false,
            message_expiry_s: None,
            overflow: Overflow::DropOldest,
        }
    }

    /// Verdicts: QoS 1, waits for room, expires after `expiry_s` seconds.
    pub const fn verdict(expiry_s: u32) -> Self {
        Self {
            message_expiry_s: Some(expiry_s),
            ..Self::reliable()
        }
    }

    /// Retained, QoS 1, waits (threshold settings).
    pub const fn retained() -> Self {
        Self {
            retain: true,
            ..Self::reliable()
        }
    }

    /// The same options with a message expiry of `expiry_s` seconds.
    pub const fn with_expiry(mut self, expiry_s: u32) -> Self {
        self.message_expiry_s = Some(expiry_s);
        self
    }
}

/// Client counters (monotonic since start, except `queued`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BusMetrics {
    /// Messages handed from the outgoing queue to the MQTT connection.
    pub published: u64,
    /// Messages evicted from the full outgoing queue (drop-oldest policy).
    pub dropped: u64,
    /// QoS 1 publishes the broker refused (PUBACK reason >= 0x80, e.g. not
    /// authorized by the ACL).
    pub denied: u64,
    /// Messages received and routed to at least one subscription.
    pub received: u64,
    /// Received payloads that failed to decode (rejected, not delivered).
    pub malformed: u64,
    /// Received messages that matched no local subscription.
    pub unrouted: u64,
    /// Times the receive path waited because a subscription queue was full.
    pub receive_waits: u64,
    /// Successful connections after the first.
    pub reconnects: u64,
    /// Failed connection attempts and dropped connections.
    pub connection_errors: u64,
    /// Messages in the outgoing queue now.
    pub queued: u64,
    /// QoS 1 publishes sent and not yet acknowledged by the broker, now.
    pub unacked: u64,
}

/// The live counters behind [`BusMetrics`] (all but `queued`, which is the queue's
/// length).
#[derive(Default)]
pub(super) struct Counters {
    pub(super) published: AtomicU64,
    pub(super) dropped: AtomicU64,
    pub(super) denied: AtomicU64,
    pub(super) received: AtomicU64,
    pub(super) malformed: AtomicU64,
    pub(super) unrouted: AtomicU64,
    pub(super) receive_waits: AtomicU64,
    pub(super) reconnects: AtomicU64,
    pub(super) connection_errors: AtomicU64,
    pub(super) unacked: AtomicU64,
}

impl Counters {
    /// The counters now, with `queued` messages in the outgoing queue.
    pub(super) fn snapshot(&self, queued: u64) -> BusMetrics {
        let l = |a: &AtomicU64| a.load(Ordering::Relaxed);
        BusMetrics {
            published: l(&self.published),
            dropped: l(&self.dropped),
            denied: l(&self.denied),
            received: l(&self.received),
            malformed: l(&self.malformed),
            unrouted: l(&self.unrouted),
            receive_waits: l(&self.receive_waits),
            reconnects: l(&self.reconnects),
            connection_errors: l(&self.connection_errors),
            queued,
            unacked: l(&self.unacked),
        }
    }
}

/// One message waiting in the outgoing queue.
pub(super) struct OutMsg {
    pub(super) topic: String,
    pub(super) payload: Bytes,
    pub(super) opts: PublishOptions,
    /// MQTT v5 content type: `tad_wire::CONTENT_TYPE`, or
    /// `tad_wire::SIGNED_CONTENT_TYPE` for a JWS.
    pub(super) content_type: &'static str,
}

/// What [`enqueue`] did with a message.
pub(super) enum Enqueue {
    Queued,
    /// Topic and estimated packet size, bytes, of a message over `max_packet_bytes`.
    TooLarge(String, usize),
    /// Queue full of messages that may not be dropped; the message is handed back.
    Full(OutMsg),
    Closed,
}

/// Puts `m` in the queue applying the overflow policy: on a full queue the
/// oldest queued drop-oldest message makes room (for either kind of message);
/// with none queued a drop-oldest message is itself dropped and a wait message
/// is handed back.
pub(super) fn enqueue(s: &Shared, m: OutMsg) -> Enqueue {
    if s.closing.load(Ordering::SeqCst) {
        return Enqueue::Closed;
    }
    // Fixed header, topic, packet id and our properties fit in 256 bytes.
    let bytes = m.payload.len() + m.topic.len() + 256;
    if bytes > s.cfg.max_packet_bytes as usize {
        return Enqueue::TooLarge(m.topic, bytes);
    }
    let cap = s.cfg.queue_capacity;
    {
        let mut q = s.queue.lock().unwrap();
        if q.len() >= cap {
            let victim = q
                .iter()
                .position(|o| o.opts.overflow == Overflow::DropOldest);
            let dropped = match (victim, m.opts.overflow) {
                (Some(i), _) => q.remove(i).map(|o| o.topic),
                (None, Overflow::DropOldest) => Some(m.topic.clone()),
                (None, Overflow::Wait) => return Enqueue::Full(m),
            };
            let n = s.counters.dropped.fetch_add(1, Ordering::Relaxed) + 1;
            if n.is_power_of_two() {
                tracing::warn!(
                    topic = dropped.as_deref().unwrap_or(""),
                    dropped_total = n,
                    capacity = cap,
                    "outgoing queue full: dropped the oldest best-effort message"
                );
            }
            if victim.is_none() {
                return Enqueue::Queued;
            }
        }
        q.push_back(m);
    }
    s.queued.notify_one();
    Enqueue::Queued
}

/// The MQTT v5 publish properties of every message this client sends: payload
/// format UTF-8, the content type (`application/json`, or `application/jose` for a
/// signed message), the message expiry of `opts`.
pub(super) fn properties(opts: &PublishOptions, content_type: &str) -> PublishProperties {
    PublishProperties {
        payload_format_indicator: Some(1),
        message_expiry_interval: opts.message_expiry_s,
        content_type: Some(content_type.into()),
        ..PublishProperties::default()
    }
}

/// Moves messages from our bounded queue into rumqttc's request channel
/// (back-pressure: waits while that channel is full). Ends once closing and empty.
pub(super) async fn forward(s: Arc<Shared>, mqtt: AsyncClient) {
    loop {
        let notified = s.queued.notified();
        let next = s.queue.lock().unwrap().pop_front();
        match next {
            Some(m) => {
                s.room.notify_waiters();
                let qos = m.opts.qos;
                let props = properties(&m.opts, m.content_type);
                if mqtt
                    .publish_with_properties(m.topic, qos, m.opts.retain, m.payload, props)
                    .await
                    .is_err()
                {
                    return; // event loop gone
                }
                s.counters.published.fetch_add(1, Ordering::Relaxed);
            }
            None if s.closing.load(Ordering::SeqCst) => return,
            None => notified.await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::BusConfig;

    fn shared(capacity: usize) -> Shared {
        let cfg = BusConfig {
            node_id: "gateway-1".into(),
            queue_capacity: capacity,
            max_packet_bytes: 4096,
            ..BusConfig::default()
        };
        let (id, role) = cfg.check().unwrap();
        Shared::new(cfg, id, role)
    }

    fn msg(topic: &str, overflow: Overflow) -> OutMsg {
        OutMsg {
            topic: topic.into(),
            payload: Bytes::from_static(b"{}"),
            content_type: tad_wire::CONTENT_TYPE,
            opts: PublishOptions {
                overflow,
                ..PublishOptions::reliable()
            },
        }
    }

    fn queued_topics(s: &Shared) -> Vec<String> {
        s.queue
            .lock()
            .unwrap()
            .iter()
            .map(|m| m.topic.clone())
            .collect()
    }

    #[test]
    fn a_full_queue_evicts_the_oldest_drop_oldest_message() {
        let s = shared(2);
        assert!(matches!(
            enqueue(&s, msg("a", Overflow::Wait)),
            Enqueue::Queued
        ));
        assert!(matches!(
            enqueue(&s, msg("b", Overflow::DropOldest)),
            Enqueue::Queued
        ));
        // A wait message takes the drop-oldest one's place.
        assert!(matches!(
            enqueue(&s, msg("c", Overflow::Wait)),
            Enqueue::Queued
        ));
        assert_eq!(queued_topics(&s), ["a", "c"]);
        assert_eq!(s.counters.dropped.load(Ordering::Relaxed), 1);
        // Only wait messages left: a drop-oldest message is itself dropped ...
        assert!(matches!(
            enqueue(&s, msg("d", Overflow::DropOldest)),
            Enqueue::Queued
        ));
        assert_eq!(queued_topics(&s), ["a", "c"]);
        assert_eq!(s.counters.dropped.load(Ordering::Relaxed), 2);
        // ... and a wait message is handed back.
        match enqueue(&s, msg("e", Overflow::Wait)) {
            Enqueue::Full(back) => assert_eq!(back.topic, "e"),
            _ => panic!("expected the message back"),
        }
        assert_eq!(s.counters.snapshot(2).dropped, 2);
    }

    #[test]
    fn too_large_and_closed_are_refused() {
        let s = shared(4);
        let mut big = msg("big", Overflow::Wait);
        big.payload = Bytes::from(vec![b'x'; 4096]);
        match enqueue(&s, big) {
            Enqueue::TooLarge(topic, bytes) => {
                assert_eq!(topic, "big");
                assert_eq!(bytes, 4096 + 3 + 256);
            }
            _ => panic!("expected TooLarge"),
        }
        s.closing.store(true, Ordering::SeqCst);
        assert!(matches!(
            enqueue(&s, msg("a", Overflow::Wait)),
            Enqueue::Closed
        ));
        assert!(queued_topics(&s).is_empty());
    }

    #[test]
    fn every_publish_carries_the_json_properties() {
        let p = properties(&PublishOptions::verdict(30), tad_wire::CONTENT_TYPE);
        assert_eq!(p.payload_format_indicator, Some(1));
        assert_eq!(p.message_expiry_interval, Some(30));
        assert_eq!(p.content_type.as_deref(), Some(tad_wire::CONTENT_TYPE));
        assert_eq!(
            properties(&PublishOptions::best_effort(), tad_wire::CONTENT_TYPE)
                .message_expiry_interval,
            None
        );
    }
}
