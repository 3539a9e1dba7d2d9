//! A scriptable mock of the Anthropic Messages API.
//!
//! Tests start a [`MockUpstream`] on port 0, point the relay's accounts at its
//! [`url`](MockUpstream::url), script per-credential [`Answer`]s and assert on
//! the [`journal`](MockUpstream::journal) of what the upstream received.
//!
//! The credential (`x-api-key`, else `Authorization: Bearer`) selects a
//! [`Profile`]; an unknown or missing one gets Anthropic's 401. A queued answer
//! takes precedence over the profile, one answer per request, in order.
//!
//! Over HTTP, for a mock started from the binary:
//! - `POST /__mock/scenarios` `{"credential": "...", "answers": [Answer, ...]}`
//!   queues answers; `GET` lists pending counts; `DELETE` clears every queue.
//! - `GET /__mock/requests` lists the journal; `DELETE` clears it.
//! - `POST /__mock/profiles` `{"credential": "profile_name"}` sets profiles.
//! - `x-mock-status`, `x-mock-delay-ms` and `x-mock-body` request headers
//!   script a single request sent by hand.

mod answer;
pub mod anthropic;
mod api;
mod control;
mod in_flight;
mod journal;
mod profile;
mod respond;
mod scenarios;
mod server;
pub mod sse;
mod state;

pub use answer::{Answer, Chunk, SseStandard};
pub use anthropic::Usage;
pub use journal::RecordedRequest;
pub use profile::{MockConfig, Profile};
pub use server::MockUpstream;
