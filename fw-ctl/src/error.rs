//! The errors of every fw-ctl operation. Each variant names what was wrong and,
//! where there is one, what the operator can do about it. The CLI maps
//! [`CtlError::is_usage`] errors to exit code 2 and every other error to 1.

use std::{io, path::PathBuf};

use ipnet::IpNet;

/// An fw-ctl error.
#[derive(Debug, thiserror::Error)]
pub enum CtlError {
    /// A command-line argument or file entry is not an IP address or CIDR prefix.
    #[error("invalid CIDR {input:?}: {why}")]
    InvalidCidr { input: String, why: String },
    /// A TTL could not be parsed or is out of range.
    #[error("invalid TTL {input:?}: {why}")]
    InvalidTtl { input: String, why: String },
    /// Another argument is out of range.
    #[error("invalid argument {what}: {why}")]
    InvalidArgument { what: String, why: String },
    /// Not root and missing CAP_BPF/CAP_NET_ADMIN.
    #[error(
        "not privileged: {what} needs root (or CAP_BPF + CAP_NET_ADMIN + CAP_SYS_ADMIN); run it with sudo"
    )]
    NotPrivileged { what: String },
    /// `/sys/fs/bpf` is not a BPF filesystem.
    #[error(
        "bpffs is not mounted at {path}: mount it with `mount -t bpf bpf {path}` (or add it to /etc/fstab)"
    )]
    BpffsNotMounted { path: PathBuf },
    /// The interface does not exist (in this network namespace).
    #[error("interface {name:?} does not exist in this network namespace")]
    NoSuchInterface { name: String },
    /// The instance already has a program pinned.
    #[error(
        "instance {instance:?} is already loaded (pinned at {path}); run `fw-ctl unload --instance {instance}` first"
    )]
    AlreadyLoaded { instance: String, path: PathBuf },
    /// The instance has no program pinned.
    #[error(
        "instance {instance:?} is not loaded (nothing pinned at {path}); run `fw-ctl load --iface IF` first"
    )]
    NotLoaded { instance: String, path: PathBuf },
    /// Native (driver) XDP is not supported by the interface's driver.
    #[error(
        "interface {iface:?}: the driver does not support native XDP; use `--mode skb` (generic XDP)"
    )]
    NativeUnsupported { iface: String },
    /// Another XDP program is already attached to the interface.
    #[error(
        "interface {iface:?} already has an XDP program attached (another instance or tool); detach it first (`ip link set dev {iface} xdp off`)"
    )]
    InterfaceBusy { iface: String },
    /// Attaching failed for another reason.
    #[error("attaching XDP to {iface:?} in {mode} mode failed: {source}")]
    Attach {
        iface: String,
        mode: String,
        #[source]
        source: io::Error,
    },
    /// Loading or verifying the eBPF object failed.
    #[error("loading the XDP program failed: {0}")]
    Load(String),
    /// A BPF map operation failed.
    #[error("map {map}: {what}: {source}")]
    Map {
        map: String,
        what: String,
        #[source]
        source: io::Error,
    },
    /// The target is allowlisted (or covers allowlisted addresses).
    #[error("{target} is allowlisted by {by} ({origin}); the allowlist always wins")]
    Allowlisted {
        target: IpNet,
        by: IpNet,
        origin: String,
    },
    /// An allowlist entry implied by the configuration cannot be removed by hand.
    #[error(
        "{target} is allowlisted by the gateway configuration (own address or management network); edit the config instead"
    )]
    ConfigEntry { target: IpNet },
    /// A map is full.
    #[error("map {map} is full ({max_entries} entries)")]
    MapFull { map: String, max_entries: u32 },
    /// Reading or writing a file failed.
    #[error("{path}: {source}")]
    File {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// A file has invalid content.
    #[error("{path}: {why}")]
    Parse { path: PathBuf, why: String },
    /// The configuration is invalid.
    #[error("config {path}: {why}")]
    Config { path: PathBuf, why: String },
    /// MQTT or daemon runtime failure.
    #[error("{0}")]
    Runtime(String),
}

impl CtlError {
    /// Whether this error is the operator's input being wrong (exit code 2).
    pub fn is_usage(&self) -> bool {
        matches!(
            self,
            CtlError::InvalidCidr { .. }
                | CtlError::InvalidTtl { .. }
                | CtlError::InvalidArgument { .. }
        )
    }

    /// A map error with context.
    pub fn map(map: &str, what: impl Into<String>, source: io::Error) -> Self {
        CtlError::Map {
            map: map.to_string(),
            what: what.into(),
            source,
        }
    }

    /// A file error with its path.
    pub fn file(path: impl Into<PathBuf>, source: io::Error) -> Self {
        CtlError::File {
            path: path.into(),
            source,
        }
    }
}

/// Result alias for fw-ctl operations.
pub type Result<T, E = CtlError> = std::result::Result<T, E>;
