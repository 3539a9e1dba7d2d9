//! The periods limits count in: the usage day (in the usage offset), the
//! week that starts at a key's reset day and hour, and fixed rate windows
//! aligned to the Unix epoch, so every instance agrees on them.

use time::{Duration, OffsetDateTime, PrimitiveDateTime, Time, UtcOffset};

use super::spec::WeeklyReset;

/// The moment the usage day holding `at` ends.
pub fn day_end(at: OffsetDateTime, offset: UtcOffset) -> OffsetDateTime {
    let next = at.to_offset(offset).date().saturating_add(Duration::DAY);
    PrimitiveDateTime::new(next, Time::MIDNIGHT)
        .assume_offset(offset)
        .to_offset(UtcOffset::UTC)
}

/// The week holding `at`: its start and end, in UTC.
pub fn week(
    at: OffsetDateTime,
    offset: UtcOffset,
    reset: WeeklyReset,
) -> (OffsetDateTime, OffsetDateTime) {
    let local = at.to_offset(offset);
    let today = local.weekday().number_days_from_monday();
    let reset_day = reset.day.weekday().number_days_from_monday();
    let back = (today + 7 - reset_day) % 7;
    let date = local.date().saturating_sub(Duration::days(i64::from(back)));
    let hour = Time::from_hms(reset.hour, 0, 0).unwrap_or(Time::MIDNIGHT);
    let mut start = PrimitiveDateTime::new(date, hour).assume_offset(offset);
    if start > local {
        start = start.saturating_sub(Duration::WEEK);
    }
    let start = start.to_offset(UtcOffset::UTC);
    (start, start.saturating_add(Duration::WEEK))
}

/// Names a week by its start, e.g. `week:2026-11-30T00:00Z`.
pub fn week_label(start: OffsetDateTime) -> String {
    let start = start.to_offset(UtcOffset::UTC);
    format!(
        "week:{:04}-{:02}-{:02}T{:02}:{:02}Z",
        start.year(),
        u8::from(start.month()),
        start.day(),
        start.hour(),
        start.minute()
    )
}

/// The fixed window of `secs` holding `at`: its start in Unix seconds and
/// its end.
pub fn window(at: OffsetDateTime, secs: u64) -> (i64, OffsetDateTime) {
    let secs = i64::try_from(secs.max(1)).unwrap_or(i64::MAX);
    let start = at.unix_timestamp().div_euclid(secs) * secs;
    let end = OffsetDateTime::from_unix_timestamp(start.saturating_add(secs))
        .unwrap_or(at.saturating_add(Duration::seconds(secs)));
    (start, end)
}

/// Time left until `end`, never below one second: a client told to retry
/// at once would spin.
pub fn until(now: OffsetDateTime, end: OffsetDateTime) -> std::time::Duration {
    let left = (end - now).max(Duration::SECOND);
    std::time::Duration::try_from(left).unwrap_or(std::time::Duration::from_secs(1))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::limits::spec::ResetDay;
    use time::macros::{datetime, offset};

    fn reset(day: ResetDay, hour: u8) -> WeeklyReset {
        WeeklyReset { day, hour }
    }

    #[test]
    fn a_day_ends_at_midnight_in_the_usage_offset() {
        let at = datetime!(2026-12-04 17:30 UTC);

        assert_eq!(day_end(at, UtcOffset::UTC), datetime!(2026-12-05 00:00 UTC));
        assert_eq!(day_end(at, offset!(+8)), datetime!(2026-12-05 16:00 UTC));
    }

    #[test]
    fn a_week_starts_on_the_reset_day_and_hour() {
        // 2026-12-04 is a Friday.
        let friday = datetime!(2026-12-04 17:30 UTC);

        let monday = week(friday, UtcOffset::UTC, reset(ResetDay::Mon, 0));
        let same_day_later = week(friday, UtcOffset::UTC, reset(ResetDay::Fri, 18));
        let same_day_earlier = week(friday, UtcOffset::UTC, reset(ResetDay::Fri, 9));

        assert_eq!(monday.0, datetime!(2026-11-30 00:00 UTC));
        assert_eq!(monday.1, datetime!(2026-12-07 00:00 UTC));
        assert_eq!(same_day_later.0, datetime!(2026-11-27 18:00 UTC));
        assert_eq!(same_day_earlier.0, datetime!(2026-12-04 09:00 UTC));
        assert_eq!(week_label(monday.0), "week:2026-11-30T00:00Z");
    }

    #[test]
    fn a_week_follows_the_usage_offset() {
        // Saturday 01:30 at +08:00 is still Friday in UTC.
        let at = datetime!(2026-12-04 17:30 UTC);

        let (start, end) = week(at, offset!(+8), reset(ResetDay::Sat, 0));

        assert_eq!(start, datetime!(2026-12-04 16:00 UTC));
        assert_eq!(end, datetime!(2026-12-11 16:00 UTC));
    }

    #[test]
    fn windows_are_aligned_to_the_epoch() {
        let at = datetime!(2026-12-04 17:30:42 UTC);

        let (start, end) = window(at, 60);

        assert_eq!(start, datetime!(2026-12-04 17:30 UTC).unix_timestamp());
        assert_eq!(end, datetime!(2026-12-04 17:31 UTC));
        assert_eq!(until(at, end), std::time::Duration::from_secs(18));
        assert_eq!(until(end, at), std::time::Duration::from_secs(1));
    }
}
