//! `fw-ctl load` / `unload`: puts the embedded XDP program into the kernel, attaches
//! it to one or more interfaces through bpf_links, and pins program, links and maps
//! under `/sys/fs/bpf/<instance>/` ([`crate::pin`]) so filtering goes on after the
//! process exits. All interfaces share one set of maps.
//!
//! Everything is checked before anything is created (privileges, bpffs, interface
//! names, an existing instance); when a later step fails (verifier, native XDP
//! unsupported by the driver, interface busy) everything created so far is removed
//! again, so a failed load leaves nothing behind. Maps kept by `unload --keep-maps`
//! are reused by the next load (their blocks stay in force).

use std::{
    collections::BTreeSet,
    fs,
    path::Path,
    time::{Duration, Instant},
};

use aya::programs::links::{FdLink, PinnedLink};
use fw_common::{
    filter::{AllowEntry, ORIGIN_CONFIG},
    maps as names,
};
use ipnet::IpNet;
use serde::Serialize;
// Only the load path needs the embedded object (feature `ebpf`, see Cargo.toml).
#[cfg(feature = "ebpf")]
use {
    aya::{
        EbpfLoader,
        programs::{ProgramError, Xdp, XdpMode},
    },
    fw_common::config::{GatewayConfig, MODE_ENFORCE, MODE_OBSERVE},
    std::io,
};

use crate::{
    config::{Evidence, Limits, MapSizes, own_addresses},
    error::{CtlError, Result},
    lists::Lists,
    pin::{self, AttachMode, PinDir},
    state::RestoreReport,
};
#[cfg(feature = "ebpf")]
use crate::{kernel::Pinned, object::EBPF_OBJECT, state};

/// What to load.
#[derive(Clone, Debug)]
pub struct LoadOptions {
    pub instance: String,
    pub interfaces: Vec<String>,
    pub mode: AttachMode,
    pub observe: bool,
    pub limits: Limits,
    /// Evidence thresholds written into the kernel configuration.
    pub evidence: Evidence,
    pub sizes: MapSizes,
    /// Management networks and static allowlist (origin config).
    pub allow: Vec<IpNet>,
    /// Allowlist the host's own addresses (origin config).
    pub allow_own_addresses: bool,
    /// State file to restore blocks from.
    pub state_file: Option<std::path::PathBuf>,
}

/// What a load did.
#[derive(Clone, Debug, Serialize)]
pub struct LoadReport {
    pub instance: String,
    pub pin_dir: String,
    pub interfaces: Vec<String>,
    pub xdp_mode: AttachMode,
    pub observe: bool,
    /// Whether maps kept from an earlier `unload --keep-maps` were reused.
    pub reused_maps: bool,
    /// Allowlist entries implied by the configuration.
    pub config_allow: Vec<IpNet>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub restored: Option<RestoreReport>,
}

#[cfg(feature = "ebpf")]
/// Removes what a failed load created (in reverse), leaving kept maps alone.
struct Cleanup<'a> {
    dir: &'a PinDir,
    created_root: bool,
    created_maps: Vec<std::path::PathBuf>,
    created_links: Vec<std::path::PathBuf>,
    armed: bool,
}

#[cfg(feature = "ebpf")]
impl Drop for Cleanup<'_> {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        for p in self.created_links.iter().chain(self.created_maps.iter()) {
            let _ = fs::remove_file(p);
        }
        let _ = fs::remove_file(self.dir.program());
        if self.created_root {
            let _ = fs::remove_dir(self.dir.links_dir());
            let _ = fs::remove_dir(self.dir.maps_dir());
            let _ = fs::remove_dir(&self.dir.root);
        }
    }
}

/// Checks that apply to every privileged verb.
pub fn preflight(dir: &PinDir, what: &str) -> Result<()> {
    pin::require_privileges(what)?;
    let bpffs = dir.root.parent().unwrap_or(Path::new(pin::BPFFS));
    pin::require_bpffs(bpffs)
}

#[cfg(feature = "ebpf")]
fn attach_error(iface: &str, mode: AttachMode, e: ProgramError) -> CtlError {
    let io = match e {
        ProgramError::SyscallError(s) => s.io_error,
        ProgramError::UnknownInterface { name } => return CtlError::NoSuchInterface { name },
        other => io::Error::other(other.to_string()),
    };
    match io.raw_os_error() {
        Some(libc::EOPNOTSUPP) if mode == AttachMode::Native => CtlError::NativeUnsupported {
            iface: iface.to_string(),
        },
        Some(libc::EBUSY) | Some(libc::EEXIST) => CtlError::InterfaceBusy {
            iface: iface.to_string(),
        },
        _ => CtlError::Attach {
            iface: iface.to_string(),
            mode: mode.as_str().to_string(),
            source: io,
        },
    }
}

