//! Mosquitto configuration for the bus: the broker config file (one mutual-TLS
//! listener, certificate CN as username, no anonymous access, an ACL file) and the
//! ACL that confines every node to its own topics (topic scheme: `tad_wire`).
//!
//! The node's role comes from its id prefix ([`role_of`]): `gateway-*`, `detector-*`,
//! `dashboard*`. What each role may do:
//!
//! | role | write | read |
//! |---|---|---|
//! | gateway `<gw>` | `tad/v1/gw/<gw>/{flows/#,evidence/+,counters,status,acks,state,state/delta}` | `tad/v1/gw/<gw>/{verdicts,commands}/+` |
//! | detector `<det>` | `tad/v1/det/<det>/#`, `tad/v1/gw/+/verdicts/<det>` | `tad/v1/gw/+/flows/#`, `tad/v1/gw/+/evidence/+`, `tad/v1/gw/+/acks`, `tad/v1/settings/#`, `tad/v1/{det,gw}/+/status` |
//! | dashboard `<id>` | `tad/v1/gw/+/commands/<id>`, `tad/v1/settings/thresholds`, `tad/v1/dash/<id>/status` | `tad/v1/#` |
//! | (gateway, devices) | `tad/v1/gw/<gw>/devices/+`, `tad/v1/dev/+/commands` | `tad/v1/dev/+/telemetry`, `tad/v1/gw/<gw>/devices/requests/+` |
//! | (detector, devices) | | `tad/v1/gw/+/devices/telemetry` |
//! | (dashboard, devices) | `tad/v1/gw/+/devices/requests/<id>` | |
//! | device `<dev>` ([`device_rules`]) | `tad/v1/dev/<dev>/telemetry` | `tad/v1/dev/<dev>/commands` |
//!
//! The identity level at the end of a verdict or command topic is the client's own
//! id, written literally into its `user` block: detector `detector-2` cannot
//! publish on `tad/v1/gw/gateway-1/verdicts/detector-1`, so the topic names the
//! certificate that published it (and the payload's JWS signature, checked by the
//! gateway, names it again).
//!
//! Anything not listed is denied (Mosquitto's ACL default). With MQTT v5 a denied
//! QoS 1 publish is answered with PUBACK reason 0x87 (not authorized); a denied
//! QoS 0 publish is dropped silently. Syntax follows mosquitto.conf(5) 2.0.

use std::{fmt::Write as _, net::IpAddr, path::PathBuf};

use tad_wire::{Role, TOPIC_ROOT};

use crate::pki::{PkiError, check_node_id};

/// Errors building a broker configuration.
#[derive(Debug, thiserror::Error)]
pub enum BrokerConfigError {
    #[error(
        "node id {id:?} has no known role: it must start with `gateway-`, `detector-` or `dashboard`"
    )]
    UnknownRole { id: String },
    #[error(transparent)]
    NodeId(#[from] PkiError),
    #[error("node id {id:?} is listed twice")]
    Duplicate { id: String },
    #[error("device id {id:?}: {why}")]
    Device { id: String, why: String },
}

/// The role of a node, from its id prefix: `gateway-` → gateway, `detector-` →
/// detector, `dashboard` (with or without suffix) → dashboard.
pub fn role_of(node_id: &str) -> Result<Role, BrokerConfigError> {
    tad_wire::NodeId::parse(node_id)
        .ok()
        .and_then(|id| id.role())
        .ok_or_else(|| BrokerConfigError::UnknownRole {
            id: node_id.to_owned(),
        })
}

/// Direction of an ACL rule (mosquitto `topic read|write`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    Read,
    Write,
}

/// One ACL line: `topic <access> <filter>` under `user <node id>`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AclRule {
    pub access: Access,
    /// MQTT topic filter (may hold `+` and `#`).
    pub filter: String,
}

