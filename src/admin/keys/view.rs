//! How keys are shown to an operator: a table, `key: value` lines, or
//! JSON for scripts. The key itself appears only in `issued`.

use std::io::Write;

use secrecy::{ExposeSecret, SecretString};
use serde::Serialize;
use serde_json::json;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::auth::lifetime;
use crate::store::KeyRecord;

/// A key as scripts read it: the record, its first use and what follows.
#[derive(Serialize)]
struct KeyView<'a> {
    #[serde(flatten)]
    record: &'a KeyRecord,
    status: &'static str,
    #[serde(with = "time::serde::rfc3339::option")]
    activated_at: Option<OffsetDateTime>,
    #[serde(with = "time::serde::rfc3339::option")]
    valid_until: Option<OffsetDateTime>,
}

impl KeyView<'_> {
    fn of(record: &KeyRecord, now: OffsetDateTime) -> KeyView<'_> {
        KeyView {
            record,
            status: status(record, now),
            activated_at: record.activated_at,
            valid_until: lifetime::valid_until(record),
        }
    }
}

/// A key as the admin API shows it: the same fields as `keys show --json`.
pub fn to_json(record: &KeyRecord, now: OffsetDateTime) -> serde_json::Result<serde_json::Value> {
    serde_json::to_value(KeyView::of(record, now))
}

/// `disabled`, `expired`, `unused` (its days have not started) or `active`.
pub fn status(record: &KeyRecord, now: OffsetDateTime) -> &'static str {
    if record.disabled {
        "disabled"
    } else if lifetime::expired(record, now).is_some() {
        "expired"
    } else if lifetime::awaits_first_use(record) {
        "unused"
    } else {
        "active"
    }
}

/// A created or rotated key: the only time the key itself is shown.
pub fn issued(
    done: &str,
    record: &KeyRecord,
    key: &SecretString,
    json: bool,
    out: &mut dyn Write,
) -> anyhow::Result<()> {
    if json {
        let view = json!({"id": record.id, "name": record.name, "key": key.expose_secret()});
        writeln!(out, "{view}")?;
        return Ok(());
    }
    writeln!(out, "{done} key {} ({})", record.id, record.name)?;
    writeln!(out, "key: {}", key.expose_secret())?;
    writeln!(
        out,
        "Store it now: the relay keeps only its hash and cannot show it again."
    )?;
    Ok(())
}

pub fn list(
    keys: &[KeyRecord],
    now: OffsetDateTime,
    json: bool,
    out: &mut dyn Write,
) -> anyhow::Result<()> {
    if json {
        let views: Vec<KeyView<'_>> = keys.iter().map(|key| KeyView::of(key, now)).collect();
        writeln!(out, "{}", serde_json::to_string_pretty(&views)?)?;
        return Ok(());
    }
    if keys.is_empty() {
        writeln!(out, "no keys")?;
        return Ok(());
    }
    let rows: Vec<Vec<String>> = keys
        .iter()
        .map(|key| {
            vec![
                key.id.clone(),
                key.name.clone(),
                key.owner.clone(),
                status(key, now).to_owned(),
                moment(key.created_at),
                expiry(key),
            ]
        })
        .collect();
    let header = ["ID", "NAME", "OWNER", "STATUS", "CREATED", "EXPIRES"];
    out.write_all(table(&header, &rows).as_bytes())?;
    Ok(())
}

pub fn show(
    key: &KeyRecord,
    now: OffsetDateTime,
    json: bool,
    out: &mut dyn Write,
) -> anyhow::Result<()> {
    if json {
        let view = KeyView::of(key, now);
        writeln!(out, "{}", serde_json::to_string_pretty(&view)?)?;
        return Ok(());
    }
    let services: Vec<&str> = key.services.iter().map(|s| s.as_str()).collect();
    let lines = [
        ("id", key.id.clone()),
        ("name", key.name.clone()),
        ("owner", key.owner.clone()),
        ("status", status(key, now).to_owned()),
        ("created", moment(key.created_at)),
        ("expires", expiry(key)),
        ("first use", first_use(key)),
        ("services", services.join(", ")),
        ("allowed clients", listed(&key.allowed_clients, "any")),
        ("allowed models", listed(&key.allowed_models, "any")),
        ("denied models", listed(&key.denied_models, "none")),
        (
            "served by",
            key.account
                .clone()
                .unwrap_or_else(|| "the shared pool".into()),
        ),
        ("limits", limits(key)),
        ("key sha256", key.key_sha256.clone()),
    ];
    for (label, value) in lines {
        writeln!(out, "{:<16} {value}", format!("{label}:"))?;
    }
    Ok(())
}

/// Only keys valid for some days from their first use record it.
fn first_use(key: &KeyRecord) -> String {
    match (key.activated_at, key.activation_days) {
        (Some(at), _) => moment(Some(at)),
        (None, Some(_)) => "not yet".into(),
        (None, None) => "not recorded (no activation days)".into(),
    }
}

/// The configured limits as the record stores them; their use is what
/// `limits show` prints.
fn limits(key: &KeyRecord) -> String {
    if !key.limits.checks_anything() {
        return "none".into();
    }
    let text = serde_json::to_string(&key.limits).unwrap_or_default();
    format!("{text} (their use: claude-relay limits show {})", key.id)
}

fn moment(at: Option<OffsetDateTime>) -> String {
    at.and_then(|at| at.format(&Rfc3339).ok())
        .unwrap_or_else(|| "-".into())
}