#[cfg(feature = "ebpf")]
/// Loads, attaches and pins (see the module docs).
pub fn load(opts: &LoadOptions) -> Result<LoadReport> {
    let dir = PinDir::new(&opts.instance)?;
    load_in(&dir, opts)
}

#[cfg(feature = "ebpf")]
/// [`load`] with an explicit pin directory.
pub fn load_in(dir: &PinDir, opts: &LoadOptions) -> Result<LoadReport> {
    if opts.interfaces.is_empty() {
        return Err(CtlError::InvalidArgument {
            what: "--iface".into(),
            why: "at least one interface is needed".into(),
        });
    }
    let mut seen = BTreeSet::new();
    for i in &opts.interfaces {
        if !seen.insert(i) {
            return Err(CtlError::InvalidArgument {
                what: format!("--iface {i}"),
                why: "given twice".into(),
            });
        }
    }
    preflight(dir, "fw-ctl load")?;
    for i in &opts.interfaces {
        pin::if_index(i)?;
    }
    if dir.loaded() {
        return Err(CtlError::AlreadyLoaded {
            instance: dir.instance.clone(),
            path: dir.root.clone(),
        });
    }

    let created_root = !dir.root.exists();
    let mut cleanup = Cleanup {
        dir,
        created_root,
        created_maps: Vec::new(),
        created_links: Vec::new(),
        armed: true,
    };
    for d in [dir.root.clone(), dir.maps_dir(), dir.links_dir()] {
        fs::create_dir_all(&d).map_err(|e| CtlError::file(&d, e))?;
    }
    let reused_maps = names::ALL.iter().any(|n| dir.map(n).exists());
    for n in names::ALL {
        if !dir.map(n).exists() {
            cleanup.created_maps.push(dir.map(n));
        }
    }

    let map_paths: Vec<(&str, std::path::PathBuf)> =
        names::ALL.iter().map(|n| (*n, dir.map(n))).collect();
    let mut loader = EbpfLoader::new();
    for (n, p) in &map_paths {
        loader.map_pin_path(n, p.as_path());
    }
    let s = &opts.sizes;
    for (n, v) in [
        (names::ALLOW_V4, s.allow_max_entries),
        (names::ALLOW_V6, s.allow_max_entries),
        (names::BLOCK_V4, s.block_max_entries),
        (names::BLOCK_V6, s.block_max_entries),
        (names::BLOCK_HOST_V4, s.block_host_max_entries),
        (names::BLOCK_HOST_V6, s.block_host_max_entries),
        (names::FLOWS, s.flows_max_entries),
        (names::RATE, s.rate_max_entries),
    ] {
        if v > 0 {
            loader.map_max_entries(n, v);
        }
    }
    let mut ebpf = loader
        .load(EBPF_OBJECT)
        .map_err(|e| CtlError::Load(format!("{e:#}")))?;
    let prog: &mut Xdp = ebpf
        .program_mut(names::PROGRAM)
        .ok_or_else(|| CtlError::Load(format!("the object has no program {:?}", names::PROGRAM)))?
        .try_into()
        .map_err(|e: ProgramError| CtlError::Load(e.to_string()))?;
    prog.load()
        .map_err(|e| CtlError::Load(format!("verifier rejected the program: {e:#?}")))?;

    let xdp_mode = match opts.mode {
        AttachMode::Native => XdpMode::Driver,
        AttachMode::Skb => XdpMode::Skb,
    };
    let mut links = Vec::new();
    for iface in &opts.interfaces {
        let id = prog
            .attach(iface, xdp_mode)
            .map_err(|e| attach_error(iface, opts.mode, e))?;
        let link = prog
            .take_link(id)
            .map_err(|e| CtlError::Load(e.to_string()))?;
        let fd_link: FdLink = link.try_into().map_err(|_| CtlError::Attach {
            iface: iface.clone(),
            mode: opts.mode.as_str().into(),
            source: io::Error::other(
                "the kernel has no bpf_link support for XDP (needs Linux 5.9+)",
            ),
        })?;
        links.push((iface.clone(), fd_link));
    }
    prog.pin(dir.program()).map_err(|e| {
        CtlError::Load(format!(
            "pinning the program at {}: {e}",
            dir.program().display()
        ))
    })?;
    let mut pinned_links: Vec<PinnedLink> = Vec::new();
    for (iface, l) in links {
        let path = dir.link(&iface, opts.mode);
        let p = l.pin(&path).map_err(|e| CtlError::Attach {
            iface: iface.clone(),
            mode: opts.mode.as_str().into(),
            source: io::Error::other(format!("pinning the link at {}: {e}", path.display())),
        })?;
        cleanup.created_links.push(path);
        pinned_links.push(p);
    }

    let mut maps = Pinned::open(dir)?;
    let mut cfg = if reused_maps {
        maps.config()?
    } else {
        GatewayConfig::default()
    };
    cfg.mode = if opts.observe {
        MODE_OBSERVE
    } else {
        MODE_ENFORCE
    };
    let l = &opts.limits;
    cfg.syn_rate_pps = l.syn_pps;
    cfg.syn_burst = l.syn_burst;
    cfg.pkt_rate_pps = l.pps;
    cfg.pkt_burst = l.burst;
    opts.evidence.apply(&mut cfg);
    maps.set_config(&cfg)?;
    let config_allow = install_config_allow(&mut maps, &opts.allow, opts.allow_own_addresses)?;
    let restored = match &opts.state_file {
        Some(p) => Some(state::restore(&mut maps, p)?),
        None => None,
    };

    cleanup.armed = false;
    drop(pinned_links);
    Ok(LoadReport {
        instance: dir.instance.clone(),
        pin_dir: dir.root.display().to_string(),
        interfaces: opts.interfaces.clone(),
        xdp_mode: opts.mode,
        observe: opts.observe,
        reused_maps,
        config_allow,
        restored,
    })
}

