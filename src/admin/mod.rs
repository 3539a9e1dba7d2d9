//! Operator commands: the CLI subcommands that write straight to the store.

pub mod seed;
