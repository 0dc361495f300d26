//! The topic scheme (see the crate docs for the table): builders for every topic,
//! MQTT filter matching (MQTT v5 §4.7) and parsing a received topic back into what
//! it carries.

use crate::TOPIC_ROOT;

pub fn flows(gw: &str, partition: u16) -> String {
    format!("{TOPIC_ROOT}/gw/{gw}/flows/{partition}")
}
/// Subscription filter for one partition from every gateway.
pub fn flows_partition_filter(partition: u16) -> String {
    format!("{TOPIC_ROOT}/gw/+/flows/{partition}")
}
/// `tad/v1/gw/<gw>/evidence/<p>`: `EvidenceBatch`es of partition `p`.
pub fn evidence(gw: &str, partition: u16) -> String {
    format!("{TOPIC_ROOT}/gw/{gw}/evidence/{partition}")
}
/// Subscription filter for one evidence partition from every gateway.
pub fn evidence_partition_filter(partition: u16) -> String {
    format!("{TOPIC_ROOT}/gw/+/evidence/{partition}")
}
pub fn counters(gw: &str) -> String {
    format!("{TOPIC_ROOT}/gw/{gw}/counters")
}
pub fn gateway_status(gw: &str) -> String {
    format!("{TOPIC_ROOT}/gw/{gw}/status")
}
pub fn acks(gw: &str) -> String {
    format!("{TOPIC_ROOT}/gw/{gw}/acks")
}
/// `tad/v1/gw/<gw>/verdicts/<det>`: verdicts for gateway `gw` from detector `det`.
/// The last level is the publisher's certificate identity: the broker's ACL lets
/// detector `det` publish only there, and the gateway checks it against `[trust]`.
pub fn verdicts(gw: &str, det: &str) -> String {
    format!("{TOPIC_ROOT}/gw/{gw}/verdicts/{det}")
}
/// Subscription filter for the verdicts of every detector to gateway `gw`.
pub fn verdicts_filter(gw: &str) -> String {
    format!("{TOPIC_ROOT}/gw/{gw}/verdicts/+")
}
/// `tad/v1/gw/<gw>/commands/<dash>`: operator commands from dashboard `dash` (the
/// last level is the publisher's certificate identity, as for [`verdicts`]).
pub fn commands(gw: &str, dash: &str) -> String {
    format!("{TOPIC_ROOT}/gw/{gw}/commands/{dash}")
}
/// Subscription filter for the commands of every dashboard to gateway `gw`.
pub fn commands_filter(gw: &str) -> String {
    format!("{TOPIC_ROOT}/gw/{gw}/commands/+")
}
/// `tad/v1/gw/<gw>/state`: the gateway's retained `GatewayState` snapshot (what it
/// enforces, read from its maps).
pub fn gateway_state(gw: &str) -> String {
    format!("{TOPIC_ROOT}/gw/{gw}/state")
}
/// `tad/v1/gw/<gw>/state/delta`: `GatewayStateDelta`s between snapshots.
pub fn gateway_state_delta(gw: &str) -> String {
    format!("{TOPIC_ROOT}/gw/{gw}/state/delta")
}
/// `tad/v1/det/<det>/settings/schema`: the retained `SettingsSchema` of detector `det`.
pub fn settings_schema(det: &str) -> String {
    format!("{TOPIC_ROOT}/det/{det}/settings/schema")
}
/// `tad/v1/det/<det>/settings/acks`: `SettingsAck`s of detector `det`.
pub fn settings_acks(det: &str) -> String {
    format!("{TOPIC_ROOT}/det/{det}/settings/acks")
}
pub fn alerts(det: &str) -> String {
    format!("{TOPIC_ROOT}/det/{det}/alerts")
}
pub fn trust(det: &str) -> String {
    format!("{TOPIC_ROOT}/det/{det}/trust")
}
/// Every gateway's status (retained): `tad/v1/gw/+/status`.
pub fn gateway_status_filter() -> String {
    format!("{TOPIC_ROOT}/gw/+/status")
}
/// Every detector's status (retained; the broker publishes a detector's Last
/// Will, `online: false`, when its connection dies): `tad/v1/det/+/status`.
pub fn detector_status_filter() -> String {
    format!("{TOPIC_ROOT}/det/+/status")
}
pub fn detector_status(det: &str) -> String {
    format!("{TOPIC_ROOT}/det/{det}/status")
}
pub fn dashboard_status(id: &str) -> String {
    format!("{TOPIC_ROOT}/dash/{id}/status")
}
pub fn thresholds() -> String {
    format!("{TOPIC_ROOT}/settings/thresholds")
}

