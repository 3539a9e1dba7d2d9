//! A key's limits as stored with its record: whole numbers only, money in
//! nano-dollars. Zero means "no limit" everywhere, so a record without
//! limits reads as `KeyLimits::default()`.

use std::collections::BTreeMap;

use anyhow::{Context, bail};
use serde::{Deserialize, Serialize};
use time::Weekday;

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyLimits {
    /// Requests in flight at once.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub concurrency: u32,
    /// How long a request over the concurrency limit waits for a slot.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub wait_for_slot_secs: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate: Option<RateWindow>,
    #[serde(default, skip_serializing_if = "Budgets::is_none")]
    pub budgets: Budgets,
    #[serde(default, skip_serializing_if = "WeeklyReset::is_default")]
    pub weekly_reset: WeeklyReset,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub family_budgets: BTreeMap<Family, Budgets>,
}

/// Requests, tokens and cost allowed per fixed window of `window_secs`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RateWindow {
    pub window_secs: u64,
    #[serde(default)]
    pub requests: u64,
    /// Every token the upstream reported: input, output, cache writes and
    /// cache reads.
    #[serde(default)]
    pub tokens: u64,
    #[serde(default)]
    pub cost_nano_usd: u64,
}

/// Spending allowed per day, per week and in all.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Budgets {
    #[serde(default)]
    pub daily_nano_usd: u64,
    #[serde(default)]
    pub weekly_nano_usd: u64,
    #[serde(default)]
    pub total_nano_usd: u64,
}

/// When a week starts, in the usage offset.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WeeklyReset {
    pub day: ResetDay,
    #[serde(default)]
    pub hour: u8,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ResetDay {
    Mon,
    Tue,
    Wed,
    Thu,
    Fri,
    Sat,
    Sun,
}

/// Model families a budget can be set for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Family {
    Opus,
    Sonnet,
    Haiku,
}

impl KeyLimits {
    pub fn is_none(&self) -> bool {
        *self == KeyLimits::default()
    }

    /// Whether admission has anything to check for this key; a key that
    /// has not is admitted without asking Redis.
    pub fn checks_anything(&self) -> bool {
        self.concurrency > 0 || self.reads_counters()
    }

    /// Whether admission reads the usage counters for this key (a window
    /// or budgets), so they should be written without delay.
    pub fn reads_counters(&self) -> bool {
        self.window().is_some()
            || !self.budgets.is_none()
            || self
                .family_budgets
                .values()
                .any(|budgets| !budgets.is_none())
    }

    /// The rate window, when it limits anything.
    pub fn window(&self) -> Option<RateWindow> {
        self.rate
            .filter(|rate| rate.window_secs > 0 && !rate.is_none())
    }

    pub fn family_budgets(&self, family: Option<Family>) -> Budgets {
        family
            .and_then(|family| self.family_budgets.get(&family).copied())
            .unwrap_or_default()
    }

    /// Checks what the types cannot: hours, and windows that limit nothing.
    pub fn check(&self) -> anyhow::Result<()> {
        if self.weekly_reset.hour > 23 {
            bail!("weekly_reset.hour must be 0 to 23");
        }
        if let Some(rate) = self.rate
            && rate.window_secs == 0
            && !rate.is_none()
        {
            bail!("rate_limit.window_secs must be at least 1");
        }
        Ok(())
    }
}

impl RateWindow {
    /// Whether the window limits nothing.
    pub fn is_none(&self) -> bool {
        self.requests == 0 && self.tokens == 0 && self.cost_nano_usd == 0
    }
}

impl Budgets {
    pub fn is_none(&self) -> bool {
        *self == Budgets::default()
    }
}

impl Default for WeeklyReset {
    fn default() -> Self {
        WeeklyReset {
            day: ResetDay::Mon,
            hour: 0,
        }
    }
}

impl WeeklyReset {
    fn is_default(&self) -> bool {
        *self == WeeklyReset::default()
    }
}

impl ResetDay {
    pub fn weekday(self) -> Weekday {
        match self {
            ResetDay::Mon => Weekday::Monday,
            ResetDay::Tue => Weekday::Tuesday,
            ResetDay::Wed => Weekday::Wednesday,
            ResetDay::Thu => Weekday::Thursday,
            ResetDay::Fri => Weekday::Friday,
            ResetDay::Sat => Weekday::Saturday,
            ResetDay::Sun => Weekday::Sunday,
        }
    }
}

