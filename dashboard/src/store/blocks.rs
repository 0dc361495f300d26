//! What the dashboard knows of the network: what each gateway enforces (its
//! published state, `tad/v1/gw/<gw>/state` + `/state/delta`, held per gateway in
//! the `gateway_state` table so a restart shows it before the next snapshot), the
//! block entries and pending operator commands derived from it, the devices
//! (trust scores, friendly names, last seen) and the nodes (status, mode, map
//! fill).
//!
//! Blocks are ONLY what a gateway's state lists: nothing is inferred from
//! verdicts, commands or acks. A command the dashboard sent shows up separately
//! as pending ([`PendingCommand`]) until the gateway's state reflects it. The
//! same holds for the services a gateway protects with SYN authentication (its
//! answer to a spoofed SYN flood, [`ProtectedView`]): only its state's
//! `protected` list, never a `protect_syn` verdict.

use std::net::IpAddr;

use rusqlite::params;
use serde::{Deserialize, Serialize};
use tad_wire::{
    Ack, Action, BlockOrigin, BlockReason, Command, GatewayState, GatewayStateDelta, MapFill, Mode,
    NodeStatus, Outcome, RefusalCounts, Role, Target, TrustLevel, state::ProtectedService,
};

use super::{Store, StoreError, enum_from, enum_str, json, to_json};

/// How long a command stays listed as pending (or refused) at most, ms.
pub const PENDING_WINDOW_MS: u64 = 15 * 60_000;
/// Most pending commands listed.
pub const MAX_PENDING: u32 = 200;

/// A device: an address the detector scored or the config names.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DeviceView {
    pub address: IpAddr,
    pub name: Option<String>,
    pub detector_id: Option<String>,
    /// Trust score, 0-100 (none before the first score).
    pub score: Option<f64>,
    pub level: Option<TrustLevel>,
    pub behavioural: Option<f64>,
    pub vulnerability: Option<f64>,
    pub reputation: Option<f64>,
    /// Why the score last changed.
    pub reason: Option<String>,
    /// Last trust update or flow involving the address, Unix ms.
    pub last_seen_ms: Option<u64>,
    /// Whether an entry a gateway enforces covers the address.
    pub blocked: bool,
}

/// One blocklist entry a gateway enforces, as the API and the Blocks page show it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct BlockView {
    pub gateway_id: String,
    /// The blocked prefix (`192.0.2.7/32`).
    pub prefix: Target,
    /// Who made it on the gateway: `cli`, `feed`, `verdict`, `command`, `config`.
    pub origin: BlockOrigin,
    pub reason: BlockReason,
    /// Rule or free text it was made with (verdict rule, command reason, feed file).
    pub rule: Option<String>,
    /// Who made it (detector id, operator, CLI user, `feed:<file>`).
    pub by: Option<String>,
    /// When it was made, Unix ms (0 = unknown).
    pub created_ms: u64,
    /// When it expires, Unix ms; none = permanent.
    pub expires_at_ms: Option<u64>,
    /// Seconds left at the time of the query; none = permanent.
    pub ttl_left_s: Option<u64>,
    /// Packets dropped by it (XDP hit counter, as of `state_at_ms`).
    pub hits: u64,
    /// When the gateway read the state this entry comes from, Unix ms.
    pub state_at_ms: u64,
}

/// One TCP service a gateway protects with SYN authentication (from its state's
/// `protected` list), as the API and the Blocks page show it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ProtectedView {
    pub gateway_id: String,
    /// `192.0.2.10:80`, `[2001:db8::1]:443`, or `addr:*` for every TCP port.
    pub service: String,
    pub addr: IpAddr,
    /// None = every TCP port of `addr`.
    pub port: Option<u16>,
    /// Who switched it on: `verdict`, `command`, `cli`.
    pub origin: BlockOrigin,
    /// The verdict's rule or the command's reason, when the gateway knows it.
    pub rule: Option<String>,
    /// Detector id or `operator@dashboard`, when the gateway knows it.
    pub by: Option<String>,
    /// When it was switched on, Unix ms (0 = unknown).
    pub created_ms: u64,
    /// When it ends, Unix ms; none = until removed.
    pub expires_at_ms: Option<u64>,
    /// Seconds left at the time of the query; none = until removed.
    pub ttl_left_s: Option<u64>,
    /// SYN-ACK challenges sent (as of `state_at_ms`).
    pub challenged: u64,
    /// Sources that proved themselves.
    pub validated: u64,
    /// SYNs of proven sources passed.
    pub passed: u64,
    /// Unanswerable SYNs dropped by the fallback rate.
    pub limited: u64,
    /// When the gateway read the state (and the counters), Unix ms.
    pub state_at_ms: u64,
}

