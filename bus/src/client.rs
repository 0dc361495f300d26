//! The bus client used by fw-ctl, detector and dashboard: MQTT v5 over mutual TLS
//! (rumqttc 0.25 `v5` API, rustls with the `ring` provider) to the Mosquitto broker.
//!
//! What it does for every node:
//! - **Identity**: the client certificate's CN is the node id and the broker's
//!   username; the node's role (and so its status topic) follows from the id prefix
//!   ([`crate::broker::role_of`]).
//! - **Status**: on every (re)connect a retained [`NodeStatus`] with `online: true`
//!   is published on the node's status topic; the Last Will is the same message
//!   with `online: false` (retained, QoS 1), so the broker announces a crash or a
//!   lost link. [`BusClient::shutdown`] publishes the offline status itself.
//! - **Sessions**: `clean_start = false` with a session expiry
//!   ([`BusConfig::session_expiry_s`]), so the broker keeps subscriptions and queues
//!   QoS 1 messages while the node is away; unacknowledged QoS 1 publishes are resent
//!   after a reconnect, also when the broker lost the session (it then answers
//!   `session_present = false` and the client resubscribes and resends).
//! - **Reconnect** with exponential backoff from [`BusConfig::reconnect_min_ms`] to
//!   [`BusConfig::reconnect_max_ms`].
//! - **Outgoing queue**: bounded ([`BusConfig::queue_capacity`] messages). When
//!   full, any publish evicts the oldest queued [`Overflow::DropOldest`] message
//!   (best-effort data: counters, trust, flow batches), counted in
//!   [`BusMetrics::dropped`]. With no such message left, a drop-oldest publish is
//!   itself dropped (counted) and an [`Overflow::Wait`] publish (verdicts, acks,
//!   commands, alerts, settings) waits for room (back-pressure) or, with
//!   [`BusClient::try_publish`], fails with [`BusError::QueueFull`].
//! - **Typed payloads**: publish any `tad_wire::Message` (JSON via
//!   `tad_wire::encode`, content type `application/json`, payload format UTF-8);
//!   subscriptions decode with `tad_wire::decode`. A malformed payload is dropped,
//!   counted ([`BusMetrics::malformed`]) and logged at most once per
//!   [`BusConfig::malformed_log_interval_s`] per subscription; the consumer keeps
//!   receiving.
//! - **Incoming queues**: each subscription has a bounded queue
//!   ([`BusConfig::subscription_capacity`]); when it is full the client stops reading
//!   from the broker until the consumer catches up (back-pressure: nothing is
//!   dropped; the broker holds QoS 1 messages), counted in
//!   [`BusMetrics::receive_waits`].
//!
//! Sources: MQTT 5.0 (OASIS, 2019) §3.1.2.11 (session expiry), §3.3.2.3 (message
//! expiry, content type), §3.1.2.5 (will); Mosquitto 2.0 mosquitto.conf(5).

use std::{
    collections::VecDeque,
    fmt,
    marker::PhantomData,
    path::{Path, PathBuf},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use bytes::Bytes;
use rumqttc::{
    Outgoing, TlsConfiguration, Transport,
    v5::{
        AsyncClient, ConnectionError, Event, EventLoop, Incoming, MqttOptions, Request,
        mqttbytes::{
            QoS,
            v5::{
                ConnectReturnCode, Filter, LastWill, LastWillProperties, PubAckReason, Publish,
                PublishProperties, Subscribe,
            },
        },
    },
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject};
use serde::{Deserialize, Serialize};
use tad_wire::{
    self, Ack, Alert, Command, CountersSnapshot, FlowBatch, Message, NodeStatus, Role,
    SCHEMA_VERSION, ThresholdSettings, TrustUpdate, Verdict, WireError, now_ms,
    topic::{TopicKind, topic_matches},
};
use tokio::{
    sync::{Notify, mpsc, watch},
    task::JoinHandle,
};

use crate::broker::role_of;

/// Connection settings of a node; the `[bus]` table of each role's TOML config.
///
/// Unknown keys are an error; every key has a default.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BusConfig {
    /// Node id: the CN of this node's client certificate (`gateway-1`,
    /// `detector-1`, `dashboard`). Its prefix gives the role.
    pub node_id: String,
    /// Broker host name or IP address; must be a SAN of the broker certificate.
    pub host: String,
    /// Broker TLS port.
    pub port: u16,
    /// CA certificate (PEM) the broker certificate must chain to.
    pub ca_file: PathBuf,
    /// This node's client certificate (PEM).
    pub cert_file: PathBuf,
    /// This node's private key (PEM, PKCS#8 or SEC1).
    pub key_file: PathBuf,
    /// MQTT client id; empty = the node id. Must be unique per broker (a second
    /// connection with the same id takes over the session and kicks the first).
    pub client_id: String,
    /// MQTT keep-alive, seconds.
    pub keep_alive_s: u64,
    /// How long the broker keeps this node's session (subscriptions, queued QoS 1
    /// messages) after the connection drops, seconds (MQTT v5 session expiry).
    pub session_expiry_s: u32,
    /// TCP + TLS + CONNECT timeout, seconds.
    pub connect_timeout_s: u64,
    /// First reconnect delay, ms; doubled after each failed attempt.
    pub reconnect_min_ms: u64,
    /// Largest reconnect delay, ms.
    pub reconnect_max_ms: u64,
    /// Outgoing queue capacity, messages.
    pub queue_capacity: usize,
    /// Per-subscription incoming queue capacity, messages.
    pub subscription_capacity: usize,
    /// At most one "malformed payload" warning per subscription per this many
    /// seconds (the others are only counted).
    pub malformed_log_interval_s: u64,
    /// Largest MQTT packet this node sends or accepts, bytes (MQTT v5 Maximum
    /// Packet Size, told to the broker on connect). A publish whose payload does
    /// not fit is refused with [`BusError::TooLarge`]. Flow batches must be sized
    /// below it.
    pub max_packet_bytes: u32,
    /// Software version reported in the node's status.
    pub software_version: String,
}

