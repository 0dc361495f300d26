//! What the dashboard sends to the bus: operator commands (to one gateway,
//! signed with the dashboard's own certificate key) and threshold settings
//! (retained, to every detector). The API hands messages to a [`Publisher`]; in
//! the daemon that is a [`ChannelPublisher`] feeding the MQTT client task, in
//! tests a [`RecordingPublisher`] that keeps them for inspection.
//!
//! [`Keys`] is the dashboard's signing material: its [`Signer`] (the bus
//! client certificate and key) signs every command (a JWS, `tad_bus::signing`),
//! and its [`Verifier`] (the bus CA) checks the verdicts and commands the
//! dashboard hears before it believes them (`ingest.rs`).

use std::{
    path::PathBuf,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
};

use tad_bus::{
    BusConfig,
    signing::{SignError, Signer, Verifier},
};
use tad_wire::{Command, ThresholdSettings};
use tokio::sync::mpsc;

/// One message to publish (QoS 1).
#[derive(Clone, Debug, PartialEq)]
pub struct Outbound {
    pub topic: String,
    /// JSON payload (`tad_wire::encode`): what is published, or, when `signed`,
    /// the message the bus task signs (the payload on the bus is then its JWS).
    pub payload: Vec<u8>,
    /// Retained on the broker (threshold settings are).
    pub retain: bool,
    /// Sent as a JWS signed with the dashboard's certificate key
    /// (`BusClient::publish_signed`); only commands are.
    pub signed: bool,
}

impl Outbound {
    /// A command for gateway `gw` from dashboard `dash` (this dashboard's bus
    /// identity), on `topic::commands(gw, dash)`, to be signed.
    pub fn command(gw: &str, dash: &str, c: &Command) -> Outbound {
        Outbound {
            topic: tad_wire::topic::commands(gw, dash),
            payload: tad_wire::encode(c),
            retain: false,
            signed: true,
        }
    }

    /// Threshold settings, retained on `topic::thresholds()`.
    pub fn thresholds(t: &ThresholdSettings) -> Outbound {
        Outbound {
            topic: tad_wire::topic::thresholds(),
            payload: tad_wire::encode(t),
            retain: true,
            signed: false,
        }
    }
}

/// A key or certificate of the `[bus]` table that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum KeysError {
    /// The client certificate / key pair (`bus.cert_file`, `bus.key_file`).
    #[error("signing key: bus.cert_file {cert} / bus.key_file {key}: {source}")]
    Signer {
        cert: PathBuf,
        key: PathBuf,
        #[source]
        source: SignError,
    },
    /// The CA bundle (`bus.ca_file`).
    #[error("verifying CA: bus.ca_file {ca}: {source}")]
    Verifier {
        ca: PathBuf,
        #[source]
        source: SignError,
    },
}

/// The dashboard's signing material (see the module docs).
#[derive(Clone, Debug)]
pub struct Keys {
    /// Signs commands; its id (the certificate's CN) is the dashboard's identity
    /// and the last level of the command topics it publishes on.
    pub signer: Arc<Signer>,
    /// Verifies signed verdicts and commands against the bus CA.
    pub verifier: Verifier,
}

impl Keys {
    /// Loads the signer (`cert_file` + `key_file`, which must belong together)
    /// and the verifier (`ca_file`) of a bus configuration.
    ///
    /// # Errors
    /// [`KeysError`] naming the file(s) that could not be read or used.
    pub fn from_bus_config(cfg: &BusConfig) -> Result<Keys, KeysError> {
        let signer = Signer::from_bus_config(cfg).map_err(|source| KeysError::Signer {
            cert: cfg.cert_file.clone(),
            key: cfg.key_file.clone(),
            source,
        })?;
        let verifier = Verifier::from_bus_config(cfg).map_err(|source| KeysError::Verifier {
            ca: cfg.ca_file.clone(),
            source,
        })?;
        Ok(Keys {
            signer: Arc::new(signer),
            verifier,
        })
    }

    /// The dashboard's bus identity (the signing certificate's CN).
    pub fn id(&self) -> &str {
        self.signer.id().as_str()
    }
}

/// Why a message could not be handed over.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PublishError {
    #[error("outgoing queue is full ({capacity} messages)")]
    Full { capacity: usize },
    #[error("the bus connection is not running")]
    Closed,
}

/// Takes messages to publish without waiting: either it has taken the message
/// (it will be published, QoS 1) or it says why not, and the caller changes
/// nothing.
pub trait Publisher: Send + Sync {
    fn publish(&self, msg: Outbound) -> Result<(), PublishError>;
}