/// `tad/v1/gw/<gw>/devices/telemetry`: `DeviceTelemetryBatch`es (`crate::devices`).
pub fn devices_telemetry(gw: &str) -> String {
    format!("{TOPIC_ROOT}/gw/{gw}/devices/telemetry")
}
/// Subscription filter for the device telemetry batches of every gateway.
pub fn devices_telemetry_filter() -> String {
    format!("{TOPIC_ROOT}/gw/+/devices/telemetry")
}
/// `tad/v1/gw/<gw>/devices/refusals`: `DeviceRefusals`.
pub fn devices_refusals(gw: &str) -> String {
    format!("{TOPIC_ROOT}/gw/{gw}/devices/refusals")
}
/// `tad/v1/gw/<gw>/devices/trust`: `DeviceTrustChanges`.
pub fn devices_trust(gw: &str) -> String {
    format!("{TOPIC_ROOT}/gw/{gw}/devices/trust")
}
/// `tad/v1/gw/<gw>/devices/decisions`: `DeviceCommandDecision`s.
pub fn devices_decisions(gw: &str) -> String {
    format!("{TOPIC_ROOT}/gw/{gw}/devices/decisions")
}
/// `tad/v1/gw/<gw>/devices/vulns`: `DeviceVulnReport`s.
pub fn devices_vulns(gw: &str) -> String {
    format!("{TOPIC_ROOT}/gw/{gw}/devices/vulns")
}
/// `tad/v1/gw/<gw>/devices/state`: the retained `DeviceStates`.
pub fn devices_state(gw: &str) -> String {
    format!("{TOPIC_ROOT}/gw/{gw}/devices/state")
}
/// Subscription filter for everything gateways publish about devices.
pub fn devices_all_filter() -> String {
    format!("{TOPIC_ROOT}/gw/+/devices/#")
}
/// `tad/v1/gw/<gw>/devices/requests/<dash>`: signed `DeviceCommandRequest`s from
/// dashboard `dash` (the last level is the publisher's certificate identity).
pub fn device_requests(gw: &str, dash: &str) -> String {
    format!("{TOPIC_ROOT}/gw/{gw}/devices/requests/{dash}")
}
/// Subscription filter for the device command requests to gateway `gw`.
pub fn device_requests_filter(gw: &str) -> String {
    format!("{TOPIC_ROOT}/gw/{gw}/devices/requests/+")
}
/// `tad/v1/dev/<device>/telemetry`: the device's signed telemetry.
pub fn device_telemetry(device: &str) -> String {
    format!("{TOPIC_ROOT}/dev/{device}/telemetry")
}
/// Subscription filter for every device's telemetry.
pub const DEVICE_TELEMETRY_FILTER: &str = "tad/v1/dev/+/telemetry";
/// `tad/v1/dev/<device>/commands`: vetted commands the gateway forwards to the device.
pub fn device_commands(device: &str) -> String {
    format!("{TOPIC_ROOT}/dev/{device}/commands")
}