impl Default for BusConfig {
    fn default() -> Self {
        Self {
            node_id: String::new(),
            host: "127.0.0.1".into(),
            port: 8883,
            ca_file: "certs/out/ca.pem".into(),
            cert_file: PathBuf::new(),
            key_file: PathBuf::new(),
            client_id: String::new(),
            keep_alive_s: 30,
            session_expiry_s: 3600,
            connect_timeout_s: 10,
            reconnect_min_ms: 250,
            reconnect_max_ms: 30_000,
            queue_capacity: 1024,
            subscription_capacity: 1024,
            malformed_log_interval_s: 60,
            max_packet_bytes: 1024 * 1024,
            software_version: env!("CARGO_PKG_VERSION").into(),
        }
    }
}

impl BusConfig {
    /// A config for `node_id` using the files of a `cargo xtask certs` output
    /// directory ([`crate::pki::PkiLayout`]).
    pub fn from_certs_dir(node_id: &str, certs_dir: &Path, host: &str, port: u16) -> Self {
        let l = crate::pki::PkiLayout::new(certs_dir);
        Self {
            node_id: node_id.into(),
            host: host.into(),
            port,
            ca_file: l.ca_cert(),
            cert_file: l.node_cert(node_id),
            key_file: l.node_key(node_id),
            ..Self::default()
        }
    }

    fn client_id(&self) -> &str {
        if self.client_id.is_empty() {
            &self.node_id
        } else {
            &self.client_id
        }
    }
}

/// Errors of the bus client.
#[derive(Debug, thiserror::Error)]
pub enum BusError {
    #[error("bus config: {what}")]
    Config { what: String },
    #[error("cannot read {what} {path}: {why}")]
    TlsFile {
        what: &'static str,
        path: PathBuf,
        why: String,
    },
    #[error("TLS setup: {0}")]
    Tls(#[from] rustls::Error),
    /// The first connection attempt failed (TLS handshake refused, CONNACK refused,
    /// broker unreachable). `reason` is the rumqttc/rustls error text, e.g.
    /// `received fatal alert: UnknownCA`.
    #[error("connection to {broker} refused: {reason}")]
    Refused { broker: String, reason: String },
    #[error("no connection to {broker} within {timeout:?}")]
    ConnectTimeout { broker: String, timeout: Duration },
    #[error("outgoing queue full ({capacity} messages)")]
    QueueFull { capacity: usize },
    #[error("message for {topic} is {bytes} bytes, more than max_packet_bytes {max}")]
    TooLarge {
        topic: String,
        bytes: usize,
        max: u32,
    },
    #[error("the bus client is shut down")]
    Closed,
}

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
    pub qos: QoS,
    /// Keep as the topic's retained message.
    pub retain: bool,
    /// MQTT v5 message expiry interval, seconds: the broker discards the message
    /// if it cannot deliver it within this time (verdicts: stale decisions must not
    /// be applied long after the fact).
    pub message_expiry_s: Option<u32>,
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

    pub const fn with_expiry(mut self, expiry_s: u32) -> Self {
        self.message_expiry_s = Some(expiry_s);
        self
    }
}

/// A payload type a subscription can decode: every `tad_wire::Message`, and
/// [`AnyMessage`] (picks the type from the topic).
pub trait Inbound: Sized + Send + 'static {
    /// Decodes the payload received on `topic`.
    fn decode_from(topic: &str, payload: &[u8]) -> Result<Self, WireError>;
}

