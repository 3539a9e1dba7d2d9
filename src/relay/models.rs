//! `GET /v1/models`: the models a key may use, in the Anthropic list shape.
//! The list comes from an account when one answers it, else from the
//! configured `models`; either way it is filtered by the key's allow- and
//! deny-lists.

use std::sync::Arc;

use axum::body::Body;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::Response;
use serde_json::{Map, Value, json};

use super::forward::{self, Outgoing};
use crate::app::AppState;
use crate::auth::models::model_allowed;
use crate::config::ListedModel;
use crate::error::RelayError;
use crate::observe::RequestLog;
use crate::store::KeyRecord;

/// Largest upstream model list read for filtering.
const LIST_CAP: usize = 4 * 1024 * 1024;

pub async fn list(
    state: &AppState,
    log: &Arc<RequestLog>,
    outgoing: Outgoing,
    key: &KeyRecord,
) -> Result<Response, RelayError> {
    let answer = forward::forward(state, log, key, outgoing).await;
    let configured = &state.config.models;
    match answer {
        Ok(response) if response.status().is_success() => {
            if key.allowed_models.is_empty() && key.denied_models.is_empty() {
                return Ok(response);
            }
            filter_answer(response, key, configured).await
        }
        _ if !configured.is_empty() => Ok(json_response(
            StatusCode::OK,
            &filtered(configured_list(configured), key),
        )),
        other => other,
    }
}

/// The upstream's list with what the key may not use taken out; an answer
/// that is not a list is relayed as it came, since there is nothing to
/// filter in it.
async fn filter_answer(
    response: Response,
    key: &KeyRecord,
    configured: &[ListedModel],
) -> Result<Response, RelayError> {
    let (parts, body) = response.into_parts();
    let bytes = match axum::body::to_bytes(body, LIST_CAP).await {
        Ok(bytes) => bytes,
        Err(_) if !configured.is_empty() => {
            let list = filtered(configured_list(configured), key);
            return Ok(json_response(StatusCode::OK, &list));
        }
        Err(_) => return Err(RelayError::UpstreamUnreachable { retry_after: None }),
    };
    let list = match serde_json::from_slice::<Value>(&bytes) {
        Ok(list @ Value::Object(_)) if list["data"].is_array() => filtered(list, key),
        _ => return Ok(Response::from_parts(parts, Body::from(bytes))),
    };
    let mut response = json_response(parts.status, &list);
    for (name, value) in &parts.headers {
        if name != header::CONTENT_LENGTH && name != header::CONTENT_TYPE {
            response.headers_mut().append(name.clone(), value.clone());
        }
    }
    Ok(response)
}

/// Keeps the entries whose `id` the key may use. `first_id` and `last_id`
/// name the first and last entry kept; an emptied page that has more after
/// it keeps the upstream's cursors, so a client can still page past it.
fn filtered(mut list: Value, key: &KeyRecord) -> Value {
    let Some(object) = list.as_object_mut() else {
        return list;
    };
    let Some(Value::Array(data)) = object.get_mut("data") else {
        return list;
    };
    data.retain(|entry| {
        entry["id"]
            .as_str()
            .is_some_and(|id| model_allowed(&key.allowed_models, &key.denied_models, id))
    });
    let first = data.first().map(|entry| entry["id"].clone());
    let last = data.last().map(|entry| entry["id"].clone());
    let has_more = object.get("has_more") == Some(&Value::Bool(true));
    match (first, last) {
        (Some(first), Some(last)) => {
            object.insert("first_id".into(), first);
            object.insert("last_id".into(), last);
        }
        _ if !has_more => {
            object.insert("first_id".into(), Value::Null);
            object.insert("last_id".into(), Value::Null);
        }
        _ => {}
    }
    list
}