/// Puts the configuration's allowlist (management networks, static entries and,
/// when asked, the host's own addresses as /32 and /128) into the allowlist with
/// origin config, replacing config entries that are no longer configured.
pub fn install_config_allow<L: Lists + ?Sized>(
    lists: &mut L,
    allow: &[IpNet],
    own_addresses_too: bool,
) -> Result<Vec<IpNet>> {
    let mut want: BTreeSet<IpNet> = allow.iter().copied().collect();
    if own_addresses_too {
        want.extend(own_addresses().into_iter().map(IpNet::from));
    }
    for (net, e) in lists.allows()? {
        if e.origin == ORIGIN_CONFIG && !want.contains(&net) {
            lists.del_allow(&net)?;
        }
    }
    let entry = AllowEntry {
        origin: ORIGIN_CONFIG,
        ..Default::default()
    };
    for net in &want {
        lists.put_allow(net, &entry)?;
    }
    Ok(want.into_iter().collect())
}

/// What an unload did.
#[derive(Clone, Debug, Serialize)]
pub struct UnloadReport {
    pub instance: String,
    pub detached: Vec<String>,
    pub maps_kept: bool,
}

/// Detaches every interface (removing a link pin drops the last reference to the
/// link), unpins the program and, unless `keep_maps`, the maps and the directory.
pub fn unload(dir: &PinDir, keep_maps: bool) -> Result<UnloadReport> {
    preflight(dir, "fw-ctl unload")?;
    dir.require_loaded()?;
    let mut detached = Vec::new();
    let mut link_ids = Vec::new();
    for (iface, _mode, path) in dir.links() {
        if let Ok(l) = PinnedLink::from_pin(&path) {
            // The fd is closed again at the end of this statement.
            if let Ok(info) = FdLink::from(l).info() {
                link_ids.push(info.id());
            }
        }
        fs::remove_file(&path).map_err(|e| CtlError::file(&path, e))?;
        detached.push(iface);
    }
    // The kernel detaches a link whose last reference went away from a work
    // queue; wait (up to 2 s) so that traffic flows unfiltered, and a new load can
    // attach, as soon as unload returns.
    let end = Instant::now() + Duration::from_secs(2);
    while Instant::now() < end
        && aya::programs::loaded_links()
            .flatten()
            .any(|l| link_ids.contains(&l.id()))
    {
        std::thread::sleep(Duration::from_millis(10));
    }
    let _ = fs::remove_dir(dir.links_dir());
    let prog = dir.program();
    fs::remove_file(&prog).map_err(|e| CtlError::file(&prog, e))?;
    if !keep_maps {
        for n in names::ALL {
            let p = dir.map(n);
            if p.exists() {
                fs::remove_file(&p).map_err(|e| CtlError::file(&p, e))?;
            }
        }
        let _ = fs::remove_dir(dir.maps_dir());
        let _ = fs::remove_dir(&dir.root);
    }
    Ok(UnloadReport {
        instance: dir.instance.clone(),
        detached,
        maps_kept: keep_maps,
    })
}
