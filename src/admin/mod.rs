//! Operator tools: the CLI subcommands that read and write the store, and
//! the same as an HTTP API for dashboards and scripts.

pub mod accounts;
pub mod api;
mod health_view;
pub mod keys;
pub mod limits;
pub mod seed;
