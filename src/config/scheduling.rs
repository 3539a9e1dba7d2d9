//! Settings of account selection and account health: sticky sessions,
//! cooldown durations and the account-level markers of upstream answers.
//!
//! In the TOML file they live in the `[scheduling]` and `[health]` tables;
//! each number also has a `RELAY_SCHEDULING_*` / `RELAY_HEALTH_*` variable.
//! Markers are a list and are set in the file only.

use std::time::Duration;

use anyhow::bail;
use serde::Deserialize;

use super::set;

#[derive(Debug, Clone)]
pub struct SchedulingSettings {
    /// How long a conversation stays on its account after its last request.
    pub sticky_ttl: Duration,
    /// Whether a key bound to an account or a group may fall back to the
    /// shared pool when none of its own accounts can serve.
    pub spill_to_pool: bool,
}

/// How long each kind of upstream trouble keeps an account out of the pool.
#[derive(Debug, Clone)]
pub struct HealthSettings {
    /// A 429 that says neither when to retry nor when its limit resets.
    pub rate_limit: Duration,
    pub retry_after_cap: Duration,
    /// Cap on cooldowns taken from `anthropic-ratelimit-*-reset` headers.
    pub reset_cap: Duration,
    /// 529: Anthropic's capacity, not the account's; zero means no pause.
    pub overloaded: Duration,
    /// 5xx other than 503 and 529.
    pub server_error: Duration,
    /// 503.
    pub unavailable: Duration,
    pub timeout: Duration,
    pub unreachable: Duration,
    pub out_of_credit: Duration,
    /// Built-in markers first, then the configured ones.
    pub markers: Vec<Marker>,
}

/// An upstream answer that is about the account, not the request: a 403
/// marker disables the account until an operator acts, a 400 marker takes
/// it out as out of credit. The message fragment matches case-insensitively.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Marker {
    pub status: u16,
    pub error_type: String,
    pub message: String,
}

impl Marker {
    fn new(status: u16, error_type: &str, message: &str) -> Marker {
        Marker {
            status,
            error_type: error_type.to_owned(),
            message: message.to_owned(),
        }
    }

    fn builtin() -> Vec<Marker> {
        vec![
            Marker::new(403, "permission_error", "organization has been disabled"),
            Marker::new(403, "permission_error", "account has been disabled"),
            Marker::new(403, "permission_error", "token has been revoked"),
            Marker::new(400, "invalid_request_error", "credit balance is too low"),
        ]
    }
}

impl Default for SchedulingSettings {
    fn default() -> Self {
        SchedulingSettings {
            sticky_ttl: Duration::from_secs(3600),
            spill_to_pool: false,
        }
    }
}

impl Default for HealthSettings {
    fn default() -> Self {
        HealthSettings {
            rate_limit: Duration::from_secs(60),
            retry_after_cap: Duration::from_secs(30 * 60),
            reset_cap: Duration::from_secs(5 * 3600),
            overloaded: Duration::ZERO,
            server_error: Duration::from_secs(5 * 60),
            unavailable: Duration::from_secs(60),
            timeout: Duration::from_secs(5 * 60),
            unreachable: Duration::from_secs(5 * 60),
            out_of_credit: Duration::from_secs(3600),
            markers: Marker::builtin(),
        }
    }
}

/// `[scheduling]` as written in the file or the environment.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SchedulingLayer {
    pub sticky_ttl_secs: Option<u64>,
    pub spill_to_pool: Option<bool>,
}

/// `[health]` as written in the file or the environment.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HealthLayer {
    pub rate_limit_secs: Option<u64>,
    pub retry_after_cap_secs: Option<u64>,
    pub reset_cap_secs: Option<u64>,
    pub overloaded_secs: Option<u64>,
    pub server_error_secs: Option<u64>,
    pub unavailable_secs: Option<u64>,
    pub timeout_secs: Option<u64>,
    pub unreachable_secs: Option<u64>,
    pub out_of_credit_secs: Option<u64>,
    /// Added to the built-in markers.
    pub markers: Option<Vec<Marker>>,
}

/// Every variable read here, for the check against unknown `RELAY_*` names.
pub const ENV_VARS: &[&str] = &[
    "RELAY_SCHEDULING_STICKY_TTL_SECS",
    "RELAY_SCHEDULING_SPILL_TO_POOL",
    "RELAY_HEALTH_RATE_LIMIT_SECS",
    "RELAY_HEALTH_RETRY_AFTER_CAP_SECS",
    "RELAY_HEALTH_RESET_CAP_SECS",
    "RELAY_HEALTH_OVERLOADED_SECS",
    "RELAY_HEALTH_SERVER_ERROR_SECS",
    "RELAY_HEALTH_UNAVAILABLE_SECS",
    "RELAY_HEALTH_TIMEOUT_SECS",
    "RELAY_HEALTH_UNREACHABLE_SECS",
    "RELAY_HEALTH_OUT_OF_CREDIT_SECS",
];