impl<M: Message + Send + 'static> Inbound for M {
    fn decode_from(_topic: &str, payload: &[u8]) -> Result<Self, WireError> {
        tad_wire::decode(payload)
    }
}

/// Any message of the topic scheme, decoded according to its topic
/// ([`TopicKind`]); for subscribers of several kinds at once (the dashboard on
/// `tad/v1/#`).
#[derive(Clone, Debug, PartialEq)]
pub enum AnyMessage {
    Flows(FlowBatch),
    Counters(CountersSnapshot),
    Status(NodeStatus),
    Ack(Ack),
    Verdict(Verdict),
    Command(Command),
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
            TopicKind::Counters { .. } => AnyMessage::Counters(tad_wire::decode(payload)?),
            TopicKind::GatewayStatus { .. }
            | TopicKind::DetectorStatus { .. }
            | TopicKind::DashboardStatus { .. } => AnyMessage::Status(tad_wire::decode(payload)?),
            TopicKind::Acks { .. } => AnyMessage::Ack(tad_wire::decode(payload)?),
            TopicKind::Verdicts { .. } => AnyMessage::Verdict(tad_wire::decode(payload)?),
            TopicKind::Commands { .. } => AnyMessage::Command(tad_wire::decode(payload)?),
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
    pub message: M,
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

/// Connection state, observable through [`BusClient::state`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ConnectionState {
    /// Before the first connection.
    Connecting,
    /// Connected; `session_present` as reported by the broker's CONNACK.
    Connected { session_present: bool },
    /// Lost or never established; the client retries after a backoff.
    Disconnected { error: String },
    /// Shut down.
    Closed,
}

#[derive(Default)]
struct Counters {
    published: AtomicU64,
    dropped: AtomicU64,
    denied: AtomicU64,
    received: AtomicU64,
    malformed: AtomicU64,
    unrouted: AtomicU64,
    receive_waits: AtomicU64,
    reconnects: AtomicU64,
    connection_errors: AtomicU64,
    unacked: AtomicU64,
}

enum Enqueue {
    Queued,
    TooLarge(String, usize),
    /// Queue full of messages that may not be dropped; the message is handed back.
    Full(OutMsg),
    Closed,
}

struct OutMsg {
    topic: String,
    payload: Bytes,
    opts: PublishOptions,
}

/// One raw incoming message for a subscription (decoded on the consumer side).
struct Raw {
    topic: String,
    payload: Bytes,
    retained: bool,
    content_type: Option<String>,
}

struct SubEntry {
    filter: String,
    qos: QoS,
    tx: mpsc::Sender<Raw>,
}

struct Shared {
    cfg: BusConfig,
    /// `cfg.node_id`, validated.
    id: tad_wire::NodeId,
    role: Role,
    counters: Counters,
    queue: Mutex<VecDeque<OutMsg>>,
    /// Signalled when a message is queued or on shutdown.
    queued: Notify,
    /// Signalled when room frees up in the queue.
    room: Notify,
    closing: AtomicBool,
    subs: Mutex<Vec<SubEntry>>,
    status: Mutex<NodeStatus>,
    state: watch::Sender<ConnectionState>,
}

impl Shared {
    fn broker(&self) -> String {
        format!("{}:{}", self.cfg.host, self.cfg.port)
    }

    fn status_topic(&self) -> String {
        status_topic(self.role, &self.cfg.node_id)
    }
}

fn status_topic(role: Role, id: &str) -> String {
    match role {
        Role::Gateway => tad_wire::topic::gateway_status(id),
        Role::Detector => tad_wire::topic::detector_status(id),
        Role::Dashboard => tad_wire::topic::dashboard_status(id),
    }
}

/// A client being set up: register subscriptions before the first connection so no
/// message queued by the broker for this node's session is missed.
pub struct BusBuilder {
    shared: Arc<Shared>,
}

impl fmt::Debug for BusBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BusBuilder")
            .field("node_id", &self.shared.cfg.node_id)
            .finish_non_exhaustive()
    }
}

impl BusBuilder {
    /// Registers a subscription to `filter` (MQTT filter, `+`/`#` allowed) whose
    /// messages decode as `M`. It is sent to the broker on connect (and again after
    /// any reconnect where the broker lost the session).
    pub fn subscribe<M: Inbound>(&mut self, filter: &str, qos: QoS) -> Subscription<M> {
        register(&self.shared, filter, qos)
    }

    /// Replaces the status published (retained) on every connect; `node_id`,
    /// `role`, `online` and `at_ms` are filled in by the client.
    pub fn status(&mut self, status: NodeStatus) -> &mut Self {
        *self.shared.status.lock().unwrap() = status;
        self
    }

