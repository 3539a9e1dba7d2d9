//! Operator tools: the CLI subcommands that read and write the store, and
//! the same as an HTTP API for dashboards and scripts.

pub mod accounts;
pub mod api;
mod health_view;
pub mod keys;
pub mod limits;
pub mod seed;

/// A secret that travels in a header (an account's credential, a relay
/// key) must be visible ASCII without spaces or line breaks: otherwise
/// every request that carries it fails.
pub fn check_header_secret(what: &str, secret: &str) -> anyhow::Result<()> {
    if secret.is_empty() {
        anyhow::bail!("the {what} is empty");
    }
    if let Some(bad) = secret.chars().find(|c| !c.is_ascii_graphic()) {
        anyhow::bail!(
            "the {what} holds {}, which cannot be sent in a header; it must be visible \
             ASCII without spaces or line breaks",
            match bad {
                '\n' | '\r' => "a line break".to_owned(),
                ' ' | '\t' => "a space".to_owned(),
                other => format!("the character {other:?}"),
            }
        );
    }
    Ok(())
}
