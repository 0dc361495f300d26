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
pub fn counters(gw: &str) -> String {
    format!("{TOPIC_ROOT}/gw/{gw}/counters")
}
pub fn gateway_status(gw: &str) -> String {
    format!("{TOPIC_ROOT}/gw/{gw}/status")
}
pub fn acks(gw: &str) -> String {
    format!("{TOPIC_ROOT}/gw/{gw}/acks")
}
pub fn verdicts(gw: &str) -> String {
    format!("{TOPIC_ROOT}/gw/{gw}/verdicts")
}
pub fn commands(gw: &str) -> String {
    format!("{TOPIC_ROOT}/gw/{gw}/commands")
}
pub fn alerts(det: &str) -> String {
    format!("{TOPIC_ROOT}/det/{det}/alerts")
}
pub fn trust(det: &str) -> String {
    format!("{TOPIC_ROOT}/det/{det}/trust")
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
    /// `tad/v1/gw/<gw>/counters`: `CountersSnapshot`.
    Counters { gateway: String },
    /// `tad/v1/gw/<gw>/status`: `NodeStatus`.
    GatewayStatus { gateway: String },
    /// `tad/v1/gw/<gw>/acks`: `Ack`.
    Acks { gateway: String },
    /// `tad/v1/gw/<gw>/verdicts`: `Verdict`.
    Verdicts { gateway: String },
    /// `tad/v1/gw/<gw>/commands`: `Command`.
    Commands { gateway: String },
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
            ["gw", g, "counters"] => TopicKind::Counters { gateway: id(g)? },
            ["gw", g, "status"] => TopicKind::GatewayStatus { gateway: id(g)? },
            ["gw", g, "acks"] => TopicKind::Acks { gateway: id(g)? },
            ["gw", g, "verdicts"] => TopicKind::Verdicts { gateway: id(g)? },
            ["gw", g, "commands"] => TopicKind::Commands { gateway: id(g)? },
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
            TopicKind::parse(&topic::verdicts("g")),
            Some(TopicKind::Verdicts {
                gateway: "g".into()
            })
        );
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