impl Family {
    /// The family a model id names (`claude-opus-4-5-20251101`,
    /// `claude-3-5-sonnet-20241022`), if any.
    pub fn of(model: &str) -> Option<Family> {
        model.split('-').find_map(|part| match part {
            "opus" => Some(Family::Opus),
            "sonnet" => Some(Family::Sonnet),
            "haiku" => Some(Family::Haiku),
            _ => None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Family::Opus => "opus",
            Family::Sonnet => "sonnet",
            Family::Haiku => "haiku",
        }
    }
}

fn is_zero(value: &u32) -> bool {
    *value == 0
}

/// Dollars as written in a seed file (`0.01`, `50`, `1e-9`) in
/// nano-dollars, exactly: the decimal text is read digit by digit, never
/// through a float.
pub fn usd_to_nano(amount: &serde_json::Number) -> anyhow::Result<u64> {
    let text = amount.to_string();
    let (mantissa, exponent) = match text.split_once(['e', 'E']) {
        Some((mantissa, exponent)) => (mantissa, exponent.parse::<i32>().ok()),
        None => (text.as_str(), Some(0)),
    };
    let (whole, fraction) = mantissa.split_once('.').unwrap_or((mantissa, ""));
    let digits = format!("{whole}{fraction}");
    let plain = !whole.is_empty() && digits.bytes().all(|b| b.is_ascii_digit());
    let Some(exponent) = exponent.filter(|_| plain) else {
        bail!("{text} is not a plain non-negative amount of dollars");
    };
    // value = digits × 10^(exponent − fraction digits), in units of 10^−9.
    let fraction_len = i32::try_from(fraction.len()).context("too many decimals")?;
    let shift = exponent - fraction_len + 9;
    let trailing_zeros = digits.len() - digits.trim_end_matches('0').len();
    let digits = if shift < 0 {
        let cut = usize::try_from(-shift).unwrap_or(usize::MAX);
        if cut > trailing_zeros {
            bail!("{text} has more than nine decimals: finer than a nano-dollar");
        }
        &digits[..digits.len() - cut]
    } else {
        digits.as_str()
    };
    let base: u128 = digits
        .parse()
        .with_context(|| format!("{text} dollars is too large"))?;
    let scale = 10u128.checked_pow(u32::try_from(shift.max(0)).unwrap_or(u32::MAX));
    scale
        .and_then(|scale| base.checked_mul(scale))
        .and_then(|nano| u64::try_from(nano).ok())
        .with_context(|| format!("{text} dollars is too large"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nano(text: &str) -> anyhow::Result<u64> {
        usd_to_nano(&serde_json::from_str(text).unwrap())
    }

    #[test]
    fn dollars_convert_to_nano_dollars_exactly() {
        assert_eq!(nano("0.01").unwrap(), 10_000_000);
        assert_eq!(nano("50").unwrap(), 50_000_000_000);
        assert_eq!(nano("0.0010935").unwrap(), 1_093_500);
        assert_eq!(nano("0.011355").unwrap(), 11_355_000);
        assert_eq!(nano("0.000000001").unwrap(), 1);
        assert_eq!(nano("0.00000025").unwrap(), 250);
        assert_eq!(nano("1e3").unwrap(), 1_000_000_000_000);
        assert_eq!(nano("0").unwrap(), 0);
    }

    #[test]
    fn negative_tiny_and_huge_amounts_are_refused() {
        for text in ["-1", "0.0000000001", "1e30", "20000000000", "1.5e-10"] {
            assert!(nano(text).is_err(), "{text}");
        }
    }

    #[test]
    fn families_are_read_from_any_model_id_layout() {
        assert_eq!(Family::of("claude-opus-4-5-20251101"), Some(Family::Opus));
        assert_eq!(
            Family::of("claude-3-5-sonnet-20241022"),
            Some(Family::Sonnet)
        );
        assert_eq!(Family::of("claude-haiku-4-5"), Some(Family::Haiku));
        assert_eq!(Family::of("claude-sonnetish-1"), None);
        assert_eq!(Family::of("gpt-4"), None);
    }

    #[test]
    fn only_limits_that_limit_something_need_an_admission_check() {
        let window_without_limits = KeyLimits {
            rate: Some(RateWindow {
                window_secs: 60,
                ..RateWindow::default()
            }),
            weekly_reset: WeeklyReset {
                day: ResetDay::Fri,
                hour: 9,
            },
            ..KeyLimits::default()
        };
        let family_budget = KeyLimits {
            family_budgets: [(
                Family::Opus,
                Budgets {
                    weekly_nano_usd: 1,
                    ..Budgets::default()
                },
            )]
            .into(),
            ..KeyLimits::default()
        };

        assert!(!KeyLimits::default().checks_anything());
        assert!(!window_without_limits.checks_anything());
        assert!(family_budget.checks_anything());
    }

    #[test]
    fn a_record_without_limits_reads_as_no_limits() {
        let limits: KeyLimits = serde_json::from_str("{}").unwrap();

        assert!(limits.is_none());
        assert_eq!(serde_json::to_string(&limits).unwrap(), "{}");
    }
}
