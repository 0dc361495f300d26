//! The dashboard's shared state ([`App`]): configuration, store, audit log,
//! metrics, the live-event channel the pages listen on, the publisher towards the
//! bus and the optional Influx export. The bus subscriber feeds it
//! ([`App::ingest`], in `ingest.rs`), the API reads it and acts through it.

use std::sync::{Arc, Mutex};

use serde::Serialize;
use tad_wire::{NodeStatus, TrustUpdate, now_ms};
use tokio::sync::broadcast;

use crate::{
    audit::{AuditError, AuditLog, RecordKind},
    config::Config,
    influx::InfluxSink,
    metrics::{Metrics, inc},
    publish::{Keys, Publisher},
    store::{AlertView, SeriesPoint, Store},
};

/// Event pushed to the pages over SSE (`event:` is the variant name in
/// snake_case, `data:` its JSON).
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(tag = "type", content = "data", rename_all = "snake_case")]
pub enum LiveEvent {
    /// A new counters sample of one gateway.
    Sample(SeriesPoint),
    /// A new alert, with its audit hash.
    Alert(Box<AlertView>),
    /// A device's trust score changed.
    Trust(TrustUpdate),
    /// A node's status changed.
    Status(NodeStatus),
    /// The blocks resource changed (a gateway's state, a command or an ack).
    Blocks,
    /// A gateway published something about its IoT devices (`crate::devices`).
    Devices { gateway_id: String },
}

impl LiveEvent {
    /// The SSE event name.
    pub fn name(&self) -> &'static str {
        match self {
            LiveEvent::Sample(_) => "sample",
            LiveEvent::Alert(_) => "alert",
            LiveEvent::Trust(_) => "trust",
            LiveEvent::Status(_) => "status",
            LiveEvent::Blocks => "blocks",
            LiveEvent::Devices { .. } => "devices",
        }
    }
}

/// The dashboard's shared state: store, audit log, live events, publisher.
pub struct App {
    /// The loaded configuration.
    pub config: Config,
    /// The SQLite store.
    pub store: Store,
    /// The hash-chained audit log (appends go through [`App::audit`]).
    pub audit: Mutex<AuditLog>,
    /// Counters served on `/metrics`.
    pub metrics: Arc<Metrics>,
    /// Live events to the SSE clients (bounded, `server.sse_buffer` per client).
    pub events: broadcast::Sender<LiveEvent>,
    /// Where operator commands and threshold settings go (the bus queue).
    pub publisher: Arc<dyn Publisher>,
    /// The Influx export, when `influx.enabled`.
    pub influx: Option<InfluxSink>,
    /// Set to `true` when the server shuts down; live-event streams end then.
    pub closing: tokio::sync::watch::Sender<bool>,
    /// Signs commands and verifies verdicts/commands ([`App::with_keys`]); none
    /// without a `[bus]` table: then verdicts and commands heard are refused and
    /// commands are recorded unsigned (nothing is sent anyway).
    pub keys: Option<Keys>,
}

impl std::fmt::Debug for App {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("App").finish_non_exhaustive()
    }
}

impl App {
    /// A new app around an opened store and audit log.
    pub fn new(
        config: Config,
        store: Store,
        audit: AuditLog,
        publisher: Arc<dyn Publisher>,
        influx: Option<InfluxSink>,
        metrics: Arc<Metrics>,
    ) -> App {
        let (events, _) = broadcast::channel(config.server.sse_buffer.max(1));
        App {
            config,
            store,
            audit: Mutex::new(audit),
            metrics,
            events,
            publisher,
            influx,
            closing: tokio::sync::watch::channel(false).0,
            keys: None,
        }
    }

    /// The same app signing and verifying with `keys`.
    pub fn with_keys(mut self, keys: Keys) -> App {
        self.keys = Some(keys);
        self
    }

    /// The dashboard's bus identity: the signing certificate's CN, else the
    /// configured `bus.node_id`, else `dashboard`. The last level of the command
    /// topics it publishes on.
    pub fn own_id(&self) -> &str {
        match (&self.keys, &self.config.bus) {
            (Some(k), _) => k.id(),
            (None, Some(b)) => &b.node_id,
            (None, None) => "dashboard",
        }
    }

    /// Sends a live event to every connected page.
    pub(crate) fn emit(&self, ev: LiveEvent) {
        // No subscriber is fine: nobody is looking.
        let _ = self.events.send(ev);
    }

    /// Appends an audit record; returns its hash.
    pub fn audit<T: Serialize>(&self, kind: RecordKind, data: &T) -> Result<String, AuditError> {
        let mut log = self.audit.lock().unwrap_or_else(|p| p.into_inner());
        match log.append(kind, now_ms(), data) {
            Ok(h) => {
                inc(&self.metrics.audit_records);
                Ok(h)
            }
            Err(e) => {
                inc(&self.metrics.audit_errors);
                Err(e)
            }
        }
    }
}