    /// Starts the client in the background without waiting for a connection (a node
    /// that starts before the broker keeps retrying). Needs a tokio runtime.
    pub fn start(self) -> Result<BusClient, BusError> {
        start(self.shared)
    }

    /// Starts the client and waits for the first successful connection. Fails with
    /// [`BusError::Refused`] on the first failed attempt (bad certificate, refused
    /// CONNECT, unreachable broker) and [`BusError::ConnectTimeout`] after
    /// `connect_timeout_s`; in both cases the client is stopped.
    pub async fn connect(self) -> Result<BusClient, BusError> {
        let client = start(self.shared)?;
        let mut state = client.state();
        let timeout = Duration::from_secs(client.inner.shared.cfg.connect_timeout_s.max(1));
        let broker = client.inner.shared.broker();
        let outcome = tokio::time::timeout(
            timeout + Duration::from_secs(1),
            state.wait_for(|s| !matches!(s, ConnectionState::Connecting)),
        )
        .await;
        let err = match outcome {
            Err(_) => BusError::ConnectTimeout { broker, timeout },
            Ok(Err(_)) => BusError::Closed,
            Ok(Ok(s)) => match &*s {
                ConnectionState::Connected { .. } => return Ok(client),
                ConnectionState::Disconnected { error } => BusError::Refused {
                    broker,
                    reason: error.clone(),
                },
                _ => BusError::Closed,
            },
        };
        client.inner.abort();
        Err(err)
    }
}

/// A subscription's stream of decoded messages (see [`BusClient::subscribe`]).
pub struct Subscription<M> {
    filter: String,
    rx: mpsc::Receiver<Raw>,
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

