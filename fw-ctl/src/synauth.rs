//! Protected services (SYN authentication, `fw_common::synauth`): switching the
//! protection of a TCP service on and off in the pinned `SYN_AUTH` map, and reading
//! what it did. Used by `fw-ctl protect` / `unprotect` / `list protected` and by
//! the daemon's mitigation verdicts.

use std::{
    net::{IpAddr, SocketAddr},
    time::Duration,
};

use aya::maps::{HashMap, MapData};
use fw_common::{
    flow::v4_mapped,
    maps as m,
    synauth::{ServiceKey, SynAuthEntry},
};
use serde::Serialize;

use crate::{
    clock,
    error::{CtlError, Result},
    kernel::typed,
    pin::PinDir,
};

/// How a service is protected.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Protection {
    /// How long; `None` until removed.
    pub ttl: Option<Duration>,
    /// Rate for SYNs that cannot be challenged, packets/s (0 = pass them).
    pub fallback_pps: u32,
    /// Their burst, packets (at least 1 when a rate is set).
    pub fallback_burst: u32,
    /// Rule or verdict id (0 = none).
    pub rule_id: u32,
    /// `fw_common::filter::ORIGIN_*`.
    pub origin: u8,
}

/// One protected service as read back from the map.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Protected {
    /// `address:port` (port 0: every TCP port of the host).
    pub service: SocketAddr,
    /// Unix ms; `None` = until removed.
    pub expires_at_ms: Option<u64>,
    /// SYN-ACK challenges sent.
    pub challenged: u64,
    /// Sources that returned a valid cookie.
    pub validated: u64,
    /// SYNs of validated sources passed.
    pub passed: u64,
    /// Unanswerable SYNs dropped by the fallback rate.
    pub limited: u64,
    pub fallback_pps: u32,
    pub fallback_burst: u32,
    /// Whether it is in force now (expired entries stay until removed).
    pub active: bool,
}

fn key(service: SocketAddr) -> ServiceKey {
    let addr = match service.ip() {
        IpAddr::V4(a) => v4_mapped(a.octets()),
        IpAddr::V6(a) => a.octets(),
    };
    ServiceKey {
        addr,
        port: service.port(),
        _pad: [0; 2],
    }
}

fn service_of(k: &ServiceKey) -> SocketAddr {
    let a = std::net::Ipv6Addr::from(k.addr);
    let ip = match a.to_ipv4_mapped() {
        Some(v4) => IpAddr::V4(v4),
        None => IpAddr::V6(a),
    };
    SocketAddr::new(ip, k.port)
}

fn map(dir: &PinDir) -> Result<HashMap<MapData, ServiceKey, SynAuthEntry>> {
    typed(dir, m::SYN_AUTH)
}

fn map_err(what: &str, e: aya::maps::MapError) -> CtlError {
    CtlError::map(m::SYN_AUTH, what, std::io::Error::other(e.to_string()))
}

/// Protects `service` (port 0: every TCP port of the host), replacing an earlier
/// protection of it (its counters start again). Errors: a fallback rate without a
/// burst, a full map.
pub fn protect(dir: &PinDir, service: SocketAddr, p: Protection) -> Result<()> {
    if p.fallback_pps > 0 && p.fallback_burst == 0 {
        return Err(CtlError::InvalidArgument {
            what: "fallback burst".into(),
            why: "must be at least 1 when a fallback rate is set".into(),
        });
    }
    let expires_ns = match p.ttl {
        None => 0,
        Some(t) => clock::mono_ns() + t.as_nanos().min(u64::MAX as u128 / 2) as u64,
    };
    let entry = SynAuthEntry {
        expires_ns,
        fallback_pps: p.fallback_pps,
        fallback_burst: p.fallback_burst,
        rule_id: p.rule_id,
        origin: p.origin,
        ..Default::default()
    };
    map(dir)?
        .insert(key(service), entry, 0)
        .map_err(|e| map_err("insert", e))
}

/// Ends the protection of `service`; whether it was protected.
pub fn unprotect(dir: &PinDir, service: SocketAddr) -> Result<bool> {
    let mut h = map(dir)?;
    match h.remove(&key(service)) {
        Ok(()) => Ok(true),
        Err(aya::maps::MapError::KeyNotFound) => Ok(false),
        Err(aya::maps::MapError::SyscallError(s))
            if s.io_error.raw_os_error() == Some(libc::ENOENT) =>
        {
            Ok(false)
        }
        Err(e) => Err(map_err("remove", e)),
    }
}

/// Every protected service, sorted by address and port.
pub fn list(dir: &PinDir) -> Result<Vec<Protected>> {
    let h = map(dir)?;
    let (now_unix, now_mono) = (clock::unix_ns(), clock::mono_ns());
    let mut out = Vec::new();
    for kv in h.iter() {
        let (k, e) = kv.map_err(|e| map_err("iterate", e))?;
        out.push(Protected {
            service: service_of(&k),
            expires_at_ms: (e.expires_ns != 0)
                .then(|| clock::expiry_to_unix_ms(e.expires_ns, now_unix, now_mono)),
            challenged: e.challenged,
            validated: e.validated,
            passed: e.passed,
            limited: e.limited,
            fallback_pps: e.fallback_pps,
            fallback_burst: e.fallback_burst,
            active: e.active(now_mono),
        });
    }
    out.sort_by_key(|p| p.service);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_round_trip_both_families() {
        for s in ["192.0.2.10:80", "[2001:db8::1]:443"] {
            let a: SocketAddr = s.parse().unwrap();
            assert_eq!(service_of(&key(a)), a);
        }
    }
}
