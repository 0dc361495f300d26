//! Layout of an instance's pinned objects on the BPF filesystem, and the checks
//! made before touching it (bpffs mounted, privileges, interface names).
//!
//! ```text
//! /sys/fs/bpf/<instance>/
//!     fw                      the XDP program
//!     links/<mode>-<iface>    one bpf_link per attached interface (mode: native|skb)
//!     maps/<NAME>             every map of fw_common::maps::ALL
//! ```
//!
//! bpffs refuses names containing `.`, which interface names may hold (VLAN devices
//! like `eth0.100`), so a link's interface name is stored with `.` written as `:`
//! (a character Linux forbids in interface names, so the mapping is reversible).

use std::{
    ffi::CString,
    path::{Path, PathBuf},
};

use fw_common::maps;

use crate::error::{CtlError, Result};

/// Where bpffs is mounted.
pub const BPFFS: &str = "/sys/fs/bpf";
/// `statfs` magic of the BPF filesystem (include/uapi/linux/magic.h).
const BPF_FS_MAGIC: i64 = 0xcafe_4a11;
/// Default instance name.
pub const DEFAULT_INSTANCE: &str = "tad";

/// XDP attach mode as the operator names it.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize, clap::ValueEnum,
)]
#[serde(rename_all = "snake_case")]
pub enum AttachMode {
    /// Driver (native) XDP, `XDP_FLAGS_DRV_MODE`.
    Native,
    /// Generic XDP in the network stack, `XDP_FLAGS_SKB_MODE`.
    Skb,
}

impl AttachMode {
    /// `native` or `skb`.
    pub fn as_str(self) -> &'static str {
        match self {
            AttachMode::Native => "native",
            AttachMode::Skb => "skb",
        }
    }
}

/// The pin paths of one instance.
#[derive(Clone, Debug)]
pub struct PinDir {
    /// Instance name.
    pub instance: String,
    /// `<bpffs>/<instance>`.
    pub root: PathBuf,
}

impl PinDir {
    /// Paths of `instance` under the default bpffs mount. The name must be 1-32
    /// characters of `[A-Za-z0-9_-]`.
    pub fn new(instance: &str) -> Result<PinDir> {
        Self::under(Path::new(BPFFS), instance)
    }

    /// Paths of `instance` under `bpffs`.
    pub fn under(bpffs: &Path, instance: &str) -> Result<PinDir> {
        let ok = !instance.is_empty()
            && instance.len() <= 32
            && instance
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
        if !ok {
            return Err(CtlError::InvalidArgument {
                what: format!("--instance {instance:?}"),
                why: "must be 1-32 characters of A-Z a-z 0-9 _ -".into(),
            });
        }
        Ok(PinDir {
            instance: instance.to_string(),
            root: bpffs.join(instance),
        })
    }

    /// The pinned program.
    pub fn program(&self) -> PathBuf {
        self.root.join(maps::PROGRAM)
    }

    /// Directory of pinned maps.
    pub fn maps_dir(&self) -> PathBuf {
        self.root.join("maps")
    }

    /// A pinned map.
    pub fn map(&self, name: &str) -> PathBuf {
        self.maps_dir().join(name)
    }

    /// Directory of pinned links.
    pub fn links_dir(&self) -> PathBuf {
        self.root.join("links")
    }

    /// The pinned link of an interface.
    pub fn link(&self, iface: &str, mode: AttachMode) -> PathBuf {
        self.links_dir()
            .join(format!("{}-{}", mode.as_str(), iface.replace('.', ":")))
    }

    /// Whether the program is pinned (the instance is loaded).
    pub fn loaded(&self) -> bool {
        self.program().exists()
    }

    /// Fails with [`CtlError::NotLoaded`] unless the instance is loaded.
    pub fn require_loaded(&self) -> Result<()> {
        if self.loaded() {
            Ok(())
        } else {
            Err(CtlError::NotLoaded {
                instance: self.instance.clone(),
                path: self.root.clone(),
            })
        }
    }

