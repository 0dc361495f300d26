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
//!   subscriptions decode with `tad_wire::decode` ([`AnyMessage`] picks the type
//!   from the topic; [`RawPayload`] hands the bytes over undecoded). A malformed payload is dropped,
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
//!
//! Layout (after rumqttc's own split into client, event loop, state and TLS):
//! - this module: [`BusBuilder`] and [`BusClient`], the public handle, and the state
//!   its tasks share;
//! - `config`: [`BusConfig`] and its checks; `error`: [`BusError`];
//! - `queue`: [`PublishOptions`], [`Overflow`], the bounded outgoing queue, the
//!   forwarder task and [`BusMetrics`];
//! - `subscriptions`: [`Inbound`], [`AnyMessage`], [`RawPayload`], [`Received`],
//!   [`Subscription`] and the routing of incoming publishes;
//! - `tls`: [`tls_config`] from the node's PEM files;
//! - `driver`: connection options (Last Will), the event-loop task (reconnect,
//!   backoff, resend, status) and [`ConnectionState`].

mod config;
mod driver;
mod error;
mod queue;
mod subscriptions;
mod tls;

use std::{
    collections::VecDeque,
    fmt,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use bytes::Bytes;
use rumqttc::v5::{AsyncClient, mqttbytes::QoS};
use tad_wire::{self, Message, NodeStatus, Role, SCHEMA_VERSION, now_ms};
use tokio::{
    sync::{Notify, watch},
    task::JoinHandle,
};

pub use self::{
    config::BusConfig,
    driver::ConnectionState,
    error::BusError,
    queue::{BusMetrics, Overflow, PublishOptions},
    subscriptions::{AnyMessage, Inbound, RawPayload, Received, Subscription},
    tls::tls_config,
};
use self::{
    queue::{Counters, Enqueue, OutMsg, enqueue},
    subscriptions::{SubEntry, register},
};
use crate::signing::Signer;

/// What the client handles, the forwarder task and the driver task share.
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
    /// SUBACKs received from the broker (any connection), for
    /// [`ClientBuilder::connect`] to wait on.
    subacks: watch::Sender<u64>,
}

impl Shared {
    /// The state of a client for `cfg` (already checked: `id` and `role` come from
    /// [`BusConfig::check`]), nothing queued or subscribed, not yet connecting.
    fn new(cfg: BusConfig, id: tad_wire::NodeId, role: Role) -> Self {
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
            partitions: None,
            taken: Vec::new(),
        };
        let (state, _) = watch::channel(ConnectionState::Connecting);
        let (subacks, _) = watch::channel(0);
        Self {
            subacks,
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
        }
    }

    /// `host:port` of the broker, for logs and errors.
    fn broker(&self) -> String {
        format!("{}:{}", self.cfg.host, self.cfg.port)
    }

    /// The topic of this node's retained status (by role).
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