/// Hands messages to the MQTT task over a bounded channel; a full queue refuses.
#[derive(Clone, Debug)]
pub struct ChannelPublisher {
    tx: mpsc::Sender<Outbound>,
}

impl ChannelPublisher {
    /// A publisher and the receiving end for the bus task, queue of `capacity`.
    pub fn new(capacity: usize) -> (ChannelPublisher, mpsc::Receiver<Outbound>) {
        let (tx, rx) = mpsc::channel(capacity.max(1));
        (ChannelPublisher { tx }, rx)
    }
}

impl Publisher for ChannelPublisher {
    fn publish(&self, msg: Outbound) -> Result<(), PublishError> {
        self.tx.try_send(msg).map_err(|e| match e {
            mpsc::error::TrySendError::Full(_) => PublishError::Full {
                capacity: self.tx.max_capacity(),
            },
            mpsc::error::TrySendError::Closed(_) => PublishError::Closed,
        })
    }
}

/// Keeps what would have been published (tests, and `bus.enabled = false`).
#[derive(Debug, Default)]
pub struct RecordingPublisher {
    sent: Mutex<Vec<Outbound>>,
    refuse: AtomicBool,
}

impl RecordingPublisher {
    /// Everything published so far.
    pub fn sent(&self) -> Vec<Outbound> {
        self.sent.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Makes every later publish fail with [`PublishError::Closed`] (or work again).
    pub fn set_refuse(&self, refuse: bool) {
        self.refuse.store(refuse, Ordering::SeqCst);
    }
}

impl Publisher for RecordingPublisher {
    fn publish(&self, msg: Outbound) -> Result<(), PublishError> {
        if self.refuse.load(Ordering::SeqCst) {
            return Err(PublishError::Closed);
        }
        self.sent
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(msg);
        Ok(())
    }
}

impl<P: Publisher + ?Sized> Publisher for std::sync::Arc<P> {
    fn publish(&self, msg: Outbound) -> Result<(), PublishError> {
        (**self).publish(msg)
    }
}

#[cfg(test)]
mod tests {
    use tad_bus::pki::{CertificateAuthority, Validity};

    use super::*;

    #[test]
    fn keys_that_cannot_sign_are_an_error_naming_the_files() {
        let dir = tempfile::tempdir().unwrap();
        let ca = CertificateAuthority::generate("test CA", Validity::days(1)).unwrap();
        let a = ca.issue_client("dashboard", Validity::days(1)).unwrap();
        let b = ca.issue_client("dashboard-2", Validity::days(1)).unwrap();
        let path = |n: &str| dir.path().join(n);
        std::fs::write(path("ca.pem"), ca.cert_pem()).unwrap();
        std::fs::write(path("a.pem"), &a.cert_pem).unwrap();
        std::fs::write(path("a.key"), &a.key_pem).unwrap();
        std::fs::write(path("b.key"), &b.key_pem).unwrap();
        let cfg = |cert: &str, key: &str, ca: &str| BusConfig {
            node_id: "dashboard".into(),
            ca_file: path(ca),
            cert_file: path(cert),
            key_file: path(key),
            ..BusConfig::default()
        };
        let k = Keys::from_bus_config(&cfg("a.pem", "a.key", "ca.pem")).unwrap();
        assert_eq!(k.id(), "dashboard");
        // Another node's key with this certificate.
        let e = Keys::from_bus_config(&cfg("a.pem", "b.key", "ca.pem"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("b.key") && e.contains("does not belong"), "{e}");
        let e = Keys::from_bus_config(&cfg("missing.pem", "a.key", "ca.pem"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("missing.pem"), "{e}");
        let e = Keys::from_bus_config(&cfg("a.pem", "a.key", "a.key"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("bus.ca_file") && e.contains("a.key"), "{e}");
    }

    #[tokio::test]
    async fn channel_publisher_refuses_when_full_and_keeps_order() {
        let (p, mut rx) = ChannelPublisher::new(2);
        let m = |t: &str| Outbound {
            topic: t.into(),
            payload: vec![],
            retain: false,
            signed: false,
        };
        p.publish(m("a")).unwrap();
        p.publish(m("b")).unwrap();
        assert_eq!(p.publish(m("c")), Err(PublishError::Full { capacity: 2 }));
        assert_eq!(rx.recv().await.unwrap().topic, "a");
        assert_eq!(rx.recv().await.unwrap().topic, "b");
        drop(rx);
        assert_eq!(p.publish(m("d")), Err(PublishError::Closed));
    }
}
