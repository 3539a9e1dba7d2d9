//! How long a key is valid: until an absolute moment, for a number of days
//! from its first use, or both (the earlier end wins).

use time::{Duration, OffsetDateTime};

use crate::store::KeyRecord;

/// When the key stops being valid, if it is known yet. A key valid for N
/// days from its first use has no end before that use.
pub fn valid_until(record: &KeyRecord) -> Option<OffsetDateTime> {
    let after_first_use = record
        .activation_days
        .zip(record.activated_at)
        .and_then(|(days, first_use)| first_use.checked_add(Duration::days(i64::from(days))));
    match (record.expires_at, after_first_use) {
        (Some(absolute), Some(relative)) => Some(absolute.min(relative)),
        (absolute, relative) => absolute.or(relative),
    }
}

/// The moment the key expired, if it has by `now`.
pub fn expired(record: &KeyRecord, now: OffsetDateTime) -> Option<OffsetDateTime> {
    valid_until(record).filter(|end| *end <= now)
}

/// Now, to the second: stored times need no more, and read better.
pub fn now() -> OffsetDateTime {
    let now = OffsetDateTime::now_utc();
    now.replace_nanosecond(0).unwrap_or(now)
}

/// Whether the key still waits for the first use that starts its clock.
pub fn awaits_first_use(record: &KeyRecord) -> bool {
    record.activation_days.is_some() && record.activated_at.is_none()
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    fn key() -> KeyRecord {
        KeyRecord::new("k", "K", String::new())
    }

    const NOW: OffsetDateTime = datetime!(2026-03-10 12:00 UTC);

    #[test]
    fn a_key_without_expiry_never_expires() {
        assert_eq!(valid_until(&key()), None);
        assert_eq!(expired(&key(), NOW), None);
    }

    #[test]
    fn absolute_expiry_applies_from_that_moment_on() {
        let record = KeyRecord {
            expires_at: Some(NOW),
            ..key()
        };

        assert_eq!(expired(&record, NOW - Duration::seconds(1)), None);
        assert_eq!(expired(&record, NOW), Some(NOW));
    }

    #[test]
    fn activation_days_count_from_the_first_use_only() {
        let unused = KeyRecord {
            activation_days: Some(7),
            ..key()
        };
        let used = KeyRecord {
            activated_at: Some(NOW - Duration::days(7)),
            ..unused.clone()
        };

        assert!(awaits_first_use(&unused));
        assert_eq!(expired(&unused, NOW + Duration::days(1000)), None);
        assert!(!awaits_first_use(&used));
        assert_eq!(expired(&used, NOW), Some(NOW));
        assert_eq!(expired(&used, NOW - Duration::seconds(1)), None);
    }

    #[test]
    fn the_earlier_of_both_ends_wins() {
        let record = KeyRecord {
            expires_at: Some(NOW + Duration::days(2)),
            activation_days: Some(1),
            activated_at: Some(NOW),
            ..key()
        };

        assert_eq!(valid_until(&record), Some(NOW + Duration::days(1)));
        let later_activation = KeyRecord {
            activation_days: Some(30),
            ..record
        };
        assert_eq!(
            valid_until(&later_activation),
            Some(NOW + Duration::days(2))
        );
    }
}
