//! The HTTP interface: JSON REST API under `/api/v1` (described in
//! `dashboard/openapi.yaml`), live events over SSE, `/metrics`, `/health`, and
//! the pages and their assets, all served from the binary.
//!
//! Mutating endpoints (POST/DELETE on `/api/v1/blocks`, POST/PUT/DELETE on
//! `/api/v1/thresholds`)
//! check, in this order: the request's `Origin` (and `Sec-Fetch-Site`) is the
//! dashboard's own or configured (else 403); `Authorization: Bearer <token>`
//! matches `server.api_token` (else 401); every field is valid (else 400/404/422
//! with a message naming the field); the bus queue takes the message (else 503).
//! Only then is anything recorded, so a rejected request changes nothing.
//!
//! Handlers answer every error themselves (no warp rejections past routing), so
//! each route's errors are exactly the ones documented.
//!
//! This module holds the routes, the request guard, the error answer and the
//! helpers every handler shares; the handlers live by resource: `blocks.rs`
//! (block/unblock commands), `thresholds.rs` (detector threshold settings,
//! checked against the detectors' schemas), `audit.rs` (one audit record by
//! hash, with its chain position and verification),
//! `history.rs` (the overview and history series), `reads.rs` (lists, single
//! resources, health, metrics), `events.rs` (the live-event stream) and
//! `devices.rs` (the IoT device page's reads under `/api/v1/iot`).

mod audit;
mod blocks;
mod devices;
mod events;
mod history;
mod reads;
mod thresholds;

use std::{convert::Infallible, sync::Arc};

use bytes::Bytes;
use serde::{Serialize, de::DeserializeOwned};
use warp::{
    Filter, Reply,
    filters::BoxedFilter,
    http::{HeaderMap, HeaderValue, StatusCode, header},
    reply::Response,
};

