//! Validated identifiers: the one definition of what a node id and a block target
//! may be. Both check themselves when parsed and when deserialised, so a payload,
//! a config file, a CLI argument and an API request are refused by the same rule
//! with the same message.
//!
//! - [`NodeId`]: a node's id is its client certificate's CN, the broker's username
//!   for the ACL (mosquitto `use_identity_as_username`) and one topic level, so it
//!   must be safe in all three: 1–64 bytes of ASCII letters, digits, `-`, `_`, `.`;
//!   its prefix names its role ([`NodeId::role`]).
//! - [`Target`]: a block target, an IPv4/IPv6 address (a host, /32 or /128) or a
//!   CIDR prefix with no host bits set (refused rather than silently widened, so
//!   nobody blocks more than they typed). How wide a block may be is the gateway's
//!   policy, [`WidthPolicy`]; the dashboard checks the same policy before it sends.

use std::{fmt, net::IpAddr, str::FromStr};

use ipnet::IpNet;
use serde::{Deserialize, Deserializer, Serialize};

use crate::Role;

/// Longest node id, bytes.
pub const NODE_ID_MAX_LEN: usize = 64;

/// Why a node id or target was refused. The message names the input.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    #[error("node id {id:?} is refused: {why}")]
    NodeId { id: String, why: &'static str },
    #[error("target {input:?} is refused: {why}")]
    Target { input: String, why: String },
}

/// A validated node id (see the module docs for the rule).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct NodeId(String);

