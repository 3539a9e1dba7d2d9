//! Layered configuration: defaults, then a TOML file, then `RELAY_*`
//! environment variables, each layer overriding the one below. Parsed once
//! into validated types; secrets come only from the environment or files.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use anyhow::{Context, bail};
use secrecy::SecretString;
use serde::Deserialize;
use time::UtcOffset;
use time::format_description::well_known::Rfc3339;

use crate::auth::clients::ClientRule;

mod scheduling;
pub use scheduling::{HealthLayer, HealthSettings, Marker, SchedulingLayer, SchedulingSettings};

const MIB: usize = 1024 * 1024;

/// The validated configuration the relay runs with.
#[derive(Debug, Clone)]
pub struct Config {
    pub listen: SocketAddr,
    pub redis: RedisSettings,
    pub body_limit_bytes: usize,
    pub upstream: UpstreamSettings,
    /// Client kinds a key may be restricted to, built-ins first.
    pub clients: Vec<ClientRule>,
    /// What `GET /v1/models` lists when no account can answer it.
    pub models: Vec<ListedModel>,
    /// Largest total size of a request's headers the relay reads.
    pub header_limit_bytes: usize,
    pub log_format: LogFormat,
    pub shutdown_grace: Duration,
    /// How long a client may take to send its request's headers, and may
    /// stay silent while sending its body.
    pub client_timeout: Duration,
    pub secrets: Secrets,
    /// Prices per model; the built-in table when unset.
    pub pricing_file: Option<PathBuf>,
    /// Where usage days start: UTC plus this offset.
    pub usage_utc_offset: UtcOffset,
    pub scheduling: SchedulingSettings,
    pub health: HealthSettings,
    pub limits: LimitSettings,
}

#[derive(Debug, Clone)]
pub struct LimitSettings {
    /// How long a concurrency lease lives unless refreshed; a running
    /// request refreshes it every third of this.
    pub lease_ttl: Duration,
    /// How long a key record is reused in process; zero reads it every time.
    pub key_cache_ttl: Duration,
    /// Requests of one key that may wait for a slot in one process at once.
    pub wait_queue_limit: usize,
}

#[derive(Debug, Clone)]
pub struct RedisSettings {
    pub url: SecretString,
    pub prefix: String,
    pub connect_timeout: Duration,
    pub response_timeout: Duration,
}

#[derive(Debug, Clone)]
pub struct UpstreamSettings {
    pub connect_timeout: Duration,
    pub first_byte_timeout: Duration,
    pub idle_timeout: Duration,
    pub max_attempts: usize,
    /// Request header names forwarded on top of the built-in allow-list.
    pub extra_forward_headers: Vec<String>,
}

#[derive(Debug, Clone, Default)]
pub struct Secrets {
    pub key_pepper: Option<SecretString>,
    pub admin_token: Option<SecretString>,
    pub account_key: Option<SecretString>,
    pub plaintext_credentials: bool,
}

