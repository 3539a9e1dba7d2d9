//! A key's limits as they stand now, for the key holder (`GET /relay/key`)
//! and the operator (`claude-relay limits show`): leases, window use,
//! budget use and when each resets.

use std::collections::HashMap;
use std::io::Write;
use std::time::Duration;

use serde_json::{Map, Value, json};
use time::{OffsetDateTime, UtcOffset};

use super::counters::{ALL, KeyCounters};
use super::lease;
use super::spec::{Budgets, Family, KeyLimits, RateWindow};
use crate::store::{KeyRecord, Store, StoreResult};
use crate::usage::record::Counters;
use crate::usage::report::usd;

pub struct KeyStatus {
    pub id: String,
    pub name: String,
    pub limits: KeyLimits,
    /// Live leases: request id and time left.
    pub leases: Vec<(String, Duration)>,
    pub today: Counters,
    pub month: Counters,
    pub total: Counters,
    pub window: Option<WindowUse>,
    /// Spending per family (and `all`) in the current day, week and total.
    pub spend_day: HashMap<String, u64>,
    pub spend_week: HashMap<String, u64>,
    pub spend_total: HashMap<String, u64>,
    pub day_ends: OffsetDateTime,
    pub week_ends: OffsetDateTime,
}

pub struct WindowUse {
    pub limits: RateWindow,
    pub used: HashMap<String, u64>,
    pub ends: OffsetDateTime,
}

type Hash = HashMap<String, u64>;

/// Reads everything about `key` in two round trips (leases, then counters).
pub async fn read(store: &Store, key: &KeyRecord, offset: UtcOffset) -> StoreResult<KeyStatus> {
    let now = OffsetDateTime::now_utc();
    let counters = KeyCounters::at(store.names(), &key.id, &key.limits, now, offset);
    let leases = lease::live(&mut store.conn(), &counters.leases).await?;
    let mut pipe = redis::pipe();
    for name in [
        &counters.usage_day,
        &counters.usage_month,
        &counters.usage_total,
        &counters.spend_day,
        &counters.spend_week,
        &counters.spend_total,
    ] {
        pipe.hgetall(name);
    }
    if let Some(window) = &counters.window {
        pipe.hgetall(&window.name);
    }
    let mut hashes: Vec<Hash> = pipe.query_async(&mut store.conn()).await?;
    let window = counters.window.map(|window| WindowUse {
        limits: window.limits,
        used: hashes.pop().unwrap_or_default(),
        ends: window.ends,
    });
    let mut hashes = hashes.into_iter();
    let mut next = || hashes.next().unwrap_or_default();
    Ok(KeyStatus {
        id: key.id.clone(),
        name: key.name.clone(),
        limits: key.limits.clone(),
        leases,
        today: Counters::from_hash(&next()),
        month: Counters::from_hash(&next()),
        total: Counters::from_hash(&next()),
        spend_day: next(),
        spend_week: next(),
        spend_total: next(),
        window,
        day_ends: counters.day_ends,
        week_ends: counters.week_ends,
    })
}

