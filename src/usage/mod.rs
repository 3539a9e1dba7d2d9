//! Usage and cost: what each answer consumed, read from the answer the
//! relay passes through, priced in integer nano-dollars, and counted per
//! key, account and model.

pub mod batch;
pub mod pricing;
pub mod record;
pub mod report;
pub mod sse;
pub mod tap;

use serde::{Deserialize, Deserializer, Serialize};

/// Most tokens of one kind an answer can report: far above any context
/// window. A larger figure is an upstream's fault; believed, it would
/// wrap or overflow the counters it is added to.
pub const MAX_TOKENS: u64 = 1 << 32;

/// Token counts of one answer, as the upstream reported them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    pub input_tokens: u64,
    pub output_tokens: u64,
    /// All cache writes, whatever their lifetime.
    pub cache_creation_input_tokens: u64,
    /// Cache writes with the 5 minute and 1 hour lifetimes. When the
    /// upstream gives no split, every write counts as a 5 minute write.
    pub cache_creation_5m_input_tokens: u64,
    pub cache_creation_1h_input_tokens: u64,
    pub cache_read_input_tokens: u64,
}

/// `usage` as it appears on the wire; every field may be absent or null.
/// A figure over [`MAX_TOKENS`] makes the whole `usage` unreadable.
#[derive(Debug, Default, Deserialize)]
pub struct WireUsage {
    #[serde(default, deserialize_with = "figure")]
    input_tokens: Option<u64>,
    #[serde(default, deserialize_with = "figure")]
    output_tokens: Option<u64>,
    #[serde(default, deserialize_with = "figure")]
    cache_creation_input_tokens: Option<u64>,
    #[serde(default, deserialize_with = "figure")]
    cache_read_input_tokens: Option<u64>,
    cache_creation: Option<WireCacheCreation>,
}

#[derive(Debug, Default, Deserialize)]
struct WireCacheCreation {
    #[serde(default, deserialize_with = "figure")]
    ephemeral_5m_input_tokens: Option<u64>,
    #[serde(default, deserialize_with = "figure")]
    ephemeral_1h_input_tokens: Option<u64>,
}

fn figure<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<u64>, D::Error> {
    match Option::<u64>::deserialize(deserializer)? {
        Some(tokens) if tokens > MAX_TOKENS => Err(serde::de::Error::custom(format!(
            "{tokens} tokens is more than any answer reports"
        ))),
        figure => Ok(figure),
    }
}

impl Usage {
    /// Takes every figure `wire` carries. Figures are totals so far, never
    /// increments: `message_delta`'s output count replaces the preliminary
    /// one of `message_start`.
    pub fn apply(&mut self, wire: &WireUsage) {
        let set = |slot: &mut u64, value: Option<u64>| {
            if let Some(value) = value {
                *slot = value;
            }
        };
        set(&mut self.input_tokens, wire.input_tokens);
        set(&mut self.output_tokens, wire.output_tokens);
        set(
            &mut self.cache_read_input_tokens,
            wire.cache_read_input_tokens,
        );
        if let Some(total) = wire.cache_creation_input_tokens {
            self.cache_creation_input_tokens = total;
            // A repeated total keeps the split an earlier event gave.
            let split = self
                .cache_creation_5m_input_tokens
                .saturating_add(self.cache_creation_1h_input_tokens);
            if split != total {
                self.cache_creation_5m_input_tokens = total;
                self.cache_creation_1h_input_tokens = 0;
            }
        }
        if let Some(split) = &wire.cache_creation {
            let five = split.ephemeral_5m_input_tokens;
            let hour = split.ephemeral_1h_input_tokens;
            if five.is_some() || hour.is_some() {
                self.cache_creation_5m_input_tokens = five.unwrap_or(0);
                self.cache_creation_1h_input_tokens = hour.unwrap_or(0);
                if wire.cache_creation_input_tokens.is_none() {
                    self.cache_creation_input_tokens =
                        five.unwrap_or(0).saturating_add(hour.unwrap_or(0));
                }
            }
        }
    }

    pub fn is_empty(&self) -> bool {
        *self == Usage::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wire(json: &str) -> WireUsage {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn later_figures_replace_earlier_ones() {
        let mut usage = Usage::default();
        usage.apply(&wire(
            r#"{"input_tokens":25,"cache_read_input_tokens":3,"output_tokens":1}"#,
        ));
        usage.apply(&wire(r#"{"output_tokens":15}"#));

        assert_eq!(usage.input_tokens, 25);
        assert_eq!(usage.output_tokens, 15);
        assert_eq!(usage.cache_read_input_tokens, 3);
    }

    #[test]
    fn cache_writes_without_a_split_count_as_five_minute_writes() {
        let mut usage = Usage::default();
        usage.apply(&wire(r#"{"cache_creation_input_tokens":3000}"#));

        assert_eq!(usage.cache_creation_5m_input_tokens, 3000);
        assert_eq!(usage.cache_creation_1h_input_tokens, 0);
    }

    #[test]
    fn the_split_is_taken_when_given() {
        let mut usage = Usage::default();
        usage.apply(&wire(
            r#"{"cache_creation_input_tokens":300,"cache_creation":
                {"ephemeral_5m_input_tokens":100,"ephemeral_1h_input_tokens":200}}"#,
        ));

        assert_eq!(usage.cache_creation_input_tokens, 300);
        assert_eq!(usage.cache_creation_5m_input_tokens, 100);
        assert_eq!(usage.cache_creation_1h_input_tokens, 200);
    }

    #[test]
    fn a_repeated_total_keeps_the_earlier_split() {
        let mut usage = Usage::default();
        usage.apply(&wire(
            r#"{"cache_creation_input_tokens":300,"cache_creation":
                {"ephemeral_5m_input_tokens":100,"ephemeral_1h_input_tokens":200}}"#,
        ));
        usage.apply(&wire(
            r#"{"cache_creation_input_tokens":300,"output_tokens":9}"#,
        ));

        assert_eq!(usage.cache_creation_5m_input_tokens, 100);
        assert_eq!(usage.cache_creation_1h_input_tokens, 200);
    }

    #[test]
    fn a_figure_no_answer_can_have_makes_the_usage_unreadable() {
        let at_most = format!(r#"{{"output_tokens":{MAX_TOKENS}}}"#);
        let over = format!(r#"{{"input_tokens":7,"output_tokens":{}}}"#, MAX_TOKENS + 1);
        let split_over = format!(
            r#"{{"cache_creation":{{"ephemeral_1h_input_tokens":{}}}}}"#,
            u64::MAX
        );

        assert_eq!(wire(&at_most).output_tokens, Some(MAX_TOKENS));
        assert!(serde_json::from_str::<WireUsage>(&over).is_err());
        assert!(serde_json::from_str::<WireUsage>(&split_over).is_err());
    }

    #[test]
    fn nulls_leave_figures_alone() {
        let mut usage = Usage::default();
        usage.apply(&wire(r#"{"input_tokens":7}"#));
        usage.apply(&wire(r#"{"input_tokens":null,"cache_creation":null}"#));

        assert_eq!(usage.input_tokens, 7);
    }
}
