//! Checks of operator input the wire crate has no type for: the shape of a
//! detector threshold key, checked by the thresholds API before the key is looked
//! up in the detectors' settings schemas (which decide whether it exists and its
//! range: [`crate::settings::check_values`]), so a malformed key is refused with
//! one clear message and never echoed into a schema lookup. Gateway ids go through
//! [`tad_wire::NodeId::parse`], block targets through [`tad_wire::Target`] and
//! [`tad_wire::WidthPolicy`].

/// Longest threshold key accepted, bytes.
pub const MAX_THRESHOLD_KEY_LEN: usize = 96;

/// A detector threshold key: dotted lowercase path such as
/// `portscan.vertical_ports` or `trust.risky_ports.22` (2-4 segments of `[a-z0-9_]`, at most
/// [`MAX_THRESHOLD_KEY_LEN`] characters).
///
/// # Errors
/// A message naming the key and the expected shape.
pub fn check_threshold_key(key: &str) -> Result<(), String> {
    let segs: Vec<&str> = key.split('.').collect();
    let ok = key.len() <= MAX_THRESHOLD_KEY_LEN
        && (2..=4).contains(&segs.len())
        && segs.iter().all(|s| {
            !s.is_empty()
                && s.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
        });
    if ok {
        Ok(())
    } else {
        Err(format!(
            "threshold key {key:?} must look like section.name (lowercase letters, digits, _)"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_and_keys() {
        let gw = |id: &str| tad_wire::NodeId::parse(id);
        assert!(gw("gw-1.lab_a").is_ok());
        for bad in ["", "gw/1", "gw+", "#", "a b", &"x".repeat(65)] {
            assert!(gw(bad).is_err(), "{bad}");
        }
        assert!(check_threshold_key("portscan.vertical_ports").is_ok());
        for bad in ["portscan", "Port.scan", "a..b", "a.b-c", ".a"] {
            assert!(check_threshold_key(bad).is_err(), "{bad}");
        }
    }
}