/// A model in the configured list: an id, or a table with the id, a
/// display name and a creation time (RFC 3339).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(try_from = "ModelSpec")]
pub struct ListedModel {
    pub id: String,
    pub display_name: String,
    pub created_at: String,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum ModelSpec {
    Id(String),
    Full(ModelTable),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ModelTable {
    id: String,
    display_name: Option<String>,
    created_at: Option<String>,
}

impl TryFrom<ModelSpec> for ListedModel {
    type Error = String;

    fn try_from(spec: ModelSpec) -> Result<ListedModel, String> {
        let (id, display_name, created_at) = match spec {
            ModelSpec::Id(id) => (id, None, None),
            ModelSpec::Full(table) => (table.id, table.display_name, table.created_at),
        };
        if id.trim().is_empty() {
            return Err("a listed model needs an id".into());
        }
        let created_at = match created_at {
            Some(text) => {
                time::OffsetDateTime::parse(&text, &Rfc3339)
                    .map_err(|err| format!("model {id}: created_at {text:?}: {err}"))?;
                text
            }
            None => snapshot_date(&id).unwrap_or_else(|| "1970-01-01T00:00:00Z".into()),
        };
        Ok(ListedModel {
            display_name: display_name.unwrap_or_else(|| id.clone()),
            id,
            created_at,
        })
    }
}

/// `2025-09-29T00:00:00Z` for `claude-sonnet-4-5-20250929`.
fn snapshot_date(id: &str) -> Option<String> {
    let family = crate::auth::models::family(id);
    let date = id.get(family.len() + 1..).filter(|_| family != id)?;
    Some(format!(
        "{}-{}-{}T00:00:00Z",
        &date[..4],
        &date[4..6],
        &date[6..]
    ))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LogFormat {
    Text,
    Json,
}

impl FromStr for LogFormat {
    type Err = anyhow::Error;
    fn from_str(s: &str) -> anyhow::Result<Self> {
        match s {
            "text" => Ok(LogFormat::Text),
            "json" => Ok(LogFormat::Json),
            other => bail!("log format must be `text` or `json`, not `{other}`"),
        }
    }
}

/// One layer of settings, as written in the TOML file or the environment.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Layer {
    pub listen: Option<SocketAddr>,
    pub redis_url: Option<String>,
    pub redis_prefix: Option<String>,
    pub redis_connect_timeout_ms: Option<u64>,
    pub redis_response_timeout_ms: Option<u64>,
    pub body_limit_mb: Option<usize>,
    pub upstream_connect_timeout_secs: Option<u64>,
    pub upstream_first_byte_timeout_secs: Option<u64>,
    pub upstream_idle_timeout_secs: Option<u64>,
    pub max_attempts: Option<usize>,
    pub forward_headers: Option<Vec<String>>,
    pub log_format: Option<LogFormat>,
    pub shutdown_grace_secs: Option<u64>,
    pub client_timeout_secs: Option<u64>,
    pub plaintext_credentials: Option<bool>,
    pub pricing_file: Option<PathBuf>,
    /// `+HH:MM` or `-HH:MM`.
    pub usage_utc_offset: Option<String>,
    /// Extra client kinds (name + matchers), added to the built-in ones.
    pub clients: Option<Vec<ClientRule>>,
    pub models: Option<Vec<ListedModel>>,
    pub header_limit_kb: Option<usize>,
    pub scheduling: Option<SchedulingLayer>,
    pub health: Option<HealthLayer>,
    pub lease_ttl_secs: Option<u64>,
    pub key_cache_ttl_ms: Option<u64>,
    pub wait_queue_limit: Option<usize>,
}

impl Layer {
    pub fn from_toml_file(path: &Path) -> anyhow::Result<Layer> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading config file {}", path.display()))?;
        toml::from_str(&text).with_context(|| format!("parsing config file {}", path.display()))
    }

    /// Reads `RELAY_*` variables through `var` (the process environment in
    /// production, a map in tests).
    pub fn from_env(var: &dyn Fn(&str) -> Option<String>) -> anyhow::Result<Layer> {
        let mut layer = Layer::default();
        set(&mut layer.listen, var, "RELAY_LISTEN")?;
        set(&mut layer.redis_url, var, "RELAY_REDIS_URL")?;
        set(&mut layer.redis_prefix, var, "RELAY_REDIS_PREFIX")?;
        set(
            &mut layer.redis_connect_timeout_ms,
            var,
            "RELAY_REDIS_CONNECT_TIMEOUT_MS",
        )?;
        set(
            &mut layer.redis_response_timeout_ms,
            var,
            "RELAY_REDIS_RESPONSE_TIMEOUT_MS",
        )?;
        set(&mut layer.body_limit_mb, var, "RELAY_BODY_LIMIT_MB")?;
        set(
            &mut layer.upstream_connect_timeout_secs,
            var,
            "RELAY_UPSTREAM_CONNECT_TIMEOUT_SECS",
        )?;
        set(
            &mut layer.upstream_first_byte_timeout_secs,
            var,
            "RELAY_UPSTREAM_FIRST_BYTE_TIMEOUT_SECS",
        )?;
        set(
            &mut layer.upstream_idle_timeout_secs,
            var,
            "RELAY_UPSTREAM_IDLE_TIMEOUT_SECS",
        )?;
        set(&mut layer.max_attempts, var, "RELAY_MAX_ATTEMPTS")?;
        set(&mut layer.log_format, var, "RELAY_LOG_FORMAT")?;
        set(
            &mut layer.shutdown_grace_secs,
            var,
            "RELAY_SHUTDOWN_GRACE_SECS",
        )?;
        set(
            &mut layer.client_timeout_secs,
            var,
            "RELAY_CLIENT_TIMEOUT_SECS",
        )?;
        set(
            &mut layer.plaintext_credentials,
            var,
            "RELAY_PLAINTEXT_CREDENTIALS",
        )?;
        set(&mut layer.pricing_file, var, "RELAY_PRICING_FILE")?;
        set(&mut layer.usage_utc_offset, var, "RELAY_USAGE_UTC_OFFSET")?;
        set(&mut layer.lease_ttl_secs, var, "RELAY_LEASE_TTL_SECS")?;
        set(&mut layer.key_cache_ttl_ms, var, "RELAY_KEY_CACHE_TTL_MS")?;
        set(&mut layer.wait_queue_limit, var, "RELAY_WAIT_QUEUE_LIMIT")?;
        if let Some(list) = var("RELAY_FORWARD_HEADERS") {
            layer.forward_headers = Some(split_list(&list));
        }
        if let Some(list) = var("RELAY_MODELS") {
            let models = split_list(&list).into_iter().map(ModelSpec::Id);
            let models = models.map(ListedModel::try_from).collect::<Result<_, _>>();
            layer.models = Some(models.map_err(|err| anyhow::anyhow!("RELAY_MODELS: {err}"))?);
        }
        set(&mut layer.header_limit_kb, var, "RELAY_HEADER_LIMIT_KB")?;
        layer.scheduling = SchedulingLayer::from_env(var)?;
        layer.health = HealthLayer::from_env(var)?;
        Ok(layer)
    }

    /// `self` over `below`: a value set here wins.
    fn over(self, below: Layer) -> Layer {
        Layer {
            listen: self.listen.or(below.listen),
            redis_url: self.redis_url.or(below.redis_url),
            redis_prefix: self.redis_prefix.or(below.redis_prefix),
            redis_connect_timeout_ms: self
                .redis_connect_timeout_ms
                .or(below.redis_connect_timeout_ms),
            redis_response_timeout_ms: self
                .redis_response_timeout_ms
                .or(below.redis_response_timeout_ms),
            body_limit_mb: self.body_limit_mb.or(below.body_limit_mb),
            upstream_connect_timeout_secs: self
                .upstream_connect_timeout_secs
                .or(below.upstream_connect_timeout_secs),
            upstream_first_byte_timeout_secs: self
                .upstream_first_byte_timeout_secs
                .or(below.upstream_first_byte_timeout_secs),
            upstream_idle_timeout_secs: self
                .upstream_idle_timeout_secs
                .or(below.upstream_idle_timeout_secs),
            max_attempts: self.max_attempts.or(below.max_attempts),
            forward_headers: self.forward_headers.or(below.forward_headers),
            log_format: self.log_format.or(below.log_format),
            shutdown_grace_secs: self.shutdown_grace_secs.or(below.shutdown_grace_secs),
            client_timeout_secs: self.client_timeout_secs.or(below.client_timeout_secs),
            plaintext_credentials: self.plaintext_credentials.or(below.plaintext_credentials),
            pricing_file: self.pricing_file.or(below.pricing_file),
            usage_utc_offset: self.usage_utc_offset.or(below.usage_utc_offset),
            clients: self.clients.or(below.clients),
            models: self.models.or(below.models),
            header_limit_kb: self.header_limit_kb.or(below.header_limit_kb),
            scheduling: over(self.scheduling, below.scheduling, SchedulingLayer::over),
            health: over(self.health, below.health, HealthLayer::over),
            lease_ttl_secs: self.lease_ttl_secs.or(below.lease_ttl_secs),
            key_cache_ttl_ms: self.key_cache_ttl_ms.or(below.key_cache_ttl_ms),
            wait_queue_limit: self.wait_queue_limit.or(below.wait_queue_limit),
        }
    }
}

/// Merges two optional tables field by field, `upper` winning.
fn over<T>(upper: Option<T>, below: Option<T>, merge: fn(T, Option<T>) -> T) -> Option<T> {
    match upper {
        Some(upper) => Some(merge(upper, below)),
        None => below,
    }
}

fn set<T>(
    slot: &mut Option<T>,
    var: &dyn Fn(&str) -> Option<String>,
    name: &str,
) -> anyhow::Result<()>
where
    T: FromStr,
    T::Err: std::fmt::Display,
{
    if let Some(raw) = var(name) {
        let value = raw
            .trim()
            .parse()
            .map_err(|err| anyhow::anyhow!("{name}={raw:?} is not valid: {err}"))?;
        *slot = Some(value);
    }
    Ok(())
}

fn split_list(list: &str) -> Vec<String> {
    list.split(',')
        .map(str::trim)
        .filter(|item| !item.is_empty())
        .map(str::to_owned)
        .collect()
}

/// Every `RELAY_*` name the relay reads; anything else under the prefix is
/// a typo and refused.
const KNOWN_VARS: &[&str] = &[
    "RELAY_LISTEN",
    "RELAY_REDIS_URL",
    "RELAY_REDIS_PREFIX",
    "RELAY_REDIS_CONNECT_TIMEOUT_MS",
    "RELAY_REDIS_RESPONSE_TIMEOUT_MS",
    "RELAY_BODY_LIMIT_MB",
    "RELAY_UPSTREAM_CONNECT_TIMEOUT_SECS",
    "RELAY_UPSTREAM_FIRST_BYTE_TIMEOUT_SECS",
    "RELAY_UPSTREAM_IDLE_TIMEOUT_SECS",
    "RELAY_MAX_ATTEMPTS",
    "RELAY_FORWARD_HEADERS",
    "RELAY_LOG_FORMAT",
    "RELAY_SHUTDOWN_GRACE_SECS",
    "RELAY_CLIENT_TIMEOUT_SECS",
    "RELAY_PLAINTEXT_CREDENTIALS",
    "RELAY_MODELS",
    "RELAY_HEADER_LIMIT_KB",
    "RELAY_PRICING_FILE",
    "RELAY_USAGE_UTC_OFFSET",
    "RELAY_LEASE_TTL_SECS",
    "RELAY_KEY_CACHE_TTL_MS",
    "RELAY_WAIT_QUEUE_LIMIT",
    "RELAY_CONFIG",
    "RELAY_ACCOUNT_KEY",
    "RELAY_ACCOUNT_KEY_FILE",
    "RELAY_KEY_PEPPER",
    "RELAY_KEY_PEPPER_FILE",
    "RELAY_ADMIN_TOKEN",
    "RELAY_ADMIN_TOKEN_FILE",
];

fn known_var(name: &str) -> bool {
    KNOWN_VARS.contains(&name) || scheduling::ENV_VARS.contains(&name)
}

impl Config {
    /// Defaults < `file` < the process environment.
    pub fn load(file: Option<&Path>) -> anyhow::Result<Config> {
        let unknown: Vec<String> = std::env::vars()
            .map(|(name, _)| name)
            .filter(|name| name.starts_with("RELAY_") && !known_var(name))
            .collect();
        if !unknown.is_empty() {
            bail!(
                "unknown settings in the environment: {}",
                unknown.join(", ")
            );
        }
        let env = |name: &str| std::env::var(name).ok();
        let file_layer = match file {
            Some(path) => Layer::from_toml_file(path)?,
            None => Layer::default(),
        };
        let layer = Layer::from_env(&env)?.over(file_layer);
        Config::from_layer(layer, Secrets::from_env(&env)?)
    }

