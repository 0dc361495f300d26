//! The HTTP interface: JSON REST API under `/api/v1` (described in
//! `dashboard/openapi.yaml`), live events over SSE, `/metrics`, `/health`, and
//! the pages and their assets, all served from the binary.
//!
//! Mutating endpoints (POST/DELETE on `/api/v1/blocks` and `/api/v1/thresholds`)
//! check, in this order: the request's `Origin` (and `Sec-Fetch-Site`) is the
//! dashboard's own or configured (else 403); `Authorization: Bearer <token>`
//! matches `server.api_token` (else 401); every field is valid (else 400/404/422
//! with a message naming the field); the bus queue takes the message (else 503).
//! Only then is anything recorded, so a rejected request changes nothing.
//!
//! Handlers answer every error themselves (no warp rejections past routing), so
//! each route's errors are exactly the ones documented.

use std::{collections::BTreeMap, convert::Infallible, sync::Arc, time::Duration};

use bytes::Bytes;
use futures_util::StreamExt;
use serde::{Deserialize, Serialize, de::DeserializeOwned};
use tad_wire::{Action, Command, Message, SCHEMA_VERSION, Target, ThresholdSettings, now_ms};
use tokio_stream::wrappers::{BroadcastStream, errors::BroadcastStreamRecvError};
use warp::{
    Filter, Reply,
    http::{HeaderMap, HeaderValue, StatusCode, header},
    reply::Response,
};

use crate::{ingest::App, metrics::inc, publish::Outbound, web};

/// Largest request body accepted, bytes.
pub const MAX_BODY_BYTES: u64 = 16 * 1024;
/// Most rows a list endpoint returns.
pub const MAX_LIMIT: u32 = 1000;
/// Most points a history query returns (the step is widened to fit).
pub const MAX_POINTS: u64 = 2000;
/// Longest history range, ms (31 days).
pub const MAX_RANGE_MS: u64 = 31 * 86_400_000;
/// Most threshold keys in one settings message.
pub const MAX_THRESHOLD_KEYS: usize = 64;

/// An error answer: status and a message naming what was wrong.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub message: String,
}

impl ApiError {
    fn new(status: StatusCode, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            message: message.into(),
        }
    }
    fn bad(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, message)
    }
    fn internal(e: impl std::fmt::Display) -> ApiError {
        tracing::error!(error = %e, "request failed");
        ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string())
    }
}

#[derive(Serialize)]
struct ErrorBody<'a> {
    error: &'a str,
}

impl Reply for ApiError {
    fn into_response(self) -> Response {
        let mut res = warp::reply::with_status(
            warp::reply::json(&ErrorBody {
                error: &self.message,
            }),
            self.status,
        )
        .into_response();
        if self.status == StatusCode::UNAUTHORIZED {
            res.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"tad-dashboard\""),
            );
        }
        res
    }
}

type ApiResult = Result<Response, ApiError>;

fn answer(r: ApiResult) -> Result<Response, Infallible> {
    Ok(r.unwrap_or_else(Reply::into_response))
}

fn json_ok<T: Serialize>(v: &T) -> ApiResult {
    Ok(warp::reply::json(v).into_response())
}

fn accepted<T: Serialize>(v: &T) -> ApiResult {
    Ok(warp::reply::with_status(warp::reply::json(v), StatusCode::ACCEPTED).into_response())
}

fn query<T: DeserializeOwned>(raw: &str) -> Result<T, ApiError> {
    serde_urlencoded::from_str(raw).map_err(|e| ApiError::bad(format!("query string: {e}")))
}

fn body<T: DeserializeOwned>(raw: &Bytes) -> Result<T, ApiError> {
    let de = &mut serde_json::Deserializer::from_slice(raw);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        if path == "." {
            ApiError::bad(format!("request body: {inner}"))
        } else {
            ApiError::bad(format!("request body: {path}: {inner}"))
        }
    })
}

/// A gateway id as the bus allows it in a topic: 1-64 characters from
/// `[A-Za-z0-9._-]` (no MQTT wildcards or separators).
pub fn check_gateway_id(id: &str) -> Result<(), String> {
    tad_wire::NodeId::parse(id)
        .map(drop)
        .map_err(|e| e.to_string())
}

