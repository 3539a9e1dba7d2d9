//! What an upstream answer says about the account that gave it, and
//! whether the request should try the next account. One table, decided
//! from the status, the rate-limit headers and, for 400 and 403 only, the
//! configured account-level markers: the one place where upstream text is
//! read.

use std::time::Duration;

use axum::http::{HeaderMap, StatusCode};
use serde::Deserialize;
use time::OffsetDateTime;

use crate::config::{HealthSettings, Marker};
use crate::store::records::{CooldownReason, HealthState};
use crate::upstream::SendError;

/// What the request does with an answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Give it to the client.
    Relay,
    /// Try the next account, after applying the effect to this one.
    NextAccount(Effect),
}

/// What happens to the account that answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Effect {
    Nothing,
    CoolDown {
        reason: CooldownReason,
        upstream_status: Option<u16>,
        duration: Duration,
    },
    /// Out of the pool until an operator acts.
    Hold {
        state: HealthState,
        upstream_status: u16,
        reason: String,
    },
}

/// Whether the verdict on this status depends on the body.
pub fn needs_body(status: StatusCode) -> bool {
    matches!(status.as_u16(), 400 | 403)
}

/// The verdict on an answer; `body` is read only for 400 and 403.
pub fn judge(
    status: StatusCode,
    headers: &HeaderMap,
    body: &[u8],
    settings: &HealthSettings,
    now: OffsetDateTime,
) -> Verdict {
    let code = status.as_u16();
    let cool = |reason, duration| Effect::CoolDown {
        reason,
        upstream_status: Some(code),
        duration,
    };
    let effect = match code {
        400 => match marker(&settings.markers, code, body) {
            Some(_) => cool(CooldownReason::OutOfCredit, settings.out_of_credit),
            None => return Verdict::Relay,
        },
        401 => Effect::Hold {
            state: HealthState::Unauthorized,
            upstream_status: code,
            reason: "the upstream refused the account's credential (401)".into(),
        },
        403 => match marker(&settings.markers, code, body) {
            Some(marker) => Effect::Hold {
                state: HealthState::Blocked,
                upstream_status: code,
                reason: format!(
                    "the upstream answered 403 {} \"{}\"",
                    marker.error_type, marker.message
                ),
            },
            // About the request or the client: the next account may differ.
            None => Effect::Nothing,
        },
        429 => cool(
            CooldownReason::RateLimited,
            rate_limit_cooldown(headers, settings, now),
        ),
        529 if settings.overloaded.is_zero() => Effect::Nothing,
        529 => cool(CooldownReason::Overloaded, settings.overloaded),
        503 => cool(CooldownReason::Unavailable, settings.unavailable),
        500..=599 => cool(CooldownReason::ServerError, settings.server_error),
        _ => return Verdict::Relay,
    };
    Verdict::NextAccount(effect)
}

/// The effect of an attempt that got no answer at all.
pub fn judge_failure(error: &SendError, settings: &HealthSettings) -> Effect {
    let (reason, duration) = match error {
        SendError::Timeout(_) => (CooldownReason::Timeout, settings.timeout),
        SendError::Connect(_) | SendError::Other(_) | SendError::BadUrl(_) => {
            (CooldownReason::Unreachable, settings.unreachable)
        }
    };
    Effect::CoolDown {
        reason,
        upstream_status: None,
        duration,
    }
}

#[derive(Deserialize)]
struct Envelope {
    error: ErrorPart,
}

#[derive(Deserialize)]
struct ErrorPart {
    #[serde(rename = "type", default)]
    kind: String,
    #[serde(default)]
    message: String,
}

/// The first marker the answer matches: same status, same error type,
/// the fragment anywhere in the message, case ignored.
fn marker<'a>(markers: &'a [Marker], status: u16, body: &[u8]) -> Option<&'a Marker> {
    let envelope: Envelope = serde_json::from_slice(body).ok()?;
    let message = envelope.error.message.to_lowercase();
    markers.iter().find(|marker| {
        marker.status == status
            && marker.error_type.eq_ignore_ascii_case(&envelope.error.kind)
            && message.contains(&marker.message.to_lowercase())
    })
}

