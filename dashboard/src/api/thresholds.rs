//! Detector thresholds: `GET /api/v1/thresholds` (the set in force, the known
//! schemas, each detector's ack), `POST` (set keys, merged into the current set),
//! `PUT` (replace the whole set; `{}` removes every override), `DELETE
//! ?key=` and `DELETE /{key}` (remove one key).
//!
//! A change is checked before anything happens: keys well-formed
//! ([`check_threshold_key`]), at most [`MAX_THRESHOLD_KEYS`], and the whole new
//! set accepted by the schema of every detector heard from
//! ([`crate::settings::check_values`]; 400 naming the key, or 503 when no schema
//! is known yet). Then it is published as retained [`ThresholdSettings`] (the
//! whole override set: a key left out returns to the detector's default), audited
//! as `old → new` with the operator, and stored. Detectors answer with a
//! `SettingsAck`, shown by the GET.

use std::collections::BTreeMap;

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use tad_wire::{Message, SCHEMA_VERSION, ThresholdSettings, now_ms};
use warp::http::{HeaderMap, StatusCode};

use super::{
    ApiError, ApiResult, MAX_THRESHOLD_KEYS, accepted, body, guard, json_ok, new_id, publish,
    query, rejected,
};
use crate::{
    app::App,
    metrics::inc,
    publish::Outbound,
    settings::{SettingsRefusal, changing_thresholds, check_values},
    validate::check_threshold_key,
};

/// Body of `POST /api/v1/thresholds` (values to set, merged into the current
/// set; at least one) and `PUT /api/v1/thresholds` (the whole new set; may be
/// empty).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ThresholdRequest {
    pub values: BTreeMap<String, f64>,
}

/// Query of `DELETE /api/v1/thresholds?key=`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ThresholdDelete {
    pub key: String,
}

/// Answer (202) of a threshold change.
#[derive(Debug, Serialize)]
pub struct ThresholdsAccepted {
    /// What was published (`values`: the whole override set now in force).
    pub settings: ThresholdSettings,
    /// Hash of the change's audit record (`GET /api/v1/audit/{hash}`).
    pub audit_hash: String,
    /// The override set before the change.
    pub previous: BTreeMap<String, f64>,
    /// Detectors whose ack is now awaited (every one with a known schema).
    pub awaiting: Vec<String>,
}

/// `GET /api/v1/thresholds`.
pub(super) fn get_thresholds(app: &App) -> ApiResult {
    json_ok(&app.thresholds_view().map_err(ApiError::internal)?)
}

/// Checks `values` (the whole new set), publishes it, audits and stores it.
/// The caller holds [`changing_thresholds`].
fn change(app: &App, values: BTreeMap<String, f64>) -> ApiResult {
    if values.len() > MAX_THRESHOLD_KEYS {
        return Err(rejected(
            app,
            format!("more than {MAX_THRESHOLD_KEYS} threshold keys"),
        ));
    }
    let schemas = app.store.settings_schemas().map_err(ApiError::internal)?;
    match check_values(&schemas, &values) {
        Ok(()) => {}
        Err(SettingsRefusal::Invalid(e)) => return Err(rejected(app, e)),
        Err(e @ SettingsRefusal::NoSchema) => {
            inc(&app.metrics.api_rejected);
            return Err(ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                e.to_string(),
            ));
        }
    }
    let previous = current_thresholds(app)?;
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
        .record_thresholds(&settings, "api")
        .map_err(ApiError::internal)?;
    tracing::info!(settings = %settings.id, keys = settings.values.len(), %audit_hash,
        operator = %settings.operator, "threshold settings sent");
    accepted(&ThresholdsAccepted {
        settings,
        audit_hash,
        previous,
        awaiting: schemas
            .into_iter()
            .map(|s| s.detector_id.to_string())
            .collect(),
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

fn request(app: &App, headers: &HeaderMap, raw: &Bytes) -> Result<ThresholdRequest, ApiError> {
    guard(app, headers)?;
    let req: ThresholdRequest = body(raw).inspect_err(|_| inc(&app.metrics.api_rejected))?;
    for k in req.values.keys() {
        check_threshold_key(k).map_err(|e| rejected(app, e))?;
    }
    Ok(req)
}

/// `POST /api/v1/thresholds`: sets keys, merged into the current set.
pub(super) fn post_thresholds(app: &App, headers: &HeaderMap, raw: &Bytes) -> ApiResult {
    let req = request(app, headers, raw)?;
    if req.values.is_empty() {
        return Err(rejected(
            app,
            "values is empty (to remove every override, PUT {\"values\": {}})".into(),
        ));
    }
    let _changing = changing_thresholds();
    let mut values = current_thresholds(app)?;
    values.extend(req.values);
    change(app, values)
}

/// `PUT /api/v1/thresholds`: replaces the whole set.
pub(super) fn put_thresholds(app: &App, headers: &HeaderMap, raw: &Bytes) -> ApiResult {
    let req = request(app, headers, raw)?;
    let _changing = changing_thresholds();
    change(app, req.values)
}

/// `DELETE /api/v1/thresholds?key=K`.
pub(super) fn delete_threshold(app: &App, headers: &HeaderMap, raw_query: &str) -> ApiResult {
    guard(app, headers)?;
    let q: ThresholdDelete = query(raw_query).inspect_err(|_| inc(&app.metrics.api_rejected))?;
    remove_key(app, &q.key)
}

/// `DELETE /api/v1/thresholds/{key}`.
pub(super) fn delete_threshold_key(app: &App, headers: &HeaderMap, key: &str) -> ApiResult {
    guard(app, headers)?;
    remove_key(app, key)
}

fn remove_key(app: &App, key: &str) -> ApiResult {
    check_threshold_key(key).map_err(|e| rejected(app, e))?;
    let _changing = changing_thresholds();
    let mut values = current_thresholds(app)?;
    if values.remove(key).is_none() {
        inc(&app.metrics.api_rejected);
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            format!("threshold {key:?} is not set"),
        ));
    }
    change(app, values)
}
