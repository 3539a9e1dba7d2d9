//! End-to-end tests: relay, mock upstream and a real Redis.
#![expect(
    clippy::expect_used,
    clippy::panic,
    reason = "test harness: a step that fails fails the test, with its message"
)]

mod harness;

mod admission;
mod auth;
mod binaries;
mod budgets;
mod clients;
mod cluster;
mod concurrency;
mod failover;
mod forwarding;
mod smoke;
mod streaming;
mod usage;
