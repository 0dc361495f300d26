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
//! (one module per verb), [`cidr`] and [`clock`] (prefix, TTL and clock helpers).

pub mod cidr;
pub mod cli;
pub mod clock;
pub mod config;
pub mod control;
pub mod daemon;
pub mod error;
pub mod feed;
pub mod kernel;
pub mod lists;
pub mod loader;
pub mod object;
pub mod pin;
pub mod state;
