//! `GET /relay/key`: the calling key's own usage, limits and resets, so a
//! key holder can see why they are limited and until when. Authenticated
//! like every relay route; it never shows another key.

use std::sync::Arc;

use axum::Extension;
use axum::Json;
use axum::extract::{Request, State};
use serde_json::Value;

use crate::app::AppState;
use crate::error::RelayError;
use crate::limits::status;
use crate::observe::RequestLog;

pub async fn status(
    State(state): State<AppState>,
    Extension(log): Extension<Arc<RequestLog>>,
    request: Request,
) -> Result<Json<Value>, RelayError> {
    let key = super::admit(&state, &log, request.headers(), None).await?;
    super::check_header_text(request.headers())?;
    let status = status::read(&state.store, &key, state.config.usage_utc_offset)
        .await
        .map_err(super::store_error)?;
    Ok(Json(status.to_json()))
}