/// A gateway's state as the dashboard holds it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct HeldState {
    /// The last snapshot with every delta that followed it applied.
    #[serde(flatten)]
    pub state: GatewayState,
    /// When the dashboard last changed it, Unix ms (dashboard clock).
    pub received_ms: u64,
    /// Whether deltas are being applied: false after a gap or a dashboard
    /// restart (held from the database) until the next snapshot.
    pub synced: bool,
}

/// What happened to a delta ([`Store::apply_gateway_delta`]).
#[derive(Clone, Debug, PartialEq)]
pub enum DeltaOutcome {
    /// Applied; the refusal counters and protected services as they were before it.
    Applied {
        refusals_before: RefusalCounts,
        protected_before: Vec<ProtectedService>,
    },
    /// At or below the held revision: already applied (a redelivery).
    Old,
    /// Does not follow the held state (a gap, no snapshot yet, or held from the
    /// database): ignored until the next snapshot. `held_rev` is the revision held.
    Gap { held_rev: Option<u64> },
}

/// Where a pending command stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PendingStatus {
    /// Sent; no ack yet.
    Sent,
    /// Acked (applied, no change or observed), the gateway's state does not show
    /// it yet.
    Acked,
    /// The gateway refused it (`error` says why): nothing is enforced.
    Refused,
}

/// A command sent to a gateway that the gateway's state does not show (yet).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PendingCommand {
    pub gateway_id: String,
    pub command_id: String,
    pub action: Action,
    pub target: Target,
    /// `protect_syn` / `unprotect_syn` only: the TCP port (none = every port).
    pub port: Option<u16>,
    pub ttl_s: Option<u64>,
    pub operator: String,
    pub issued_at_ms: u64,
    pub audit_hash: String,
    pub status: PendingStatus,
    /// The ack's outcome, when one arrived.
    pub outcome: Option<Outcome>,
    /// The ack's error text (why it was refused).
    pub error: Option<String>,
    pub ack_at_ms: Option<u64>,
}

/// Whether held state `s` shows the effect of command `c`: its prefix blocked
/// for a block or quarantine, absent for an unblock; its service protected for a
/// `protect_syn`, not for an `unprotect_syn`.
fn shows(s: &GatewayState, c: &Command) -> bool {
    if c.action.is_syn_auth() {
        let addr = c.target.net().addr();
        let present = s
            .protected
            .iter()
            .any(|p| p.addr == addr && p.port == c.port);
        return (c.action == Action::ProtectSyn) == present;
    }
    let present = s.blocks.iter().any(|b| b.prefix == c.target);
    match c.action {
        Action::Block | Action::Quarantine => present,
        _ => !present,
    }
}

/// A gateway, detector or dashboard node.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct NodeView {
    pub node_id: String,
    pub role: Role,
    /// From the retained status / Last Will; none if only counters were heard.
    pub online: Option<bool>,
    pub status_at_ms: Option<u64>,
    pub version: Option<String>,
    pub mode: Option<Mode>,
    pub interfaces: Vec<tad_wire::InterfaceStatus>,
    /// Latest map fill levels (from counters, else status).
    pub maps: Vec<MapFill>,
    pub last_counters_ms: Option<u64>,
}

