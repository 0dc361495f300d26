//! `GET /api/v1/audit/{hash}`: one audit record found by its hash, with its
//! position in the chain and a verification of the chain from the first record
//! up to it ([`crate::audit::locate`]). Alerts, verdicts, commands, threshold
//! changes and acks carry the hash of their record, so each links here.

use warp::http::StatusCode;

use super::{ApiError, ApiResult, json_ok};
use crate::{
    app::App,
    audit::{locate, parse_hash},
};

/// Looks `raw` up: 400 when it is not a 64-digit hex hash, 404 when no record
/// has it, else the [`crate::audit::Located`] record. Reads the log file (only
/// the records written when the request came in): call off the async threads.
pub(super) fn entry(app: &App, raw: &str) -> ApiResult {
    let hash = parse_hash(raw).map_err(ApiError::bad)?;
    let (path, records) = {
        let log = app.audit.lock().unwrap_or_else(|p| p.into_inner());
        (log.path().to_owned(), log.head().records)
    };
    match locate(&path, &hash, records).map_err(ApiError::internal)? {
        Some(found) => json_ok(&found),
        None => Err(ApiError::new(
            StatusCode::NOT_FOUND,
            format!("no audit record has hash {hash} (of {records} records)"),
        )),
    }
}
