//! Prices per model, loaded from a data file, in integer nano-dollars per
//! token: a price of $X per million tokens is X×1000 n$ per token, a whole
//! number for every published price.

use std::collections::HashMap;
use std::path::Path;

use anyhow::{Context, bail};
use serde::Deserialize;

use super::Usage;
use crate::auth::models::family;

/// The table shipped with the relay (`pricing.json` at the repository root).
const BUILTIN: &str = include_str!("../../pricing.json");

/// Nano-dollars per token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Prices {
    pub input: u64,
    pub output: u64,
    pub cache_write_5m: u64,
    pub cache_write_1h: u64,
    pub cache_read: u64,
}

#[derive(Debug, Clone)]
pub struct PriceTable {
    models: HashMap<String, Prices>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PriceFile {
    /// Documents the unit; must be `usd_per_million_tokens`.
    unit: String,
    models: HashMap<String, FilePrices>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FilePrices {
    input: serde_json::Number,
    output: serde_json::Number,
    cache_write_5m: serde_json::Number,
    cache_write_1h: serde_json::Number,
    cache_read: serde_json::Number,
}

impl PriceTable {
    pub fn builtin() -> anyhow::Result<PriceTable> {
        PriceTable::parse(BUILTIN).context("the built-in pricing table")
    }

    pub fn load(path: &Path) -> anyhow::Result<PriceTable> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading pricing file {}", path.display()))?;
        PriceTable::parse(&text).with_context(|| format!("in pricing file {}", path.display()))
    }

    pub fn parse(text: &str) -> anyhow::Result<PriceTable> {
        let file: PriceFile = serde_json::from_str(text)?;
        if file.unit != "usd_per_million_tokens" {
            bail!("unit must be usd_per_million_tokens, not {}", file.unit);
        }
        let mut models = HashMap::with_capacity(file.models.len());
        for (model, prices) in file.models {
            let prices = prices
                .nano()
                .with_context(|| format!("prices of {model}"))?;
            models.insert(model, prices);
        }
        Ok(PriceTable { models })
    }

    /// Prices of `model`, or of its family for a dated id.
    pub fn lookup(&self, model: &str) -> Option<&Prices> {
        self.models
            .get(model)
            .or_else(|| self.models.get(family(model)))
    }

    /// Cost of `usage` on `model` in nano-dollars; `None` for an unknown
    /// model.
    pub fn cost(&self, model: &str, usage: &Usage) -> Option<u64> {
        self.lookup(model).map(|prices| prices.cost(usage))
    }
}

impl Prices {
    pub fn cost(&self, usage: &Usage) -> u64 {
        let parts = [
            (usage.input_tokens, self.input),
            (usage.output_tokens, self.output),
            (usage.cache_creation_5m_input_tokens, self.cache_write_5m),
            (usage.cache_creation_1h_input_tokens, self.cache_write_1h),
            (usage.cache_read_input_tokens, self.cache_read),
        ];
        let total: u128 = parts
            .iter()
            .map(|(tokens, price)| u128::from(*tokens) * u128::from(*price))
            .sum();
        u64::try_from(total).unwrap_or(u64::MAX)
    }
}

impl FilePrices {
    fn nano(&self) -> anyhow::Result<Prices> {
        Ok(Prices {
            input: per_token_nano(&self.input)?,
            output: per_token_nano(&self.output)?,
            cache_write_5m: per_token_nano(&self.cache_write_5m)?,
            cache_write_1h: per_token_nano(&self.cache_write_1h)?,
            cache_read: per_token_nano(&self.cache_read)?,
        })
    }
}

/// `$X per million tokens` as nano-dollars per token (X×1000), exactly:
/// the decimal text is read digit by digit, never through a float.
fn per_token_nano(price: &serde_json::Number) -> anyhow::Result<u64> {
    let text = price.to_string();
    let (whole, fraction) = text.split_once('.').unwrap_or((&text, ""));
    let fraction = fraction.trim_end_matches('0');
    if whole.is_empty()
        || !whole.bytes().all(|b| b.is_ascii_digit())
        || !fraction.bytes().all(|b| b.is_ascii_digit())
    {
        bail!("{text} is not a plain non-negative decimal");
    }
    if fraction.len() > 3 {
        bail!("{text} has more than three decimals: not a whole number of nano-dollars per token");
    }
    let whole: u64 = whole.parse()?;
    let fraction: u64 = format!("{fraction:0<3}").parse()?;
    whole
        .checked_mul(1000)
        .and_then(|n| n.checked_add(fraction))
        .context("price too large")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sonnet() -> PriceTable {
        PriceTable::parse(
            r#"{"unit":"usd_per_million_tokens","models":{"claude-sonnet-4-5":
                {"input":3,"output":15,"cache_write_5m":3.75,"cache_write_1h":6,"cache_read":0.30}}}"#,
        )
        .unwrap()
    }

    fn usage(input: u64, cache_write: u64, cache_read: u64, output: u64) -> Usage {
        Usage {
            input_tokens: input,
            output_tokens: output,
            cache_creation_input_tokens: cache_write,
            cache_creation_5m_input_tokens: cache_write,
            cache_creation_1h_input_tokens: 0,
            cache_read_input_tokens: cache_read,
        }
    }

    #[test]
    fn prices_convert_to_whole_nano_dollars_per_token() {
        let prices = *sonnet().lookup("claude-sonnet-4-5").unwrap();
        assert_eq!(
            prices,
            Prices {
                input: 3000,
                output: 15000,
                cache_write_5m: 3750,
                cache_write_1h: 6000,
                cache_read: 300
            }
        );
    }

    #[test]
    fn cache_reads_and_writes_have_their_own_prices() {
        let table = sonnet();
        let model = "claude-sonnet-4-5-20250929";

        assert_eq!(table.cost(model, &usage(4, 0, 2455, 23)), Some(1_093_500));
        assert_eq!(table.cost(model, &usage(10, 3000, 0, 5)), Some(11_355_000));
        assert_eq!(table.cost(model, &usage(25, 0, 0, 15)), Some(300_000));
    }

    #[test]
    fn unknown_models_have_no_price() {
        assert_eq!(sonnet().cost("claude-opus-9", &usage(1, 0, 0, 1)), None);
    }

    #[test]
    fn prices_with_more_than_three_decimals_are_refused() {
        let text = r#"{"unit":"usd_per_million_tokens","models":{"m":
            {"input":0.0001,"output":1,"cache_write_5m":1,"cache_write_1h":1,"cache_read":1}}}"#;
        assert!(PriceTable::parse(text).is_err());
    }

    #[test]
    fn the_builtin_table_loads_and_prices_current_models() {
        let table = PriceTable::builtin().unwrap();
        for model in [
            "claude-sonnet-4-5-20250929",
            "claude-haiku-4-5-20251001",
            "claude-opus-4-5-20251101",
        ] {
            assert!(table.lookup(model).is_some(), "{model}");
        }
    }
}
