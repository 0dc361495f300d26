//! The plain reads: the newest-first lists (`alerts`, `verdicts`, `commands`,
//! `acks`, `flows`; `?limit=&since_ms=`), the single resources (`devices`,
//! `blocks`, `gateways`, `audit/head`), `/health` and `/metrics`.

use serde::{Deserialize, Serialize};
use tad_wire::now_ms;
use warp::{
    Reply,
    http::{HeaderValue, StatusCode, header},
    reply::Response,
};

use super::{ApiError, ApiResult, MAX_LIMIT, json_ok, query};
use crate::app::App;

#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct ListQuery {
    limit: Option<u32>,
    since_ms: Option<u64>,
}

impl ListQuery {
    fn limit(&self) -> Result<u32, ApiError> {
        match self.limit {
            None => Ok(100),
            Some(l) if (1..=MAX_LIMIT).contains(&l) => Ok(l),
            Some(l) => Err(ApiError::bad(format!(
                "limit {l} is outside 1..={MAX_LIMIT}"
            ))),
        }
    }
}

#[derive(Debug, Serialize)]
struct Health {
    status: &'static str,
    database: String,
    audit_records: u64,
    audit_head: String,
}

pub(super) fn health(app: &App) -> Response {
    let head = app
        .audit
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .head()
        .clone();
    match app.store.journal_mode() {
        Ok(mode) => warp::reply::json(&Health {
            status: "ok",
            database: mode,
            audit_records: head.records,
            audit_head: head.hash,
        })
        .into_response(),
        Err(e) => ApiError::new(StatusCode::SERVICE_UNAVAILABLE, e.to_string()).into_response(),
    }
}

pub(super) fn metrics(app: &App) -> Response {
    let rows = app.store.row_counts().ok();
    let audit = app
        .audit
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .head()
        .records;
    let mut text = app.metrics.render(rows.as_ref(), audit);
    let now = now_ms();
    if let (Ok(states), Ok(blocks), Ok(pending)) = (
        app.store.gateway_states(),
        app.store.blocks(now),
        app.store.pending_commands(now),
    ) {
        text.push_str(&crate::metrics::render_blocks(&states, &blocks, &pending));
    }
    let mut res = text.into_response();
    res.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    res
}

pub(super) fn read_list(app: &App, what: &str, raw_query: &str) -> ApiResult {
    let q: ListQuery = query(raw_query)?;
    let limit = q.limit()?;
    let e = ApiError::internal;
    match what {
        "alerts" => json_ok(&app.store.alerts(limit, q.since_ms).map_err(e)?),
        "verdicts" => json_ok(&app.store.verdicts(limit).map_err(e)?),
        "commands" => json_ok(&app.store.commands(limit).map_err(e)?),
        "acks" => json_ok(&app.store.acks(limit).map_err(e)?),
        "flows" => json_ok(&app.store.flows(limit).map_err(e)?),
        _ => Err(ApiError::new(StatusCode::NOT_FOUND, "no such list")),
    }
}

pub(super) fn read(app: &App, what: &str) -> ApiResult {
    let e = ApiError::internal;
    match what {
        "devices" => json_ok(&app.store.devices(now_ms()).map_err(e)?),
        "blocks" => json_ok(&super::blocks::blocks(app).map_err(e)?),
        "gateways" => json_ok(&app.store.nodes().map_err(e)?),
        "audit" => json_ok(
            &app.audit
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .head()
                .clone(),
        ),
        _ => Err(ApiError::new(StatusCode::NOT_FOUND, "no such resource")),
    }
}
