//! Operator commands: the CLI subcommands that read and write the store.

pub mod limits;
pub mod seed;
