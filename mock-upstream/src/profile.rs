//! Built-in behaviours selected by the request's credential.

use std::collections::HashMap;
use std::path::Path;

use anyhow::Context;
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::answer::Answer;
use crate::journal::RecordedRequest;

/// How the mock treats a credential when no scripted answer is queued.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Profile {
    /// Answers normally.
    Ok,
    /// Another relay in front of the API whose key only admits Claude Code.
    ClientRestricted,
    /// An organisation that has been disabled.
    Banned,
    /// An account without credit.
    NoCredit,
}

/// Which profile each credential has when the mock starts.
#[derive(Clone, Debug, Default)]
pub struct MockConfig {
    pub profiles: HashMap<String, Profile>,
    /// Keep only the newest this many requests in the journal (`None`:
    /// all). A load test sets it so the mock's memory stays flat.
    pub journal_limit: Option<usize>,
}

impl MockConfig {
    /// Reads a JSON object mapping each credential to a profile name.
    pub fn from_profiles_file(path: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading profiles file {}", path.display()))?;
        let profiles = serde_json::from_str(&text)
            .with_context(|| format!("parsing profiles file {}", path.display()))?;
        Ok(Self {
            profiles,
            journal_limit: None,
        })
    }

    pub fn with_profile(mut self, credential: &str, profile: Profile) -> Self {
        self.profiles.insert(credential.to_owned(), profile);
        self
    }
}

/// The refusal a request gets from its credential's profile, if any.
pub(crate) fn refusal(profile: Option<Profile>, request: &RecordedRequest) -> Option<Answer> {
    let Some(profile) = profile else {
        return Some(unauthenticated(request));
    };
    match profile {
        Profile::Ok => None,
        Profile::ClientRestricted if is_claude_code(request.header("user-agent")) => None,
        Profile::ClientRestricted => Some(Answer::status(403).json(json!({
            "error": "Client not allowed",
            "message": "This key only accepts requests from Claude Code",
            "allowed_clients": ["claude_code"],
        }))),
        Profile::Banned => Some(Answer::error(
            403,
            "permission_error",
            "This organization has been disabled.",
        )),
        Profile::NoCredit => Some(Answer::error(
            400,
            "invalid_request_error",
            "Your credit balance is too low to access the Anthropic API. \
             Please go to Plans & Billing to upgrade or purchase credits.",
        )),
    }
}

fn unauthenticated(request: &RecordedRequest) -> Answer {
    let message = match request.credential {
        Some(_) => "invalid x-api-key",
        None => "x-api-key header is required",
    };
    Answer::error(401, "authentication_error", message)
}

/// `claude-cli/<version>` at the very start: a relay that checks the client
/// anchors the match, so `Mozilla/5.0 claude-cli/2.0.0` does not pass.
fn is_claude_code(user_agent: Option<&str>) -> bool {
    let Some(rest) = user_agent.and_then(|agent| agent.strip_prefix("claude-cli/")) else {
        return false;
    };
    let version = rest.split(' ').next().unwrap_or_default();
    !version.is_empty()
        && version
            .split('.')
            .all(|part| !part.is_empty() && part.bytes().all(|byte| byte.is_ascii_digit()))
}
