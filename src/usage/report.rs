//! `claude-relay usage`: counters as an operator reads them.

use std::collections::BTreeSet;
use std::io::Write;

use serde::Serialize;
use time::{Date, Duration, OffsetDateTime};

use super::record::{Counters, Period, Recorder, Subject};
use crate::store::Store;

/// Which counters to show; no subject at all means every key, account and
/// model.
#[derive(Debug, Default, Clone)]
pub struct Query {
    pub key: Option<String>,
    pub account: Option<String>,
    pub model: Option<String>,
    /// First day shown; default a week back.
    pub since: Option<Date>,
}

/// How far back a report reaches day by day; older use is in the month
/// and total rows.
pub const MAX_DAYS: i64 = 400;

/// Why a report cannot be made.
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    #[error("no {kind} with id {id}")]
    Unknown { kind: &'static str, id: String },
    #[error("no usage recorded for the model {model}; models with usage: {}", known.join(", "))]
    NoModelUsage { model: String, known: Vec<String> },
    #[error(
        "--since {since} reaches back more than {MAX_DAYS} days; the month and total rows \
         cover older use"
    )]
    TooFarBack { since: Date },
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
}

#[derive(Debug, Serialize)]
pub struct Section {
    pub kind: &'static str,
    pub id: String,
    pub rows: Vec<Row>,
}

#[derive(Debug, Serialize)]
pub struct Row {
    pub period: String,
    #[serde(flatten)]
    pub counters: Counters,
}

pub async fn build(
    store: &Store,
    recorder: &Recorder,
    query: &Query,
) -> Result<Vec<Section>, ReportError> {
    let now = OffsetDateTime::now_utc();
    let [today, month, total] = recorder.periods(now);
    let today_date = match today {
        Period::Day(date) => date,
        _ => now.date(),
    };
    let since = query.since.unwrap_or(today_date - Duration::days(6));
    if since < today_date - Duration::days(MAX_DAYS) {
        return Err(ReportError::TooFarBack { since });
    }
    let mut periods: Vec<Period> = Vec::new();
    let mut day = since;
    while day <= today_date {
        periods.push(Period::Day(day));
        day = day.next_day().unwrap_or(today_date + Duration::days(1));
    }
    periods.extend([month, total]);

    let mut sections = Vec::new();
    for (kind, id) in subjects(store, recorder, query).await? {
        let subject = match kind {
            "key" => Subject::Key(&id),
            "account" => Subject::Account(&id),
            _ => Subject::Model(&id),
        };
        let counters = recorder.read(subject, &periods).await?;
        let rows = periods
            .iter()
            .zip(counters)
            .filter(|(period, counters)| !matches!(period, Period::Day(_)) || counters.requests > 0)
            .map(|(period, counters)| Row {
                period: period.to_string(),
                counters,
            })
            .collect();
        sections.push(Section { kind, id, rows });
    }
    Ok(sections)
}

async fn subjects(
    store: &Store,
    recorder: &Recorder,
    query: &Query,
) -> Result<Vec<(&'static str, String)>, ReportError> {
    // Keys and accounts with counters, their records removed or not, and
    // those with records but no use yet.
    let (used_keys, used_accounts) = recorder.keys_and_accounts().await?;
    let mut keys: BTreeSet<String> = used_keys.into_iter().collect();
    keys.extend(store.list_keys().await?.into_iter().map(|key| key.id));
    let mut accounts: BTreeSet<String> = used_accounts.into_iter().collect();
    accounts.extend(
        store
            .list_accounts()
            .await?
            .into_iter()
            .map(|account| account.id),
    );
    // A mistyped id would print an empty report that looks like no use.
    if let Some(id) = query.key.as_ref().filter(|id| !keys.contains(*id)) {
        return Err(ReportError::Unknown {
            kind: "key",
            id: id.clone(),
        });
    }
    if let Some(id) = query.account.as_ref().filter(|id| !accounts.contains(*id)) {
        return Err(ReportError::Unknown {
            kind: "account",
            id: id.clone(),
        });
    }
    if let Some(model) = &query.model {
        let known = recorder.models().await?;
        if !known.contains(model) {
            return Err(ReportError::NoModelUsage {
                model: model.clone(),
                known,
            });
        }
    }
    let mut chosen = Vec::new();
    chosen.extend(query.key.iter().map(|id| ("key", id.clone())));
    chosen.extend(query.account.iter().map(|id| ("account", id.clone())));
    chosen.extend(query.model.iter().map(|id| ("model", id.clone())));
    if !chosen.is_empty() {
        return Ok(chosen);
    }
    chosen.extend(keys.into_iter().map(|id| ("key", id)));
    chosen.extend(accounts.into_iter().map(|id| ("account", id)));
    chosen.extend(
        recorder
            .models()
            .await?
            .into_iter()
            .map(|model| ("model", model)),
    );
    Ok(chosen)
}

pub fn write_table(out: &mut dyn Write, sections: &[Section]) -> std::io::Result<()> {
    for section in sections {
        writeln!(out, "{} {}", section.kind, section.id)?;
        writeln!(
            out,
            "  {:<16} {:>9} {:>12} {:>12} {:>12} {:>12} {:>16}",
            "period", "requests", "input", "output", "cache_write", "cache_read", "cost_usd"
        )?;
        for row in &section.rows {
            let c = &row.counters;
            writeln!(
                out,
                "  {:<16} {:>9} {:>12} {:>12} {:>12} {:>12} {:>16}",
                row.period.trim_start_matches("day:"),
                c.requests,
                c.input_tokens,
                c.output_tokens,
                c.cache_creation_input_tokens,
                c.cache_read_input_tokens,
                usd(c.cost_nano_usd)
            )?;
        }
    }
    Ok(())
}

/// Nano-dollars as dollars, exactly: `1093500` → `0.0010935`.
pub fn usd(nano: u64) -> String {
    let text = format!("{}.{:09}", nano / 1_000_000_000, nano % 1_000_000_000);
    let trimmed = text.trim_end_matches('0');
    match trimmed.split_once('.') {
        Some((_, fraction)) if fraction.len() >= 2 => trimmed.to_owned(),
        _ => format!(
            "{}.{:0<2}",
            nano / 1_000_000_000,
            trimmed.split_once('.').map_or("", |(_, f)| f)
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::usd;

    #[test]
    fn dollars_are_exact_and_readable() {
        assert_eq!(usd(1_093_500), "0.0010935");
        assert_eq!(usd(0), "0.00");
        assert_eq!(usd(1_500_000_000), "1.50");
        assert_eq!(usd(12_000_000_000), "12.00");
        assert_eq!(usd(11_355_000), "0.011355");
    }
}