impl Store {
    /// Adds friendly names for devices (from the config).
    pub fn name_devices(
        &self,
        names: &std::collections::BTreeMap<IpAddr, String>,
    ) -> Result<(), StoreError> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        for (addr, name) in names {
            tx.execute(
                "INSERT INTO devices(address, name) VALUES (?1, ?2)
                 ON CONFLICT(address) DO UPDATE SET name = excluded.name",
                params![addr.to_string(), name],
            )?;
        }
        tx.commit()?;
        Ok(())
    }

    /// Stores a node's retained status (or Last Will). The last one received
    /// wins: the broker keeps per-topic order, and a Last Will carries the time it
    /// was registered (older than the online status it replaces).
    pub fn upsert_status(&self, s: &NodeStatus) -> Result<(), StoreError> {
        self.conn().execute(
            "INSERT INTO nodes(node_id, role, online, status_at_ms, version, mode, interfaces, maps)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)
             ON CONFLICT(node_id) DO UPDATE SET role = excluded.role, online = excluded.online,
                status_at_ms = excluded.status_at_ms, version = excluded.version,
                mode = COALESCE(excluded.mode, nodes.mode),
                interfaces = excluded.interfaces,
                maps = CASE WHEN nodes.last_counters_ms IS NULL THEN excluded.maps ELSE nodes.maps END",
            params![
                s.node_id.as_str(),
                enum_str(&s.role),
                s.online,
                s.at_ms,
                s.version,
                s.mode.map(|m| enum_str(&m)),
                to_json(&s.interfaces),
                to_json(&s.maps)
            ],
        )?;
        Ok(())
    }

    /// Whether the dashboard has heard of this gateway (status or counters).
    pub fn knows_gateway(&self, id: &str) -> Result<bool, StoreError> {
        self.exists(
            "SELECT 1 FROM nodes WHERE node_id = ?1 AND role = 'gateway'",
            id,
        )
    }

    /// Replaces the state held for `s.gateway_id` with snapshot `s` (always: a
    /// restarted gateway starts again at revision 0) and marks it synced;
    /// returns the state held before, if any.
    pub fn put_gateway_state(
        &self,
        s: &GatewayState,
        now_ms: u64,
    ) -> Result<Option<GatewayState>, StoreError> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        let before = held(&tx, s.gateway_id.as_str())?.map(|h| h.state);
        write_held(&tx, s, now_ms, true)?;
        tx.commit()?;
        Ok(before)
    }

    /// Applies delta `d` to the state held for its gateway when it follows it
    /// (`GatewayState::apply`: the next revision) and the state is synced; a
    /// delta beyond the next revision marks the state unsynced until the next
    /// snapshot.
    pub fn apply_gateway_delta(
        &self,
        d: &GatewayStateDelta,
        now_ms: u64,
    ) -> Result<DeltaOutcome, StoreError> {
        let mut conn = self.conn();
        let tx = conn.transaction()?;
        let Some(mut h) = held(&tx, d.gateway_id.as_str())? else {
            return Ok(DeltaOutcome::Gap { held_rev: None });
        };
        if h.synced && d.rev <= h.state.rev {
            return Ok(DeltaOutcome::Old);
        }
        let refusals_before = h.state.refusals.clone();
        let protected_before = h.state.protected.clone();
        if !h.synced || !h.state.apply(d) {
            if h.synced {
                tx.execute(
                    "UPDATE gateway_state SET synced = 0 WHERE gateway_id = ?1",
                    [d.gateway_id.as_str()],
                )?;
                tx.commit()?;
            }
            return Ok(DeltaOutcome::Gap {
                held_rev: Some(h.state.rev),
            });
        }
        write_held(&tx, &h.state, now_ms, true)?;
        tx.commit()?;
        Ok(DeltaOutcome::Applied {
            refusals_before,
            protected_before,
        })
    }

    /// The state held for gateway `id`.
    pub fn gateway_state(&self, id: &str) -> Result<Option<HeldState>, StoreError> {
        held(&self.conn(), id)
    }

    /// Every gateway's held state, by gateway id.
    pub fn gateway_states(&self) -> Result<Vec<HeldState>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn.prepare_cached(
            "SELECT body, received_ms, synced FROM gateway_state ORDER BY gateway_id",
        )?;
        let mut rows = stmt.query([])?;
        let mut out = Vec::new();
        while let Some(r) = rows.next()? {
            out.push(held_row(r)?);
        }
        Ok(out)
    }

    /// Every entry of every gateway's held state that has not expired at
    /// `now_ms`, newest first.
    pub fn blocks(&self, now_ms: u64) -> Result<Vec<BlockView>, StoreError> {
        let mut out = Vec::new();
        for h in self.gateway_states()? {
            for b in h.state.blocks {
                if b.expires_at_ms.is_some_and(|e| e <= now_ms) {
                    continue;
                }
                out.push(BlockView {
                    gateway_id: h.state.gateway_id.to_string(),
                    prefix: b.prefix,
                    origin: b.origin,
                    reason: b.reason,
                    rule: b.rule,
                    by: b.by,
                    created_ms: b.created_ms,
                    expires_at_ms: b.expires_at_ms,
                    ttl_left_s: b
                        .expires_at_ms
                        .map(|e| e.saturating_sub(now_ms).div_ceil(1000)),
                    hits: b.hits,
                    state_at_ms: h.state.at_ms,
                });
            }
        }
        out.sort_by(|a, b| {
            (b.created_ms, &a.gateway_id, a.prefix).cmp(&(a.created_ms, &b.gateway_id, b.prefix))
        });
        Ok(out)
    }

    /// Every service every gateway's held state protects that has not expired at
    /// `now_ms`, newest first.
    pub fn protected(&self, now_ms: u64) -> Result<Vec<ProtectedView>, StoreError> {
        let mut out = Vec::new();
        for h in self.gateway_states()? {
            for p in h.state.protected {
                if p.expires_at_ms.is_some_and(|e| e <= now_ms) {
                    continue;
                }
                out.push(ProtectedView {
                    gateway_id: h.state.gateway_id.to_string(),
                    service: p.service(),
                    addr: p.addr,
                    port: p.port,
                    origin: p.origin,
                    rule: p.rule,
                    by: p.by,
                    created_ms: p.created_ms,
                    expires_at_ms: p.expires_at_ms,
                    ttl_left_s: p
                        .expires_at_ms
                        .map(|e| e.saturating_sub(now_ms).div_ceil(1000)),
                    challenged: p.challenged,
                    validated: p.validated,
                    passed: p.passed,
                    limited: p.limited,
                    state_at_ms: h.state.at_ms,
                });
            }
        }
        out.sort_by(|a, b| {
            (b.created_ms, &a.gateway_id, a.addr, a.port).cmp(&(
                a.created_ms,
                &b.gateway_id,
                b.addr,
                b.port,
            ))
        });
        Ok(out)
    }

    /// Commands issued in the [`PENDING_WINDOW_MS`] before `now_ms` that their
    /// gateway's held state does not show, newest first: refused ones (ack
    /// rejected), and ones not acked or acked but not yet in the state. A command
    /// drops off once the state shows its effect, or once the state is newer
    /// than its (non-refusing) ack: then the state is the truth (it expired,
    /// was overridden, or the gateway observes only).
    pub fn pending_commands(&self, now_ms: u64) -> Result<Vec<PendingCommand>, StoreError> {
        let states = self.gateway_states()?;
        let rows: Vec<(String, String, String, Option<String>)> = {
            let conn = self.conn();
            let mut stmt = conn.prepare_cached(
                "SELECT c.gateway_id, c.body, c.audit_hash,
                    (SELECT a.body FROM acks a WHERE a.id = c.id AND a.gateway_id = c.gateway_id
                     ORDER BY a.at_ms DESC, a.rowid DESC LIMIT 1)
                 FROM commands c WHERE c.at_ms >= ?1
                 ORDER BY c.at_ms DESC, c.rowid DESC LIMIT ?2",
            )?;
            stmt.query_map(
                params![now_ms.saturating_sub(PENDING_WINDOW_MS), MAX_PENDING],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
            )?
            .collect::<Result<_, _>>()?
        };
        let mut out = Vec::new();
        for (gw, body, audit_hash, ack) in rows {
            let c: Command = json("commands", &body)?;
            let ack: Option<Ack> = ack.map(|a| json("acks", &a)).transpose()?;
            let state = states.iter().find(|h| h.state.gateway_id.as_str() == gw);
            let status = match &ack {
                Some(a) if a.outcome == Outcome::Rejected => PendingStatus::Refused,
                Some(a) => {
                    if state.is_some_and(|h| shows(&h.state, &c) || h.state.at_ms >= a.at_ms) {
                        continue;
                    }
                    PendingStatus::Acked
                }
                None => {
                    if state.is_some_and(|h| shows(&h.state, &c)) {
                        continue;
                    }
                    PendingStatus::Sent
                }
            };
            out.push(PendingCommand {
                gateway_id: gw,
                command_id: c.id,
                action: c.action,
                target: c.target,
                port: c.port,
                ttl_s: c.ttl_s,
                operator: c.operator,
                issued_at_ms: c.issued_at_ms,
                audit_hash,
                status,
                outcome: ack.as_ref().map(|a| a.outcome),
                error: ack.as_ref().and_then(|a| a.error.clone()),
                ack_at_ms: ack.as_ref().map(|a| a.at_ms),
            });
        }
        Ok(out)
    }

    /// Devices with their scores; `blocked` is set from the entries the
    /// gateways enforce at `now_ms`.
    pub fn devices(&self, now_ms: u64) -> Result<Vec<DeviceView>, StoreError> {
        let blocks = self.blocks(now_ms)?;
        let conn = self.conn();
        let mut stmt = conn.prepare_cached(
            "SELECT address, name, detector_id, score, level, behavioural, vulnerability,
                reputation, reason, last_seen_ms
             FROM devices ORDER BY COALESCE(score, 101) ASC, address",
        )?;
        let rows = stmt.query_map([], |r| {
            Ok((
                r.get::<_, String>(0)?,
                DeviceView {
                    address: IpAddr::from([0, 0, 0, 0]),
                    name: r.get(1)?,
                    detector_id: r.get(2)?,
                    score: r.get(3)?,
                    level: r.get::<_, Option<String>>(4)?.and_then(|l| enum_from(&l)),
                    behavioural: r.get(5)?,
                    vulnerability: r.get(6)?,
                    reputation: r.get(7)?,
                    reason: r.get(8)?,
                    last_seen_ms: r.get(9)?,
                    blocked: false,
                },
            ))
        })?;
        let mut out = Vec::new();
        for row in rows {
            let (addr, mut d) = row?;
            let Ok(address) = addr.parse::<IpAddr>() else {
                continue;
            };
            d.address = address;
            d.blocked = blocks.iter().any(|b| b.prefix.net().contains(&address));
            out.push(d);
        }
        Ok(out)
    }

    /// Every node heard of.
    pub fn nodes(&self) -> Result<Vec<NodeView>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn.prepare_cached(
            "SELECT node_id, role, online, status_at_ms, version, mode, interfaces, maps,
                last_counters_ms
             FROM nodes ORDER BY role, node_id",
        )?;
        let rows = stmt.query_map([], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, Option<bool>>(2)?,
                r.get::<_, Option<u64>>(3)?,
                r.get::<_, Option<String>>(4)?,
                r.get::<_, Option<String>>(5)?,
                r.get::<_, String>(6)?,
                r.get::<_, String>(7)?,
                r.get::<_, Option<u64>>(8)?,
            ))
        })?;
        let mut out = Vec::new();
        for row in rows {
            let (node_id, role, online, status_at_ms, version, mode, ifs, maps, last) = row?;
            out.push(NodeView {
                node_id,
                role: enum_from(&role).unwrap_or(Role::Gateway),
                online,
                status_at_ms,
                version,
                mode: mode.and_then(|m| enum_from(&m)),
                interfaces: json("nodes", &ifs)?,
                maps: json("nodes", &maps)?,
                last_counters_ms: last,
            });
        }
        Ok(out)
    }
}

