//! Talking to upstream accounts: which headers cross the relay in each
//! direction, and sending one attempt with the configured timeouts.

pub mod client;
pub mod headers;

pub use client::{SendError, UpstreamClient};
