//! The mock upstream's behaviour, observed over real HTTP.

mod binary;
mod journal;
mod profiles;
mod scenarios;
mod streaming;
mod support;