    /// The attached interfaces as every status report gives them (`fw-ctl status`,
    /// the daemon's retained `NodeStatus`), sorted by name.
    pub fn interface_status(&self) -> Vec<tad_wire::InterfaceStatus> {
        self.links()
            .into_iter()
            .map(|(name, m, _)| tad_wire::InterfaceStatus {
                name,
                xdp_mode: m.as_str().into(),
            })
            .collect()
    }

    /// The attached interfaces and their modes, from the link pins, sorted by name.
    pub fn links(&self) -> Vec<(String, AttachMode, PathBuf)> {
        let mut out = Vec::new();
        let Ok(rd) = std::fs::read_dir(self.links_dir()) else {
            return out;
        };
        for e in rd.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let Some((mode, iface)) = name.split_once('-') else {
                continue;
            };
            let mode = match mode {
                "native" => AttachMode::Native,
                "skb" => AttachMode::Skb,
                _ => continue,
            };
            out.push((iface.replace(':', "."), mode, e.path()));
        }
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
    }
}

/// Fails unless `path` is on a BPF filesystem.
pub fn require_bpffs(path: &Path) -> Result<()> {
    let c = CString::new(path.as_os_str().as_encoded_bytes()).map_err(|_| {
        CtlError::BpffsNotMounted {
            path: path.to_path_buf(),
        }
    })?;
    // SAFETY: zeroed statfs is a valid out-parameter; `c` is NUL-terminated.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    let rc = unsafe { libc::statfs(c.as_ptr(), &mut st) };
    if rc != 0 || st.f_type as i64 != BPF_FS_MAGIC {
        return Err(CtlError::BpffsNotMounted {
            path: path.to_path_buf(),
        });
    }
    Ok(())
}

/// Fails unless the process may load BPF programs and attach XDP: root, or the
/// effective capabilities CAP_BPF (39), CAP_NET_ADMIN (12) and CAP_SYS_ADMIN (21)
/// (CAP_SYS_ADMIN for bpffs pinning and LPM tries without CAP_PERFMON).
pub fn require_privileges(what: &str) -> Result<()> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        return Ok(());
    }
    let caps = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("CapEff:"))
                .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        })
        .unwrap_or(0);
    let need = (1u64 << 39) | (1 << 12) | (1 << 21);
    if caps & need == need {
        Ok(())
    } else {
        Err(CtlError::NotPrivileged {
            what: what.to_string(),
        })
    }
}

/// The index of an interface in this network namespace.
pub fn if_index(name: &str) -> Result<u32> {
    let c = CString::new(name).map_err(|_| CtlError::NoSuchInterface {
        name: name.to_string(),
    })?;
    // SAFETY: `c` is NUL-terminated.
    let idx = unsafe { libc::if_nametoindex(c.as_ptr()) };
    if idx == 0 {
        Err(CtlError::NoSuchInterface {
            name: name.to_string(),
        })
    } else {
        Ok(idx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn instance_names_are_checked() {
        assert!(PinDir::new("tad").is_ok());
        assert!(PinDir::new("test-1_a").is_ok());
        for bad in ["", "a/b", "a.b", "..", &"x".repeat(33)] {
            assert!(PinDir::new(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn link_names_round_trip_vlan_devices() {
        let dir = tempfile::tempdir().unwrap();
        let p = PinDir::under(dir.path(), "t").unwrap();
        std::fs::create_dir_all(p.links_dir()).unwrap();
        std::fs::write(p.link("eth0.100", AttachMode::Skb), b"").unwrap();
        std::fs::write(p.link("veth-a", AttachMode::Native), b"").unwrap();
        let links: Vec<_> = p.links().into_iter().map(|(i, m, _)| (i, m)).collect();
        assert_eq!(
            links,
            vec![
                ("eth0.100".to_string(), AttachMode::Skb),
                ("veth-a".to_string(), AttachMode::Native)
            ]
        );
    }

    #[test]
    fn tmp_is_not_bpffs() {
        let e = require_bpffs(Path::new("/tmp")).unwrap_err().to_string();
        assert!(e.contains("mount -t bpf bpf /tmp"), "{e}");
    }
}