/// The ACL rules of one node (see the module table).
pub fn rules_for(node_id: &str) -> Result<Vec<AclRule>, BrokerConfigError> {
    check_node_id(node_id)?;
    let r = TOPIC_ROOT;
    let w = |f: String| AclRule {
        access: Access::Write,
        filter: f,
    };
    let rd = |f: String| AclRule {
        access: Access::Read,
        filter: f,
    };
    Ok(match role_of(node_id)? {
        Role::Gateway => vec![
            w(format!("{r}/gw/{node_id}/flows/#")),
            w(format!("{r}/gw/{node_id}/evidence/+")),
            w(format!("{r}/gw/{node_id}/counters")),
            w(format!("{r}/gw/{node_id}/status")),
            w(format!("{r}/gw/{node_id}/acks")),
            w(format!("{r}/gw/{node_id}/state")),
            w(format!("{r}/gw/{node_id}/state/delta")),
            rd(format!("{r}/gw/{node_id}/verdicts/+")),
            rd(format!("{r}/gw/{node_id}/commands/+")),
            // Devices (issue 17; tad_wire::devices): its device reports, the
            // vetted commands it forwards, the telemetry and requests it checks.
            w(format!("{r}/gw/{node_id}/devices/+")),
            w(format!("{r}/dev/+/commands")),
            rd(format!("{r}/dev/+/telemetry")),
            rd(format!("{r}/gw/{node_id}/devices/requests/+")),
        ],
        Role::Detector => vec![
            w(format!("{r}/det/{node_id}/#")),
            w(format!("{r}/gw/+/verdicts/{node_id}")),
            rd(format!("{r}/gw/+/flows/#")),
            rd(format!("{r}/gw/+/evidence/+")),
            rd(format!("{r}/gw/+/acks")),
            rd(format!("{r}/settings/#")),
            // Fleet (detector::fleet): the live detectors and each gateway's
            // partition count.
            rd(format!("{r}/det/+/status")),
            rd(format!("{r}/gw/+/status")),
            rd(format!("{r}/gw/+/devices/telemetry")),
        ],
        Role::Dashboard => vec![
            w(format!("{r}/gw/+/commands/{node_id}")),
            w(format!("{r}/gw/+/devices/requests/{node_id}")),
            w(format!("{r}/settings/thresholds")),
            w(format!("{r}/dash/{node_id}/status")),
            rd(format!("{r}/#")),
        ],
    })
}

/// True when `rules` let a client publish to `topic` (or, with [`Access::Read`],
/// receive a message published on `topic`).
pub fn allowed(rules: &[AclRule], access: Access, topic: &str) -> bool {
    rules
        .iter()
        .any(|r| r.access == access && tad_wire::topic::topic_matches(&r.filter, topic))
}

/// The ACL rules of IoT device `device_id` (issue 17): it may publish only its own
/// telemetry topic and read only its own command topic (its id is its client
/// certificate's CN, the broker's username).
pub fn device_rules(device_id: &str) -> Result<Vec<AclRule>, BrokerConfigError> {
    tad_wire::devices::check_device_id(device_id).map_err(|why| BrokerConfigError::Device {
        id: device_id.to_owned(),
        why,
    })?;
    Ok(vec![
        AclRule {
            access: Access::Write,
            filter: tad_wire::topic::device_telemetry(device_id),
        },
        AclRule {
            access: Access::Read,
            filter: tad_wire::topic::device_commands(device_id),
        },
    ])
}

/// [`render_acl`] plus one `user` block per IoT device ([`device_rules`]).
/// Errors also on an invalid device id or one that is also a node id.
pub fn render_acl_with_devices(
    nodes: &[String],
    devices: &[String],
) -> Result<String, BrokerConfigError> {
    let mut out = render_acl(nodes)?;
    for (i, d) in devices.iter().enumerate() {
        if nodes.contains(d) || devices[..i].contains(d) {
            return Err(BrokerConfigError::Duplicate { id: d.clone() });
        }
        let _ = write!(
            out,
            "\n# device: publishes only its own telemetry, reads only its own commands\nuser {d}\n"
        );
        for r in device_rules(d)? {
            let a = match r.access {
                Access::Read => "read",
                Access::Write => "write",
            };
            let _ = writeln!(out, "topic {a} {}", r.filter);
        }
    }
    Ok(out)
}