type Var<'a> = &'a dyn Fn(&str) -> Option<String>;

impl SchedulingLayer {
    pub fn from_env(var: Var<'_>) -> anyhow::Result<Option<SchedulingLayer>> {
        let mut layer = SchedulingLayer::default();
        set(
            &mut layer.sticky_ttl_secs,
            var,
            "RELAY_SCHEDULING_STICKY_TTL_SECS",
        )?;
        set(
            &mut layer.spill_to_pool,
            var,
            "RELAY_SCHEDULING_SPILL_TO_POOL",
        )?;
        let empty = layer.sticky_ttl_secs.is_none() && layer.spill_to_pool.is_none();
        Ok((!empty).then_some(layer))
    }

    pub fn over(self, below: Option<SchedulingLayer>) -> SchedulingLayer {
        let below = below.unwrap_or_default();
        SchedulingLayer {
            sticky_ttl_secs: self.sticky_ttl_secs.or(below.sticky_ttl_secs),
            spill_to_pool: self.spill_to_pool.or(below.spill_to_pool),
        }
    }

    pub fn settings(self) -> anyhow::Result<SchedulingSettings> {
        let defaults = SchedulingSettings::default();
        let sticky_ttl = secs(self.sticky_ttl_secs, defaults.sticky_ttl);
        if sticky_ttl.is_zero() {
            bail!("scheduling.sticky_ttl_secs must be at least 1");
        }
        Ok(SchedulingSettings {
            sticky_ttl,
            spill_to_pool: self.spill_to_pool.unwrap_or(defaults.spill_to_pool),
        })
    }
}

impl HealthLayer {
    pub fn from_env(var: Var<'_>) -> anyhow::Result<Option<HealthLayer>> {
        let mut layer = HealthLayer::default();
        let mut any = false;
        for (slot, name) in layer.duration_slots() {
            set(slot, var, name)?;
            any |= slot.is_some();
        }
        Ok(any.then_some(layer))
    }