impl NodeId {
    /// Checks `id` against the rule; the error says which part failed.
    pub fn parse(id: &str) -> Result<NodeId, IdError> {
        let err = |why| {
            Err(IdError::NodeId {
                id: id.to_owned(),
                why,
            })
        };
        if id.is_empty() {
            return err("it is empty");
        }
        if id.len() > NODE_ID_MAX_LEN {
            return err("it is longer than 64 bytes");
        }
        if !id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        {
            return err("only ASCII letters, digits, '-', '_' and '.' are allowed");
        }
        Ok(NodeId(id.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The role the id's prefix names: `gateway-<x>` → gateway, `detector-<x>` →
    /// detector, `dashboard[...]` → dashboard; `None` for any other id.
    pub fn role(&self) -> Option<Role> {
        let id = self.0.as_str();
        let named = |p: &str| id.len() > p.len() && id.starts_with(p);
        if named("gateway-") {
            Some(Role::Gateway)
        } else if named("detector-") {
            Some(Role::Detector)
        } else if id.starts_with("dashboard") {
            Some(Role::Dashboard)
        } else {
            None
        }
    }
}

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A node id reads as the `&str` it is (topic builders, log fields).
impl std::ops::Deref for NodeId {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

impl AsRef<str> for NodeId {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl PartialEq<str> for NodeId {
    fn eq(&self, other: &str) -> bool {
        self.0 == other
    }
}

impl PartialEq<&str> for NodeId {
    fn eq(&self, other: &&str) -> bool {
        self.0 == *other
    }
}

impl FromStr for NodeId {
    type Err = IdError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        NodeId::parse(s)
    }
}

impl<'de> Deserialize<'de> for NodeId {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        NodeId::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// A validated block target: an address or a prefix with no host bits set.
/// Serialised as `ipnet`'s text form (`192.0.2.7/32`); deserialised from either an
/// address or a prefix.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct Target(IpNet);

impl Target {
    /// Parses `192.0.2.7` (= /32), `2001:db8::1` (= /128) or `198.51.100.0/24`;
    /// surrounding white space is ignored.
    pub fn parse(input: &str) -> Result<Target, IdError> {
        let s = input.trim();
        let bad = |why: String| IdError::Target {
            input: input.to_owned(),
            why,
        };
        if s.is_empty() {
            return Err(bad("it is empty".into()));
        }
        let net = if s.contains('/') {
            s.parse::<IpNet>().map_err(|_| {
                bad("not an address/prefix-length (e.g. 192.0.2.0/24, 2001:db8::/32)".into())
            })?
        } else {
            IpNet::from(
                s.parse::<IpAddr>()
                    .map_err(|_| bad("not an IP address or CIDR prefix".into()))?,
            )
        };
        Target::new(net).map_err(|e| match e {
            IdError::Target { why, .. } => bad(why),
            other => other,
        })
    }

    /// Checks that `net` has no host bits set.
    pub fn new(net: IpNet) -> Result<Target, IdError> {
        if net.trunc() != net {
            return Err(IdError::Target {
                input: net.to_string(),
                why: format!(
                    "host bits set below /{}; did you mean {}?",
                    net.prefix_len(),
                    net.trunc()
                ),
            });
        }
        Ok(Target(net))
    }

    /// The target of one address (/32 or /128).
    pub fn host(addr: IpAddr) -> Target {
        Target(IpNet::from(addr))
    }

    pub fn net(&self) -> IpNet {
        self.0
    }

    pub fn prefix_len(&self) -> u8 {
        self.0.prefix_len()
    }

    pub fn is_host(&self) -> bool {
        self.0.prefix_len() == self.0.max_prefix_len()
    }
}

/// Read access to the prefix (`addr`, `contains`, `max_prefix_len`, ...).
impl std::ops::Deref for Target {
    type Target = IpNet;
    fn deref(&self) -> &IpNet {
        &self.0
    }
}

impl From<Target> for IpNet {
    fn from(t: Target) -> IpNet {
        t.0
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl FromStr for Target {
    type Err = IdError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Target::parse(s)
    }
}

impl<'de> Deserialize<'de> for Target {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Target::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// How wide a block may be: the narrowest prefix length allowed per family. The
/// gateway applies it to every verdict and command (`[verdicts]` in its config);
/// the dashboard applies the same values before it sends a command, so it refuses
/// what the gateway would refuse, with the same message.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WidthPolicy {
    /// Shortest IPv4 prefix length a block may have (default 16).
    pub min_prefix_v4: u8,
    /// Shortest IPv6 prefix length a block may have (default 48).
    pub min_prefix_v6: u8,
}

impl Default for WidthPolicy {
    fn default() -> Self {
        WidthPolicy {
            min_prefix_v4: 16,
            min_prefix_v6: 48,
        }
    }
}

impl WidthPolicy {
    /// Refuses a target wider than the policy allows.
    pub fn check(&self, target: &Target) -> Result<(), IdError> {
        let (min, what) = match target.0 {
            IpNet::V4(_) => (self.min_prefix_v4, "IPv4"),
            IpNet::V6(_) => (self.min_prefix_v6, "IPv6"),
        };
        if target.prefix_len() < min {
            return Err(IdError::Target {
                input: target.to_string(),
                why: format!("wider than the narrowest {what} prefix allowed (/{min})"),
            });
        }
        Ok(())
    }

    /// Problems with the policy itself (lengths beyond the family's width).
    pub fn problems(&self) -> Vec<String> {
        let mut p = Vec::new();
        if self.min_prefix_v4 > 32 {
            p.push(format!(
                "min_prefix_v4 {} is more than 32",
                self.min_prefix_v4
            ));
        }
        if self.min_prefix_v6 > 128 {
            p.push(format!(
                "min_prefix_v6 {} is more than 128",
                self.min_prefix_v6
            ));
        }
        p
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_ids_that_would_break_topics_or_acls_are_refused() {
        for bad in ["", "a/b", "a+b", "a#", "gw 1", "é", &"x".repeat(65)] {
            let e = NodeId::parse(bad).unwrap_err().to_string();
            assert!(e.contains(&format!("{bad:?}")), "{e}");
        }
        assert_eq!(
            NodeId::parse("gateway-1.site_a").unwrap().as_str(),
            "gateway-1.site_a"
        );
        let e = serde_json::from_str::<NodeId>("\"a/b\"")
            .unwrap_err()
            .to_string();
        assert!(e.contains("only ASCII letters"), "{e}");
    }

    #[test]
    fn roles_come_from_the_prefix() {
        let r = |s: &str| NodeId::parse(s).unwrap().role();
        assert_eq!(r("gateway-1"), Some(Role::Gateway));
        assert_eq!(r("detector-a"), Some(Role::Detector));
        assert_eq!(r("dashboard"), Some(Role::Dashboard));
        assert_eq!(r("gateway-"), None);
        assert_eq!(r("sensor-1"), None);
    }

    #[test]
    fn targets_are_hosts_or_clean_prefixes() {
        assert_eq!(
            Target::parse(" 192.0.2.7 ").unwrap().to_string(),
            "192.0.2.7/32"
        );
        assert_eq!(Target::parse("2001:db8::1").unwrap().prefix_len(), 128);
        assert!(Target::parse("198.51.100.0/24").unwrap().prefix_len() == 24);
        let e = Target::parse("192.0.2.7/24").unwrap_err().to_string();
        assert!(e.contains("did you mean 192.0.2.0/24"), "{e}");
        for bad in ["", "nope", "192.0.2.300", "192.0.2.0/33"] {
            let e = Target::parse(bad).unwrap_err().to_string();
            assert!(e.contains(&format!("{bad:?}")), "{e}");
        }
        let e = serde_json::from_str::<Target>("\"10.0.0.1/8\"").unwrap_err();
        assert!(e.to_string().contains("host bits"), "{e}");
        let t: Target = serde_json::from_str("\"203.0.113.9\"").unwrap();
        assert_eq!(serde_json::to_string(&t).unwrap(), "\"203.0.113.9/32\"");
    }

    #[test]
    fn width_policy_refuses_wide_blocks_by_family() {
        let p = WidthPolicy::default();
        assert!(p.check(&Target::parse("198.51.0.0/16").unwrap()).is_ok());
        let e = p
            .check(&Target::parse("192.0.0.0/12").unwrap())
            .unwrap_err();
        assert_eq!(
            e.to_string(),
            "target \"192.0.0.0/12\" is refused: wider than the narrowest IPv4 prefix allowed (/16)"
        );
        assert!(p.check(&Target::parse("2001:db8::/32").unwrap()).is_err());
        assert!(p.check(&Target::parse("2001:db8:1::/48").unwrap()).is_ok());
        assert_eq!(
            WidthPolicy {
                min_prefix_v4: 33,
                min_prefix_v6: 0
            }
            .problems()
            .len(),
            1
        );
    }
}