/// Renders the ACL file for `nodes` (one `user` block each, with a comment naming
/// its role). Errors on an unknown role prefix, an invalid or a duplicate id.
pub fn render_acl(nodes: &[String]) -> Result<String, BrokerConfigError> {
    let mut out = String::from(
        "# Mosquitto ACL for the tad bus (generated by tad_bus::broker::render_acl;\n\
         # regenerate with `cargo xtask certs`). The username is the CN of the client\n\
         # certificate (use_identity_as_username). Anything not allowed here is denied.\n",
    );
    for (i, n) in nodes.iter().enumerate() {
        if nodes[..i].contains(n) {
            return Err(BrokerConfigError::Duplicate { id: n.clone() });
        }
        let role = match role_of(n)? {
            Role::Gateway => {
                "gateway: publishes its own flows, evidence, counters, status, acks, enforced state; reads its own verdicts and commands"
            }
            Role::Detector => {
                "detector: reads flows, evidence, acks, settings and node statuses; writes its alerts/trust/status/settings and verdicts under its own id"
            }
            Role::Dashboard => {
                "dashboard: reads everything; writes commands under its own id, thresholds and its own status"
            }
        };
        let _ = write!(out, "\n# {role}\nuser {n}\n");
        for r in rules_for(n)? {
            let a = match r.access {
                Access::Read => "read",
                Access::Write => "write",
            };
            let _ = writeln!(out, "topic {a} {}", r.filter);
        }
    }
    Ok(out)
}

/// Settings of the generated `mosquitto.conf`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BrokerConfig {
    /// Listener address (e.g. `0.0.0.0`, the testbed address, `127.0.0.1`).
    pub bind: IpAddr,
    /// Listener port (MQTT over TLS: 8883).
    pub port: u16,
    /// CA certificate that client certificates must chain to (PEM).
    pub cafile: PathBuf,
    /// Broker certificate (PEM).
    pub certfile: PathBuf,
    /// Broker private key (PEM); readable by the broker's user only.
    pub keyfile: PathBuf,
    /// ACL file ([`render_acl`]).
    pub acl_file: PathBuf,
    /// Where the broker keeps sessions and queued QoS 1 messages across restarts
    /// (`persistence true`); `None` disables persistence (a restart then loses
    /// sessions, and clients resend their unacknowledged publishes).
    pub persistence_dir: Option<PathBuf>,
    /// Log file; `None` logs to stderr.
    pub log_file: Option<PathBuf>,
    /// `user` option: the account mosquitto switches to when started as root
    /// (`root` keeps root; Debian's default is `mosquitto`). `None` omits it.
    pub run_as_user: Option<String>,
    /// Per-client queue of QoS 1 messages held for an offline persistent session.
    pub max_queued_messages: u32,
}

impl BrokerConfig {
    /// The template for a Debian install: listener 0.0.0.0:8883, files under
    /// `/etc/mosquitto/tad/`, persistence in `/var/lib/mosquitto/`.
    pub fn debian_template() -> Self {
        Self {
            bind: IpAddr::from([0, 0, 0, 0]),
            port: 8883,
            cafile: "/etc/mosquitto/tad/ca.pem".into(),
            certfile: "/etc/mosquitto/tad/broker.pem".into(),
            keyfile: "/etc/mosquitto/tad/broker.key".into(),
            acl_file: "/etc/mosquitto/tad/acl".into(),
            persistence_dir: Some("/var/lib/mosquitto/".into()),
            log_file: None,
            run_as_user: None,
            max_queued_messages: 10_000,
        }
    }

