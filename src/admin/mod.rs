//! Operator commands: the CLI subcommands that write straight to the store.

pub mod accounts;
mod health_view;
pub mod keys;
pub mod seed;