    /// Applies defaults and checks the result.
    pub fn from_layer(layer: Layer, secrets: Secrets) -> anyhow::Result<Config> {
        let defaults = Config::default();
        let body_limit_bytes = match layer.body_limit_mb {
            Some(0) => bail!("body_limit_mb must be at least 1"),
            Some(mb) => mb.checked_mul(MIB).context("body_limit_mb is too large")?,
            None => defaults.body_limit_bytes,
        };
        let header_limit_bytes = match layer.header_limit_kb {
            Some(0) => bail!("header_limit_kb must be at least 1"),
            Some(kb) => kb
                .checked_mul(1024)
                .context("header_limit_kb is too large")?,
            None => defaults.header_limit_bytes,
        };
        let max_attempts = layer.max_attempts.unwrap_or(defaults.upstream.max_attempts);
        if max_attempts == 0 {
            bail!("max_attempts must be at least 1");
        }
        let mut clients = defaults.clients;
        for rule in layer.clients.unwrap_or_default() {
            if clients.iter().any(|known| known.name == rule.name) {
                bail!("client kind `{}` is defined twice", rule.name);
            }
            clients.push(rule);
        }
        let redis = RedisSettings {
            url: layer
                .redis_url
                .map(SecretString::from)
                .unwrap_or(defaults.redis.url),
            prefix: layer.redis_prefix.unwrap_or(defaults.redis.prefix),
            connect_timeout: millis_or(
                layer.redis_connect_timeout_ms,
                defaults.redis.connect_timeout,
            ),
            response_timeout: millis_or(
                layer.redis_response_timeout_ms,
                defaults.redis.response_timeout,
            ),
        };
        let upstream = UpstreamSettings {
            connect_timeout: secs_or(
                layer.upstream_connect_timeout_secs,
                defaults.upstream.connect_timeout,
            ),
            first_byte_timeout: secs_or(
                layer.upstream_first_byte_timeout_secs,
                defaults.upstream.first_byte_timeout,
            ),
            idle_timeout: secs_or(
                layer.upstream_idle_timeout_secs,
                defaults.upstream.idle_timeout,
            ),
            max_attempts,
            extra_forward_headers: layer
                .forward_headers
                .unwrap_or_default()
                .into_iter()
                .map(|name| name.to_ascii_lowercase())
                .collect(),
        };
        for name in &upstream.extra_forward_headers {
            if let Some(reason) = crate::upstream::headers::refused_extra(name) {
                bail!("forward_headers: `{name}` cannot be forwarded: {reason}");
            }
        }
        if layer.client_timeout_secs == Some(0) {
            bail!("client_timeout_secs must be at least 1");
        }
        if layer.lease_ttl_secs == Some(0) {
            bail!("lease_ttl_secs must be at least 1");
        }
        let limits = LimitSettings {
            lease_ttl: secs_or(layer.lease_ttl_secs, defaults.limits.lease_ttl),
            key_cache_ttl: millis_or(layer.key_cache_ttl_ms, defaults.limits.key_cache_ttl),
            wait_queue_limit: layer
                .wait_queue_limit
                .unwrap_or(defaults.limits.wait_queue_limit),
        };
        let mut secrets = secrets;
        secrets.plaintext_credentials = layer
            .plaintext_credentials
            .unwrap_or(secrets.plaintext_credentials);
        // Fails here, at start-up, on a malformed key or a contradiction.
        crate::store::cipher::CredentialCipher::from_secrets(&secrets)?;
        let scheduling = layer.scheduling.unwrap_or_default().settings()?;
        let health = layer.health.unwrap_or_default().settings()?;
        Ok(Config {
            listen: layer.listen.unwrap_or(defaults.listen),
            redis,
            body_limit_bytes,
            upstream,
            clients,
            models: layer.models.unwrap_or_default(),
            header_limit_bytes,
            log_format: layer.log_format.unwrap_or(defaults.log_format),
            shutdown_grace: secs_or(layer.shutdown_grace_secs, defaults.shutdown_grace),
            client_timeout: secs_or(layer.client_timeout_secs, defaults.client_timeout),
            secrets,
            pricing_file: layer.pricing_file,
            usage_utc_offset: match layer.usage_utc_offset {
                Some(text) => parse_offset(&text)?,
                None => defaults.usage_utc_offset,
            },
            scheduling,
            health,
            limits,
        })
    }
}

fn parse_offset(text: &str) -> anyhow::Result<UtcOffset> {
    let format = time::macros::format_description!("[offset_hour sign:mandatory]:[offset_minute]");
    UtcOffset::parse(text.trim(), &format).map_err(|_| {
        anyhow::anyhow!("usage_utc_offset {text:?} is not an offset such as +00:00 or -05:30")
    })
}

fn secs_or(value: Option<u64>, default: Duration) -> Duration {
    value.map(Duration::from_secs).unwrap_or(default)
}

fn millis_or(value: Option<u64>, default: Duration) -> Duration {
    value.map(Duration::from_millis).unwrap_or(default)
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            redis: RedisSettings {
                url: SecretString::from("redis://127.0.0.1:6379"),
                prefix: "relay:".into(),
                connect_timeout: Duration::from_secs(2),
                response_timeout: Duration::from_secs(2),
            },
            body_limit_bytes: 32 * MIB,
            upstream: UpstreamSettings {
                connect_timeout: Duration::from_secs(10),
                first_byte_timeout: Duration::from_secs(600),
                idle_timeout: Duration::from_secs(300),
                max_attempts: 3,
                extra_forward_headers: Vec::new(),
            },
            clients: ClientRule::builtin(),
            models: Vec::new(),
            header_limit_bytes: 32 * 1024,
            log_format: LogFormat::Text,
            shutdown_grace: Duration::from_secs(30),
            client_timeout: Duration::from_secs(60),
            secrets: Secrets::default(),
            pricing_file: None,
            usage_utc_offset: UtcOffset::UTC,
            scheduling: SchedulingSettings::default(),
            health: HealthSettings::default(),
            limits: LimitSettings {
                lease_ttl: Duration::from_secs(60),
                key_cache_ttl: Duration::from_secs(2),
                wait_queue_limit: 32,
            },
        }
    }
}

