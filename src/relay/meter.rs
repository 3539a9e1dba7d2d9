//! Counts one relayed answer: the tap reads usage as bytes pass, and the
//! count is written exactly once, however the answer ends (complete, cut
//! by the upstream, or abandoned by the client).

use std::sync::Arc;

use time::OffsetDateTime;

use crate::limits::{KeyLimits, Lease};
use crate::observe::RequestLog;
use crate::usage::pricing::PriceTable;
use crate::usage::record::{Recorder, UsageEvent};
use crate::usage::tap::{Observed, UsageTap};

/// Who is billed for the answer.
pub struct Billing {
    pub recorder: Recorder,
    pub prices: Arc<PriceTable>,
    pub key_id: String,
    pub account_id: String,
    pub requested_model: String,
    pub key_limits: Arc<KeyLimits>,
}

/// Where the final count of an answer goes.
pub trait UsageSink: Send {
    fn count(self: Box<Self>, request_id: &str, observed: Observed);
}

pub struct Meter {
    tap: Option<UsageTap>,
    sink: Option<Box<dyn UsageSink>>,
    log: Arc<RequestLog>,
    /// Released when the count ends, which is when the answer ends.
    leases: Vec<Lease>,
}

impl Meter {
    /// `sink` is `None` for answers that are not billed as messages
    /// (count_tokens, models, errors).
    pub fn new(tap: UsageTap, sink: Option<Box<dyn UsageSink>>, log: Arc<RequestLog>) -> Meter {
        Meter {
            tap: Some(tap),
            sink,
            log,
            leases: Vec::new(),
        }
    }

    /// Holds the concurrency leases of the request (its key's, its
    /// account's) until the answer ends.
    pub fn holding(mut self, leases: impl IntoIterator<Item = Lease>) -> Meter {
        self.leases.extend(leases);
        self
    }

    pub fn is_sse(&self) -> bool {
        self.tap.as_ref().is_some_and(UsageTap::is_sse)
    }

    pub fn feed(&mut self, chunk: &[u8]) {
        if let Some(tap) = &mut self.tap {
            tap.feed(chunk);
        }
    }

    pub fn to_boundary(&self) -> &'static [u8] {
        self.tap.as_ref().map_or(b"", UsageTap::to_boundary)
    }

    pub fn saw_stop_or_error(&self) -> bool {
        self.tap.as_ref().is_some_and(UsageTap::saw_stop_or_error)
    }

    pub fn request_id(&self) -> &str {
        &self.log.request_id
    }

    pub fn log(&self) -> &RequestLog {
        &self.log
    }

    /// Ends the count and releases the leases; later calls do nothing.
    pub fn finish(&mut self, complete: bool) {
        // Released as this returns, after the usage count is on its way.
        let _leases = std::mem::take(&mut self.leases);
        let Some(tap) = self.tap.take() else { return };
        let observed = tap.finish(complete);
        self.log
            .set_tokens(observed.usage.input_tokens, observed.usage.output_tokens);
        if observed.unreadable > 0 {
            tracing::warn!(
                request_id = %self.log.request_id,
                unreadable = observed.unreadable,
                "parts of the answer could not be read for usage"
            );
        }
        if let Some(sink) = self.sink.take() {
            sink.count(&self.log.request_id, observed);
        }
    }
}

impl Drop for Meter {
    fn drop(&mut self) {
        self.finish(false);
    }
}

impl UsageSink for Billing {
    fn count(self: Box<Self>, request_id: &str, observed: Observed) {
        let Billing {
            recorder,
            prices,
            key_id,
            account_id,
            requested_model,
            key_limits,
        } = *self;
        let model = observed.model.unwrap_or_else(|| requested_model.clone());
        let cost = match prices.cost(&model, &observed.usage) {
            Some(cost) => cost,
            None => {
                tracing::warn!(
                    request_id,
                    model = model.as_str(),
                    "no price for this model; counted at zero cost"
                );
                0
            }
        };
        crate::telemetry::counted(&observed.usage, cost);
        recorder.spawn(UsageEvent {
            requested_model,
            request_id: request_id.to_owned(),
            key_id,
            account_id,
            model,
            usage: observed.usage,
            cost_nano_usd: cost,
            at: OffsetDateTime::now_utc(),
            key_limits,
        });
    }
}
