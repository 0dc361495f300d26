//! fw-ctl: the gateway node's XDP loader, operator CLI on pinned maps, and daemon.
//!
//! ```text
//!  fw-ctl load ──► kernel: XDP program `fw` + maps, pinned in /sys/fs/bpf/<instance>/
//!  fw-ctl block/allow/list/flows/stats/mode/limits/feed ──► pinned maps (+ state file)
//!  fw-ctl run  ──► flow export ─► MQTT (FlowBatch, CountersSnapshot, NodeStatus)
//!              ◄── verdicts (detectors), commands (dashboard) ─► block map ─► Ack
//! ```
//!
//! Modules: [`loader`] (load/unload), [`pin`] (pin layout, preflight checks),
//! [`kernel`] (pinned map access), [`lists`] and [`control`] (allow/block rules and
//! operations), [`state`] (the persistent block state file), [`feed`] (threat
//! lists), [`config`] (gateway.toml), [`daemon`] (export, verdicts, bus), [`cli`]
//! (one module per verb), [`cidr`] and [`clock`] (prefix, TTL and clock helpers),
//! [`bench_env`] (the machine line of every benchmark figure).
//!
//! Feature `ebpf` (default): builds the XDP program and embeds it ([`object`]), and
//! with it everything that loads it: [`loader::load`], the daemon (which loads the
//! program when the instance is not loaded) and the CLI. Without it
//! (`default-features = false`) this is the pinned-map library (pin layout, map
//! access, lists, config, state file, feeds), which compiles on stable without
//! bpf-linker: xtask depends on it that way because it must build before
//! `cargo xtask setup` has installed bpf-linker and nightly.

pub mod bench_env;
pub mod cidr;
#[cfg(feature = "ebpf")]
pub mod cli;
pub mod clock;
pub mod config;
pub mod control;
#[cfg(feature = "ebpf")]
pub mod daemon;
pub mod error;
pub mod feed;
pub mod kernel;
pub mod lists;
pub mod loader;
#[cfg(feature = "ebpf")]
pub mod object;
pub mod pin;
pub mod state;
pub mod synauth;