    fn decode(&mut self, raw: Raw) -> Option<Received<M>> {
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

    fn malformed(&mut self, raw: &Raw, e: &WireError) {
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

fn register<M: Inbound>(shared: &Arc<Shared>, filter: &str, qos: QoS) -> Subscription<M> {
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

struct Inner {
    shared: Arc<Shared>,
    mqtt: AsyncClient,
    forwarder: Mutex<Option<JoinHandle<()>>>,
    driver: Mutex<Option<JoinHandle<()>>>,
}

impl Inner {
    fn abort(&self) {
        self.shared.closing.store(true, Ordering::SeqCst);
        if let Some(h) = self.forwarder.lock().unwrap().take() {
            h.abort();
        }
        if let Some(h) = self.driver.lock().unwrap().take() {
            h.abort();
        }
        self.shared.subs.lock().unwrap().clear();
        self.shared.state.send_replace(ConnectionState::Closed);
    }
}

impl Drop for Inner {
    /// Dropping the last handle without [`BusClient::shutdown`] cuts the connection
    /// like a crash: the broker then publishes the Last Will (offline status).
    fn drop(&mut self) {
        self.abort();
    }
}

/// Handle to a running bus client; cheap to clone, all clones share one connection.
#[derive(Clone)]
pub struct BusClient {
    inner: Arc<Inner>,
}

impl fmt::Debug for BusClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BusClient")
            .field("node_id", &self.inner.shared.cfg.node_id)
            .field("state", &*self.inner.shared.state.borrow())
            .finish_non_exhaustive()
    }
}

impl BusClient {
    /// Validates `cfg` (node id and role, readable certificate files) and returns a
    /// builder. Errors: [`BusError::Config`], [`BusError::TlsFile`].
    pub fn builder(cfg: BusConfig) -> Result<BusBuilder, BusError> {
        let id = tad_wire::NodeId::parse(&cfg.node_id).map_err(|e| BusError::Config {
            what: format!("node_id: {e}"),
        })?;
        let role = role_of(&cfg.node_id).map_err(|e| BusError::Config {
            what: e.to_string(),
        })?;
        if cfg.queue_capacity == 0 || cfg.subscription_capacity == 0 {
            return Err(BusError::Config {
                what: "queue_capacity and subscription_capacity must be at least 1".into(),
            });
        }
        if cfg.reconnect_min_ms == 0 || cfg.reconnect_max_ms < cfg.reconnect_min_ms {
            return Err(BusError::Config {
                what: "need 0 < reconnect_min_ms <= reconnect_max_ms".into(),
            });
        }
        if cfg.max_packet_bytes < 4096 {
            return Err(BusError::Config {
                what: "max_packet_bytes must be at least 4096".into(),
            });
        }
        if cfg.keep_alive_s < 5 {
            return Err(BusError::Config {
                what: "keep_alive_s must be at least 5".into(),
            });
        }
        // Fail early on unreadable files (again read on every connect).
        tls_config(&cfg)?;
        let status = NodeStatus {
            v: SCHEMA_VERSION,
            node_id: id.clone(),
            role,
            online: true,
            at_ms: 0,
            mode: None,
            interfaces: Vec::new(),
            maps: Vec::new(),
            version: cfg.software_version.clone(),
        };
        let (state, _) = watch::channel(ConnectionState::Connecting);
        Ok(BusBuilder {
            shared: Arc::new(Shared {
                id,
                role,
                counters: Counters::default(),
                queue: Mutex::new(VecDeque::with_capacity(cfg.queue_capacity.min(4096))),
                queued: Notify::new(),
                room: Notify::new(),
                closing: AtomicBool::new(false),
                subs: Mutex::new(Vec::new()),
                status: Mutex::new(status),
                state,
                cfg,
            }),
        })
    }

    /// `builder(cfg)?.connect().await`: a client with no subscriptions yet.
    pub async fn connect(cfg: BusConfig) -> Result<BusClient, BusError> {
        Self::builder(cfg)?.connect().await
    }

    /// This node's id.
    pub fn node_id(&self) -> &str {
        &self.inner.shared.cfg.node_id
    }

    /// This node's role (from the id prefix).
    pub fn role(&self) -> Role {
        self.inner.shared.role
    }

    /// Queues `msg` for `topic`. Returns once it is queued (not delivered): waits
    /// for room only with [`Overflow::Wait`]. Errors: [`BusError::Closed`],
    /// [`BusError::TooLarge`] (more than [`BusConfig::max_packet_bytes`]).
    pub async fn publish<M: Message>(
        &self,
        topic: &str,
        msg: &M,
        opts: PublishOptions,
    ) -> Result<(), BusError> {
        self.publish_bytes(topic, Bytes::from(tad_wire::encode(msg)), opts)
            .await
    }

    /// Like [`publish`](Self::publish) but never waits: a full queue is
    /// [`BusError::QueueFull`] for [`Overflow::Wait`].
    pub fn try_publish<M: Message>(
        &self,
        topic: &str,
        msg: &M,
        opts: PublishOptions,
    ) -> Result<(), BusError> {
        let m = OutMsg {
            topic: topic.to_owned(),
            payload: Bytes::from(tad_wire::encode(msg)),
            opts,
        };
        match self.enqueue(m) {
            Enqueue::Queued => Ok(()),
            Enqueue::Full(_) => Err(BusError::QueueFull {
                capacity: self.inner.shared.cfg.queue_capacity,
            }),
            Enqueue::Closed => Err(BusError::Closed),
            Enqueue::TooLarge(topic, bytes) => Err(BusError::TooLarge {
                topic,
                bytes,
                max: self.inner.shared.cfg.max_packet_bytes,
            }),
        }
    }

    /// Publishes an already-encoded payload. Meant for tests (malformed input) and
    /// bridges; nodes use [`publish`](Self::publish).
    pub async fn publish_bytes(
        &self,
        topic: &str,
        payload: impl Into<Bytes>,
        opts: PublishOptions,
    ) -> Result<(), BusError> {
        let mut m = OutMsg {
            topic: topic.to_owned(),
            payload: payload.into(),
            opts,
        };
        loop {
            let room = self.inner.shared.room.notified();
            match self.enqueue(m) {
                Enqueue::Queued => return Ok(()),
                Enqueue::Full(back) => {
                    m = back;
                    room.await;
                }
                Enqueue::Closed => return Err(BusError::Closed),
                Enqueue::TooLarge(topic, bytes) => {
                    return Err(BusError::TooLarge {
                        topic,
                        bytes,
                        max: self.inner.shared.cfg.max_packet_bytes,
                    });
                }
            }
        }
    }

    /// Puts `m` in the queue applying the overflow policy: on a full queue the
    /// oldest queued drop-oldest message makes room (for either kind of message);
    /// with none queued a drop-oldest message is itself dropped and a wait message
    /// is handed back.
    fn enqueue(&self, m: OutMsg) -> Enqueue {
        let s = &self.inner.shared;
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

    /// Subscribes to `filter` after start; messages decode as `M`. Messages that
    /// arrived before this call are not replayed (except retained ones); register
    /// subscriptions on the [`BusBuilder`] to get everything queued for the session.
    pub async fn subscribe<M: Inbound>(
        &self,
        filter: &str,
        qos: QoS,
    ) -> Result<Subscription<M>, BusError> {
        let sub = register(&self.inner.shared, filter, qos);
        self.inner
            .mqtt
            .subscribe(filter, qos)
            .await
            .map_err(|_| BusError::Closed)?;
        Ok(sub)
    }

    /// Publishes a new retained status (e.g. after a mode change); it is also the
    /// one republished on every reconnect. `node_id`, `role`, `online`, `at_ms`
    /// are filled in.
    pub async fn update_status(&self, status: NodeStatus) -> Result<(), BusError> {
        let s = &self.inner.shared;
        *s.status.lock().unwrap() = status;
        let st = current_status(s, true);
        self.publish(&s.status_topic(), &st, PublishOptions::retained())
            .await
    }

    /// Current counters.
    pub fn metrics(&self) -> BusMetrics {
        let c = &self.inner.shared.counters;
        let l = |a: &AtomicU64| a.load(Ordering::Relaxed);
        BusMetrics {
            published: l(&c.published),
            dropped: l(&c.dropped),
            denied: l(&c.denied),
            received: l(&c.received),
            malformed: l(&c.malformed),
            unrouted: l(&c.unrouted),
            receive_waits: l(&c.receive_waits),
            reconnects: l(&c.reconnects),
            connection_errors: l(&c.connection_errors),
            queued: self.inner.shared.queue.lock().unwrap().len() as u64,
            unacked: l(&c.unacked),
        }
    }

    /// Watch of the connection state.
    pub fn state(&self) -> watch::Receiver<ConnectionState> {
        self.inner.shared.state.subscribe()
    }

    /// Waits until connected (returns at once when already connected).
    pub async fn wait_connected(&self) -> Result<(), BusError> {
        let mut st = self.state();
        st.wait_for(|s| {
            matches!(
                s,
                ConnectionState::Connected { .. } | ConnectionState::Closed
            )
        })
        .await
        .map_err(|_| BusError::Closed)
        .and_then(|s| match &*s {
            ConnectionState::Closed => Err(BusError::Closed),
            _ => Ok(()),
        })
    }

    /// Clean shutdown: hands everything queued to the connection, publishes the
    /// retained offline status, sends DISCONNECT (so the broker does not publish the
    /// Last Will) and polls until the broker closes the connection. Everything is
    /// bounded by `grace`; after it the connection is cut (the Will then fires).
    /// Publishes sent before the DISCONNECT reach the broker (same TCP stream, in
    /// order) but their acknowledgements are not awaited. Subscriptions end.
    pub async fn shutdown(self, grace: Duration) -> Result<(), BusError> {
        let inner = &self.inner;
        let s = &inner.shared;
        let deadline = tokio::time::Instant::now() + grace;
        // Queue the offline status behind everything else, then stop accepting.
        let offline = current_status(s, false);
        let _ = tokio::time::timeout_at(
            deadline,
            self.publish(&s.status_topic(), &offline, PublishOptions::retained()),
        )
        .await;
        s.closing.store(true, Ordering::SeqCst);
        s.queued.notify_one();
        let fwd = inner.forwarder.lock().unwrap().take();
        if let Some(h) = fwd {
            let _ = tokio::time::timeout_at(deadline, h).await;
        }
        // Through the request channel, so it goes out after every queued publish.
        let _ = tokio::time::timeout_at(deadline, inner.mqtt.disconnect()).await;
        let drv = inner.driver.lock().unwrap().take();
        if let Some(h) = drv {
            let _ = tokio::time::timeout_at(deadline, h).await;
        }
        inner.abort();
        Ok(())
    }
}

fn current_status(s: &Shared, online: bool) -> NodeStatus {
    let mut st = s.status.lock().unwrap().clone();
    st.v = SCHEMA_VERSION;
    st.node_id = s.id.clone();
    st.role = s.role;
    st.online = online;
    st.at_ms = now_ms();
    st
}

fn read_file(what: &'static str, path: &Path) -> Result<Vec<u8>, BusError> {
    std::fs::read(path).map_err(|e| BusError::TlsFile {
        what,
        path: path.to_owned(),
        why: e.to_string(),
    })
}

/// The rustls client config (ring provider): trust only `ca_file`, authenticate
/// with `cert_file` + `key_file`.
pub fn tls_config(cfg: &BusConfig) -> Result<rustls::ClientConfig, BusError> {
    let bad = |what: &'static str, path: &Path, why: String| BusError::TlsFile {
        what,
        path: path.to_owned(),
        why,
    };
    let ca = read_file("CA certificate", &cfg.ca_file)?;
    let cert = read_file("client certificate", &cfg.cert_file)?;
    let key = read_file("client key", &cfg.key_file)?;
    let mut roots = rustls::RootCertStore::empty();
    let cas: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&ca)
        .collect::<Result<_, _>>()
        .map_err(|e| bad("CA certificate", &cfg.ca_file, e.to_string()))?;
    if cas.is_empty() {
        return Err(bad(
            "CA certificate",
            &cfg.ca_file,
            "no PEM CERTIFICATE in it".into(),
        ));
    }
    for c in cas {
        roots
            .add(c)
            .map_err(|e| bad("CA certificate", &cfg.ca_file, e.to_string()))?;
    }
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&cert)
        .collect::<Result<_, _>>()
        .map_err(|e| bad("client certificate", &cfg.cert_file, e.to_string()))?;
    if chain.is_empty() {
        return Err(bad(
            "client certificate",
            &cfg.cert_file,
            "no PEM CERTIFICATE in it".into(),
        ));
    }
    let key = PrivateKeyDer::from_pem_slice(&key)
        .map_err(|e| bad("client key", &cfg.key_file, e.to_string()))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_client_auth_cert(chain, key)?;
    Ok(config)
}