/// True when topic `topic` matches subscription filter `filter` (MQTT v5 §4.7:
/// `+` matches exactly one level, a trailing `#` matches the parent and any number
/// of levels; topics starting with `$` are not matched by a leading wildcard).
pub fn topic_matches(filter: &str, topic: &str) -> bool {
    if topic.starts_with('$') && (filter.starts_with('+') || filter.starts_with('#')) {
        return false;
    }
    let mut f = filter.split('/');
    let mut t = topic.split('/');
    loop {
        match (f.next(), t.next()) {
            (Some("#"), _) => return true,
            (Some("+"), Some(_)) => {}
            (Some(a), Some(b)) if a == b => {}
            (None, None) => return true,
            _ => return false,
        }
    }
}

/// What a topic of the scheme carries, with the node id (and partition) it names.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TopicKind {
    /// `tad/v1/gw/<gw>/flows/<partition>`: `FlowBatch`.
    Flows { gateway: String, partition: u16 },
    /// `tad/v1/gw/<gw>/evidence/<partition>`: `EvidenceBatch`.
    Evidence { gateway: String, partition: u16 },
    /// `tad/v1/gw/<gw>/counters`: `CountersSnapshot`.
    Counters { gateway: String },
    /// `tad/v1/gw/<gw>/status`: `NodeStatus`.
    GatewayStatus { gateway: String },
    /// `tad/v1/gw/<gw>/acks`: `Ack`.
    Acks { gateway: String },
    /// `tad/v1/gw/<gw>/verdicts/<det>`: signed `Verdict` from detector `det`.
    Verdicts { gateway: String, detector: String },
    /// `tad/v1/gw/<gw>/commands/<dash>`: signed `Command` from dashboard `dash`.
    Commands { gateway: String, dashboard: String },
    /// `tad/v1/gw/<gw>/state`: retained `GatewayState`.
    GatewayState { gateway: String },
    /// `tad/v1/gw/<gw>/state/delta`: `GatewayStateDelta`.
    GatewayStateDelta { gateway: String },
    /// `tad/v1/det/<det>/settings/schema`: retained `SettingsSchema`.
    SettingsSchema { detector: String },
    /// `tad/v1/det/<det>/settings/acks`: `SettingsAck`.
    SettingsAck { detector: String },
    /// `tad/v1/det/<det>/alerts`: `Alert`.
    Alerts { detector: String },
    /// `tad/v1/det/<det>/trust`: `TrustUpdate`.
    Trust { detector: String },
    /// `tad/v1/det/<det>/status`: `NodeStatus`.
    DetectorStatus { detector: String },
    /// `tad/v1/dash/<id>/status`: `NodeStatus`.
    DashboardStatus { dashboard: String },
    /// `tad/v1/settings/thresholds`: `ThresholdSettings`.
    Thresholds,
}