/// The configured models as one complete page.
fn configured_list(models: &[ListedModel]) -> Value {
    let data: Vec<Value> = models
        .iter()
        .map(|model| {
            json!({"type": "model", "id": model.id, "display_name": model.display_name,
                   "created_at": model.created_at})
        })
        .collect();
    let mut list = Map::new();
    list.insert("first_id".into(), json!(models.first().map(|m| &m.id)));
    list.insert("last_id".into(), json!(models.last().map(|m| &m.id)));
    list.insert("data".into(), Value::Array(data));
    list.insert("has_more".into(), Value::Bool(false));
    Value::Object(list)
}

fn json_response(status: StatusCode, list: &Value) -> Response {
    let mut response = Response::new(Body::from(list.to_string()));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(allowed: &[&str], denied: &[&str]) -> KeyRecord {
        let list = |items: &[&str]| items.iter().map(|item| (*item).to_owned()).collect();
        KeyRecord {
            allowed_models: list(allowed),
            denied_models: list(denied),
            ..KeyRecord::new("k", "K", String::new())
        }
    }

    fn page(ids: &[&str], has_more: bool) -> Value {
        let data: Vec<Value> = ids
            .iter()
            .map(|id| json!({"type": "model", "id": id, "display_name": id}))
            .collect();
        json!({"data": data, "has_more": has_more,
               "first_id": ids.first(), "last_id": ids.last()})
    }

    fn ids(list: &Value) -> Vec<&str> {
        list["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|entry| entry["id"].as_str().unwrap())
            .collect()
    }

    const UPSTREAM: [&str; 4] = [
        "claude-opus-4-5-20251101",
        "claude-haiku-4-5-20251001",
        "claude-sonnet-4-5-20250929",
        "claude-sonnet-4-20250514",
    ];

    #[test]
    fn only_allowed_models_stay_and_the_cursors_follow_them() {
        let list = filtered(
            page(&UPSTREAM, false),
            &key(&["claude-haiku-4-5", "claude-sonnet-4-5"], &[]),
        );

        assert_eq!(
            ids(&list),
            ["claude-haiku-4-5-20251001", "claude-sonnet-4-5-20250929"]
        );
        assert_eq!(list["first_id"], "claude-haiku-4-5-20251001");
        assert_eq!(list["last_id"], "claude-sonnet-4-5-20250929");
        assert_eq!(list["has_more"], false);
    }

    #[test]
    fn denied_models_are_left_out_of_an_open_list() {
        let list = filtered(page(&UPSTREAM, false), &key(&[], &["claude-opus-4-5"]));

        assert_eq!(ids(&list), &UPSTREAM[1..]);
        assert_eq!(list["first_id"], UPSTREAM[1]);
    }

    #[test]
    fn an_emptied_last_page_has_no_cursors_and_an_emptied_middle_page_keeps_them() {
        let nothing = key(&["claude-none-1"], &[]);

        let last = filtered(page(&UPSTREAM, false), &nothing);
        let middle = filtered(page(&UPSTREAM, true), &nothing);

        assert!(ids(&last).is_empty());
        assert_eq!(last["first_id"], Value::Null);
        assert_eq!(last["last_id"], Value::Null);
        assert_eq!(middle["last_id"], UPSTREAM[3]);
    }

    #[test]
    fn the_configured_list_has_the_anthropic_shape() {
        let models = [ListedModel {
            id: "claude-sonnet-4-5-20250929".into(),
            display_name: "Claude Sonnet 4.5".into(),
            created_at: "2025-09-29T00:00:00Z".into(),
        }];

        let list = configured_list(&models);

        assert_eq!(
            list,
            json!({"first_id": "claude-sonnet-4-5-20250929",
                   "last_id": "claude-sonnet-4-5-20250929",
                   "data": [{"type": "model", "id": "claude-sonnet-4-5-20250929",
                             "display_name": "Claude Sonnet 4.5",
                             "created_at": "2025-09-29T00:00:00Z"}],
                   "has_more": false})
        );
    }
}