/// `retry-after` (capped), else the rate-limit reset headers (capped),
/// else the configured default.
pub fn rate_limit_cooldown(
    headers: &HeaderMap,
    settings: &HealthSettings,
    now: OffsetDateTime,
) -> Duration {
    if let Some(after) = retry_after(headers, now) {
        return after.min(settings.retry_after_cap);
    }
    if let Some(reset) = reset_in(headers, now) {
        return reset.min(settings.reset_cap);
    }
    settings.rate_limit
}

/// Seconds, or an HTTP date.
fn retry_after(headers: &HeaderMap, now: OffsetDateTime) -> Option<Duration> {
    let text = headers.get("retry-after")?.to_str().ok()?.trim();
    if let Ok(secs) = text.parse::<f64>() {
        // `try_`: a value past what a Duration holds (the upstream's
        // mistake) is too long, not a reason to fail; the cap applies.
        return (secs.is_finite() && secs >= 0.0)
            .then(|| Duration::try_from_secs_f64(secs).unwrap_or(Duration::MAX));
    }
    let format = time::macros::format_description!(
        "[weekday repr:short], [day] [month repr:short] [year] [hour]:[minute]:[second] GMT"
    );
    let at = time::PrimitiveDateTime::parse(text, format)
        .ok()?
        .assume_utc();
    until(at, now)
}

/// `anthropic-ratelimit-unified-reset` when it is there (the subscription
/// limit that blocked the account), else the earliest future
/// `anthropic-ratelimit-*-reset`: a reset later than that may belong to a
/// limit that is not the one exhausted, and would lock the account for
/// longer than needed.
fn reset_in(headers: &HeaderMap, now: OffsetDateTime) -> Option<Duration> {
    let resets = headers.iter().filter_map(|(name, value)| {
        let name = name.as_str();
        let limit = name
            .strip_prefix("anthropic-ratelimit-")?
            .strip_suffix("-reset")?;
        let at = reset_time(value.to_str().ok()?.trim())?;
        Some((limit == "unified", until(at, now)?))
    });
    let mut earliest: Option<Duration> = None;
    for (unified, left) in resets {
        if unified {
            return Some(left);
        }
        earliest = Some(earliest.map_or(left, |known| known.min(left)));
    }
    earliest
}

/// Epoch seconds (the unified header) or an RFC 3339 time (the others).
fn reset_time(text: &str) -> Option<OffsetDateTime> {
    if text.bytes().all(|b| b.is_ascii_digit()) {
        let secs = text.parse::<i64>().ok()?;
        return OffsetDateTime::from_unix_timestamp(secs).ok();
    }
    OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339).ok()
}

