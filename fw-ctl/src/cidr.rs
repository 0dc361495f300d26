//! Parsing of the operator's prefixes and TTLs, and their LPM-trie key encoding.
//!
//! A prefix is an IPv4/IPv6 address (a host: /32 or /128) or `address/len`. A
//! prefix with bits set below its length (`192.0.2.7/24`) is refused rather than
//! silently widened, so an operator never blocks more than they typed. Keys are
//! aya's `lpm_trie::Key`: prefix length in bits, then the address in network byte
//! order (kernel Documentation/bpf/map_lpm_trie.rst).

use std::time::Duration;

use aya::maps::lpm_trie::Key;
use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use tad_wire::MAX_TTL_S;

use crate::error::{CtlError, Result};

/// Parses an address or CIDR prefix. Errors name the input and say why.
pub fn parse_prefix(input: &str) -> Result<IpNet> {
    tad_wire::Target::parse(input)
        .map(|t| t.net())
        .map_err(|e| CtlError::InvalidCidr {
            input: input.to_string(),
            why: match e {
                tad_wire::IdError::Target { why, .. } => why,
                other => other.to_string(),
            },
        })
}

/// Parses every argument; the first invalid one is the error, and nothing is
/// returned for a partly valid list.
pub fn parse_prefixes<S: AsRef<str>>(inputs: &[S]) -> Result<Vec<IpNet>> {
    inputs.iter().map(|s| parse_prefix(s.as_ref())).collect()
}

/// clap value parser for a prefix argument.
pub fn clap_prefix(s: &str) -> std::result::Result<IpNet, String> {
    parse_prefix(s).map_err(|e| e.to_string())
}

/// Parses a TTL such as `90s`, `10m`, `2h`, `7d` or `1h30m` (humantime syntax); a
/// bare number is seconds. `0`, `none` and `permanent` mean no expiry (`None`).
/// At most [`MAX_TTL_S`] (30 days).
pub fn parse_ttl(input: &str) -> Result<Option<Duration>> {
    let s = input.trim();
    let bad = |why: String| CtlError::InvalidTtl {
        input: input.to_string(),
        why,
    };
    if matches!(s, "0" | "none" | "permanent" | "forever") {
        return Ok(None);
    }
    let d = if let Ok(secs) = s.parse::<u64>() {
        Duration::from_secs(secs)
    } else {
        humantime::parse_duration(s)
            .map_err(|e| bad(format!("{e} (examples: 90s, 10m, 2h, 7d)")))?
    };
    if d < Duration::from_secs(1) {
        return Err(bad("must be at least 1s".into()));
    }
    if d.as_secs() > MAX_TTL_S {
        return Err(bad(format!(
            "longer than the maximum of {MAX_TTL_S} s (30 days)"
        )));
    }
    Ok(Some(d))
}

/// A TTL argument: `None` = permanent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ttl(pub Option<Duration>);

/// clap value parser for a TTL argument.
pub fn clap_ttl(s: &str) -> std::result::Result<Ttl, String> {
    parse_ttl(s).map(Ttl).map_err(|e| e.to_string())
}

/// LPM key of an IPv4 prefix (address in network byte order).
pub fn key_v4(net: &Ipv4Net) -> Key<[u8; 4]> {
    Key::new(net.prefix_len() as u32, net.network().octets())
}

/// LPM key of an IPv6 prefix (address in network byte order).
pub fn key_v6(net: &Ipv6Net) -> Key<[u8; 16]> {
    Key::new(net.prefix_len() as u32, net.network().octets())
}

/// The prefix an IPv4 LPM key stands for.
pub fn net_of_v4(key: &Key<[u8; 4]>) -> IpNet {
    let len = key.prefix_len().min(32) as u8;
    IpNet::V4(
        Ipv4Net::new(key.data().into(), len)
            .expect("length clamped")
            .trunc(),
    )
}

/// The prefix an IPv6 LPM key stands for.
pub fn net_of_v6(key: &Key<[u8; 16]>) -> IpNet {
    let len = key.prefix_len().min(128) as u8;
    IpNet::V6(
        Ipv6Net::new(key.data().into(), len)
            .expect("length clamped")
            .trunc(),
    )
}

/// Whether two prefixes share at least one address.
pub fn overlaps(a: &IpNet, b: &IpNet) -> bool {
    a.contains(b) || b.contains(a)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_and_prefixes() {
        assert_eq!(
            parse_prefix("192.0.2.7").unwrap().to_string(),
            "192.0.2.7/32"
        );
        assert_eq!(
            parse_prefix(" 198.51.100.0/24 ").unwrap().to_string(),
            "198.51.100.0/24"
        );
        assert_eq!(
            parse_prefix("2001:db8::1").unwrap().to_string(),
            "2001:db8::1/128"
        );
    }

    #[test]
    fn invalid_prefixes_name_the_input() {
        for bad in [
            "",
            "192.0.2.256",
            "192.0.2.0/33",
            "example.com",
            "10.0.0.0/8x",
        ] {
            let e = parse_prefix(bad).unwrap_err().to_string();
            assert!(e.contains(&format!("{bad:?}")), "{e}");
        }
        let e = parse_prefix("192.0.2.7/24").unwrap_err().to_string();
        assert!(e.contains("192.0.2.0/24"), "{e}");
        let all = parse_prefixes(&["192.0.2.1", "nope", "192.0.2.2"]);
        assert!(all.unwrap_err().to_string().contains("\"nope\""));
    }

    #[test]
    fn ttls() {
        assert_eq!(parse_ttl("10m").unwrap(), Some(Duration::from_secs(600)));
        assert_eq!(parse_ttl("90").unwrap(), Some(Duration::from_secs(90)));
        assert_eq!(
            parse_ttl("1h 30m").unwrap(),
            Some(Duration::from_secs(5400))
        );
        assert_eq!(parse_ttl("permanent").unwrap(), None);
        assert!(parse_ttl("31d").is_err());
        assert!(parse_ttl("soon").is_err());
        assert!(parse_ttl("500ms").is_err());
    }

    #[test]
    fn keys_round_trip_in_network_order() {
        let net: Ipv4Net = "198.51.100.0/24".parse().unwrap();
        let k = key_v4(&net);
        assert_eq!(k.data(), [198, 51, 100, 0]);
        assert_eq!(net_of_v4(&k), IpNet::V4(net));
        let n6: Ipv6Net = "2001:db8:1::/48".parse().unwrap();
        assert_eq!(net_of_v6(&key_v6(&n6)), IpNet::V6(n6));
    }
}
