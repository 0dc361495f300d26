//! The blocks resource. `GET /api/v1/blocks`: what the gateways enforce, built
//! only from their published state (every unexpired entry of every gateway),
//! plus the commands sent that no gateway state shows yet (`pending`, with their
//! ack outcome: a refused command is listed as refused, never as a block), and
//! the services the gateways protect with SYN authentication (`protected`: their
//! answer to a spoofed SYN flood, with its counters; from the same state, never
//! from `protect_syn` verdicts).
//! `GET /api/v1/gateways/{id}/state`: one gateway's state as held.
//!
//! `POST /api/v1/blocks` and `DELETE /api/v1/blocks`: an operator blocks or
//! unblocks a source on one gateway. The request is checked (gateway known,
//! target within the gateways' width policy, TTL, reason), published as a
//! [`Command`] signed with the dashboard's certificate key on
//! `tad/v1/gw/<gw>/commands/<own id>`, then audited and stored.
//!
//! `POST /api/v1/protected` and `DELETE /api/v1/protected`: an operator switches
//! SYN authentication of a service (one host, one TCP port or all of them) on
//! (`protect_syn`, TTL required) or off (`unprotect_syn`) the same way.

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use tad_wire::{Action, Command, Message, SCHEMA_VERSION, Target, now_ms};
use warp::http::{HeaderMap, StatusCode};

use super::{
    ApiError, ApiResult, accepted, body, check_gateway, guard, json_ok, new_id, publish, query,
    rejected,
};
use crate::{
    app::App,
    metrics::inc,
    publish::Outbound,
    store::{BlockView, PendingCommand, ProtectedView, StoreError},
};

/// One gateway's held state in short, as listed with the blocks.
#[derive(Debug, Serialize)]
pub struct GatewaySync {
    pub gateway_id: String,
    /// Revision of the held state.
    pub rev: u64,
    /// When the gateway read it, Unix ms (gateway clock).
    pub at_ms: u64,
    /// When the dashboard last changed it, Unix ms.
    pub received_ms: u64,
    /// False while deltas wait for the next snapshot (after a gap or a restart).
    pub synced: bool,
}

/// Answer of `GET /api/v1/blocks`.
#[derive(Debug, Serialize)]
pub struct Blocks {
    /// Every unexpired entry of every gateway's state, newest first.
    pub blocks: Vec<BlockView>,
    /// Commands the gateway state does not show (yet), newest first.
    pub pending: Vec<PendingCommand>,
    /// Every unexpired protected service of every gateway's state, newest first.
    pub protected: Vec<ProtectedView>,
    /// The states these come from.
    pub gateways: Vec<GatewaySync>,
}

/// The blocks resource at the current time.
pub fn blocks(app: &App) -> Result<Blocks, StoreError> {
    let now = now_ms();
    Ok(Blocks {
        blocks: app.store.blocks(now)?,
        pending: app.store.pending_commands(now)?,
        protected: app.store.protected(now)?,
        gateways: app
            .store
            .gateway_states()?
            .into_iter()
            .map(|h| GatewaySync {
                gateway_id: h.state.gateway_id.to_string(),
                rev: h.state.rev,
                at_ms: h.state.at_ms,
                received_ms: h.received_ms,
                synced: h.synced,
            })
            .collect(),
    })
}

pub(super) fn gateway_state(app: &App, id: &str) -> ApiResult {
    match app.store.gateway_state(id).map_err(ApiError::internal)? {
        Some(h) => json_ok(&h),
        None => Err(ApiError::new(
            StatusCode::NOT_FOUND,
            format!("no state held for gateway {id:?}"),
        )),
    }
}

/// Parses a block target ([`tad_wire::Target`]: an address or a prefix with no
/// host bits) and checks it against the gateways' width policy, with the message a
/// gateway would give.
pub fn parse_target(s: &str, width: &tad_wire::WidthPolicy) -> Result<Target, String> {
    let t = Target::parse(s).map_err(|e| e.to_string())?;
    width.check(&t).map_err(|e| e.to_string())?;
    Ok(t)
}

