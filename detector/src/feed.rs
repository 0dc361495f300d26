//! The detector's threat-intelligence feed: the prefixes its trust book
//! ([`crate::trust`]) checks every flow's addresses against.
//!
//! The file format is the gateway's (`fw-ctl feed load`): one IP address or CIDR
//! prefix a line, `#` (FireHOL netsets) and `;` (Spamhaus DROP/EDROP) start
//! comments. The prefixes live in a prefix trie (`prefix_trie::joint::JointPrefixSet`,
//! a tree-bitmap trie per address family), so a lookup costs one longest-prefix
//! match (at most 32 or 128 bit steps), not a scan of the feed: a 100k-prefix feed
//! costs no more per flow than a 10-prefix one.
//!
//! IPv4-mapped IPv6 addresses (`::ffff:a.b.c.d`, RFC 4291 §2.5.5.2) are looked up
//! as the IPv4 address they carry, and a mapped prefix in the feed
//! (`::ffff:198.51.100.0/120`) is stored as the IPv4 prefix it covers
//! (`198.51.100.0/24`): a dual-stack socket reports IPv4 peers that way.

use std::{net::IpAddr, path::Path};

use ipnet::{IpNet, Ipv4Net};
use prefix_trie::joint::JointPrefixSet;

/// Threat-intelligence prefixes (FireHOL / Spamhaus DROP format) in a prefix trie.
#[derive(Clone, Default)]
pub struct ThreatFeed {
    set: JointPrefixSet<IpNet>,
}

impl std::fmt::Debug for ThreatFeed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ThreatFeed")
            .field("prefixes", &self.len())
            .finish()
    }
}

/// A prefix in canonical form: host bits cleared, IPv4-mapped IPv6 prefixes of
/// length >= 96 as the IPv4 prefix they cover.
fn canonical(n: IpNet) -> IpNet {
    if let IpNet::V6(v6) = n
        && v6.prefix_len() >= 96
        && let Some(v4) = v6.addr().to_ipv4_mapped()
    {
        let v4 = Ipv4Net::new(v4, v6.prefix_len() - 96).expect("96..=128 - 96 is at most 32");
        return IpNet::V4(v4.trunc());
    }
    n.trunc()
}

/// The address as looked up: an IPv4-mapped IPv6 address as its IPv4 address.
fn canonical_addr(a: IpAddr) -> IpAddr {
    match a {
        IpAddr::V6(v6) => v6
            .to_ipv4_mapped()
            .map(IpAddr::V4)
            .unwrap_or(IpAddr::V6(v6)),
        v4 => v4,
    }
}

impl ThreatFeed {
    /// Parses one IP or CIDR a line; `#` and `;` start comments, blank lines are
    /// skipped. Returns the feed and the 1-based numbers of lines that did not
    /// parse (they are skipped; the good lines still load).
    pub fn parse(text: &str) -> (ThreatFeed, Vec<usize>) {
        let mut feed = ThreatFeed::default();
        let mut bad = Vec::new();
        for (i, line) in text.lines().enumerate() {
            let line = line.split(['#', ';']).next().unwrap_or("").trim();
            if line.is_empty() {
                continue;
            }
            match line
                .parse::<IpNet>()
                .or_else(|_| line.parse::<IpAddr>().map(IpNet::from))
            {
                Ok(n) => feed.insert(n),
                Err(_) => bad.push(i + 1),
            }
        }
        (feed, bad)
    }

    /// Reads and parses a feed file ([`ThreatFeed::parse`]).
    ///
    /// # Errors
    /// The file cannot be read (or is not UTF-8).
    pub fn load(path: &Path) -> std::io::Result<(ThreatFeed, Vec<usize>)> {
        Ok(Self::parse(&std::fs::read_to_string(path)?))
    }

    /// Adds a prefix (host bits are ignored; a prefix already present is kept once).
    pub fn insert(&mut self, net: IpNet) {
        self.set.insert(canonical(net));
    }

    /// The longest feed prefix holding `a`, if any.
    pub fn longest_match(&self, a: IpAddr) -> Option<IpNet> {
        let host = IpNet::from(canonical_addr(a));
        self.set.get_lpm(&host)
    }

    /// Whether any feed prefix holds `a`.
    pub fn contains(&self, a: IpAddr) -> bool {
        self.longest_match(a).is_some()
    }

    /// Distinct prefixes in the feed.
    pub fn len(&self) -> usize {
        self.set.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn net(s: &str) -> IpNet {
        s.parse().unwrap()
    }

    #[test]
    fn longest_prefix_wins() {
        let (f, bad) = ThreatFeed::parse("198.18.0.0/15\n198.18.4.0/24\n198.18.4.7\n");
        assert!(bad.is_empty());
        assert_eq!(f.len(), 3);
        assert_eq!(
            f.longest_match(ip("198.18.4.7")),
            Some(net("198.18.4.7/32"))
        );
        assert_eq!(
            f.longest_match(ip("198.18.4.8")),
            Some(net("198.18.4.0/24"))
        );
        assert_eq!(
            f.longest_match(ip("198.19.200.1")),
            Some(net("198.18.0.0/15"))
        );
        assert_eq!(f.longest_match(ip("198.20.0.1")), None);
        assert!(!f.contains(ip("192.0.2.1")));
    }

    #[test]
    fn ipv4_and_ipv6_are_separate_families() {
        let (f, _) = ThreatFeed::parse("2001:db8:bad::/48 # v6\n0.0.0.0/1\n");
        assert!(f.contains(ip("2001:db8:bad:1::9")));
        assert!(!f.contains(ip("2001:db8:beef::1")));
        // 0.0.0.0/1 holds no IPv6 address, however short it is.
        assert!(!f.contains(ip("::1")));
        assert!(f.contains(ip("10.0.0.1")));
        assert!(!f.contains(ip("203.0.113.1")));
    }

    #[test]
    fn ipv4_mapped_addresses_and_prefixes_are_ipv4() {
        let (f, _) = ThreatFeed::parse("203.0.113.0/25\n::ffff:198.51.100.0/120\n");
        assert!(f.contains(ip("::ffff:203.0.113.9")));
        assert!(!f.contains(ip("::ffff:203.0.113.200")));
        assert_eq!(
            f.longest_match(ip("198.51.100.77")),
            Some(net("198.51.100.0/24"))
        );
        assert_eq!(
            f.longest_match(ip("::ffff:198.51.100.77")),
            Some(net("198.51.100.0/24"))
        );
    }

    #[test]
    fn host_bits_and_duplicates_fold_and_bad_lines_are_numbered() {
        let (f, bad) = ThreatFeed::parse(
            "192.0.2.77/24 ; SBL1\n192.0.2.0/24\nnot-an-ip\n\n# c\n10.0.0.0/33\n",
        );
        assert_eq!(f.len(), 1);
        assert_eq!(bad, vec![3, 6]);
        assert_eq!(f.longest_match(ip("192.0.2.1")), Some(net("192.0.2.0/24")));
    }
}