/// A detector threshold key: dotted lowercase path such as
/// `portscan.vertical_ports` (2-4 segments of `[a-z0-9_]`, at most 96 characters).
pub fn check_threshold_key(key: &str) -> Result<(), String> {
    let segs: Vec<&str> = key.split('.').collect();
    let ok = key.len() <= 96
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

/// Parses a block target ([`tad_wire::Target`]: an address or a prefix with no
/// host bits) and checks it against the gateways' width policy, with the message a
/// gateway would give.
pub fn parse_target(s: &str, width: &tad_wire::WidthPolicy) -> Result<Target, String> {
    let t = Target::parse(s).map_err(|e| e.to_string())?;
    width.check(&t).map_err(|e| e.to_string())?;
    Ok(t)
}

fn new_id(prefix: &str) -> String {
    format!("{prefix}-{}", uuid::Uuid::new_v4())
}

/// Checks Origin and bearer token of a mutating request.
fn guard(app: &App, headers: &HeaderMap) -> Result<(), ApiError> {
    let res = guard_inner(app, headers);
    if res.is_err() {
        inc(&app.metrics.api_rejected);
    }
    res
}

fn guard_inner(app: &App, headers: &HeaderMap) -> Result<(), ApiError> {
    let get = |h: &str| headers.get(h).and_then(|v| v.to_str().ok());
    if get("sec-fetch-site") == Some("cross-site") {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "cross-site request refused (Sec-Fetch-Site: cross-site)",
        ));
    }
    if let Some(origin) = headers.get(header::ORIGIN) {
        let origin = origin.to_str().unwrap_or("").trim_end_matches('/');
        let host = get("host").unwrap_or("");
        let own = !host.is_empty()
            && (origin == format!("http://{host}") || origin == format!("https://{host}"));
        let listed = app
            .config
            .server
            .allowed_origins
            .iter()
            .any(|o| o.trim_end_matches('/') == origin);
        if !own && !listed {
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                format!("cross-origin request from {origin:?} refused"),
            ));
        }
    }
    let token = &app.config.server.api_token;
    if token.is_empty() {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "mutating API disabled: server.api_token is not configured",
        ));
    }
    let given = get("authorization")
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim);
    match given {
        None => Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "missing Authorization: Bearer token",
        )),
        Some(g) if !constant_time_eq(g.as_bytes(), token.as_bytes()) => Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "wrong bearer token",
        )),
        Some(_) => Ok(()),
    }
}

/// Equality whose time does not depend on where the inputs differ.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    use sha2::{Digest, Sha256};
    // Comparing digests makes the length difference irrelevant too.
    let (da, db) = (Sha256::digest(a), Sha256::digest(b));
    da.iter()
        .zip(db.iter())
        .fold(0u8, |acc, (x, y)| acc | (x ^ y))
        == 0
}

fn rejected(app: &App, e: String) -> ApiError {
    inc(&app.metrics.api_rejected);
    ApiError::bad(e)
}

fn check_gateway(app: &App, gw: &str) -> Result<(), ApiError> {
    check_gateway_id(gw).map_err(|e| rejected(app, e))?;
    let known = app.config.api.gateways.iter().any(|g| g == gw)
        || app.store.knows_gateway(gw).map_err(ApiError::internal)?;
    if !known {
        inc(&app.metrics.api_rejected);
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            format!("gateway {gw:?} is unknown (never heard from, not in api.gateways)"),
        ));
    }
    Ok(())
}

fn publish(app: &App, msg: Outbound) -> Result<(), ApiError> {
    match app.publisher.publish(msg) {
        Ok(()) => {
            inc(&app.metrics.published);
            Ok(())
        }
        Err(e) => {
            inc(&app.metrics.publish_refused);
            Err(ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("not sent, nothing changed: {e}"),
            ))
        }
    }
}

// ---------------------------------------------------------------- blocks

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

fn send_command(
    app: &App,
    gw: &str,
    action: Action,
    target: Target,
    ttl_s: Option<u64>,
    reason: Option<String>,
) -> ApiResult {
    let command = Command {
        v: SCHEMA_VERSION,
        id: new_id("cmd"),
        operator: app.config.server.operator.clone(),
        issued_at_ms: now_ms(),
        action,
        target,
        ttl_s,
        reason,
    };
    command.validate().map_err(|e| rejected(app, e))?;
    publish(app, Outbound::command(gw, &command))?;
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

fn post_block(app: &App, headers: &HeaderMap, raw: &Bytes) -> ApiResult {
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
        Action::Block,
        target,
        req.ttl_s,
        req.reason,
    )
}

fn delete_block(app: &App, headers: &HeaderMap, raw_query: &str) -> ApiResult {
    guard(app, headers)?;
    let q: UnblockQuery = query(raw_query).inspect_err(|_| inc(&app.metrics.api_rejected))?;
    check_gateway(app, &q.gateway_id)?;
    let target =
        parse_target(&q.target, &app.config.api.block_width).map_err(|e| rejected(app, e))?;
    send_command(app, &q.gateway_id, Action::Unblock, target, None, None)
}

