//! The limit fields of a key in the seed file, in the operator's units
//! (dollars as JSON numbers, 0 or null for none), and their conversion to
//! the stored [`KeyLimits`].

use std::collections::BTreeMap;

use serde::{Deserialize, Deserializer};

use super::spec::{Budgets, Family, KeyLimits, RateWindow, WeeklyReset, usd_to_nano};

/// Dollars as written in the seed file, held as nano-dollars.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usd(pub u64);

impl<'de> Deserialize<'de> for Usd {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let amount = serde_json::Number::deserialize(deserializer)?;
        usd_to_nano(&amount)
            .map(Usd)
            .map_err(|err| serde::de::Error::custom(format!("{err:#}")))
    }
}

/// Dollars as an operator types them on the command line (`0.5`, `12`).
impl std::str::FromStr for Usd {
    type Err = anyhow::Error;

    fn from_str(text: &str) -> anyhow::Result<Usd> {
        let amount: serde_json::Number = serde_json::from_str(text.trim())
            .map_err(|_| anyhow::anyhow!("{text:?} is not an amount of dollars such as 0.5"))?;
        usd_to_nano(&amount).map(Usd)
    }
}

/// `{"window_secs": 60, "requests": 0, "tokens": 0, "cost_usd": 0}`.
#[derive(Debug, Clone, Copy, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SeedRateLimit {
    pub window_secs: u64,
    #[serde(default)]
    pub requests: Option<u64>,
    #[serde(default)]
    pub tokens: Option<u64>,
    #[serde(default)]
    pub cost_usd: Option<Usd>,
}

/// `{"daily": 0, "weekly": 50, "total": null}`.
#[derive(Debug, Clone, Copy, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SeedBudgets {
    #[serde(default)]
    pub daily: Option<Usd>,
    #[serde(default)]
    pub weekly: Option<Usd>,
    #[serde(default)]
    pub total: Option<Usd>,
}

/// Every limit field of a seed key, borrowed from it.
pub struct SeedLimits<'a> {
    pub concurrency_limit: Option<u32>,
    pub wait_for_slot_secs: Option<u32>,
    pub rate_limit: Option<SeedRateLimit>,
    pub daily_budget_usd: Option<Usd>,
    pub weekly_budget_usd: Option<Usd>,
    pub total_budget_usd: Option<Usd>,
    pub weekly_reset: Option<WeeklyReset>,
    pub family_budgets_usd: &'a BTreeMap<Family, SeedBudgets>,
}

impl SeedLimits<'_> {
    pub fn to_limits(&self) -> KeyLimits {
        let nano = |usd: Option<Usd>| usd.unwrap_or_default().0;
        let rate = self.rate_limit.map(|rate| RateWindow {
            window_secs: rate.window_secs,
            requests: rate.requests.unwrap_or(0),
            tokens: rate.tokens.unwrap_or(0),
            cost_nano_usd: nano(rate.cost_usd),
        });
        let family_budgets = self
            .family_budgets_usd
            .iter()
            .map(|(family, budgets)| {
                let budgets = Budgets {
                    daily_nano_usd: nano(budgets.daily),
                    weekly_nano_usd: nano(budgets.weekly),
                    total_nano_usd: nano(budgets.total),
                };
                (*family, budgets)
            })
            .filter(|(_, budgets)| !budgets.is_none())
            .collect();
        KeyLimits {
            concurrency: self.concurrency_limit.unwrap_or(0),
            wait_for_slot_secs: self.wait_for_slot_secs.unwrap_or(0),
            rate: rate.filter(|rate| !rate.is_none()),
            budgets: Budgets {
                daily_nano_usd: nano(self.daily_budget_usd),
                weekly_nano_usd: nano(self.weekly_budget_usd),
                total_nano_usd: nano(self.total_budget_usd),
            },
            weekly_reset: self.weekly_reset.unwrap_or_default(),
            family_budgets,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dollars_typed_on_the_command_line_are_read_exactly() {
        assert_eq!("0.001".parse::<Usd>().unwrap(), Usd(1_000_000));
        assert_eq!(" 12 ".parse::<Usd>().unwrap(), Usd(12_000_000_000));
        assert_eq!("0.0010935".parse::<Usd>().unwrap(), Usd(1_093_500));
        for bad in ["-1", "abc", "1$", "0.0000000001", ""] {
            assert!(bad.parse::<Usd>().is_err(), "{bad}");
        }
    }
}