/// RFC 3339 in UTC, e.g. `2026-12-05T00:00:00Z`.
pub fn timestamp(at: OffsetDateTime) -> String {
    at.to_offset(UtcOffset::UTC)
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

impl KeyStatus {
    /// The body of `GET /relay/key`; limits that are not set are left out.
    pub fn to_json(&self) -> Value {
        json!({
            "id": self.id,
            "name": self.name,
            "usage": {
                "today": usage_json(&self.today),
                "month": usage_json(&self.month),
                "total": usage_json(&self.total),
            },
            "limits": self.limits_json(),
        })
    }

    fn limits_json(&self) -> Value {
        let mut limits = Map::new();
        if self.limits.concurrency > 0 {
            limits.insert(
                "concurrency".into(),
                json!({"limit": self.limits.concurrency, "in_use": self.leases.len()}),
            );
        }
        if let Some(window) = &self.window {
            limits.insert("rate_limit".into(), window.to_json());
        }
        let spent = Spent {
            day: self.today.cost_nano_usd,
            week: field(&self.spend_week, ALL),
            total: self.total.cost_nano_usd,
        };
        limits.extend(self.budgets_json(&self.limits.budgets, spent, "_budget"));
        let mut families = Map::new();
        for (family, budgets) in &self.limits.family_budgets {
            let spent = self.family_spent(*family);
            let entries = self.budgets_json(budgets, spent, "");
            if !entries.is_empty() {
                families.insert(family.as_str().into(), Value::Object(entries));
            }
        }
        if !families.is_empty() {
            limits.insert("family_budgets".into(), Value::Object(families));
        }
        Value::Object(limits)
    }

    fn family_spent(&self, family: Family) -> Spent {
        let name = family.as_str();
        Spent {
            day: field(&self.spend_day, name),
            week: field(&self.spend_week, name),
            total: field(&self.spend_total, name),
        }
    }

    /// `daily{suffix}`, `weekly{suffix}`, `total{suffix}` for the budgets
    /// that are set.
    fn budgets_json(&self, budgets: &Budgets, spent: Spent, suffix: &str) -> Map<String, Value> {
        let periods = [
            (
                "daily",
                budgets.daily_nano_usd,
                spent.day,
                Some(self.day_ends),
            ),
            (
                "weekly",
                budgets.weekly_nano_usd,
                spent.week,
                Some(self.week_ends),
            ),
            ("total", budgets.total_nano_usd, spent.total, None),
        ];
        let mut map = Map::new();
        for (period, limit, used, resets_at) in periods {
            if limit == 0 {
                continue;
            }
            let mut budget = json!({"limit_nano_usd": limit, "used_nano_usd": used});
            if let (Some(at), Value::Object(fields)) = (resets_at, &mut budget) {
                fields.insert("resets_at".into(), json!(timestamp(at)));
            }
            map.insert(format!("{period}{suffix}"), budget);
        }
        map
    }

    /// What `claude-relay limits show` prints.
    pub fn write_text(&self, out: &mut dyn Write) -> std::io::Result<()> {
        writeln!(out, "key {} ({})", self.id, self.name)?;
        for (period, counters) in [
            ("today", &self.today),
            ("this month", &self.month),
            ("total", &self.total),
        ] {
            writeln!(
                out,
                "{period:<15} {} requests, {} input and {} output tokens, ${}",
                counters.requests,
                counters.input_tokens,
                counters.output_tokens,
                crate::usage::report::usd(counters.cost_nano_usd)
            )?;
        }
        if !self.limits.checks_anything() {
            writeln!(out, "no limits set")?;
        }
        if self.limits.concurrency > 0 {
            let wait = match self.limits.wait_for_slot_secs {
                0 => String::new(),
                secs => format!("; requests wait up to {secs} s for a slot"),
            };
            writeln!(
                out,
                "concurrency     {} of {} in use{wait}",
                self.leases.len(),
                self.limits.concurrency,
            )?;
        }
        for (request_id, left) in &self.leases {
            writeln!(
                out,
                "  lease {request_id} expires in {} ms",
                left.as_millis()
            )?;
        }
        if let Some(window) = &self.window {
            window.write_text(out)?;
        }
        let limits = self.limits_json();
        for (name, budget) in limits.as_object().into_iter().flatten() {
            if name.ends_with("_budget") {
                write_budget(out, name, budget)?;
            }
        }
        for (family, budgets) in limits["family_budgets"].as_object().into_iter().flatten() {
            for (period, budget) in budgets.as_object().into_iter().flatten() {
                write_budget(out, &format!("{family} {period}"), budget)?;
            }
        }
        Ok(())
    }
}

#[derive(Clone, Copy)]
struct Spent {
    day: u64,
    week: u64,
    total: u64,
}

impl WindowUse {
    fn to_json(&self) -> Value {
        let limits = &self.limits;
        let mut window = Map::new();
        window.insert("window_secs".into(), json!(limits.window_secs));
        window.insert("resets_at".into(), json!(timestamp(self.ends)));
        if limits.requests > 0 {
            let used = field(&self.used, "requests");
            window.insert(
                "requests".into(),
                json!({"limit": limits.requests, "used": used}),
            );
        }
        if limits.tokens > 0 {
            let used = field(&self.used, "tokens");
            window.insert(
                "tokens".into(),
                json!({"limit": limits.tokens, "used": used}),
            );
        }
        if limits.cost_nano_usd > 0 {
            let used = field(&self.used, "cost_nano_usd");
            window.insert(
                "cost".into(),
                json!({"limit_nano_usd": limits.cost_nano_usd, "used_nano_usd": used}),
            );
        }
        Value::Object(window)
    }

    fn write_text(&self, out: &mut dyn Write) -> std::io::Result<()> {
        let limits = &self.limits;
        writeln!(
            out,
            "rate window     {} s, resets at {}",
            limits.window_secs,
            timestamp(self.ends)
        )?;
        let used = |name| field(&self.used, name);
        if limits.requests > 0 {
            writeln!(
                out,
                "  requests      {} of {}",
                used("requests"),
                limits.requests
            )?;
        }
        if limits.tokens > 0 {
            writeln!(
                out,
                "  tokens        {} of {}",
                used("tokens"),
                limits.tokens
            )?;
        }
        if limits.cost_nano_usd > 0 {
            writeln!(
                out,
                "  cost          ${} of ${}",
                usd(used("cost_nano_usd")),
                usd(limits.cost_nano_usd)
            )?;
        }
        Ok(())
    }
}

fn write_budget(out: &mut dyn Write, name: &str, budget: &Value) -> std::io::Result<()> {
    let amount = |field: &str| usd(budget[field].as_u64().unwrap_or(0));
    let resets = budget["resets_at"]
        .as_str()
        .map(|at| format!(", resets at {at}"))
        .unwrap_or_default();
    writeln!(
        out,
        "{:<15} ${} of ${}{resets}",
        name.replace('_', " "),
        amount("used_nano_usd"),
        amount("limit_nano_usd"),
    )
}

fn usage_json(counters: &Counters) -> Value {
    json!({
        "requests": counters.requests,
        "input_tokens": counters.input_tokens,
        "output_tokens": counters.output_tokens,
        "cache_creation_input_tokens": counters.cache_creation_input_tokens,
        "cache_read_input_tokens": counters.cache_read_input_tokens,
        "cost_nano_usd": counters.cost_nano_usd,
    })
}

fn field(hash: &Hash, name: &str) -> u64 {
    hash.get(name).copied().unwrap_or(0)
}
