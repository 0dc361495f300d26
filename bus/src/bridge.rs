//! Mosquitto bridging from a per-site broker to a central one: the `connection`
//! section of the site broker's `mosquitto.conf` and the `user` block the central
//! broker's ACL needs for the bridge. See docs/broker-scale.md for the setup.
//!
//! ```text
//!  site broker (gateways of one site)            central broker (detectors, dashboard)
//!  gateway-1 ─► tad/v1/gw/gateway-1/flows/0 ──out──► (bridge-site-1 publishes it)
//!  gateway-1 ◄─ tad/v1/gw/gateway-1/verdicts/det ◄─in── detector-1
//! ```
//!
//! The bridge carries exactly the gateway topics the ACL scheme gives each site
//! gateway ([`crate::broker::rules_for`]): what a gateway may write goes `out`
//! (site → central), what it may read comes `in` (central → site); nothing else
//! crosses. The devices' own topics (`tad/v1/dev/<dev>/...`, between a device and
//! its gateway) stay on the site; the gateway's device reports and the dashboard's
//! device requests (`tad/v1/gw/<gw>/devices/...`) cross like its other topics.
//! Both brokers keep their own ACL:
//!
//! - the site broker checks every site client as before, so a message a gateway
//!   may not publish never reaches the bridge;
//! - the central broker sees the bridge as one client, authenticated by its own
//!   client certificate (CN `bridge-<site>`, the ACL username via
//!   `use_identity_as_username`), and [`central_acl`] lets it write only the
//!   site gateways' outbound topics and read only their inbound ones: a
//!   compromised site can forge traffic of its own gateways, never another
//!   site's, and never a verdict or a command.
//!
//! The bridge speaks MQTT v5 (`bridge_protocol_version mqttv50`), so message
//! properties (the content type of signed verdicts) cross it, over TLS 1.2+ with
//! the central CA and full host-name verification (`bridge_insecure false`).
//! Syntax: mosquitto.conf(5) 2.0, "Bridges".

use std::{fmt::Write as _, path::PathBuf};

use tad_wire::{Role, TOPIC_ROOT};

use crate::broker::{Access, BrokerConfigError, role_of, rules_for};

/// Errors building a bridge configuration.
#[derive(Debug, thiserror::Error)]
pub enum BridgeError {
    /// The bridge id is not `bridge-<site>` or not a valid certificate CN.
    #[error("bridge id {id:?}: {why}")]
    BridgeId { id: String, why: String },
    /// `central` is not `host:port`.
    #[error("bridge {id:?}: central {central:?} is not host:port")]
    Central { id: String, central: String },
    /// A gateway id is invalid, not a gateway's or listed twice.
    #[error(transparent)]
    Gateway(#[from] BrokerConfigError),
}

/// Prefix every bridge's identity (certificate CN) must carry.
pub const BRIDGE_PREFIX: &str = "bridge-";

/// One topic pattern of a bridge and its direction.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BridgeTopic {
    /// MQTT topic filter.
    pub filter: String,
    /// `out`: site → central; `in`: central → site.
    pub direction: Direction,
}

/// Direction of a bridged topic (mosquitto `topic <pattern> out|in`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    /// From the site broker to the central one.
    Out,
    /// From the central broker to the site one.
    In,
}

/// The bridged topics of one site gateway, from its ACL rules: its writes under
/// `tad/v1/gw/<gw>/` go out, its reads there come in (the devices' own
/// `tad/v1/dev/...` topics are not bridged).
///
/// # Errors
/// `gateway` is not a valid gateway id.
pub fn gateway_topics(gateway: &str) -> Result<Vec<BridgeTopic>, BrokerConfigError> {
    if role_of(gateway)? != Role::Gateway {
        return Err(BrokerConfigError::UnknownRole {
            id: gateway.to_owned(),
        });
    }
    let own = format!("{TOPIC_ROOT}/gw/{gateway}/");
    Ok(rules_for(gateway)?
        .into_iter()
        .filter(|r| r.filter.starts_with(&own))
        .map(|r| BridgeTopic {
            filter: r.filter,
            direction: match r.access {
                Access::Write => Direction::Out,
                Access::Read => Direction::In,
            },
        })
        .collect())
}