// ---------------------------------------------------------------- thresholds

/// Body of `POST /api/v1/thresholds`: values to set (merged into the current set).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ThresholdRequest {
    pub values: BTreeMap<String, f64>,
}

/// Query of `DELETE /api/v1/thresholds`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ThresholdDelete {
    pub key: String,
}

/// Answer of a threshold change.
#[derive(Debug, Serialize)]
pub struct ThresholdsAccepted {
    pub settings: ThresholdSettings,
    pub audit_hash: String,
}

fn publish_thresholds(app: &App, values: BTreeMap<String, f64>) -> ApiResult {
    let settings = ThresholdSettings {
        v: SCHEMA_VERSION,
        id: new_id("thr"),
        operator: app.config.server.operator.clone(),
        issued_at_ms: now_ms(),
        values,
    };
    settings.validate().map_err(|e| rejected(app, e))?;
    publish(app, Outbound::thresholds(&settings))?;
    let audit_hash = app
        .audit(crate::audit::RecordKind::Thresholds, &settings)
        .map_err(ApiError::internal)?;
    app.store
        .set_thresholds(&settings)
        .map_err(ApiError::internal)?;
    tracing::info!(settings = %settings.id, keys = settings.values.len(), %audit_hash,
        "threshold settings sent");
    accepted(&ThresholdsAccepted {
        settings,
        audit_hash,
    })
}

fn current_thresholds(app: &App) -> Result<BTreeMap<String, f64>, ApiError> {
    Ok(app
        .store
        .thresholds()
        .map_err(ApiError::internal)?
        .map(|t| t.values)
        .unwrap_or_default())
}

fn post_thresholds(app: &App, headers: &HeaderMap, raw: &Bytes) -> ApiResult {
    guard(app, headers)?;
    let req: ThresholdRequest = body(raw).inspect_err(|_| inc(&app.metrics.api_rejected))?;
    if req.values.is_empty() {
        return Err(rejected(app, "values is empty".into()));
    }
    let allowed = &app.config.api.threshold_keys;
    for (k, v) in &req.values {
        check_threshold_key(k).map_err(|e| rejected(app, e))?;
        if !allowed.is_empty() && !allowed.contains(k) {
            return Err(rejected(
                app,
                format!("threshold key {k:?} is not one of api.threshold_keys"),
            ));
        }
        if !v.is_finite() || *v < 0.0 || *v > app.config.api.max_threshold {
            return Err(rejected(
                app,
                format!(
                    "threshold {k} = {v} is outside 0..={}",
                    app.config.api.max_threshold
                ),
            ));
        }
    }
    let mut values = current_thresholds(app)?;
    values.extend(req.values);
    if values.len() > MAX_THRESHOLD_KEYS {
        return Err(rejected(
            app,
            format!("more than {MAX_THRESHOLD_KEYS} threshold keys"),
        ));
    }
    publish_thresholds(app, values)
}

fn delete_threshold(app: &App, headers: &HeaderMap, raw_query: &str) -> ApiResult {
    guard(app, headers)?;
    let q: ThresholdDelete = query(raw_query).inspect_err(|_| inc(&app.metrics.api_rejected))?;
    check_threshold_key(&q.key).map_err(|e| rejected(app, e))?;
    let mut values = current_thresholds(app)?;
    if values.remove(&q.key).is_none() {
        inc(&app.metrics.api_rejected);
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            format!("threshold {:?} is not set", q.key),
        ));
    }
    publish_thresholds(app, values)
}

// ---------------------------------------------------------------- reads

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

#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct HistoryQuery {
    from_ms: Option<u64>,
    to_ms: Option<u64>,
    gateway_id: Option<String>,
    step_s: Option<u64>,
}

/// Answer of the history and overview reads.
#[derive(Debug, Serialize)]
pub struct Series {
    pub from_ms: u64,
    pub to_ms: u64,
    pub step_ms: u64,
    pub gateway_id: Option<String>,
    pub points: Vec<crate::store::SeriesPoint>,
}