/// The held state of gateway `id`.
fn held(conn: &rusqlite::Connection, id: &str) -> Result<Option<HeldState>, StoreError> {
    let mut stmt = conn.prepare_cached(
        "SELECT body, received_ms, synced FROM gateway_state WHERE gateway_id = ?1",
    )?;
    let mut rows = stmt.query([id])?;
    rows.next()?.map(held_row).transpose()
}

fn held_row(r: &rusqlite::Row<'_>) -> Result<HeldState, StoreError> {
    Ok(HeldState {
        state: json("gateway_state", &r.get::<_, String>(0)?)?,
        received_ms: r.get(1)?,
        synced: r.get(2)?,
    })
}

fn write_held(
    tx: &rusqlite::Transaction<'_>,
    s: &GatewayState,
    now_ms: u64,
    synced: bool,
) -> Result<(), StoreError> {
    tx.execute(
        "INSERT INTO gateway_state(gateway_id, rev, at_ms, received_ms, synced, body)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)
         ON CONFLICT(gateway_id) DO UPDATE SET rev = excluded.rev, at_ms = excluded.at_ms,
            received_ms = excluded.received_ms, synced = excluded.synced, body = excluded.body",
        params![
            s.gateway_id.as_str(),
            s.rev,
            s.at_ms,
            now_ms,
            synced,
            to_json(s)
        ],
    )?;
    Ok(())
}