pub use self::{
    blocks::{BlockRequest, Blocks, CommandAccepted, GatewaySync, UnblockQuery, parse_target},
    devices::{DEFAULT_LIMIT as IOT_DEFAULT_LIMIT, IotDeviceDetail, IotDevices},
    history::Series,
    thresholds::{ThresholdDelete, ThresholdRequest, ThresholdsAccepted},
};
use crate::{app::App, metrics::inc, publish::Outbound, web};

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
    tad_wire::NodeId::parse(gw).map_err(|e| rejected(app, format!("gateway_id: {e}")))?;
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
            answer(reads::read_list(&app, what, &q))
        });
    let singles = api
        .and(
            warp::path!("devices")
                .map(|| "devices")
                .or(warp::path!("blocks").map(|| "blocks"))
                .unify()
                .or(warp::path!("gateways").map(|| "gateways"))
                .unify()
                .or(warp::path!("audit" / "head").map(|| "audit"))
                .unify(),
        )
        .and(warp::get())
        .and(with_app.clone())
        .and_then(
            |what: &'static str, app: Arc<App>| async move { answer(reads::read(&app, what)) },
        );
    let gateway_state = api
        .and(warp::path!("gateways" / String / "state"))
        .and(warp::get())
        .and(with_app.clone())
        .and_then(
            |id: String, app: Arc<App>| async move { answer(blocks::gateway_state(&app, &id)) },
        );
    // After `singles`: `audit/head` is matched there first.
    let audit_entry = api
        .and(warp::path!("audit" / String))
        .and(warp::get())
        .and(with_app.clone())
        .and_then(|hash: String, app: Arc<App>| async move {
            // Reads the log file: off the async threads.
            let r = tokio::task::spawn_blocking(move || audit::entry(&app, &hash))
                .await
                .unwrap_or_else(|e| Err(ApiError::internal(e)));
            answer(r)
        });
    let get_thresholds = api
        .and(warp::path!("thresholds"))
        .and(warp::get())
        .and(with_app.clone())
        .and_then(|app: Arc<App>| async move { answer(thresholds::get_thresholds(&app)) });
    let history = api
        .and(warp::path!("history").or(warp::path!("overview")).unify())
        .and(warp::get())
        .and(with_app.clone())
        .and(query_string())
        .and_then(|app: Arc<App>, q: String| async move { answer(history::history(&app, &q)) });
    let events = api
        .and(warp::path!("events"))
        .and(warp::get())
        .and(with_app.clone())
        .map(|app: Arc<App>| events::events(&app));
    let post_block = api
        .and(warp::path!("blocks"))
        .and(warp::post())
        .and(with_app.clone())
        .and(warp::header::headers_cloned())
        .and(body)
        .and_then(|app: Arc<App>, h: HeaderMap, b: Bytes| async move {
            answer(blocks::post_block(&app, &h, &b))
        });
    let delete_block = api
        .and(warp::path!("blocks"))
        .and(warp::delete())
        .and(with_app.clone())
        .and(warp::header::headers_cloned())
        .and(query_string())
        .and_then(|app: Arc<App>, h: HeaderMap, q: String| async move {
            answer(blocks::delete_block(&app, &h, &q))
        });
    let post_protect = api
        .and(warp::path!("protected"))
        .and(warp::post())
        .and(with_app.clone())
        .and(warp::header::headers_cloned())
        .and(body)
        .and_then(|app: Arc<App>, h: HeaderMap, b: Bytes| async move {
            answer(blocks::post_protect(&app, &h, &b))
        });
    let delete_protect = api
        .and(warp::path!("protected"))
        .and(warp::delete())
        .and(with_app.clone())
        .and(warp::header::headers_cloned())
        .and(query_string())
        .and_then(|app: Arc<App>, h: HeaderMap, q: String| async move {
            answer(blocks::delete_protect(&app, &h, &q))
        });
    let post_thresholds = api
        .and(warp::path!("thresholds"))
        .and(warp::post())
        .and(with_app.clone())
        .and(warp::header::headers_cloned())
        .and(body)
        .and_then(|app: Arc<App>, h: HeaderMap, b: Bytes| async move {
            answer(thresholds::post_thresholds(&app, &h, &b))
        });
    let put_thresholds = api
        .and(warp::path!("thresholds"))
        .and(warp::put())
        .and(with_app.clone())
        .and(warp::header::headers_cloned())
        .and(body)
        .and_then(|app: Arc<App>, h: HeaderMap, b: Bytes| async move {
            answer(thresholds::put_thresholds(&app, &h, &b))
        });
    let delete_threshold_key = api
        .and(warp::path!("thresholds" / String))
        .and(warp::delete())
        .and(with_app.clone())
        .and(warp::header::headers_cloned())
        .and_then(|key: String, app: Arc<App>, h: HeaderMap| async move {
            answer(thresholds::delete_threshold_key(&app, &h, &key))
        });
    let delete_threshold = api
        .and(warp::path!("thresholds"))
        .and(warp::delete())
        .and(with_app.clone())
        .and(warp::header::headers_cloned())
        .and(query_string())
        .and_then(|app: Arc<App>, h: HeaderMap, q: String| async move {
            answer(thresholds::delete_threshold(&app, &h, &q))
        });
    let health = warp::path!("health")
        .and(warp::get())
        .and(with_app.clone())
        .map(|app: Arc<App>| reads::health(&app));
    let metrics = warp::path!("metrics")
        .and(warp::get())
        .and(with_app.clone())
        .map(|app: Arc<App>| reads::metrics(&app));

    // Each step is boxed: an unboxed chain of this many `or`s nests its type so
    // deeply that type-checking it takes many minutes.
    let mut all: BoxedFilter<(Response,)> = lists.boxed();
    for route in [
        singles.boxed(),
        gateway_state.boxed(),
        history.boxed(),
        events.boxed(),
        post_block.boxed(),
        delete_block.boxed(),
        post_protect.boxed(),
        delete_protect.boxed(),
        audit_entry.boxed(),
        get_thresholds.boxed(),
        post_thresholds.boxed(),
        put_thresholds.boxed(),
        delete_threshold.boxed(),
        delete_threshold_key.boxed(),
        health.boxed(),
        metrics.boxed(),
        devices::routes(app.clone()),
        web::routes().boxed(),
    ] {
        all = all.or(route).unify().boxed();
    }
    all.with(warp::trace::request())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_comparison() {
        assert!(constant_time_eq(b"secret", b"secret"));
        assert!(!constant_time_eq(b"secret", b"secreT"));
        assert!(!constant_time_eq(b"secret", b"secret2"));
    }
}