fn history(app: &App, raw_query: &str) -> ApiResult {
    let q: HistoryQuery = query(raw_query)?;
    let to_ms = q.to_ms.unwrap_or_else(|| now_ms() + 1);
    let from_ms = q.from_ms.unwrap_or(to_ms.saturating_sub(3_600_000));
    if from_ms >= to_ms {
        return Err(ApiError::bad("from_ms must be before to_ms"));
    }
    if to_ms - from_ms > MAX_RANGE_MS {
        return Err(ApiError::bad("range is longer than 31 days"));
    }
    if let Some(gw) = &q.gateway_id {
        check_gateway_id(gw).map_err(ApiError::bad)?;
    }
    let range = to_ms - from_ms;
    let min_step = nice_step_ms(range.div_ceil(MAX_POINTS));
    let step_ms = match q.step_s {
        Some(0) => return Err(ApiError::bad("step_s must be at least 1")),
        Some(s) => s.saturating_mul(1000).max(min_step),
        None => min_step,
    };
    let points = app
        .store
        .series(q.gateway_id.as_deref(), from_ms, to_ms, step_ms)
        .map_err(ApiError::internal)?;
    json_ok(&Series {
        from_ms,
        to_ms,
        step_ms,
        gateway_id: q.gateway_id,
        points,
    })
}

/// The smallest step of 1, 2, 5, 10, 15, 30 s, 1, 2, 5, 10, 15, 30 min, 1, 2, 3, 6, 12 h
/// or whole days that is at least `ms`.
fn nice_step_ms(ms: u64) -> u64 {
    const STEPS_S: [u64; 17] = [
        1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 10_800, 21_600, 43_200,
    ];
    STEPS_S
        .iter()
        .map(|s| s * 1000)
        .find(|s| *s >= ms)
        .unwrap_or_else(|| ms.div_ceil(86_400_000) * 86_400_000)
}

#[derive(Debug, Serialize)]
struct Health {
    status: &'static str,
    database: String,
    audit_records: u64,
    audit_head: String,
}