impl Secrets {
    /// Each secret from `RELAY_<NAME>` or the file named by
    /// `RELAY_<NAME>_FILE` (trailing newline trimmed), never both.
    pub fn from_env(var: &dyn Fn(&str) -> Option<String>) -> anyhow::Result<Secrets> {
        Ok(Secrets {
            key_pepper: secret(var, "RELAY_KEY_PEPPER")?,
            admin_token: secret(var, "RELAY_ADMIN_TOKEN")?,
            account_key: secret(var, "RELAY_ACCOUNT_KEY")?,
            plaintext_credentials: false,
        })
    }
}

fn secret(
    var: &dyn Fn(&str) -> Option<String>,
    name: &str,
) -> anyhow::Result<Option<SecretString>> {
    let file_var = format!("{name}_FILE");
    match (var(name), var(&file_var)) {
        (Some(_), Some(_)) => bail!("set {name} or {file_var}, not both"),
        (Some(value), None) => Ok(Some(SecretString::from(value))),
        (None, Some(path)) => {
            let path = PathBuf::from(path);
            let value = std::fs::read_to_string(&path)
                .with_context(|| format!("reading {file_var} ({})", path.display()))?;
            Ok(Some(SecretString::from(
                value.trim_end_matches(['\n', '\r']).to_owned(),
            )))
        }
        (None, None) => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &'static [(&'static str, &'static str)]) -> impl Fn(&str) -> Option<String> {
        move |name| {
            pairs
                .iter()
                .find(|(key, _)| *key == name)
                .map(|(_, value)| (*value).to_owned())
        }
    }

    #[test]
    fn listed_models_are_ids_or_tables() {
        let layer: Layer = toml::from_str(
            r#"models = [
                "claude-sonnet-4-5-20250929",
                "claude-sonnet-4-5",
                { id = "m", display_name = "M", created_at = "2025-01-02T03:04:05Z" },
            ]"#,
        )
        .unwrap();

        let config = Config::from_layer(layer, Secrets::default()).unwrap();

        let shown: Vec<(&str, &str, &str)> = config
            .models
            .iter()
            .map(|m| {
                (
                    m.id.as_str(),
                    m.display_name.as_str(),
                    m.created_at.as_str(),
                )
            })
            .collect();
        assert_eq!(
            shown,
            [
                (
                    "claude-sonnet-4-5-20250929",
                    "claude-sonnet-4-5-20250929",
                    "2025-09-29T00:00:00Z"
                ),
                (
                    "claude-sonnet-4-5",
                    "claude-sonnet-4-5",
                    "1970-01-01T00:00:00Z"
                ),
                ("m", "M", "2025-01-02T03:04:05Z"),
            ]
        );
    }

    #[test]
    fn listed_models_with_a_bad_time_or_unknown_field_are_refused() {
        for text in [
            r#"models = [{ id = "m", created_at = "yesterday" }]"#,
            r#"models = [{ id = "m", colour = "red" }]"#,
            r#"models = [""]"#,
        ] {
            assert!(toml::from_str::<Layer>(text).is_err(), "{text}");
        }
    }

    #[test]
    fn models_and_header_limit_come_from_the_environment() {
        let vars = env(&[
            ("RELAY_MODELS", "claude-haiku-4-5-20251001, claude-opus-4-5"),
            ("RELAY_HEADER_LIMIT_KB", "64"),
        ]);

        let layer = Layer::from_env(&vars).unwrap();
        let config = Config::from_layer(layer, Secrets::default()).unwrap();

        let ids: Vec<&str> = config.models.iter().map(|m| m.id.as_str()).collect();
        assert_eq!(ids, ["claude-haiku-4-5-20251001", "claude-opus-4-5"]);
        assert_eq!(config.header_limit_bytes, 64 * 1024);
        assert_eq!(Config::default().header_limit_bytes, 32 * 1024);
    }

    #[test]
    fn forwarding_a_credential_or_connection_header_is_refused() {
        for name in [
            "Authorization",
            "x-api-key",
            "cookie",
            "host",
            "content-length",
        ] {
            let layer = Layer {
                forward_headers: Some(vec!["x-team".into(), name.into()]),
                ..Layer::default()
            };

            let refused = Config::from_layer(layer, Secrets::default()).unwrap_err();

            let message = refused.to_string();
            assert!(message.contains(&name.to_ascii_lowercase()), "{message}");
        }
        let allowed = Layer {
            forward_headers: Some(vec!["X-Team".into()]),
            ..Layer::default()
        };
        let config = Config::from_layer(allowed, Secrets::default()).unwrap();
        assert_eq!(config.upstream.extra_forward_headers, ["x-team"]);
    }

    #[test]
    fn a_header_limit_of_zero_is_refused() {
        let layer = Layer {
            header_limit_kb: Some(0),
            ..Layer::default()
        };

        assert!(Config::from_layer(layer, Secrets::default()).is_err());
    }
}
