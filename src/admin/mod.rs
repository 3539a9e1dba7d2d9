//! Operator commands: the CLI subcommands that write straight to the store.

pub mod keys;
pub mod seed;
