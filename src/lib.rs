//! claude-relay: a relay for the Anthropic Messages API in front of a pool
//! of upstream accounts.

pub mod admin;
pub mod app;
pub mod auth;
pub mod cli;
pub mod config;
pub mod error;
pub mod limits;
pub mod observe;
pub mod relay;
pub mod scheduler;
pub mod store;
pub mod telemetry;
pub mod upstream;
pub mod usage;

pub use app::{AppState, Application};
pub use config::Config;
