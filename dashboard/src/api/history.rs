//! `GET /api/v1/history` and `GET /api/v1/overview`: the traffic series of one
//! gateway (or the sum over gateways) over a time range, bucketed into a round
//! step so that at most [`MAX_POINTS`] points come back.

use serde::{Deserialize, Serialize};
use tad_wire::now_ms;

use super::{ApiError, ApiResult, MAX_POINTS, MAX_RANGE_MS, json_ok, query};
use crate::app::App;

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

pub(super) fn history(app: &App, raw_query: &str) -> ApiResult {
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
        tad_wire::NodeId::parse(gw).map_err(|e| ApiError::bad(format!("gateway_id: {e}")))?;
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn history_steps_are_round() {
        assert_eq!(nice_step_ms(0), 1000);
        assert_eq!(nice_step_ms(1830), 2000);
        assert_eq!(nice_step_ms(3_600_000), 3_600_000);
        assert_eq!(nice_step_ms(50_000_000), 86_400_000);
    }
}