    /// Renders `mosquitto.conf` (commented).
    pub fn render(&self) -> String {
        let mut o = String::from(
            "# Mosquitto configuration for the tad bus (generated by\n\
             # tad_bus::broker::BrokerConfig::render; see certs/README.md).\n\
             # Every setting below the listener line applies to that listener only.\n\
             per_listener_settings true\n",
        );
        if let Some(u) = &self.run_as_user {
            let _ = writeln!(o, "# Account to switch to when started as root.\nuser {u}");
        }
        match &self.persistence_dir {
            Some(d) => {
                // mosquitto wants the trailing slash on persistence_location.
                let mut d = d.display().to_string();
                if !d.ends_with('/') {
                    d.push('/');
                }
                let _ = writeln!(
                    o,
                    "# Keep sessions, subscriptions and queued QoS 1 messages across restarts.\n\
                     persistence true\npersistence_location {d}\nautosave_interval 60"
                );
            }
            None => o.push_str("persistence false\n"),
        }
        let _ = writeln!(
            o,
            "# QoS 1 messages held per offline client with a persistent session.\n\
             max_queued_messages {}",
            self.max_queued_messages
        );
        match &self.log_file {
            Some(f) => {
                let _ = writeln!(o, "log_dest file {}", f.display());
            }
            None => o.push_str("log_dest stderr\n"),
        }
        o.push_str(
            "# Small messages (verdicts, acks) leave at once: no Nagle delay, which\n\
             # otherwise held some verdicts back by 20-40 ms (reaction benchmark).\n\
             set_tcp_nodelay true\n",
        );
        o.push_str("log_type error\nlog_type warning\nlog_type notice\nlog_type information\nconnection_messages true\nlog_timestamp true\n");
        let bind = self.bind;
        let _ = write!(
            o,
            "\n# The only listener: MQTT over TLS with client certificates.\n\
             listener {port} {bind}\n\
             protocol mqtt\n\
             # CA that every client certificate must chain to.\n\
             cafile {ca}\n\
             certfile {cert}\n\
             keyfile {key}\n\
             tls_version tlsv1.2\n\
             # Mutual TLS: no certificate, no connection.\n\
             require_certificate true\n\
             # The certificate's CN (the node id) is the username the ACL matches.\n\
             use_identity_as_username true\n\
             allow_anonymous false\n\
             acl_file {acl}\n",
            port = self.port,
            ca = self.cafile.display(),
            cert = self.certfile.display(),
            key = self.keyfile.display(),
            acl = self.acl_file.display(),
        );
        o
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nodes() -> Vec<String> {
        ["gateway-1", "detector-1", "dashboard"]
            .map(String::from)
            .to_vec()
    }

    #[test]
    fn roles_come_from_the_id_prefix() {
        assert_eq!(role_of("gateway-1").unwrap(), Role::Gateway);
        assert_eq!(role_of("detector-jetson").unwrap(), Role::Detector);
        assert_eq!(role_of("dashboard").unwrap(), Role::Dashboard);
        assert!(matches!(
            role_of("gateway-"),
            Err(BrokerConfigError::UnknownRole { .. })
        ));
        assert!(matches!(
            role_of("printer-3"),
            Err(BrokerConfigError::UnknownRole { .. })
        ));
    }

    #[test]
    fn gateway_is_confined_to_its_own_topics() {
        let r = rules_for("gateway-1").unwrap();
        assert!(allowed(&r, Access::Write, "tad/v1/gw/gateway-1/flows/0"));
        assert!(allowed(&r, Access::Write, "tad/v1/gw/gateway-1/status"));
        assert!(allowed(&r, Access::Write, "tad/v1/gw/gateway-1/state"));
        assert!(allowed(
            &r,
            Access::Write,
            "tad/v1/gw/gateway-1/state/delta"
        ));
        assert!(!allowed(
            &r,
            Access::Write,
            "tad/v1/gw/gateway-1/verdicts/detector-1"
        ));
        assert!(!allowed(&r, Access::Write, "tad/v1/gw/gateway-2/flows/0"));
        assert!(!allowed(&r, Access::Write, "tad/v1/gw/gateway-2/state"));
        assert!(allowed(&r, Access::Write, "tad/v1/gw/gateway-1/evidence/0"));
        assert!(!allowed(
            &r,
            Access::Write,
            "tad/v1/gw/gateway-2/evidence/0"
        ));
        assert!(
            !allowed(&r, Access::Write, "tad/v1/gw/gateway-1/evidence/0/x"),
            "one partition level only"
        );
        assert!(!allowed(&r, Access::Read, "tad/v1/gw/gateway-1/evidence/0"));
        assert!(allowed(
            &r,
            Access::Read,
            "tad/v1/gw/gateway-1/verdicts/detector-1"
        ));
        assert!(allowed(
            &r,
            Access::Read,
            "tad/v1/gw/gateway-1/commands/dashboard"
        ));
        assert!(!allowed(
            &r,
            Access::Read,
            "tad/v1/gw/gateway-2/verdicts/detector-1"
        ));
        assert!(!allowed(&r, Access::Read, "tad/v1/gw/gateway-1/flows/0"));
    }

    #[test]
    fn detector_and_dashboard_rules() {
        let d = rules_for("detector-1").unwrap();
        assert!(allowed(&d, Access::Read, "tad/v1/gw/gateway-7/flows/3"));
        assert!(allowed(&d, Access::Read, "tad/v1/gw/gateway-7/evidence/3"));
        assert!(
            !allowed(&d, Access::Write, "tad/v1/gw/gateway-7/evidence/3"),
            "only the gateway publishes its evidence"
        );
        assert!(allowed(
            &d,
            Access::Write,
            "tad/v1/gw/gateway-7/verdicts/detector-1"
        ));
        assert!(
            !allowed(&d, Access::Write, "tad/v1/gw/gateway-7/verdicts/detector-2"),
            "a detector publishes verdicts only under its own id"
        );
        assert!(allowed(
            &d,
            Access::Write,
            "tad/v1/det/detector-1/settings/schema"
        ));
        assert!(allowed(&d, Access::Write, "tad/v1/det/detector-1/alerts"));
        assert!(!allowed(&d, Access::Write, "tad/v1/det/detector-2/alerts"));
        assert!(!allowed(
            &d,
            Access::Write,
            "tad/v1/gw/gateway-7/commands/detector-1"
        ));
        assert!(!allowed(
            &d,
            Access::Read,
            "tad/v1/gw/gateway-7/commands/dashboard"
        ));
        let b = rules_for("dashboard").unwrap();
        assert!(allowed(&b, Access::Read, "tad/v1/det/detector-1/alerts"));
        assert!(allowed(
            &b,
            Access::Write,
            "tad/v1/gw/gateway-1/commands/dashboard"
        ));
        assert!(!allowed(
            &b,
            Access::Write,
            "tad/v1/gw/gateway-1/commands/dashboard-2"
        ));
        assert!(allowed(&b, Access::Write, "tad/v1/settings/thresholds"));
        assert!(allowed(&b, Access::Write, "tad/v1/dash/dashboard/status"));
        assert!(!allowed(
            &b,
            Access::Write,
            "tad/v1/gw/gateway-1/verdicts/dashboard"
        ));
    }

    #[test]
    fn duplicate_and_unknown_nodes_are_errors() {
        let mut n = nodes();
        n.push("gateway-1".into());
        assert!(matches!(
            render_acl(&n),
            Err(BrokerConfigError::Duplicate { .. })
        ));
        assert!(matches!(
            render_acl(&["camera-1".into()]),
            Err(BrokerConfigError::UnknownRole { .. })
        ));
    }

    /// The templates shipped in `bus/mosquitto/` are exactly what the code renders
    /// for the default nodes; regenerate them with
    /// `TAD_BLESS=1 cargo test -p tad-bus --lib broker`.
    #[test]
    fn shipped_templates_are_current() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("mosquitto");
        let acl = render_acl(&nodes()).unwrap();
        let conf = BrokerConfig::debian_template().render();
        if std::env::var_os("TAD_BLESS").is_some() {
            std::fs::write(dir.join("acl.example"), &acl).unwrap();
            std::fs::write(dir.join("mosquitto.conf.example"), &conf).unwrap();
        }
        let read = |f: &str| std::fs::read_to_string(dir.join(f)).unwrap_or_default();
        assert_eq!(
            read("acl.example"),
            acl,
            "bus/mosquitto/acl.example is stale"
        );
        assert_eq!(
            read("mosquitto.conf.example"),
            conf,
            "bus/mosquitto/mosquitto.conf.example is stale"
        );
    }
}
