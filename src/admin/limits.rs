//! `claude-relay limits show KEY_ID`: one key's leases, window use, budget
//! use and resets, as the relay sees them now.

use std::io::Write;

use anyhow::Context;
use serde_json::{Value, json};

use crate::config::Config;
use crate::limits::status;
use crate::store::Store;

pub async fn show(
    config: &Config,
    key_id: &str,
    as_json: bool,
    out: &mut dyn Write,
) -> anyhow::Result<()> {
    let store = Store::connect(&config.redis)?;
    let key = store
        .key_by_id(key_id)
        .await
        .context("reading the key")?
        .with_context(|| format!("no key with id {key_id}"))?;
    let status = status::read(&store, &key, config.usage_utc_offset)
        .await
        .context("reading the key's limits")?;
    if as_json {
        let mut body = status.to_json();
        let leases: Vec<Value> = status
            .leases
            .iter()
            .map(|(request_id, left)| {
                json!({"request_id": request_id, "expires_in_ms": left.as_millis() as u64})
            })
            .collect();
        if let Value::Object(map) = &mut body {
            map.insert("leases".into(), Value::Array(leases));
        }
        serde_json::to_writer_pretty(&mut *out, &body)?;
        writeln!(out)?;
    } else {
        status.write_text(out)?;
    }
    Ok(())
}
