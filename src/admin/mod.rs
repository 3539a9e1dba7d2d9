//! Operator commands: the CLI subcommands that read and write the store.

pub mod accounts;
mod health_view;
pub mod keys;
pub mod limits;
pub mod seed;