fn mqtt_options(s: &Shared) -> Result<MqttOptions, BusError> {
    let cfg = &s.cfg;
    let tls = tls_config(cfg)?;
    let mut o = MqttOptions::new(cfg.client_id(), cfg.host.clone(), cfg.port);
    o.set_transport(Transport::tls_with_config(TlsConfiguration::Rustls(
        Arc::new(tls),
    )));
    o.set_keep_alive(Duration::from_secs(cfg.keep_alive_s));
    o.set_clean_start(false);
    o.set_session_expiry_interval(Some(cfg.session_expiry_s));
    o.set_connection_timeout(cfg.connect_timeout_s.max(1));
    o.set_outgoing_inflight_upper_limit(100);
    // Verdicts and acks are small packets that must leave at once: no Nagle delay
    // (measured: up to ~40 ms per message at 50 verdicts/s with it on).
    let mut net = o.network_options();
    net.set_tcp_nodelay(true);
    o.set_network_options(net);
    // Also rumqttc's limit for incoming packets (its own default is 10 KiB).
    o.set_max_packet_size(Some(cfg.max_packet_bytes));
    let will = current_status(s, false);
    o.set_last_will(LastWill::new(
        s.status_topic(),
        tad_wire::encode(&will),
        QoS::AtLeastOnce,
        true,
        Some(LastWillProperties {
            delay_interval: None,
            payload_format_indicator: Some(1),
            message_expiry_interval: None,
            content_type: Some(tad_wire::CONTENT_TYPE.into()),
            response_topic: None,
            correlation_data: None,
            user_properties: Vec::new(),
        }),
    ));
    Ok(o)
}

