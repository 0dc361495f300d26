//! What the dashboard knows of the network: the blocks in force per gateway
//! (from verdicts and operator commands, moved along by acks), the devices (trust
//! scores, friendly names, last seen) and the nodes (status, mode, map fill).

use std::net::IpAddr;

use ipnet::IpNet;
use rusqlite::params;
use serde::{Deserialize, Serialize};
use tad_wire::{Action, MapFill, Mode, NodeStatus, Role, TrustLevel};

use super::{Store, StoreError, enum_from, enum_str, json, to_json};

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
    /// Whether an active block covers the address on any gateway.
    pub blocked: bool,
}

/// Who asked for a block.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BlockOrigin {
    Detector,
    Operator,
}

/// State of a block as far as the dashboard knows.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BlockState {
    /// Sent, no ack yet.
    Pending,
    /// The gateway applied it.
    Applied,
    /// The gateway already had it.
    NoChange,
    /// Observe mode: recorded, not enforced.
    Observed,
    /// The gateway refused it (`error` says why).
    Rejected,
}

impl BlockState {
    pub(super) fn as_str(self) -> &'static str {
        match self {
            BlockState::Pending => "pending",
            BlockState::Applied => "applied",
            BlockState::NoChange => "no_change",
            BlockState::Observed => "observed",
            BlockState::Rejected => "rejected",
        }
    }

    /// Whether the gateway drops the source's traffic (or is about to).
    pub fn enforced(self) -> bool {
        matches!(
            self,
            BlockState::Pending | BlockState::Applied | BlockState::NoChange
        )
    }
}

/// A block on one gateway.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct BlockView {
    pub gateway_id: String,
    pub target: IpNet,
    pub action: Action,
    pub origin: BlockOrigin,
    /// Detector id or operator name.
    pub origin_id: String,
    /// Block reason (the verdict's reason code or the operator's text).
    pub reason: String,
    pub created_ms: u64,
    /// Expiry, Unix ms; none = permanent.
    pub expires_ms: Option<u64>,
    /// Seconds left at the time of the query; none = permanent.
    pub ttl_left_s: Option<u64>,
    /// Verdict or command id.
    pub request_id: String,
    pub state: BlockState,
    pub error: Option<String>,
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

    /// Blocks in force at `now_ms` (expired ones are left out), newest first.
    pub fn blocks(&self, now_ms: u64) -> Result<Vec<BlockView>, StoreError> {
        let conn = self.conn();
        let mut stmt = conn.prepare_cached(
            "SELECT gateway_id, target, action, origin, origin_id, reason, created_ms,
                expires_ms, request_id, state, error
             FROM blocks WHERE expires_ms IS NULL OR expires_ms > ?1
             ORDER BY created_ms DESC",
        )?;
        let rows = stmt.query_map([now_ms], |r| {
            let target: String = r.get(1)?;
            let expires_ms: Option<u64> = r.get(7)?;
            Ok(BlockView {
                gateway_id: r.get(0)?,
                target: target.parse().unwrap_or_else(|_| IpNet::default()),
                action: enum_from(&r.get::<_, String>(2)?).unwrap_or(Action::Block),
                origin: enum_from(&r.get::<_, String>(3)?).unwrap_or(BlockOrigin::Operator),
                origin_id: r.get(4)?,
                reason: r.get(5)?,
                created_ms: r.get(6)?,
                expires_ms,
                ttl_left_s: expires_ms.map(|e| e.saturating_sub(now_ms).div_ceil(1000)),
                request_id: r.get(8)?,
                state: enum_from(&r.get::<_, String>(9)?).unwrap_or(BlockState::Pending),
                error: r.get(10)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Devices with their scores; `blocked` is set from the blocks in force at
    /// `now_ms`.
    pub fn devices(&self, now_ms: u64) -> Result<Vec<DeviceView>, StoreError> {
        let blocks: Vec<BlockView> = self
            .blocks(now_ms)?
            .into_iter()
            .filter(|b| b.state.enforced())
            .collect();
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
            d.blocked = blocks.iter().any(|b| b.target.contains(&address));
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

/// Records a block/quarantine (replacing any block of the same target on the
/// gateway) or removes it for an unblock.
#[allow(clippy::too_many_arguments)]
pub(super) fn apply_block(
    tx: &rusqlite::Transaction<'_>,
    gateway_id: &str,
    action: Action,
    target: IpNet,
    origin: BlockOrigin,
    origin_id: &str,
    reason: &str,
    issued_at_ms: u64,
    ttl_s: Option<u64>,
    request_id: &str,
    state: BlockState,
) -> Result<(), StoreError> {
    if action == Action::Unblock {
        if state != BlockState::Observed {
            tx.execute(
                "DELETE FROM blocks WHERE gateway_id = ?1 AND target = ?2",
                params![gateway_id, target.to_string()],
            )?;
        }
        return Ok(());
    }
    tx.execute(
        "INSERT INTO blocks(gateway_id, target, action, origin, origin_id, reason, created_ms,
            expires_ms, request_id, state, error)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, NULL)
         ON CONFLICT(gateway_id, target) DO UPDATE SET action = excluded.action,
            origin = excluded.origin, origin_id = excluded.origin_id, reason = excluded.reason,
            created_ms = excluded.created_ms, expires_ms = excluded.expires_ms,
            request_id = excluded.request_id, state = excluded.state, error = NULL",
        params![
            gateway_id,
            target.to_string(),
            enum_str(&action),
            enum_str(&origin),
            origin_id,
            reason,
            issued_at_ms,
            ttl_s.map(|t| issued_at_ms + t * 1000),
            request_id,
            state.as_str(),
        ],
    )?;
    Ok(())
}
