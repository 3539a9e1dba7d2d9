//! How `accounts list` and `accounts show` put an account's state into
//! words: whether it takes traffic and, if not, why and until when.

use std::io::Write;
use std::time::Duration;

use time::{Date, OffsetDateTime, UtcOffset};

use crate::limits::periods;
use crate::limits::status::timestamp;
use crate::store::records::{AccountKind, AccountStatus, Cooldown, CooldownReason};
use crate::store::{AccountRecord, AuthScheme, Health};
use crate::usage::report::usd;

/// The moment a view is taken, and the usage day it falls in.
#[derive(Debug, Clone, Copy)]
pub struct Today {
    pub now: OffsetDateTime,
    pub offset: UtcOffset,
}

impl Today {
    pub fn now(offset: UtcOffset) -> Today {
        Today {
            now: OffsetDateTime::now_utc(),
            offset,
        }
    }

    pub fn date(&self) -> Date {
        self.now.to_offset(self.offset).date()
    }

    /// When daily quotas start over.
    pub fn ends(&self) -> OffsetDateTime {
        periods::day_end(self.now, self.offset)
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.now.unix_timestamp_nanos() / 1_000_000).unwrap_or(0)
    }
}

/// One account's line of `accounts list`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Row {
    pub id: String,
    pub name: String,
    pub priority: u32,
    pub group: String,
    /// `ready`, `disabled`, a held status, a cooldown reason or
    /// `over_quota`.
    pub state: String,
    pub cooldown: Option<Duration>,
    pub last_used: Option<Duration>,
    pub why: String,
}

impl Row {
    pub fn new(record: &AccountRecord, health: &Health, today: &Today) -> Row {
        let mut states = Vec::new();
        let mut reasons = Vec::new();
        if !record.schedulable {
            states.push("disabled".to_owned());
            reasons.push(format!(
                "disabled by an operator; `claude-relay accounts enable {}` puts it back",
                record.id
            ));
        }
        if let Some(status) = &health.status {
            states.push(status.state.as_str().to_owned());
            reasons.push(held(&record.id, status));
        }
        if let Some((cooldown, left)) = &health.cooldown {
            states.push(cooldown.reason.as_str().to_owned());
            reasons.push(format!(
                "{}; back by itself in {}",
                cooling(cooldown),
                human(*left)
            ));
        }
        if over_quota(record, health) {
            states.push("over_quota".to_owned());
            reasons.push(quota_spent(record, health, today));
        }
        let now_ms = today.now_ms();
        Row {
            id: record.id.clone(),
            name: record.name.clone(),
            priority: record.priority,
            group: record.group.clone().unwrap_or_else(|| "-".into()),
            state: states.first().cloned().unwrap_or_else(|| "ready".into()),
            cooldown: health.cooldown.as_ref().map(|(_, left)| *left),
            last_used: health
                .last_used_ms
                .map(|used| Duration::from_millis(now_ms.saturating_sub(used))),
            why: if reasons.is_empty() {
                "takes traffic".into()
            } else {
                reasons.join("; ")
            },
        }
    }
}