fn check_bridge_id(id: &str) -> Result<(), BridgeError> {
    let bad = |why: String| BridgeError::BridgeId {
        id: id.to_owned(),
        why,
    };
    crate::pki::check_node_id(id).map_err(|e| bad(e.to_string()))?;
    if !id.starts_with(BRIDGE_PREFIX) || id.len() == BRIDGE_PREFIX.len() {
        return Err(bad(format!(
            "a bridge id must start with {BRIDGE_PREFIX:?} and name the site"
        )));
    }
    Ok(())
}

/// The bridge section of a site broker.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BridgeConfig {
    /// The bridge's identity: its client certificate's CN on the central broker
    /// (`bridge-<site>`), also its connection name and remote client id.
    pub bridge_id: String,
    /// The central broker, `host:port` (the host must be in its certificate's SANs).
    pub central: String,
    /// The central broker's CA (PEM), to verify its server certificate.
    pub cafile: PathBuf,
    /// The bridge's client certificate (PEM), issued by the central CA.
    pub certfile: PathBuf,
    /// Its private key (PEM); readable by the broker's user only.
    pub keyfile: PathBuf,
    /// The site's gateways whose topics cross the bridge.
    pub gateways: Vec<String>,
}

impl BridgeConfig {
    /// Renders the `connection` section to append to the site broker's
    /// `mosquitto.conf` (after its listener; bridge settings are global).
    ///
    /// # Errors
    /// An invalid bridge or gateway id, a duplicate gateway, or `central` not
    /// `host:port`.
    pub fn render(&self) -> Result<String, BridgeError> {
        check_bridge_id(&self.bridge_id)?;
        if self
            .central
            .rsplit_once(':')
            .is_none_or(|(h, p)| h.is_empty() || p.parse::<u16>().is_err())
        {
            return Err(BridgeError::Central {
                id: self.bridge_id.clone(),
                central: self.central.clone(),
            });
        }
        let id = &self.bridge_id;
        let mut o = format!(
            "\n# Bridge to the central broker (generated by tad_bus::bridge::BridgeConfig::render).\n\
             # Only the listed gateways' own topics cross: writes out, reads in.\n\
             connection {id}\n\
             address {central}\n\
             remote_clientid {id}\n\
             local_clientid local.{id}\n\
             bridge_protocol_version mqttv50\n\
             # Keep the remote session and queued QoS 1 messages across reconnects.\n\
             cleansession false\n\
             try_private true\n\
             notifications false\n\
             keepalive_interval 30\n\
             restart_timeout 1 10\n\
             bridge_cafile {ca}\n\
             bridge_certfile {cert}\n\
             bridge_keyfile {key}\n\
             bridge_tls_version tlsv1.2\n\
             # Verify the central broker's host name against its certificate.\n\
             bridge_insecure false\n",
            central = self.central,
            ca = self.cafile.display(),
            cert = self.certfile.display(),
            key = self.keyfile.display(),
        );
        for (i, g) in self.gateways.iter().enumerate() {
            if self.gateways[..i].contains(g) {
                return Err(BrokerConfigError::Duplicate { id: g.clone() }.into());
            }
            let _ = writeln!(o, "# {g}");
            for t in gateway_topics(g)? {
                let d = match t.direction {
                    Direction::Out => "out",
                    Direction::In => "in",
                };
                let _ = writeln!(o, "topic {} {d} 1", t.filter);
            }
        }
        Ok(o)
    }
}