/// Body of `POST /api/v1/blocks`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BlockRequest {
    pub gateway_id: String,
    /// Address or CIDR prefix.
    pub target: String,
    /// Lifetime, seconds; absent = permanent.
    #[serde(default)]
    pub ttl_s: Option<u64>,
    #[serde(default)]
    pub reason: Option<String>,
}

/// Query of `DELETE /api/v1/blocks`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UnblockQuery {
    pub gateway_id: String,
    pub target: String,
}

/// Answer of a block or unblock.
#[derive(Debug, Serialize)]
pub struct CommandAccepted {
    pub gateway_id: String,
    pub command: Command,
    pub audit_hash: String,
}

fn check_reason(app: &App, reason: &Option<String>) -> Result<(), ApiError> {
    if let Some(r) = reason
        && (r.is_empty() || r.len() > 200 || r.chars().any(char::is_control))
    {
        return Err(rejected(
            app,
            "reason must be 1-200 printable characters".into(),
        ));
    }
    Ok(())
}

/// What a command asks of its gateway (see [`Command`]).
struct Ask {
    action: Action,
    target: Target,
    port: Option<u16>,
    ttl_s: Option<u64>,
    reason: Option<String>,
}

fn send_command(app: &App, gw: &str, ask: Ask) -> ApiResult {
    let Ask {
        action,
        target,
        port,
        ttl_s,
        reason,
    } = ask;
    let command = Command {
        v: SCHEMA_VERSION,
        id: new_id("cmd"),
        operator: app.config.server.operator.clone(),
        issued_at_ms: now_ms(),
        action,
        target,
        ttl_s,
        reason,
        port,
    };
    command.validate().map_err(|e| rejected(app, e))?;
    publish(app, Outbound::command(gw, app.own_id(), &command))?;
    let audit_hash = app
        .record_command(gw, &command)
        .map_err(ApiError::internal)?;
    tracing::info!(command = %command.id, gateway = gw, action = ?action, %target,
        ttl_s = ?ttl_s, %audit_hash, "operator command sent");
    accepted(&CommandAccepted {
        gateway_id: gw.to_owned(),
        command,
        audit_hash,
    })
}

pub(super) fn post_block(app: &App, headers: &HeaderMap, raw: &Bytes) -> ApiResult {
    guard(app, headers)?;
    let req: BlockRequest = body(raw).inspect_err(|_| inc(&app.metrics.api_rejected))?;
    check_gateway(app, &req.gateway_id)?;
    let target =
        parse_target(&req.target, &app.config.api.block_width).map_err(|e| rejected(app, e))?;
    if let Some(t) = req.ttl_s
        && !(1..=app.config.api.max_ttl_s).contains(&t)
    {
        return Err(rejected(
            app,
            format!("ttl_s {t} is outside 1..={}", app.config.api.max_ttl_s),
        ));
    }
    check_reason(app, &req.reason)?;
    send_command(
        app,
        &req.gateway_id,
        Ask {
            action: Action::Block,
            target,
            port: None,
            ttl_s: req.ttl_s,
            reason: req.reason,
        },
    )
}

pub(super) fn delete_block(app: &App, headers: &HeaderMap, raw_query: &str) -> ApiResult {
    guard(app, headers)?;
    let q: UnblockQuery = query(raw_query).inspect_err(|_| inc(&app.metrics.api_rejected))?;
    check_gateway(app, &q.gateway_id)?;
    let target =
        parse_target(&q.target, &app.config.api.block_width).map_err(|e| rejected(app, e))?;
    send_command(
        app,
        &q.gateway_id,
        Ask {
            action: Action::Unblock,
            target,
            port: None,
            ttl_s: None,
            reason: None,
        },
    )
}

/// Body of `POST /api/v1/protected`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProtectRequest {
    pub gateway_id: String,
    /// The server's address (one host).
    pub target: String,
    /// Its TCP port, 1-65535; absent = every TCP port of the host.
    #[serde(default)]
    pub port: Option<u16>,
    /// How long, seconds (required: a protection always ends).
    pub ttl_s: u64,
    #[serde(default)]
    pub reason: Option<String>,
}

