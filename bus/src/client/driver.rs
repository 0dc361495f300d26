//! The connection driver: the rumqttc options every connection uses (mutual TLS,
//! persistent session, Last Will = retained offline status) and the task that
//! polls the event loop: on CONNACK it resubscribes, resends what a lost session
//! dropped and republishes the retained online status; it routes incoming
//! publishes, counts refused publishes, reconnects with exponential backoff and
//! publishes the [`ConnectionState`].

use std::{
    sync::{Arc, atomic::Ordering},
    time::Duration,
};

use rumqttc::{
    Outgoing, TlsConfiguration, Transport,
    v5::{
        AsyncClient, ConnectionError, Event, EventLoop, Incoming, MqttOptions, Request,
        mqttbytes::{
            QoS,
            v5::{
                ConnectReturnCode, Filter, LastWill, LastWillProperties, PubAckReason, Publish,
                Subscribe, SubscribeReasonCode,
            },
        },
    },
};

#[cfg(doc)]
use super::{BusClient, BusConfig};
use super::{
    BusError, PublishOptions, Shared, current_status, queue::properties, subscriptions::route,
    tls::tls_config,
};

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

/// The rumqttc options of this node (reads the TLS files).
pub(super) fn mqtt_options(s: &Shared) -> Result<MqttOptions, BusError> {
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

/// The text of a connection error, naming a CONNACK refusal.
fn describe(e: &ConnectionError) -> String {
    match e {
        ConnectionError::ConnectionRefused(code) => format!("CONNACK refused: {code:?}"),
        ConnectionError::MqttState(rumqttc::v5::StateError::ConnFail { reason }) => {
            format!("CONNACK refused: {reason:?}")
        }
        other => other.to_string(),
    }
}

/// Resends `publishes` in order through the request channel (waits while it is
/// full; ends early if the event loop is gone).
async fn republish(mqtt: AsyncClient, publishes: Vec<Publish>) {
    for p in publishes {
        let topic = String::from_utf8_lossy(&p.topic).into_owned();
        let props = p.properties.unwrap_or_default();
        if mqtt
            .publish_with_properties(topic, p.qos, p.retain, p.payload, props)
            .await
            .is_err()
        {
            return;
        }
    }
}

/// Polls the event loop: routes incoming publishes, tracks acks, (re)subscribes and
/// republishes status on connect, reconnects with backoff. Once the client is
/// closing it stops reconnecting, and after its DISCONNECT it polls until the broker
/// closes the connection.
///
/// Publishes are never handed back to rumqttc's `pending` queue with a fresh
/// packet id: that queue bypasses its in-flight limit, so packet ids wrap onto
/// ones still in flight, and rumqttc 0.25 keeps only the last of several such
/// collisions (bytebeamio/rumqtt#1056: the others are silently lost). What the
/// connection loss left unsent, and what a lost session dropped, is resent in
/// order through `mqtt` instead, under the normal flow control.
pub(super) async fn drive(s: Arc<Shared>, mut el: EventLoop, mqtt: AsyncClient) {
    let min = Duration::from_millis(s.cfg.reconnect_min_ms);
    let max = Duration::from_millis(s.cfg.reconnect_max_ms);
    let mut backoff = min;
    let mut connected_once = false;
    // Publishes sent but not acknowledged when the connection dropped (they keep
    // their packet ids in rumqttc's `pending`); resent by us if the broker comes
    // back without our session (rumqttc only resends into a present session).
    let mut unacked: Vec<Publish> = Vec::new();
    // Publishes never sent (rumqttc drained them from its request channel into
    // `pending` with packet id 0): taken out and resent through `mqtt`.
    let mut unsent: Vec<Publish> = Vec::new();
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
                // The broker lost (or never had) our session: resend what was
                // unacknowledged (rumqttc dropped it from `pending`) and
                // subscribe again.
                let mut resend: Vec<Publish> = if ack.session_present {
                    Vec::new()
                } else {
                    std::mem::take(&mut unacked)
                };
                unacked.clear();
                resend.append(&mut unsent);
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
                        Some(properties(
                            &PublishOptions::retained(),
                            tad_wire::CONTENT_TYPE,
                        )),
                    );
                    p.retain = true;
                    resend.push(p);
                }
                if !resend.is_empty() {
                    tokio::spawn(republish(mqtt.clone(), resend));
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
                s.subacks.send_modify(|n| *n += 1);
                for code in &ack.return_codes {
                    if !matches!(code, SubscribeReasonCode::Success(_)) {
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
                // rumqttc moved the in-flight publishes (packet id set) and the
                // request channel's contents (packet id 0) into `pending`.
                let mut saved = Vec::new();
                for r in std::mem::take(&mut el.pending) {
                    match r {
                        Request::Publish(p) if p.pkid == 0 => unsent.push(p),
                        Request::Publish(p) => {
                            saved.push(p.clone());
                            el.pending.push_back(Request::Publish(p));
                        }
                        other => el.pending.push_back(other),
                    }
                }
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
                    unsent = unsent.len(),
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
