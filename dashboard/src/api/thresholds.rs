//! `POST /api/v1/thresholds` and `DELETE /api/v1/thresholds`: an operator sets
//! or removes detector thresholds. The new set (merged into the current one) is
//! checked, published as retained [`ThresholdSettings`], then audited and stored.

use std::collections::BTreeMap;

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use tad_wire::{Message, SCHEMA_VERSION, ThresholdSettings, now_ms};
use warp::http::{HeaderMap, StatusCode};

use super::{
    ApiError, ApiResult, MAX_THRESHOLD_KEYS, accepted, body, guard, new_id, publish, query,
    rejected,
};
use crate::{app::App, metrics::inc, publish::Outbound, validate::check_threshold_key};

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

pub(super) fn post_thresholds(app: &App, headers: &HeaderMap, raw: &Bytes) -> ApiResult {
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

pub(super) fn delete_threshold(app: &App, headers: &HeaderMap, raw_query: &str) -> ApiResult {
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
