//! The IoT device reads (issue 17) under `/api/v1/iot`, the device page's data:
//!
//! - `GET /api/v1/iot/devices`: every device of each gateway's last published
//!   `DeviceStates` snapshot (trust, level, components, counters: the gateway's
//!   own numbers, never recomputed) and each gateway's guard counters;
//! - `GET /api/v1/iot/devices/{device_id}`: one device: its rows of those
//!   snapshots, telemetry samples (oldest first, for the charts), trust changes
//!   with their causes (oldest first), vulnerability scans, refused messages,
//!   command decisions and the batches that carried its telemetry, each event
//!   with the hash of its audit record;
//! - `GET /api/v1/iot/refusals`, `GET /api/v1/iot/commands`: the refused
//!   telemetry messages (unenrolled devices included) and command decisions of
//!   every device, newest first.
//!
//! Query (all optional): `gateway_id`, `since_ms` (Unix ms), `limit` (1 to
//! [`MAX_LIMIT`], default [`DEFAULT_LIMIT`], per list).

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use warp::{Filter, filters::BoxedFilter, http::StatusCode, reply::Response};

use super::{ApiError, ApiResult, MAX_LIMIT, answer, json_ok, query, query_string};
use crate::{
    app::App,
    store::{
        BatchView, DecisionView, DeviceQuery, IotDevice, IotGateway, RefusalView, TelemetryPoint,
        TrustChangeView, VulnView,
    },
};

/// Rows per list when the query gives no `limit`.
pub const DEFAULT_LIMIT: u32 = 300;

#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct DeviceParams {
    gateway_id: Option<String>,
    since_ms: Option<u64>,
    limit: Option<u32>,
}

impl DeviceParams {
    fn parse(raw: &str) -> Result<DeviceParams, ApiError> {
        let p: DeviceParams = query(raw)?;
        if let Some(l) = p.limit
            && !(1..=MAX_LIMIT).contains(&l)
        {
            return Err(ApiError::bad(format!(
                "limit {l} is outside 1..={MAX_LIMIT}"
            )));
        }
        if let Some(gw) = &p.gateway_id {
            tad_wire::NodeId::parse(gw).map_err(|e| ApiError::bad(format!("gateway_id: {e}")))?;
        }
        Ok(p)
    }

    fn on<'a>(&'a self, device_id: &'a str) -> DeviceQuery<'a> {
        DeviceQuery {
            device_id,
            gateway_id: self.gateway_id.as_deref(),
            since_ms: self.since_ms,
            limit: self.limit.unwrap_or(DEFAULT_LIMIT),
        }
    }
}

/// `GET /api/v1/iot/devices`.
#[derive(Debug, Serialize)]
pub struct IotDevices {
    pub gateways: Vec<IotGateway>,
    /// Lowest trust first.
    pub devices: Vec<IotDevice>,
}

/// `GET /api/v1/iot/devices/{device_id}`.
#[derive(Debug, Serialize)]
pub struct IotDeviceDetail {
    pub device_id: String,
    /// The device in each gateway's last snapshot (empty when no gateway lists it,
    /// e.g. an unenrolled device that only has refusals).
    pub state: Vec<IotDevice>,
    /// Oldest first.
    pub telemetry: Vec<TelemetryPoint>,
    /// Oldest first.
    pub trust: Vec<TrustChangeView>,
    /// Newest first.
    pub vulns: Vec<VulnView>,
    /// Newest first.
    pub refusals: Vec<RefusalView>,
    /// Newest first.
    pub commands: Vec<DecisionView>,
    /// Newest first.
    pub batches: Vec<BatchView>,
}

fn list(app: &App) -> ApiResult {
    let e = ApiError::internal;
    json_ok(&IotDevices {
        gateways: app.store.iot_gateways().map_err(e)?,
        devices: app.store.iot_devices().map_err(e)?,
    })
}

fn detail(app: &App, device_id: &str, raw: &str) -> ApiResult {
    tad_wire::devices::check_device_id(device_id)
        .map_err(|e| ApiError::bad(format!("device_id: {e}")))?;
    let p = DeviceParams::parse(raw)?;
    let q = p.on(device_id);
    let e = ApiError::internal;
    let s = &app.store;
    let state: Vec<IotDevice> = s
        .iot_devices()
        .map_err(e)?
        .into_iter()
        .filter(|d| {
            d.view.device_id == device_id
                && p.gateway_id.as_ref().is_none_or(|g| *g == d.gateway_id)
        })
        .collect();
    let d = IotDeviceDetail {
        device_id: device_id.to_owned(),
        state,
        telemetry: s.iot_telemetry(&q).map_err(e)?,
        trust: s.iot_trust(&q).map_err(e)?,
        vulns: s.iot_vulns(&q).map_err(e)?,
        refusals: s.iot_refusals(&q).map_err(e)?,
        commands: s.iot_decisions(&q).map_err(e)?,
        batches: s.iot_batches(&q).map_err(e)?,
    };
    let nothing = d.state.is_empty()
        && d.telemetry.is_empty()
        && d.trust.is_empty()
        && d.vulns.is_empty()
        && d.refusals.is_empty()
        && d.commands.is_empty();
    if nothing {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            format!("no gateway has reported device {device_id:?}"),
        ));
    }
    json_ok(&d)
}

fn all_refusals(app: &App, raw: &str) -> ApiResult {
    let p = DeviceParams::parse(raw)?;
    json_ok(
        &app.store
            .iot_refusals(&p.on(""))
            .map_err(ApiError::internal)?,
    )
}

fn all_commands(app: &App, raw: &str) -> ApiResult {
    let p = DeviceParams::parse(raw)?;
    json_ok(
        &app.store
            .iot_decisions(&p.on(""))
            .map_err(ApiError::internal)?,
    )
}

/// The routes of this module (GET only).
pub(super) fn routes(app: Arc<App>) -> BoxedFilter<(Response,)> {
    let with_app = warp::any().map(move || app.clone());
    let iot = warp::path("api")
        .and(warp::path("v1"))
        .and(warp::path("iot"));
    let list = iot
        .and(warp::path!("devices"))
        .and(warp::get())
        .and(with_app.clone())
        .and_then(|app: Arc<App>| async move { answer(list(&app)) });
    let detail = iot
        .and(warp::path!("devices" / String))
        .and(warp::get())
        .and(with_app.clone())
        .and(query_string())
        .and_then(
            |id: String, app: Arc<App>, q: String| async move { answer(detail(&app, &id, &q)) },
        );
    let refusals = iot
        .and(warp::path!("refusals"))
        .and(warp::get())
        .and(with_app.clone())
        .and(query_string())
        .and_then(|app: Arc<App>, q: String| async move { answer(all_refusals(&app, &q)) });
    let commands = iot
        .and(warp::path!("commands"))
        .and(warp::get())
        .and(with_app)
        .and(query_string())
        .and_then(|app: Arc<App>, q: String| async move { answer(all_commands(&app, &q)) });
    list.or(detail)
        .unify()
        .boxed()
        .or(refusals)
        .unify()
        .or(commands)
        .unify()
        .boxed()
}