/// Query of `DELETE /api/v1/protected`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UnprotectQuery {
    pub gateway_id: String,
    pub target: String,
    #[serde(default)]
    pub port: Option<u16>,
}

/// Parses a protected service's address: one host, no prefix wider than it.
fn parse_host(app: &App, s: &str) -> Result<Target, ApiError> {
    let t = Target::parse(s).map_err(|e| rejected(app, format!("target: {e}")))?;
    if !t.is_host() {
        return Err(rejected(
            app,
            format!("target: SYN authentication protects one host, not the prefix {t}"),
        ));
    }
    Ok(t)
}

fn check_port(app: &App, port: Option<u16>) -> Result<(), ApiError> {
    if port == Some(0) {
        return Err(rejected(
            app,
            "port must be 1-65535 (absent = every TCP port)".into(),
        ));
    }
    Ok(())
}

pub(super) fn post_protect(app: &App, headers: &HeaderMap, raw: &Bytes) -> ApiResult {
    guard(app, headers)?;
    let req: ProtectRequest = body(raw).inspect_err(|_| inc(&app.metrics.api_rejected))?;
    check_gateway(app, &req.gateway_id)?;
    let target = parse_host(app, &req.target)?;
    check_port(app, req.port)?;
    if !(1..=app.config.api.max_ttl_s).contains(&req.ttl_s) {
        return Err(rejected(
            app,
            format!(
                "ttl_s {} is outside 1..={}",
                req.ttl_s, app.config.api.max_ttl_s
            ),
        ));
    }
    check_reason(app, &req.reason)?;
    send_command(
        app,
        &req.gateway_id,
        Ask {
            action: Action::ProtectSyn,
            target,
            port: req.port,
            ttl_s: Some(req.ttl_s),
            reason: req.reason,
        },
    )
}

pub(super) fn delete_protect(app: &App, headers: &HeaderMap, raw_query: &str) -> ApiResult {
    guard(app, headers)?;
    let q: UnprotectQuery = query(raw_query).inspect_err(|_| inc(&app.metrics.api_rejected))?;
    check_gateway(app, &q.gateway_id)?;
    let target = parse_host(app, &q.target)?;
    check_port(app, q.port)?;
    send_command(
        app,
        &q.gateway_id,
        Ask {
            action: Action::UnprotectSyn,
            target,
            port: q.port,
            ttl_s: None,
            reason: None,
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const W: tad_wire::WidthPolicy = tad_wire::WidthPolicy {
        min_prefix_v4: 16,
        min_prefix_v6: 48,
    };

    #[test]
    fn targets_are_parsed_strictly() {
        assert_eq!(
            parse_target("192.0.2.7", &W).unwrap().to_string(),
            "192.0.2.7/32"
        );
        assert_eq!(
            parse_target("198.51.100.0/24", &W).unwrap().prefix_len(),
            24
        );
        assert_eq!(parse_target("2001:db8::1", &W).unwrap().prefix_len(), 128);
        assert!(
            parse_target("198.51.100.1/24", &W)
                .unwrap_err()
                .contains("198.51.100.0/24")
        );
        assert!(parse_target("0.0.0.0/0", &W).is_err());
        assert!(parse_target("192.0.2.300", &W).is_err());
        assert!(parse_target("", &W).is_err());
    }

    /// A /12 is refused here exactly as the gateway's enforcer refuses it (the
    /// same function, the same message), so the API never answers 202 for a block
    /// the gateway will refuse.
    #[test]
    fn width_policy_matches_the_gateway() {
        let e = parse_target("192.0.0.0/12", &W).unwrap_err();
        let gw = W
            .check(&Target::parse("192.0.0.0/12").unwrap())
            .unwrap_err();
        assert_eq!(e, gw.to_string());
        assert!(e.contains("/16"), "{e}");
        let narrow = tad_wire::WidthPolicy {
            min_prefix_v4: 24,
            min_prefix_v6: 64,
        };
        assert!(parse_target("198.51.0.0/16", &narrow).is_err());
        assert!(parse_target("198.51.100.0/24", &narrow).is_ok());
    }
}