fn properties(opts: &PublishOptions) -> PublishProperties {
    PublishProperties {
        payload_format_indicator: Some(1),
        message_expiry_interval: opts.message_expiry_s,
        content_type: Some(tad_wire::CONTENT_TYPE.into()),
        ..PublishProperties::default()
    }
}

fn start(shared: Arc<Shared>) -> Result<BusClient, BusError> {
    let opts = mqtt_options(&shared)?;
    // The request channel is kept small: the policy-bearing queue is ours.
    let (mqtt, eventloop) = AsyncClient::new(opts, 16);
    let forwarder = tokio::spawn(forward(shared.clone(), mqtt.clone()));
    let driver = tokio::spawn(drive(shared.clone(), eventloop));
    Ok(BusClient {
        inner: Arc::new(Inner {
            shared,
            mqtt,
            forwarder: Mutex::new(Some(forwarder)),
            driver: Mutex::new(Some(driver)),
        }),
    })
}

/// Moves messages from our bounded queue into rumqttc's request channel
/// (back-pressure: waits while that channel is full). Ends once closing and empty.
async fn forward(s: Arc<Shared>, mqtt: AsyncClient) {
    loop {
        let notified = s.queued.notified();
        let next = s.queue.lock().unwrap().pop_front();
        match next {
            Some(m) => {
                s.room.notify_waiters();
                let qos = m.opts.qos;
                let props = properties(&m.opts);
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

fn describe(e: &ConnectionError) -> String {
    match e {
        ConnectionError::ConnectionRefused(code) => format!("CONNACK refused: {code:?}"),
        ConnectionError::MqttState(rumqttc::v5::StateError::ConnFail { reason }) => {
            format!("CONNACK refused: {reason:?}")
        }
        other => other.to_string(),
    }
}

/// Polls the event loop: routes incoming publishes, tracks acks, (re)subscribes and
/// republishes status on connect, reconnects with backoff. Once the client is
/// closing it stops reconnecting, and after its DISCONNECT it polls until the broker
/// closes the connection.
async fn drive(s: Arc<Shared>, mut el: EventLoop) {
    let min = Duration::from_millis(s.cfg.reconnect_min_ms);
    let max = Duration::from_millis(s.cfg.reconnect_max_ms);
    let mut backoff = min;
    let mut connected_once = false;
    // Publishes not acknowledged when the connection dropped; resent if the broker
    // comes back without our session (rumqttc only resends into a present session).
    let mut unacked: Vec<Publish> = Vec::new();
    loop {
        let ev = el.poll().await;
        s.counters
            .unacked
            .store(u64::from(el.state.inflight()), Ordering::Relaxed);
        match ev {
            Ok(Event::Incoming(Incoming::ConnAck(ack))) => {
                backoff = min;
                if connected_once {
                    s.counters.reconnects.fetch_add(1, Ordering::Relaxed);
                }
                tracing::info!(
                    node = %s.cfg.node_id,
                    broker = %s.broker(),
                    session_present = ack.session_present,
                    "bus connected"
                );
                if !ack.session_present {
                    // The broker lost (or never had) our session: resend what was
                    // unacknowledged and subscribe again.
                    for mut p in unacked.drain(..) {
                        p.pkid = 0;
                        p.dup = false;
                        el.pending.push_back(Request::Publish(p));
                    }
                }
                unacked.clear();
                let filters: Vec<Filter> = s
                    .subs
                    .lock()
                    .unwrap()
                    .iter()
                    .map(|e| Filter::new(e.filter.clone(), e.qos))
                    .collect();
                if !filters.is_empty() && (!ack.session_present || !connected_once) {
                    el.pending
                        .push_front(Request::Subscribe(Subscribe::new_many(filters, None)));
                }
                if !s.closing.load(Ordering::SeqCst) {
                    let st = current_status(&s, true);
                    let mut p = Publish::new(
                        s.status_topic(),
                        QoS::AtLeastOnce,
                        tad_wire::encode(&st),
                        Some(properties(&PublishOptions::retained())),
                    );
                    p.retain = true;
                    el.pending.push_back(Request::Publish(p));
                }
                connected_once = true;
                s.state.send_replace(ConnectionState::Connected {
                    session_present: ack.session_present,
                });
            }
            Ok(Event::Incoming(Incoming::Publish(p))) => route(&s, p).await,
            Ok(Event::Incoming(Incoming::PubAck(ack))) => {
                if !matches!(
                    ack.reason,
                    PubAckReason::Success | PubAckReason::NoMatchingSubscribers
                ) {
                    let n = s.counters.denied.fetch_add(1, Ordering::Relaxed) + 1;
                    // Rate-limited: the 1st, 2nd, 4th, 8th... refusal.
                    if n.is_power_of_two() {
                        tracing::warn!(
                            node = %s.cfg.node_id,
                            pkid = ack.pkid,
                            reason = ?ack.reason,
                            denied_total = n,
                            "broker refused a publish (not authorized by the ACL?)"
                        );
                    }
                }
            }
            Ok(Event::Incoming(Incoming::SubAck(ack))) => {
                for code in &ack.return_codes {
                    if !matches!(
                        code,
                        rumqttc::v5::mqttbytes::v5::SubscribeReasonCode::Success(_)
                    ) {
                        tracing::warn!(node = %s.cfg.node_id, reason = ?code, "subscription refused");
                    }
                }
            }
            Ok(Event::Outgoing(Outgoing::Disconnect)) => {
                // Keep polling until the broker closes the connection (FIELD-NOTES:
                // otherwise mosquitto logs a protocol error); bounded by one poll.
                let _ = tokio::time::timeout(Duration::from_secs(1), el.poll()).await;
                break;
            }
            Ok(_) => {}
            Err(e) => {
                if s.closing.load(Ordering::SeqCst) {
                    break;
                }
                s.counters.connection_errors.fetch_add(1, Ordering::Relaxed);
                let saved: Vec<Publish> = el
                    .pending
                    .iter()
                    .filter_map(|r| match r {
                        Request::Publish(p) => Some(p.clone()),
                        _ => None,
                    })
                    .collect();
                if !saved.is_empty() {
                    unacked = saved;
                }
                let error = describe(&e);
                tracing::warn!(
                    node = %s.cfg.node_id,
                    broker = %s.broker(),
                    error = %error,
                    retry_in_ms = backoff.as_millis() as u64,
                    unacked = unacked.len(),
                    "bus connection lost"
                );
                s.state
                    .send_replace(ConnectionState::Disconnected { error });
                if !connected_once
                    && matches!(
                        e,
                        ConnectionError::ConnectionRefused(ConnectReturnCode::NotAuthorized)
                    )
                {
                    tracing::error!(node = %s.cfg.node_id, "broker refused this node's identity");
                }
                tokio::time::sleep(backoff).await;
                if s.closing.load(Ordering::SeqCst) {
                    break;
                }
                backoff = (backoff * 2).min(max);
            }
        }
    }
    s.state.send_replace(ConnectionState::Closed);
}

/// Hands an incoming publish to every matching subscription (waiting while a
/// subscription queue is full).
async fn route(s: &Shared, p: Publish) {
    let topic = String::from_utf8_lossy(&p.topic).into_owned();
    let targets: Vec<mpsc::Sender<Raw>> = {
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
        let raw = Raw {
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