/// When the key ends, in words when its days have not started yet.
fn expiry(key: &KeyRecord) -> String {
    match (key.activation_days, lifetime::awaits_first_use(key)) {
        (Some(days), true) => match key.expires_at {
            Some(at) => format!("{days}d after first use, by {}", moment(Some(at))),
            None => format!("{days}d after first use"),
        },
        _ => match lifetime::valid_until(key) {
            Some(at) => moment(Some(at)),
            None => "never".into(),
        },
    }
}

fn listed(items: &[String], empty: &str) -> String {
    if items.is_empty() {
        empty.into()
    } else {
        items.join(", ")
    }
}

/// Left-aligned columns two spaces apart, trailing spaces trimmed.
fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|title| title.chars().count()).collect();
    for row in rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let header: Vec<String> = header.iter().map(|title| (*title).to_owned()).collect();
    let mut text = String::new();
    for row in std::iter::once(&header).chain(rows) {
        let cells: Vec<String> = row
            .iter()
            .zip(&widths)
            .map(|(cell, width)| format!("{cell:<width$}"))
            .collect();
        text.push_str(cells.join("  ").trim_end());
        text.push('\n');
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::Duration;
    use time::macros::datetime;

    const NOW: OffsetDateTime = datetime!(2026-03-10 12:00 UTC);

    fn key(id: &str) -> KeyRecord {
        KeyRecord {
            owner: "ops".into(),
            created_at: Some(datetime!(2026-03-01 09:00 UTC)),
            ..KeyRecord::new(id, &format!("Key {id}"), "ab".repeat(32))
        }
    }

    fn text(write: impl FnOnce(&mut Vec<u8>) -> anyhow::Result<()>) -> String {
        let mut out = Vec::new();
        write(&mut out).unwrap();
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn status_names_what_stops_a_key_first() {
        let unused = KeyRecord {
            activation_days: Some(3),
            ..key("a")
        };
        let expired = KeyRecord {
            expires_at: Some(NOW - Duration::hours(1)),
            ..key("b")
        };
        let disabled_and_expired = KeyRecord {
            disabled: true,
            ..expired.clone()
        };

        assert_eq!(status(&key("k"), NOW), "active");
        assert_eq!(status(&unused, NOW), "unused");
        assert_eq!(status(&expired, NOW), "expired");
        assert_eq!(status(&disabled_and_expired, NOW), "disabled");
    }

    #[test]
    fn list_is_a_table_with_one_row_per_key() {
        let keys = [
            key("key-1"),
            KeyRecord {
                activation_days: Some(30),
                ..key("key-long-id")
            },
        ];

        let table = text(|out| list(&keys, NOW, false, out));

        assert_eq!(
            table,
            "ID           NAME             OWNER  STATUS  CREATED               EXPIRES\n\
             key-1        Key key-1        ops    active  2026-03-01T09:00:00Z  never\n\
             key-long-id  Key key-long-id  ops    unused  2026-03-01T09:00:00Z  30d after first use\n"
        );
    }

    #[test]
    fn show_has_one_labelled_line_per_setting_and_never_the_key() {
        let record = KeyRecord {
            allowed_clients: vec!["claude_code".into()],
            denied_models: vec!["claude-opus-4-5".into()],
            activation_days: Some(7),
            activated_at: Some(NOW - Duration::days(1)),
            ..key("key-1")
        };

        let shown = text(|out| show(&record, NOW, false, out));

        assert!(shown.contains("status:          active\n"), "{shown}");
        assert!(
            shown.contains("expires:         2026-03-16T12:00:00Z\n"),
            "{shown}"
        );
        assert!(
            shown.contains("first use:       2026-03-09T12:00:00Z\n"),
            "{shown}"
        );
        assert!(shown.contains("services:        messages, count_tokens, models\n"));
        assert!(shown.contains("allowed clients: claude_code\n"));
        assert!(shown.contains("allowed models:  any\n"));
        assert!(shown.contains("denied models:   claude-opus-4-5\n"));
        assert!(shown.contains("served by:       the shared pool\n"));
        assert!(shown.contains("limits:          none\n"));
        assert_eq!(shown.lines().count(), 14);
    }

    #[test]
    fn show_names_the_binding_and_the_limits_it_enforces() {
        let record = KeyRecord {
            account: Some("group:team".into()),
            limits: crate::limits::spec::KeyLimits {
                concurrency: 3,
                ..Default::default()
            },
            ..key("key-1")
        };

        let shown = text(|out| show(&record, NOW, false, out));

        assert!(shown.contains("served by:       group:team\n"), "{shown}");
        assert!(
            shown.contains(
                "limits:          {\"concurrency\":3} (their use: claude-relay limits show key-1)\n"
            ),
            "{shown}"
        );
        assert!(
            shown.contains("first use:       not recorded (no activation days)\n"),
            "{shown}"
        );
    }

    #[test]
    fn json_views_carry_the_state_an_operator_sees() {
        let record = KeyRecord {
            activation_days: Some(7),
            activated_at: Some(NOW),
            ..key("key-1")
        };

        let shown = text(|out| show(&record, NOW, true, out));

        let view: serde_json::Value = serde_json::from_str(&shown).unwrap();
        assert_eq!(view["id"], "key-1");
        assert_eq!(view["status"], "active");
        assert_eq!(view["activated_at"], "2026-03-10T12:00:00Z");
        assert_eq!(view["valid_until"], "2026-03-17T12:00:00Z");
        assert_eq!(
            view["services"],
            json!(["messages", "count_tokens", "models"])
        );
    }
}