fn health(app: &App) -> Response {
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

fn metrics(app: &App) -> Response {
    let rows = app.store.row_counts().ok();
    let audit = app
        .audit
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .head()
        .records;
    let mut res = app.metrics.render(rows.as_ref(), audit).into_response();
    res.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    res
}

fn events(app: &App) -> Response {
    let mut closing = app.closing.subscribe();
    inc(&app.metrics.sse_clients);
    // Owned by the stream: dropped (gauge decremented) when the client goes.
    let client = ClientGuard(app.metrics.clone());
    let stream = BroadcastStream::new(app.events.subscribe())
        .filter_map(move |r| {
            let out = match r {
                Ok(ev) => serde_json::to_string(&ev).ok().map(|json| {
                    Ok::<_, Infallible>(warp::sse::Event::default().event(ev.name()).data(json))
                }),
                Err(BroadcastStreamRecvError::Lagged(n)) => {
                    client
                        .0
                        .sse_lagged_events
                        .fetch_add(n, std::sync::atomic::Ordering::Relaxed);
                    None
                }
            };
            std::future::ready(out)
        })
        .take_until(async move {
            let _ = closing.wait_for(|c| *c).await;
        });
    warp::sse::reply(
        warp::sse::keep_alive()
            .interval(Duration::from_secs(15))
            .stream(stream),
    )
    .into_response()
}

/// Decrements the SSE client gauge when the stream is dropped.
struct ClientGuard(Arc<crate::metrics::Metrics>);

impl Drop for ClientGuard {
    fn drop(&mut self) {
        self.0
            .sse_clients
            .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
    }
}

fn read_list(app: &App, what: &str, raw_query: &str) -> ApiResult {
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

fn read(app: &App, what: &str) -> ApiResult {
    let e = ApiError::internal;
    match what {
        "devices" => json_ok(&app.store.devices(now_ms()).map_err(e)?),
        "blocks" => json_ok(&app.store.blocks(now_ms()).map_err(e)?),
        "gateways" => json_ok(&app.store.nodes().map_err(e)?),
        "thresholds" => json_ok(&app.store.thresholds().map_err(e)?),
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

fn query_string() -> impl Filter<Extract = (String,), Error = Infallible> + Clone {
    warp::query::raw().or(warp::any().map(String::new)).unify()
}

/// Every route of the dashboard.
pub fn routes(
    app: Arc<App>,
) -> impl Filter<Extract = (impl Reply,), Error = warp::Rejection> + Clone + Send + Sync + 'static {
    let with_app = {
        let app = app.clone();
        warp::any().map(move || app.clone())
    };
    let api = warp::path("api").and(warp::path("v1"));
    let body = warp::body::content_length_limit(MAX_BODY_BYTES).and(warp::body::bytes());

    let lists = api
        .and(
            warp::path!("alerts" / ..)
                .map(|| "alerts")
                .or(warp::path!("verdicts" / ..).map(|| "verdicts"))
                .unify()
                .or(warp::path!("commands" / ..).map(|| "commands"))
                .unify()
                .or(warp::path!("acks" / ..).map(|| "acks"))
                .unify()
                .or(warp::path!("flows" / ..).map(|| "flows"))
                .unify(),
        )
        .and(warp::path::end())
        .and(warp::get())
        .and(with_app.clone())
        .and(query_string())
        .and_then(|what: &'static str, app: Arc<App>, q: String| async move {
            answer(read_list(&app, what, &q))
        });
    let singles = api
        .and(
            warp::path!("devices")
                .map(|| "devices")
                .or(warp::path!("blocks").map(|| "blocks"))
                .unify()
                .or(warp::path!("gateways").map(|| "gateways"))
                .unify()
                .or(warp::path!("thresholds").map(|| "thresholds"))
                .unify()
                .or(warp::path!("audit" / "head").map(|| "audit"))
                .unify(),
        )
        .and(warp::get())
        .and(with_app.clone())
        .and_then(|what: &'static str, app: Arc<App>| async move { answer(read(&app, what)) });
    let history = api
        .and(warp::path!("history").or(warp::path!("overview")).unify())
        .and(warp::get())
        .and(with_app.clone())
        .and(query_string())
        .and_then(|app: Arc<App>, q: String| async move { answer(history(&app, &q)) });
    let events = api
        .and(warp::path!("events"))
        .and(warp::get())
        .and(with_app.clone())
        .map(|app: Arc<App>| events(&app));
    let post_block = api
        .and(warp::path!("blocks"))
        .and(warp::post())
        .and(with_app.clone())
        .and(warp::header::headers_cloned())
        .and(body)
        .and_then(|app: Arc<App>, h: HeaderMap, b: Bytes| async move {
            answer(post_block(&app, &h, &b))
        });
    let delete_block = api
        .and(warp::path!("blocks"))
        .and(warp::delete())
        .and(with_app.clone())
        .and(warp::header::headers_cloned())
        .and(query_string())
        .and_then(|app: Arc<App>, h: HeaderMap, q: String| async move {
            answer(delete_block(&app, &h, &q))
        });
    let post_thresholds = api
        .and(warp::path!("thresholds"))
        .and(warp::post())
        .and(with_app.clone())
        .and(warp::header::headers_cloned())
        .and(body)
        .and_then(|app: Arc<App>, h: HeaderMap, b: Bytes| async move {
            answer(post_thresholds(&app, &h, &b))
        });
    let delete_threshold = api
        .and(warp::path!("thresholds"))
        .and(warp::delete())
        .and(with_app.clone())
        .and(warp::header::headers_cloned())
        .and(query_string())
        .and_then(|app: Arc<App>, h: HeaderMap, q: String| async move {
            answer(delete_threshold(&app, &h, &q))
        });
    let health = warp::path!("health")
        .and(warp::get())
        .and(with_app.clone())
        .map(|app: Arc<App>| health(&app));
    let metrics = warp::path!("metrics")
        .and(warp::get())
        .and(with_app.clone())
        .map(|app: Arc<App>| metrics(&app));

    lists
        .or(singles)
        .unify()
        .or(history)
        .unify()
        .or(events)
        .unify()
        .or(post_block)
        .unify()
        .or(delete_block)
        .unify()
        .or(post_thresholds)
        .unify()
        .or(delete_threshold)
        .unify()
        .or(health)
        .unify()
        .or(metrics)
        .unify()
        .or(web::routes())
        .unify()
        .with(warp::trace::request())
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

    #[test]
    fn ids_and_keys() {
        assert!(check_gateway_id("gw-1.lab_a").is_ok());
        for bad in ["", "gw/1", "gw+", "#", "a b", &"x".repeat(65)] {
            assert!(check_gateway_id(bad).is_err(), "{bad}");
        }
        assert!(check_threshold_key("portscan.vertical_ports").is_ok());
        for bad in ["portscan", "Port.scan", "a..b", "a.b-c", ".a"] {
            assert!(check_threshold_key(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn history_steps_are_round() {
        assert_eq!(nice_step_ms(0), 1000);
        assert_eq!(nice_step_ms(1830), 2000);
        assert_eq!(nice_step_ms(3_600_000), 3_600_000);
        assert_eq!(nice_step_ms(50_000_000), 86_400_000);
    }

    #[test]
    fn token_comparison() {
        assert!(constant_time_eq(b"secret", b"secret"));
        assert!(!constant_time_eq(b"secret", b"secreT"));
        assert!(!constant_time_eq(b"secret", b"secret2"));
    }
}
