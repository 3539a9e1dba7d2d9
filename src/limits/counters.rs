//! Every counter one key's limits read or write at one moment, named in
//! one place so admission, counting and reports cannot disagree. All of
//! them carry the key's hash tag.

use time::{OffsetDateTime, UtcOffset};

use super::periods;
use super::spec::{Family, KeyLimits, RateWindow};
use crate::store::Names;
use crate::usage::Usage;
use crate::usage::record::{Period, periods as usage_periods};

/// Spending per family per day is kept a week, for reports.
const SPEND_DAY_TTL_SECS: u64 = 8 * 86_400;
/// A week's spending outlives the week by a week, for reports.
const SPEND_WEEK_TTL_SECS: u64 = 15 * 86_400;

/// The field of a spend hash that holds every family's spending (the
/// admission script names it too).
pub const ALL: &str = "all";

pub struct KeyCounters {
    pub leases: String,
    pub window: Option<WindowCounter>,
    pub usage_day: String,
    pub usage_month: String,
    pub usage_total: String,
    pub spend_day: String,
    pub spend_week: String,
    pub spend_total: String,
    pub day_ends: OffsetDateTime,
    pub week_ends: OffsetDateTime,
}

/// The rate window a moment falls in.
pub struct WindowCounter {
    pub name: String,
    pub limits: RateWindow,
    pub ends: OffsetDateTime,
}

/// A hash an answer adds to besides the usage counters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Extra {
    pub key: String,
    /// Zero: the hash never expires.
    pub ttl_secs: u64,
    pub fields: Vec<(String, u64)>,
}

impl KeyCounters {
    pub fn at(
        names: &Names,
        key_id: &str,
        limits: &KeyLimits,
        at: OffsetDateTime,
        offset: UtcOffset,
    ) -> KeyCounters {
        let tag = names.key_tag(key_id);
        let [day, month, total] = usage_periods(at, offset);
        let (week_starts, week_ends) = periods::week(at, offset, limits.weekly_reset);
        let window = limits.window().map(|rate| {
            let (start, ends) = periods::window(at, rate.window_secs);
            WindowCounter {
                name: names.window(&tag, rate.window_secs, start),
                limits: rate,
                ends,
            }
        });
        KeyCounters {
            leases: names.leases(&tag),
            window,
            usage_day: names.usage(&tag, &day),
            usage_month: names.usage(&tag, &month),
            usage_total: names.usage(&tag, &total),
            spend_day: names.spend(&tag, &day.to_string()),
            spend_week: names.spend(&tag, &periods::week_label(week_starts)),
            spend_total: names.spend(&tag, &Period::Total.to_string()),
            day_ends: periods::day_end(at, offset),
            week_ends,
        }
    }

    /// What an answer of `family` that used `usage` at `cost` adds to the
    /// key's limit counters (requests are counted at admission).
    pub fn extras(&self, family: Option<Family>, usage: &Usage, cost: u64) -> Vec<Extra> {
        let mut extras = Vec::new();
        if let Some(window) = &self.window {
            extras.push(Extra {
                key: window.name.clone(),
                ttl_secs: window.limits.window_secs.saturating_mul(2),
                fields: vec![
                    ("tokens".into(), tokens(usage)),
                    ("cost_nano_usd".into(), cost),
                ],
            });
        }
        let mut week = vec![(ALL.to_owned(), cost)];
        week.extend(family.map(|family| (family.as_str().to_owned(), cost)));
        extras.push(Extra {
            key: self.spend_week.clone(),
            ttl_secs: SPEND_WEEK_TTL_SECS,
            fields: week,
        });
        if let Some(family) = family {
            for (key, ttl_secs) in [
                (&self.spend_day, SPEND_DAY_TTL_SECS),
                (&self.spend_total, 0),
            ] {
                extras.push(Extra {
                    key: key.clone(),
                    ttl_secs,
                    fields: vec![(family.as_str().to_owned(), cost)],
                });
            }
        }
        extras
    }
}

/// Every token the upstream reported, as a rate window counts them.
pub fn tokens(usage: &Usage) -> u64 {
    usage
        .input_tokens
        .saturating_add(usage.output_tokens)
        .saturating_add(usage.cache_creation_input_tokens)
        .saturating_add(usage.cache_read_input_tokens)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::limits::spec::RateWindow;
    use time::macros::datetime;

    #[test]
    fn every_counter_of_a_key_shares_its_hash_tag() {
        let limits = KeyLimits {
            rate: Some(RateWindow {
                window_secs: 60,
                requests: 5,
                ..RateWindow::default()
            }),
            ..KeyLimits::default()
        };
        let at = datetime!(2026-12-04 17:30:42 UTC);

        let counters = KeyCounters::at(&Names::new("p:"), "key-1", &limits, at, UtcOffset::UTC);
        let extras = counters.extras(Some(Family::Sonnet), &Usage::default(), 5);

        let window = counters.window.as_ref().unwrap();
        let mut names = vec![
            &counters.leases,
            &window.name,
            &counters.usage_day,
            &counters.usage_month,
            &counters.usage_total,
            &counters.spend_day,
            &counters.spend_week,
            &counters.spend_total,
        ];
        names.extend(extras.iter().map(|extra| &extra.key));
        for name in names {
            assert!(name.starts_with("p:{key:key-1}:"), "{name}");
        }
        assert_eq!(window.name, "p:{key:key-1}:window:60:1796405400");
        assert_eq!(
            counters.spend_week,
            "p:{key:key-1}:spend:week:2026-11-30T00:00Z"
        );
    }

    #[test]
    fn answers_of_no_known_family_count_only_towards_the_week() {
        let counters = KeyCounters::at(
            &Names::new("p:"),
            "k",
            &KeyLimits::default(),
            datetime!(2026-12-04 17:30 UTC),
            UtcOffset::UTC,
        );

        let extras = counters.extras(None, &Usage::default(), 7);

        assert_eq!(extras.len(), 1);
        assert_eq!(extras[0].fields, vec![(ALL.to_owned(), 7)]);
    }
}
