//! The HTTP admin API under `/admin`: what the `keys`, `accounts` and
//! `usage` commands do, for dashboards and scripts that cannot run the
//! binary next to Redis. Mounted only when an admin token is configured,
//! and opened only by that token; relay keys never open it.

use std::sync::Arc;

use axum::extract::rejection::QueryRejection;
use axum::extract::{FromRequestParts, Path, Query, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use time::OffsetDateTime;

use super::health_view::{Row, Today};
use super::keys::{check_clients, generated_id, view};
use super::seed::{SeedAccount, SeedKey};
use crate::app::AppState;
use crate::auth::{generate_key, hash_key, lifetime};
use crate::error::RelayError;
use crate::limits::status;
use crate::relay::store_error;
use crate::store::cipher::CredentialCipher;
use crate::store::{AccountRecord, KeyRecord, Put, StoreError};
use crate::usage::report;

/// Admin request bodies are small records; anything larger is a mistake.
const BODY_LIMIT: usize = 1024 * 1024;

/// The shortest admin token the relay accepts: it guards every key and
/// account, so it must not be guessable.
pub const MIN_TOKEN_CHARS: usize = 24;

type Answer = Result<Response, RelayError>;

/// The routes under `/admin`, behind the token check.
pub fn router(token: &SecretString) -> Router<AppState> {
    // Trimmed as the presented token is (and as the length check counts).
    let digest = Arc::new(Sha256::digest(token.expose_secret().trim().as_bytes()).to_vec());
    Router::new()
        .route("/admin/keys", get(list_keys).post(create_key))
        .route(
            "/admin/keys/{id}",
            get(show_key).put(replace_key).delete(delete_key),
        )
        .route("/admin/keys/{id}/disable", post(disable_key))
        .route("/admin/keys/{id}/enable", post(enable_key))
        .route("/admin/keys/{id}/rotate", post(rotate_key))
        .route("/admin/accounts", get(list_accounts).post(add_account))
        .route(
            "/admin/accounts/{id}",
            get(show_account).delete(remove_account),
        )
        .route("/admin/accounts/{id}/disable", post(disable_account))
        .route("/admin/accounts/{id}/enable", post(enable_account))
        .route("/admin/usage", get(usage))
        .route_layer(middleware::from_fn(move |request: Request, next: Next| {
            let digest = Arc::clone(&digest);
            async move {
                if !token_matches(request.headers(), &digest) {
                    return RelayError::AdminUnauthorized.into_response();
                }
                next.run(request).await
            }
        }))
}

/// The record id from the path; one that does not decode names no route.
struct Id(String);

impl<S: Send + Sync> FromRequestParts<S> for Id {
    type Rejection = RelayError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Id, RelayError> {
        match Path::<String>::from_request_parts(parts, state).await {
            Ok(Path(id)) => Ok(Id(id)),
            Err(_) => Err(RelayError::NotFound {
                method: parts.method.to_string(),
                path: parts.uri.path().to_owned(),
            }),
        }
    }
}

/// Compares digests of the presented and the configured token, so the
/// time taken says nothing about how much of the token was right.
fn token_matches(headers: &HeaderMap, digest: &[u8]) -> bool {
    let mut values = headers.get_all(header::AUTHORIZATION).iter();
    let (Some(value), None) = (values.next(), values.next()) else {
        return false;
    };
    let Some((scheme, token)) = value.to_str().ok().and_then(|text| text.split_once(' ')) else {
        return false;
    };
    if !scheme.eq_ignore_ascii_case("bearer") {
        return false;
    }
    let presented = Sha256::digest(token.trim().as_bytes());
    presented
        .iter()
        .zip(digest)
        .fold(0u8, |diff, (a, b)| diff | (a ^ b))
        == 0
        && presented.len() == digest.len()
}

// ---- keys ----

async fn list_keys(State(state): State<AppState>) -> Answer {
    let now = OffsetDateTime::now_utc();
    let keys = state.store.list_keys().await.map_err(store_error)?;
    let data = keys
        .iter()
        .map(|key| view::to_json(key, now))
        .collect::<serde_json::Result<Vec<Value>>>()
        .map_err(internal)?;
    Ok(Json(json!({ "data": data })).into_response())
}

async fn show_key(State(state): State<AppState>, Id(id): Id) -> Answer {
    let key = existing_key(&state, &id).await?;
    let mut body = key_body(&key, None)?;
    let limits = status::read(&state.store, &key, state.config.usage_utc_offset)
        .await
        .map_err(store_error)?;
    if let (Value::Object(map), Value::Object(mut now)) = (&mut body, limits.to_json()) {
        for (field, name) in [("usage", "usage"), ("limits", "limit_status")] {
            if let Some(value) = now.remove(field) {
                map.insert(name.into(), value);
            }
        }
    }
    Ok(Json(body).into_response())
}

/// Takes a key entry as the seed file writes it. `id` is generated when
/// left out; without `key` or `key_sha256` a key is generated and shown
/// in the answer, the only time it is.
async fn create_key(State(state): State<AppState>, request: Request) -> Answer {
    let mut entry = json_object(&state, request).await?;
    if !entry.contains_key("id") {
        entry.insert("id".into(), json!(generated_id().map_err(internal)?));
    }
    let issued = if entry.contains_key("key") || entry.contains_key("key_sha256") {
        None
    } else {
        let key = generate_key().map_err(internal)?;
        entry.insert("key".into(), json!(key.expose_secret()));
        Some(key)
    };
    let seed = key_entry(&state, entry)?;
    insert_key(&state, &seed, issued.as_ref()).await
}

/// Replaces the key's settings with a key entry of the seed file, as
/// seeding it again would: fields left out take their defaults. Without
/// `key` or `key_sha256` the key keeps its secret; it keeps its creation
/// time and first use either way. A key that does not exist is created
/// (then the entry must carry the key or its hash).
async fn replace_key(State(state): State<AppState>, Id(id): Id, request: Request) -> Answer {
    let mut entry = json_object(&state, request).await?;
    match entry.get("id") {
        None => {
            entry.insert("id".into(), json!(id));
        }
        Some(given) if given.as_str() == Some(id.as_str()) => {}
        Some(_) => {
            return Err(RelayError::InvalidBody {
                reason: format!("the entry's id differs from the id in the path ({id})"),
            });
        }
    }
    let existing = state.store.key_by_id(&id).await.map_err(store_error)?;
    let keeps_secret = !entry.contains_key("key") && !entry.contains_key("key_sha256");
    if let Some(old) = &existing
        && keeps_secret
    {
        entry.insert("key_sha256".into(), json!(old.key_sha256));
    }
    let seed = key_entry(&state, entry)?;
    if existing.is_none() {
        return insert_key(&state, &seed, None).await;
    }
    let pepper = state.config.secrets.key_pepper.as_ref();
    // Written over the key as it is then, should it have been rotated in
    // the meantime: a kept secret is the current one.
    let mut old_hash = String::new();
    let record = state
        .store
        .update_key(&id, |record| {
            let mut replaced = seed.record(pepper, record.created_at.unwrap_or_else(lifetime::now));
            if keeps_secret {
                replaced.key_sha256.clone_from(&record.key_sha256);
            }
            old_hash = std::mem::replace(record, replaced).key_sha256;
        })
        .await
        .map_err(refused)?
        .ok_or_else(|| not_found("key", id.clone()))?;
    state.keys.forget(&old_hash);
    state.keys.forget(&record.key_sha256);
    Ok(Json(key_body(&record, None)?).into_response())
}

async fn disable_key(State(state): State<AppState>, Id(id): Id) -> Answer {
    change_key(&state, &id, |key| key.disabled = true).await
}

async fn enable_key(State(state): State<AppState>, Id(id): Id) -> Answer {
    change_key(&state, &id, |key| key.disabled = false).await
}

/// A new secret for the key; the old one stops working at once on this
/// instance and within the key cache's time on the others.
async fn rotate_key(State(state): State<AppState>, Id(id): Id) -> Answer {
    let key = generate_key().map_err(internal)?;
    let new_hash = hash_key(
        key.expose_secret(),
        state.config.secrets.key_pepper.as_ref(),
    );
    let mut old_hash = String::new();
    let record = state
        .store
        .update_key(&id, |record| {
            old_hash = std::mem::replace(&mut record.key_sha256, new_hash.clone());
        })
        .await
        .map_err(refused)?
        .ok_or_else(|| not_found("key", id.clone()))?;
    state.keys.forget(&old_hash);
    Ok(Json(key_body(&record, Some(&key))?).into_response())
}

async fn delete_key(State(state): State<AppState>, Id(id): Id) -> Answer {
    let Some(hash) = state.store.delete_key(&id).await.map_err(store_error)? else {
        return Err(not_found("key", id));
    };
    state.keys.forget(&hash);
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// Applies `change` to the key as it is in the store, even when another
/// change (a rotation, a delete) lands at the same moment.
async fn change_key(state: &AppState, id: &str, change: impl Fn(&mut KeyRecord)) -> Answer {
    let record = state
        .store
        .update_key(id, change)
        .await
        .map_err(refused)?
        .ok_or_else(|| not_found("key", id.to_owned()))?;
    state.keys.forget(&record.key_sha256);
    Ok(Json(key_body(&record, None)?).into_response())
}

/// A key entry of the seed file, checked as seeding checks it, with client
/// kinds this relay knows.
fn key_entry(
    state: &AppState,
    entry: serde_json::Map<String, Value>,
) -> Result<SeedKey, RelayError> {
    let seed: SeedKey = serde_json::from_value(Value::Object(entry)).map_err(invalid)?;
    seed.check().map_err(invalid)?;
    check_clients(&state.config, &seed.allowed_clients).map_err(invalid)?;
    Ok(seed)
}

/// Writes a new key (refused when its id exists) and answers 201, with
/// the key itself when the relay generated it.
async fn insert_key(state: &AppState, seed: &SeedKey, issued: Option<&SecretString>) -> Answer {
    let pepper = state.config.secrets.key_pepper.as_ref();
    let record = seed.record(pepper, lifetime::now());
    state
        .store
        .write_key(&record, Put::Create)
        .await
        .map_err(refused)?;
    state.keys.forget(&record.key_sha256);
    Ok((StatusCode::CREATED, Json(key_body(&record, issued)?)).into_response())
}

/// A key as the admin API shows it; `issued`, the key itself, only in the
/// answer that created or rotated it.
fn key_body(record: &KeyRecord, issued: Option<&SecretString>) -> Result<Value, RelayError> {
    let mut body = view::to_json(record, OffsetDateTime::now_utc()).map_err(internal)?;
    if let (Some(key), Value::Object(map)) = (issued, &mut body) {
        map.insert("key".into(), json!(key.expose_secret()));
    }
    Ok(body)
}

async fn existing_key(state: &AppState, id: &str) -> Result<KeyRecord, RelayError> {
    state
        .store
        .key_by_id(id)
        .await
        .map_err(store_error)?
        .ok_or_else(|| not_found("key", id.to_owned()))
}

// ---- accounts ----

async fn list_accounts(State(state): State<AppState>) -> Answer {
    let records = state.store.list_accounts().await.map_err(store_error)?;
    let data = account_views(&state, &records).await?;
    Ok(Json(json!({ "data": data })).into_response())
}

async fn show_account(State(state): State<AppState>, Id(id): Id) -> Answer {
    let record = existing_account(&state, &id).await?;
    let mut views = account_views(&state, std::slice::from_ref(&record)).await?;
    Ok(Json(views.pop().unwrap_or_default()).into_response())
}

/// Takes an account entry as the seed file writes it, credential
/// included; the credential is sealed before it is stored and never shown.
async fn add_account(State(state): State<AppState>, request: Request) -> Answer {
    let entry = json_object(&state, request).await?;
    let seed: SeedAccount = serde_json::from_value(Value::Object(entry)).map_err(invalid)?;
    seed.check().map_err(invalid)?;
    let cipher = CredentialCipher::from_secrets(&state.config.secrets).map_err(internal)?;
    let record = seed.record(&cipher).map_err(internal)?;
    state
        .store
        .write_account(&record, Put::Create)
        .await
        .map_err(refused)?;
    let mut views = account_views(&state, std::slice::from_ref(&record)).await?;
    Ok((StatusCode::CREATED, Json(views.pop().unwrap_or_default())).into_response())
}

async fn disable_account(State(state): State<AppState>, Id(id): Id) -> Answer {
    set_schedulable(&state, &id, false).await?;
    show_account(State(state), Id(id)).await
}

/// Back into the pool, with any status the relay set and any cooldown
/// cleared, as `accounts enable` does.
async fn enable_account(State(state): State<AppState>, Id(id): Id) -> Answer {
    set_schedulable(&state, &id, true).await?;
    state
        .store
        .clear_account_health(&id)
        .await
        .map_err(store_error)?;
    show_account(State(state), Id(id)).await
}

/// Written only over the account as it is there: one removed meanwhile
/// stays removed.
async fn set_schedulable(state: &AppState, id: &str, schedulable: bool) -> Result<(), RelayError> {
    state
        .store
        .update_account(id, |record| record.schedulable = schedulable)
        .await
        .map_err(store_error)?
        .ok_or_else(|| not_found("account", id.to_owned()))?;
    Ok(())
}

async fn remove_account(State(state): State<AppState>, Id(id): Id) -> Answer {
    if !state.store.delete_account(&id).await.map_err(store_error)? {
        return Err(not_found("account", id));
    }
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn existing_account(state: &AppState, id: &str) -> Result<AccountRecord, RelayError> {
    state
        .store
        .account(id)
        .await
        .map_err(store_error)?
        .ok_or_else(|| not_found("account", id.to_owned()))
}

/// Each record without its credential, with what `accounts list` says of
/// it: whether it takes traffic and, if not, why and until when.
async fn account_views(
    state: &AppState,
    records: &[AccountRecord],
) -> Result<Vec<Value>, RelayError> {
    let today = Today::now(state.config.usage_utc_offset);
    let ids: Vec<&str> = records.iter().map(|record| record.id.as_str()).collect();
    let health = state
        .store
        .account_health(&ids, today.date())
        .await
        .map_err(store_error)?;
    records
        .iter()
        .zip(&health)
        .map(|(record, health)| {
            let row = Row::new(record, health, &today);
            let mut view = serde_json::to_value(record).map_err(internal)?;
            if let Value::Object(map) = &mut view {
                map.remove("credential");
                map.insert("state".into(), json!(row.state));
                map.insert("why".into(), json!(row.why));
                map.insert(
                    "cooldown_secs".into(),
                    json!(row.cooldown.map(|left| left.as_secs())),
                );
                map.insert(
                    "last_used_secs_ago".into(),
                    json!(row.last_used.map(|ago| ago.as_secs())),
                );
                map.insert("in_flight".into(), json!(health.in_flight));
                map.insert("spent_today_nano_usd".into(), json!(health.spent_nano_usd));
            }
            Ok(view)
        })
        .collect()
}

// ---- usage ----

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct UsageQuery {
    key: Option<String>,
    account: Option<String>,
    model: Option<String>,
    since: Option<String>,
}

/// The same sections as `claude-relay usage --json`.
async fn usage(
    State(state): State<AppState>,
    query: Result<Query<UsageQuery>, QueryRejection>,
) -> Answer {
    let Query(query) = query.map_err(|rejection| RelayError::InvalidQuery {
        reason: format!(
            "{} (it takes key, account, model and since, each once)",
            rejection.body_text()
        ),
    })?;
    let since = query
        .since
        .map(|text| {
            let format = time::macros::format_description!("[year]-[month]-[day]");
            time::Date::parse(&text, &format).map_err(|_| RelayError::InvalidQuery {
                reason: format!("since {text:?} is not a date like 2026-12-01"),
            })
        })
        .transpose()?;
    let query = report::Query {
        key: query.key,
        account: query.account,
        model: query.model,
        since,
    };
    let sections = report::build(&state.store, &state.recorder, &query)
        .await
        .map_err(|err| match err {
            report::ReportError::Unknown { kind, id } => RelayError::RecordNotFound { kind, id },
            err @ report::ReportError::NoModelUsage { .. } => RelayError::InvalidQuery {
                reason: err.to_string(),
            },
            report::ReportError::TooFarBack { since } => RelayError::InvalidQuery {
                reason: format!(
                    "since {since} reaches back more than {} days",
                    report::MAX_DAYS
                ),
            },
            report::ReportError::Store(err) => store_error(err),
        })?;
    Ok(Json(json!({ "data": sections })).into_response())
}

// ---- shared ----

/// The body as a JSON object, or the error that says what is wrong with
/// it; read as the relay reads any body (a limit, and a client that goes
/// quiet gets 408).
async fn json_object(
    state: &AppState,
    request: Request,
) -> Result<serde_json::Map<String, Value>, RelayError> {
    crate::relay::check_content_type(request.headers())?;
    let bytes = crate::relay::body::read_limited(
        request.into_body(),
        BODY_LIMIT,
        state.config.client_timeout,
    )
    .await?;
    match serde_json::from_slice::<Value>(&bytes) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(_) => Err(RelayError::InvalidBody {
            reason: "the body must be a JSON object".into(),
        }),
        Err(err) => Err(RelayError::InvalidJson {
            reason: err.to_string(),
        }),
    }
}

/// A write the store refused, or could not make.
fn refused(err: StoreError) -> RelayError {
    match err {
        StoreError::Exists { kind, id } => RelayError::RecordExists { kind, id },
        StoreError::SecretInUse { id } => RelayError::SecretInUse { id },
        StoreError::Gone { kind, id } => RelayError::RecordNotFound { kind, id },
        other => store_error(other),
    }
}

fn not_found(kind: &'static str, id: String) -> RelayError {
    RelayError::RecordNotFound { kind, id }
}

fn invalid(err: impl std::fmt::Display) -> RelayError {
    RelayError::InvalidBody {
        reason: format!("{err:#}"),
    }
}

fn internal(err: impl Into<anyhow::Error>) -> RelayError {
    RelayError::Internal(err.into())
}