/// The `user` block to append to the central broker's ACL for bridge
/// `bridge_id`: it may write the outbound and read the inbound topics of
/// `gateways` ([`gateway_topics`]), nothing else.
///
/// # Errors
/// An invalid bridge or gateway id.
pub fn central_acl(bridge_id: &str, gateways: &[String]) -> Result<String, BridgeError> {
    check_bridge_id(bridge_id)?;
    let mut o = format!(
        "\n# bridge: relays the own topics of its site's gateways ({})\nuser {bridge_id}\n",
        gateways.join(", ")
    );
    for g in gateways {
        for t in gateway_topics(g)? {
            let a = match t.direction {
                Direction::Out => "write",
                Direction::In => "read",
            };
            let _ = writeln!(o, "topic {a} {}", t.filter);
        }
    }
    Ok(o)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gateway_topics_follow_its_acl_and_leave_devices_local() {
        let t = gateway_topics("gateway-1").unwrap();
        let out: Vec<&str> = t
            .iter()
            .filter(|t| t.direction == Direction::Out)
            .map(|t| t.filter.as_str())
            .collect();
        let inn: Vec<&str> = t
            .iter()
            .filter(|t| t.direction == Direction::In)
            .map(|t| t.filter.as_str())
            .collect();
        assert!(out.contains(&"tad/v1/gw/gateway-1/flows/#"));
        assert!(out.contains(&"tad/v1/gw/gateway-1/state/delta"));
        assert!(out.contains(&"tad/v1/gw/gateway-1/devices/+"));
        assert_eq!(
            inn,
            [
                "tad/v1/gw/gateway-1/verdicts/+",
                "tad/v1/gw/gateway-1/commands/+",
                "tad/v1/gw/gateway-1/devices/requests/+"
            ]
        );
        assert!(t.iter().all(|t| !t.filter.starts_with("tad/v1/dev/")));
        assert!(gateway_topics("detector-1").is_err());
    }

    #[test]
    fn render_and_acl_name_every_gateway_topic() {
        let cfg = BridgeConfig {
            bridge_id: "bridge-site-1".into(),
            central: "central.example:8883".into(),
            cafile: "/etc/mosquitto/tad/central-ca.pem".into(),
            certfile: "/etc/mosquitto/tad/bridge.pem".into(),
            keyfile: "/etc/mosquitto/tad/bridge.key".into(),
            gateways: vec!["gateway-1".into(), "gateway-2".into()],
        };
        let c = cfg.render().unwrap();
        assert!(c.contains("connection bridge-site-1\naddress central.example:8883\n"));
        assert!(c.contains("topic tad/v1/gw/gateway-2/flows/# out 1\n"));
        assert!(c.contains("topic tad/v1/gw/gateway-1/verdicts/+ in 1\n"));
        assert!(c.contains("bridge_insecure false"));
        let acl = central_acl("bridge-site-1", &cfg.gateways).unwrap();
        assert!(acl.contains("user bridge-site-1\n"));
        assert!(acl.contains("topic write tad/v1/gw/gateway-1/flows/#\n"));
        assert!(acl.contains("topic read tad/v1/gw/gateway-2/commands/+\n"));
        assert!(!acl.contains("verdicts/+\ntopic write"), "{acl}");
        assert!(!acl.contains("write tad/v1/gw/gateway-1/verdicts"));

        let bad = BridgeConfig {
            bridge_id: "site-1".into(),
            ..cfg.clone()
        };
        assert!(bad.render().unwrap_err().to_string().contains("bridge-"));
        let bad = BridgeConfig {
            central: "central.example".into(),
            ..cfg.clone()
        };
        assert!(bad.render().unwrap_err().to_string().contains("host:port"));
        let bad = BridgeConfig {
            gateways: vec!["gateway-1".into(), "gateway-1".into()],
            ..cfg
        };
        assert!(matches!(
            bad.render(),
            Err(BridgeError::Gateway(BrokerConfigError::Duplicate { .. }))
        ));
    }
}