fn until(at: OffsetDateTime, now: OffsetDateTime) -> Option<Duration> {
    let left = at - now;
    left.is_positive()
        .then(|| Duration::try_from(left).ok())
        .flatten()
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;
    use serde_json::json;
    use time::macros::datetime;

    const NOW: OffsetDateTime = datetime!(2026-12-04 12:00:00 UTC);

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.insert(*name, HeaderValue::from_str(value).unwrap());
        }
        map
    }

    fn error(kind: &str, message: &str) -> Vec<u8> {
        json!({"type": "error", "error": {"type": kind, "message": message}})
            .to_string()
            .into_bytes()
    }

    fn verdict(status: u16, pairs: &[(&'static str, &str)], body: &[u8]) -> Verdict {
        let status = StatusCode::from_u16(status).unwrap();
        judge(
            status,
            &headers(pairs),
            body,
            &HealthSettings::default(),
            NOW,
        )
    }

    fn cooldown(verdict: Verdict) -> (CooldownReason, Duration) {
        match verdict {
            Verdict::NextAccount(Effect::CoolDown {
                reason, duration, ..
            }) => (reason, duration),
            other => panic!("not a cooldown: {other:?}"),
        }
    }

    #[test]
    fn request_errors_pass_through_and_success_is_relayed() {
        for status in [200, 201, 400, 404, 413, 422] {
            assert_eq!(
                verdict(
                    status,
                    &[],
                    &error("invalid_request_error", "prompt is too long")
                ),
                Verdict::Relay,
                "{status}"
            );
        }
    }

    #[test]
    fn credit_balance_too_low_takes_the_account_out_for_an_hour() {
        let body = error(
            "invalid_request_error",
            "Your credit balance is too low to access the Anthropic API.",
        );

        let (reason, duration) = cooldown(verdict(400, &[], &body));

        assert_eq!(reason, CooldownReason::OutOfCredit);
        assert_eq!(duration, Duration::from_secs(3600));
    }

    #[test]
    fn only_a_403_with_a_marker_holds_the_account() {
        let banned = verdict(
            403,
            &[],
            &error("permission_error", "This Organization has been DISABLED."),
        );
        let request = verdict(
            403,
            &[],
            &error(
                "permission_error",
                "Your organization may not use this model.",
            ),
        );
        let not_json = verdict(403, &[], b"Client not allowed");

        assert!(matches!(
            banned,
            Verdict::NextAccount(Effect::Hold {
                state: HealthState::Blocked,
                ..
            })
        ));
        assert_eq!(request, Verdict::NextAccount(Effect::Nothing));
        assert_eq!(not_json, Verdict::NextAccount(Effect::Nothing));
    }

    #[test]
    fn a_401_marks_the_account_unauthorized_without_upstream_text() {
        let echoed = error("authentication_error", "invalid x-api-key: sk-up-A");

        let Verdict::NextAccount(Effect::Hold { state, reason, .. }) = verdict(401, &[], &echoed)
        else {
            panic!("a 401 holds the account");
        };

        assert_eq!(state, HealthState::Unauthorized);
        assert!(!reason.contains("sk-up-A"));
    }

    #[test]
    fn server_errors_cool_down_by_kind_and_529_does_not() {
        assert_eq!(
            cooldown(verdict(500, &[], b"")),
            (CooldownReason::ServerError, Duration::from_secs(300))
        );
        assert_eq!(
            cooldown(verdict(503, &[], b"")),
            (CooldownReason::Unavailable, Duration::from_secs(60))
        );
        assert_eq!(
            verdict(529, &[], b""),
            Verdict::NextAccount(Effect::Nothing)
        );
    }

    #[test]
    fn rate_limits_follow_retry_after_then_reset_headers_then_the_default() {
        let unified = (NOW.unix_timestamp() + 3600).to_string();
        let cases: [(&[(&'static str, &str)], u64); 9] = [
            (&[("retry-after", "20")], 20),
            (&[("retry-after", "99999")], 1800),
            (&[("retry-after", "99999999999999999999")], 1800),
            (&[("retry-after", "1e300")], 1800),
            (&[("retry-after", "Fri, 04 Dec 2026 12:00:45 GMT")], 45),
            (&[("anthropic-ratelimit-unified-reset", &unified)], 3600),
            (
                &[
                    ("anthropic-ratelimit-requests-reset", "2026-12-04T12:00:30Z"),
                    ("anthropic-ratelimit-tokens-reset", "2026-12-04T12:02:00Z"),
                ],
                30,
            ),
            (
                &[("anthropic-ratelimit-tokens-reset", "2027-12-04T12:00:00Z")],
                18000,
            ),
            (
                &[("anthropic-ratelimit-requests-reset", "2026-12-04T11:00:00Z")],
                60,
            ),
        ];
        for (pairs, secs) in cases {
            let (reason, duration) = cooldown(verdict(429, pairs, b""));
            assert_eq!(reason, CooldownReason::RateLimited);
            assert_eq!(duration, Duration::from_secs(secs), "{pairs:?}");
        }
        assert_eq!(cooldown(verdict(429, &[], b"")).1, Duration::from_secs(60));
    }
}