    fn duration_slots(&mut self) -> [(&mut Option<u64>, &'static str); 9] {
        [
            (&mut self.rate_limit_secs, "RELAY_HEALTH_RATE_LIMIT_SECS"),
            (
                &mut self.retry_after_cap_secs,
                "RELAY_HEALTH_RETRY_AFTER_CAP_SECS",
            ),
            (&mut self.reset_cap_secs, "RELAY_HEALTH_RESET_CAP_SECS"),
            (&mut self.overloaded_secs, "RELAY_HEALTH_OVERLOADED_SECS"),
            (
                &mut self.server_error_secs,
                "RELAY_HEALTH_SERVER_ERROR_SECS",
            ),
            (&mut self.unavailable_secs, "RELAY_HEALTH_UNAVAILABLE_SECS"),
            (&mut self.timeout_secs, "RELAY_HEALTH_TIMEOUT_SECS"),
            (&mut self.unreachable_secs, "RELAY_HEALTH_UNREACHABLE_SECS"),
            (
                &mut self.out_of_credit_secs,
                "RELAY_HEALTH_OUT_OF_CREDIT_SECS",
            ),
        ]
    }

    pub fn over(self, below: Option<HealthLayer>) -> HealthLayer {
        let below = below.unwrap_or_default();
        HealthLayer {
            rate_limit_secs: self.rate_limit_secs.or(below.rate_limit_secs),
            retry_after_cap_secs: self.retry_after_cap_secs.or(below.retry_after_cap_secs),
            reset_cap_secs: self.reset_cap_secs.or(below.reset_cap_secs),
            overloaded_secs: self.overloaded_secs.or(below.overloaded_secs),
            server_error_secs: self.server_error_secs.or(below.server_error_secs),
            unavailable_secs: self.unavailable_secs.or(below.unavailable_secs),
            timeout_secs: self.timeout_secs.or(below.timeout_secs),
            unreachable_secs: self.unreachable_secs.or(below.unreachable_secs),
            out_of_credit_secs: self.out_of_credit_secs.or(below.out_of_credit_secs),
            markers: self.markers.or(below.markers),
        }
    }

    pub fn settings(self) -> anyhow::Result<HealthSettings> {
        let d = HealthSettings::default();
        let mut markers = d.markers;
        for marker in self.markers.unwrap_or_default() {
            markers.push(checked(marker)?);
        }
        Ok(HealthSettings {
            rate_limit: secs(self.rate_limit_secs, d.rate_limit),
            retry_after_cap: secs(self.retry_after_cap_secs, d.retry_after_cap),
            reset_cap: secs(self.reset_cap_secs, d.reset_cap),
            overloaded: secs(self.overloaded_secs, d.overloaded),
            server_error: secs(self.server_error_secs, d.server_error),
            unavailable: secs(self.unavailable_secs, d.unavailable),
            timeout: secs(self.timeout_secs, d.timeout),
            unreachable: secs(self.unreachable_secs, d.unreachable),
            out_of_credit: secs(self.out_of_credit_secs, d.out_of_credit),
            markers,
        })
    }
}

/// Only 400 and 403 answers are read for markers: those are the two
/// statuses whose meaning (request or account) depends on the text.
fn checked(marker: Marker) -> anyhow::Result<Marker> {
    if !matches!(marker.status, 400 | 403) {
        bail!(
            "health marker {:?}: status must be 400 (out of credit) or 403 (account disabled), \
             not {}",
            marker.message,
            marker.status
        );
    }
    if marker.message.trim().is_empty() || marker.error_type.trim().is_empty() {
        bail!(
            "health marker for status {}: error_type and message must not be empty",
            marker.status
        );
    }
    Ok(marker)
}

fn secs(value: Option<u64>, default: Duration) -> Duration {
    value.map(Duration::from_secs).unwrap_or(default)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_follow_the_health_table() {
        let health = HealthLayer::default().settings().unwrap();

        assert_eq!(health.rate_limit, Duration::from_secs(60));
        assert_eq!(health.retry_after_cap, Duration::from_secs(1800));
        assert_eq!(health.reset_cap, Duration::from_secs(18000));
        assert_eq!(health.server_error, Duration::from_secs(300));
        assert_eq!(health.unavailable, Duration::from_secs(60));
        assert_eq!(health.out_of_credit, Duration::from_secs(3600));
        assert_eq!(health.markers.len(), 4);
    }

    #[test]
    fn configured_markers_are_added_and_checked() {
        let layer: HealthLayer = toml::from_str(
            r#"markers = [{ status = 403, error_type = "permission_error", message = "suspended" }]"#,
        )
        .unwrap();
        assert_eq!(layer.settings().unwrap().markers.len(), 5);

        let wrong: HealthLayer = toml::from_str(
            r#"markers = [{ status = 429, error_type = "rate_limit_error", message = "x" }]"#,
        )
        .unwrap();
        assert!(wrong.settings().is_err());
    }

    #[test]
    fn tables_of_the_config_file_reach_the_config() {
        let layer: super::super::Layer = toml::from_str(
            "[scheduling]\nsticky_ttl_secs = 5\nspill_to_pool = true\n[health]\nrate_limit_secs = 3\n",
        )
        .unwrap();

        let config = super::super::Config::from_layer(layer, Default::default()).unwrap();

        assert_eq!(config.scheduling.sticky_ttl, Duration::from_secs(5));
        assert!(config.scheduling.spill_to_pool);
        assert_eq!(config.health.rate_limit, Duration::from_secs(3));
        assert!(toml::from_str::<super::super::Layer>("[health]\ncolour = 1").is_err());
    }

    #[test]
    fn an_account_key_with_plaintext_mode_is_a_start_up_error() {
        let secrets = super::super::Secrets {
            account_key: Some("ab".repeat(32).into()),
            ..Default::default()
        };
        let layer = super::super::Layer {
            plaintext_credentials: Some(true),
            ..Default::default()
        };

        let err = super::super::Config::from_layer(layer, secrets).unwrap_err();

        assert!(format!("{err:#}").contains("contradict"), "{err:#}");
    }

    #[test]
    fn environment_overrides_the_file() {
        let file: HealthLayer = toml::from_str("rate_limit_secs = 5\ntimeout_secs = 7").unwrap();
        let env = |name: &str| (name == "RELAY_HEALTH_RATE_LIMIT_SECS").then(|| "9".to_owned());

        let merged = HealthLayer::from_env(&env)
            .unwrap()
            .unwrap()
            .over(Some(file))
            .settings()
            .unwrap();

        assert_eq!(merged.rate_limit, Duration::from_secs(9));
        assert_eq!(merged.timeout, Duration::from_secs(7));
    }
}
