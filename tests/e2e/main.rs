//! End-to-end tests: relay, mock upstream and a real Redis.
#![expect(
    clippy::expect_used,
    clippy::panic,
    reason = "test harness: a step that fails fails the test, with its message"
)]

mod harness;

mod account_health;
mod account_limits;
mod accounts_cli;
mod admin_api;
mod admission;
mod auth;
mod bad_input;
pub mod binaries;
mod budgets;
mod clients;
mod cluster;
mod concurrency;
mod failover;
mod fault_matrix;
mod forwarding;
mod keys;
mod models;
mod pick_script;
mod rate_limits;
mod robustness;
mod selection;
mod smoke;
mod sticky;
mod store_watch;
mod streaming;
mod usage;
