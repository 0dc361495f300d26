//! What the dashboard sends to the bus: operator commands (to one gateway) and
//! threshold settings (retained, to every detector). The API hands messages to a
//! [`Publisher`]; in the daemon that is a [`ChannelPublisher`] feeding the MQTT
//! client task, in tests a [`RecordingPublisher`] that keeps them for inspection.

use std::sync::{
    Mutex,
    atomic::{AtomicBool, Ordering},
};

use tad_wire::{Command, ThresholdSettings};
use tokio::sync::mpsc;

/// One message to publish (QoS 1).
#[derive(Clone, Debug, PartialEq)]
pub struct Outbound {
    pub topic: String,
    /// JSON payload (`tad_wire::encode`).
    pub payload: Vec<u8>,
    /// Retained on the broker (threshold settings are).
    pub retain: bool,
}

impl Outbound {
    /// A command for gateway `gw`, on `topic::commands(gw)`.
    pub fn command(gw: &str, c: &Command) -> Outbound {
        Outbound {
            topic: tad_wire::topic::commands(gw),
            payload: tad_wire::encode(c),
            retain: false,
        }
    }

    /// Threshold settings, retained on `topic::thresholds()`.
    pub fn thresholds(t: &ThresholdSettings) -> Outbound {
        Outbound {
            topic: tad_wire::topic::thresholds(),
            payload: tad_wire::encode(t),
            retain: true,
        }
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
    use super::*;

    #[tokio::test]
    async fn channel_publisher_refuses_when_full_and_keeps_order() {
        let (p, mut rx) = ChannelPublisher::new(2);
        let m = |t: &str| Outbound {
            topic: t.into(),
            payload: vec![],
            retain: false,
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