/// The node's status as set by [`BusBuilder::status`] / [`BusClient::update_status`]
/// with schema version, id, role, `online` and the time filled in.
fn current_status(s: &Shared, online: bool) -> NodeStatus {
    let mut st = s.status.lock().unwrap().clone();
    st.v = SCHEMA_VERSION;
    st.node_id = s.id.clone();
    st.role = s.role;
    st.online = online;
    st.at_ms = now_ms();
    st
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

    /// Starts the client and waits for the first successful connection and, when
    /// the builder has subscriptions, for the broker's SUBACK of them (so a
    /// message another node publishes after this returns reaches them). Fails
    /// with [`BusError::Refused`] on the first failed attempt (bad certificate,
    /// refused CONNECT, unreachable broker) and [`BusError::ConnectTimeout`]
    /// after `connect_timeout_s` (+ 1 s); in both cases the client is stopped.
    pub async fn connect(self) -> Result<BusClient, BusError> {
        let subscribed = !self.shared.subs.lock().unwrap().is_empty();
        let mut subacks = self.shared.subacks.subscribe();
        let client = start(self.shared)?;
        let mut state = client.state();
        let timeout = Duration::from_secs(client.inner.shared.cfg.connect_timeout_s.max(1));
        let deadline = tokio::time::Instant::now() + timeout + Duration::from_secs(1);
        let broker = client.inner.shared.broker();
        let outcome = tokio::time::timeout_at(
            deadline,
            state.wait_for(|s| !matches!(s, ConnectionState::Connecting)),
        )
        .await
        .map(|r| r.map(|s| s.clone()));
        let err = match outcome {
            Err(_) => BusError::ConnectTimeout { broker, timeout },
            Ok(Err(_)) => BusError::Closed,
            Ok(Ok(s)) => match s {
                ConnectionState::Connected { .. } if !subscribed => return Ok(client),
                // The broker routes to a subscription only once it has
                // processed the SUBSCRIBE: wait for its SUBACK, so that what is
                // published after `connect` returns reaches every subscription.
                ConnectionState::Connected { .. } => {
                    match tokio::time::timeout_at(deadline, subacks.wait_for(|n| *n > 0)).await {
                        Ok(Ok(_)) => return Ok(client),
                        Ok(Err(_)) => BusError::Closed,
                        Err(_) => BusError::ConnectTimeout { broker, timeout },
                    }
                }
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

/// Spawns the forwarder and the driver for `shared`; reads the TLS files.
fn start(shared: Arc<Shared>) -> Result<BusClient, BusError> {
    let opts = driver::mqtt_options(&shared)?;
    // The request channel is kept small: the policy-bearing queue is ours.
    let (mqtt, eventloop) = AsyncClient::new(opts, 16);
    let forwarder = tokio::spawn(queue::forward(shared.clone(), mqtt.clone()));
    let driver = tokio::spawn(driver::drive(shared.clone(), eventloop, mqtt.clone()));
    Ok(BusClient {
        inner: Arc::new(Inner {
            shared,
            mqtt,
            forwarder: Mutex::new(Some(forwarder)),
            driver: Mutex::new(Some(driver)),
        }),
    })
}

/// The one connection behind every clone of a [`BusClient`] and its two tasks.
struct Inner {
    shared: Arc<Shared>,
    mqtt: AsyncClient,
    forwarder: Mutex<Option<JoinHandle<()>>>,
    driver: Mutex<Option<JoinHandle<()>>>,
}

impl Inner {
    /// Stops both tasks at once (no DISCONNECT: the broker sees a lost link), ends
    /// every subscription and marks the client closed.
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
        let (id, role) = cfg.check()?;
        // Fail early on unreadable files (again read when the client starts).
        tls_config(&cfg)?;
        Ok(BusBuilder {
            shared: Arc::new(Shared::new(cfg, id, role)),
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
        self.try_enqueue(
            topic,
            Bytes::from(tad_wire::encode(msg)),
            opts,
            tad_wire::CONTENT_TYPE,
        )
    }

    /// Like [`try_publish`](Self::try_publish), the payload a JWS of `msg` signed
    /// by `signer` (content type `application/jose`; see [`crate::signing`]):
    /// how verdicts and commands are sent.
    pub fn try_publish_signed<M: Message>(
        &self,
        topic: &str,
        signer: &Signer,
        msg: &M,
        opts: PublishOptions,
    ) -> Result<(), BusError> {
        self.try_enqueue(
            topic,
            Bytes::from(signer.sign(msg)),
            opts,
            tad_wire::SIGNED_CONTENT_TYPE,
        )
    }

    /// Like [`publish`](Self::publish), signed (see [`Self::try_publish_signed`]).
    pub async fn publish_signed<M: Message>(
        &self,
        topic: &str,
        signer: &Signer,
        msg: &M,
        opts: PublishOptions,
    ) -> Result<(), BusError> {
        self.enqueue_waiting(OutMsg {
            topic: topic.to_owned(),
            payload: Bytes::from(signer.sign(msg)),
            opts,
            content_type: tad_wire::SIGNED_CONTENT_TYPE,
        })
        .await
    }

    fn try_enqueue(
        &self,
        topic: &str,
        payload: Bytes,
        opts: PublishOptions,
        content_type: &'static str,
    ) -> Result<(), BusError> {
        let m = OutMsg {
            topic: topic.to_owned(),
            payload,
            opts,
            content_type,
        };
        match enqueue(&self.inner.shared, m) {
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
        self.enqueue_waiting(OutMsg {
            topic: topic.to_owned(),
            payload: payload.into(),
            opts,
            content_type: tad_wire::CONTENT_TYPE,
        })
        .await
    }

    async fn enqueue_waiting(&self, mut m: OutMsg) -> Result<(), BusError> {
        loop {
            let room = self.inner.shared.room.notified();
            match enqueue(&self.inner.shared, m) {
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
        let s = &self.inner.shared;
        let queued = s.queue.lock().unwrap().len() as u64;
        s.counters.snapshot(queued)
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