impl TopicKind {
    /// Parses a concrete topic (no wildcards). `None` for anything outside the scheme.
    pub fn parse(topic: &str) -> Option<TopicKind> {
        let rest = topic.strip_prefix(TOPIC_ROOT)?.strip_prefix('/')?;
        let parts: Vec<&str> = rest.split('/').collect();
        let id = |s: &str| (!s.is_empty()).then(|| s.to_owned());
        Some(match parts.as_slice() {
            ["gw", g, "flows", p] => TopicKind::Flows {
                gateway: id(g)?,
                partition: p.parse().ok()?,
            },
            ["gw", g, "evidence", p] => TopicKind::Evidence {
                gateway: id(g)?,
                partition: p.parse().ok()?,
            },
            ["gw", g, "counters"] => TopicKind::Counters { gateway: id(g)? },
            ["gw", g, "status"] => TopicKind::GatewayStatus { gateway: id(g)? },
            ["gw", g, "acks"] => TopicKind::Acks { gateway: id(g)? },
            ["gw", g, "verdicts", d] => TopicKind::Verdicts {
                gateway: id(g)?,
                detector: id(d)?,
            },
            ["gw", g, "commands", d] => TopicKind::Commands {
                gateway: id(g)?,
                dashboard: id(d)?,
            },
            ["gw", g, "state"] => TopicKind::GatewayState { gateway: id(g)? },
            ["gw", g, "state", "delta"] => TopicKind::GatewayStateDelta { gateway: id(g)? },
            ["det", d, "settings", "schema"] => TopicKind::SettingsSchema { detector: id(d)? },
            ["det", d, "settings", "acks"] => TopicKind::SettingsAck { detector: id(d)? },
            ["det", d, "alerts"] => TopicKind::Alerts { detector: id(d)? },
            ["det", d, "trust"] => TopicKind::Trust { detector: id(d)? },
            ["det", d, "status"] => TopicKind::DetectorStatus { detector: id(d)? },
            ["dash", d, "status"] => TopicKind::DashboardStatus { dashboard: id(d)? },
            ["settings", "thresholds"] => TopicKind::Thresholds,
            _ => return None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::topic;

    #[test]
    fn wildcards_follow_mqtt_rules() {
        assert!(topic_matches("tad/v1/#", "tad/v1/gw/g/flows/0"));
        assert!(topic_matches("tad/v1/#", "tad/v1"));
        assert!(topic_matches("tad/v1/gw/+/flows/#", "tad/v1/gw/g/flows/3"));
        assert!(!topic_matches(
            "tad/v1/gw/+/flows/#",
            "tad/v1/gw/g/counters"
        ));
        assert!(!topic_matches("tad/v1/gw/+", "tad/v1/gw/g/status"));
        assert!(!topic_matches("tad/v1/gw/g", "tad/v1/gw/g/status"));
        assert!(!topic_matches("#", "$SYS/broker/uptime"));
        assert!(topic_matches("tad/v1/gw/g/status", "tad/v1/gw/g/status"));
    }

    #[test]
    fn every_scheme_topic_parses_back() {
        assert_eq!(
            TopicKind::parse(&topic::flows("gateway-1", 2)),
            Some(TopicKind::Flows {
                gateway: "gateway-1".into(),
                partition: 2
            })
        );
        assert_eq!(
            TopicKind::parse(&topic::evidence("gateway-1", 3)),
            Some(TopicKind::Evidence {
                gateway: "gateway-1".into(),
                partition: 3
            })
        );
        assert!(topic_matches(
            &topic::evidence_partition_filter(3),
            &topic::evidence("gateway-1", 3)
        ));
        assert_eq!(
            TopicKind::parse(&topic::verdicts("g", "detector-1")),
            Some(TopicKind::Verdicts {
                gateway: "g".into(),
                detector: "detector-1".into()
            })
        );
        assert_eq!(
            TopicKind::parse(&topic::commands("g", "dashboard")),
            Some(TopicKind::Commands {
                gateway: "g".into(),
                dashboard: "dashboard".into()
            })
        );
        assert_eq!(
            TopicKind::parse(&topic::gateway_state_delta("g")),
            Some(TopicKind::GatewayStateDelta {
                gateway: "g".into()
            })
        );
        assert_eq!(
            TopicKind::parse(&topic::settings_schema("detector-1")),
            Some(TopicKind::SettingsSchema {
                detector: "detector-1".into()
            })
        );
        assert!(topic_matches(
            &topic::verdicts_filter("g"),
            &topic::verdicts("g", "detector-2")
        ));
        assert_eq!(TopicKind::parse("tad/v1/gw/g/verdicts"), None);
        assert_eq!(TopicKind::parse("tad/v1/gw/g/verdicts/"), None);
        assert_eq!(
            TopicKind::parse(&topic::dashboard_status("dashboard")),
            Some(TopicKind::DashboardStatus {
                dashboard: "dashboard".into()
            })
        );
        assert_eq!(
            TopicKind::parse(&topic::thresholds()),
            Some(TopicKind::Thresholds)
        );
        assert_eq!(TopicKind::parse("tad/v1/gw//status"), None);
        assert_eq!(TopicKind::parse("tad/v1/gw/g/flows/x"), None);
        assert_eq!(TopicKind::parse("other/v1/gw/g/status"), None);
    }
}