fn held(id: &str, status: &AccountStatus) -> String {
    let since = time::OffsetDateTime::from_unix_timestamp(status.since)
        .ok()
        .and_then(|at| {
            at.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_else(|| status.since.to_string());
    format!(
        "{} (since {since}); fix the account, then `claude-relay accounts enable {id}`",
        status.reason
    )
}

fn over_quota(record: &AccountRecord, health: &Health) -> bool {
    let quota = record.daily_quota_nano_usd;
    quota > 0 && health.spent_nano_usd >= quota
}

fn quota_spent(record: &AccountRecord, health: &Health, today: &Today) -> String {
    let ends = today.ends();
    format!(
        "spent ${} today, its daily quota is ${}; back by itself at {} (in {})",
        usd(health.spent_nano_usd),
        usd(record.daily_quota_nano_usd),
        timestamp(ends),
        human(periods::until(today.now, ends))
    )
}

fn cooling(cooldown: &Cooldown) -> String {
    let status = cooldown
        .upstream_status
        .map(|code| format!(" ({code})"))
        .unwrap_or_default();
    let what = match cooldown.reason {
        CooldownReason::RateLimited => "rate limited by the upstream",
        CooldownReason::OutOfCredit => "out of credit",
        CooldownReason::Overloaded => "the upstream is overloaded",
        CooldownReason::ServerError => "the upstream failed",
        CooldownReason::Unavailable => "the upstream is unavailable",
        CooldownReason::Timeout => "the upstream did not answer in time",
        CooldownReason::Unreachable => "the upstream could not be reached",
    };
    format!("{what}{status}")
}

/// `2h05m`, `4m12s`, `45s`.
pub fn human(duration: Duration) -> String {
    let secs = duration.as_secs() + u64::from(duration.subsec_nanos() > 0);
    match (secs / 3600, secs / 60 % 60, secs % 60) {
        (0, 0, s) => format!("{s}s"),
        (0, m, s) => format!("{m}m{s:02}s"),
        (h, m, _) => format!("{h}h{m:02}m"),
    }
}

const HEADER: [&str; 8] = [
    "ID",
    "NAME",
    "PRIORITY",
    "GROUP",
    "STATE",
    "COOLDOWN",
    "LAST USED",
    "WHY",
];

pub fn write_table(rows: &[Row], out: &mut dyn Write) -> std::io::Result<()> {
    let cells: Vec<[String; 8]> = rows.iter().map(cells).collect();
    let mut widths = HEADER.map(str::len);
    for row in &cells {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    write_line(&HEADER.map(str::to_owned), &widths, out)?;
    for row in &cells {
        write_line(row, &widths, out)?;
    }
    if rows.is_empty() {
        writeln!(out, "(no accounts)")?;
    }
    Ok(())
}

fn cells(row: &Row) -> [String; 8] {
    [
        row.id.clone(),
        row.name.clone(),
        row.priority.to_string(),
        row.group.clone(),
        row.state.clone(),
        row.cooldown.map_or_else(|| "-".into(), human),
        row.last_used
            .map_or_else(|| "never".into(), |ago| format!("{} ago", human(ago))),
        row.why.clone(),
    ]
}

fn write_line(
    cells: &[String; 8],
    widths: &[usize; 8],
    out: &mut dyn Write,
) -> std::io::Result<()> {
    let mut line = String::new();
    for (at, (cell, width)) in cells.iter().zip(widths).enumerate() {
        if at + 1 == cells.len() {
            line.push_str(cell);
        } else {
            line.push_str(&format!("{cell:<width$}  "));
        }
    }
    writeln!(out, "{}", line.trim_end())
}

pub fn write_details(
    record: &AccountRecord,
    health: &Health,
    row: &Row,
    credential: &str,
    out: &mut dyn Write,
) -> std::io::Result<()> {
    let list = |items: &[String]| {
        if items.is_empty() {
            "all".to_owned()
        } else {
            items.join(", ")
        }
    };
    let map: Vec<String> = record
        .model_map
        .iter()
        .map(|(from, to)| format!("{from} -> {to}"))
        .collect();
    let limit = match record.concurrency_limit {
        0 => "none".to_owned(),
        n => format!("{n} ({} in flight)", health.in_flight),
    };
    let quota = match record.daily_quota_nano_usd {
        0 => "none".to_owned(),
        n => format!("${} (spent ${} today)", usd(n), usd(health.spent_nano_usd)),
    };
    let fields = [
        ("id", record.id.clone()),
        ("name", record.name.clone()),
        (
            "kind",
            match record.kind {
                AccountKind::Console => "console".to_owned(),
            },
        ),
        ("base_url", record.base_url.clone()),
        (
            "auth_scheme",
            match record.auth_scheme {
                AuthScheme::XApiKey => "x-api-key".to_owned(),
                AuthScheme::Bearer => "bearer".to_owned(),
            },
        ),
        ("credential", credential.to_owned()),
        ("priority", record.priority.to_string()),
        ("schedulable", record.schedulable.to_string()),
        ("group", row.group.clone()),
        ("models", list(&record.models)),
        (
            "model_map",
            if map.is_empty() {
                "none".into()
            } else {
                map.join(", ")
            },
        ),
        ("concurrency_limit", limit),
        ("daily_quota", quota),
        ("state", row.state.clone()),
        (
            "cooldown",
            row.cooldown.map_or_else(|| "none".into(), human),
        ),
        (
            "last_used",
            row.last_used
                .map_or_else(|| "never".into(), |ago| format!("{} ago", human(ago))),
        ),
        ("why", row.why.clone()),
    ];
    for (name, value) in fields {
        writeln!(out, "{name:<18} {value}")?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::records::StoredCredential;
    use time::macros::{datetime, offset};

    fn record(quota: u64) -> AccountRecord {
        AccountRecord {
            id: "acct-a".into(),
            name: "A".into(),
            kind: AccountKind::Console,
            base_url: "http://127.0.0.1:9".into(),
            credential: StoredCredential::Plaintext(String::new()),
            auth_scheme: AuthScheme::XApiKey,
            priority: 1,
            schedulable: true,
            models: Vec::new(),
            model_map: Default::default(),
            concurrency_limit: 0,
            daily_quota_nano_usd: quota,
            group: None,
        }
    }

    fn spent(nano: u64) -> Health {
        Health {
            spent_nano_usd: nano,
            ..Health::default()
        }
    }

    #[test]
    fn an_account_that_spent_its_quota_says_so_and_when_it_is_back() {
        let today = Today {
            now: datetime!(2026-12-04 17:30 UTC),
            offset: offset!(+8),
        };

        let over = Row::new(&record(1_000_000), &spent(1_093_500), &today);
        let under = Row::new(&record(1_000_000), &spent(999_999), &today);
        let unlimited = Row::new(&record(0), &spent(1_093_500), &today);

        assert_eq!(over.state, "over_quota");
        assert_eq!(
            over.why,
            "spent $0.0010935 today, its daily quota is $0.001; \
             back by itself at 2026-12-05T16:00:00Z (in 22h30m)"
        );
        assert_eq!(
            (under.state.as_str(), under.why.as_str()),
            ("ready", "takes traffic")
        );
        assert_eq!(unlimited.state, "ready");
    }

    #[test]
    fn durations_read_like_a_clock() {
        assert_eq!(human(Duration::from_millis(44_100)), "45s");
        assert_eq!(human(Duration::from_secs(252)), "4m12s");
        assert_eq!(human(Duration::from_secs(2 * 3600 + 300)), "2h05m");
    }
}
