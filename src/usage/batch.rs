//! Usage writes gathered for a moment and merged: one write per counter
//! hash for many answers. Under load this turns five scripts an answer into
//! five scripts a flush; with one answer in a flush it is the same write as
//! before.

use std::collections::{BTreeMap, BTreeSet};

use time::Date;

/// Largest increment Redis takes (its integers are signed 64-bit): a
/// merged sum stops there rather than wrap.
pub const INCREMENT_MAX: u64 = i64::MAX as u64;

/// Increments of one hash, and how long the hash lives (0: for ever).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct HashIncrements {
    pub ttl_secs: u64,
    pub fields: BTreeMap<String, u64>,
}

/// Everything a flush writes.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Merged {
    /// Hash tag → hash name → increments. One script per tag, so each
    /// runs on one Redis Cluster slot.
    pub groups: BTreeMap<String, BTreeMap<String, HashIncrements>>,
    /// Usage day → account id → cost, for the accounts' daily quotas.
    pub spend: BTreeMap<Date, BTreeMap<String, u64>>,
    /// Models, keys and accounts that have counters.
    pub models: BTreeSet<String>,
    pub keys: BTreeSet<String>,
    pub accounts: BTreeSet<String>,
}

impl Merged {
    /// Adds `fields` to the hash `name` under `tag`. Zero increments are
    /// left out: readers take a missing field as 0. Sums stop at
    /// [`INCREMENT_MAX`].
    pub fn add<'a>(
        &mut self,
        tag: &str,
        name: String,
        ttl_secs: u64,
        fields: impl IntoIterator<Item = (&'a str, u64)>,
    ) {
        let hash = self
            .groups
            .entry(tag.to_owned())
            .or_default()
            .entry(name)
            .or_default();
        hash.ttl_secs = hash.ttl_secs.max(ttl_secs);
        for (field, value) in fields.into_iter().filter(|(_, value)| *value > 0) {
            let sum = hash.fields.entry(field.to_owned()).or_default();
            *sum = sum.saturating_add(value).min(INCREMENT_MAX);
        }
    }

    pub fn add_spend(&mut self, day: Date, account_id: &str, cost_nano_usd: u64) {
        if cost_nano_usd > 0 {
            let sum = self
                .spend
                .entry(day)
                .or_default()
                .entry(account_id.to_owned())
                .or_default();
            *sum = sum.saturating_add(cost_nano_usd).min(INCREMENT_MAX);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::date;

    #[test]
    fn increments_of_one_hash_add_up_and_zeros_are_left_out() {
        let mut merged = Merged::default();
        merged.add("{key:a}", "h".into(), 10, [("requests", 1), ("cost", 0)]);
        merged.add("{key:a}", "h".into(), 20, [("requests", 1), ("cost", 5)]);
        merged.add("{key:b}", "h".into(), 0, [("requests", 1)]);

        let hash = &merged.groups["{key:a}"]["h"];
        assert_eq!(hash.ttl_secs, 20);
        assert_eq!(hash.fields["requests"], 2);
        assert_eq!(hash.fields["cost"], 5);
        assert_eq!(merged.groups["{key:b}"]["h"].fields["requests"], 1);
    }

    #[test]
    fn sums_stop_at_the_largest_increment_redis_takes_instead_of_wrapping() {
        let mut merged = Merged::default();
        merged.add("t", "h".into(), 0, [("cost", u64::MAX), ("tokens", 5)]);
        merged.add("t", "h".into(), 0, [("cost", 7), ("tokens", 5)]);
        merged.add_spend(date!(2026 - 12 - 04), "a", u64::MAX);
        merged.add_spend(date!(2026 - 12 - 04), "a", 7);

        assert_eq!(merged.groups["t"]["h"].fields["cost"], INCREMENT_MAX);
        assert_eq!(merged.groups["t"]["h"].fields["tokens"], 10);
        assert_eq!(merged.spend[&date!(2026 - 12 - 04)]["a"], INCREMENT_MAX);
    }

    #[test]
    fn spending_adds_up_per_day_and_account() {
        let mut merged = Merged::default();
        merged.add_spend(date!(2026 - 12 - 04), "a", 3);
        merged.add_spend(date!(2026 - 12 - 04), "a", 4);
        merged.add_spend(date!(2026 - 12 - 05), "a", 0);

        assert_eq!(merged.spend[&date!(2026 - 12 - 04)]["a"], 7);
        assert!(!merged.spend.contains_key(&date!(2026 - 12 - 05)));
    }
}
