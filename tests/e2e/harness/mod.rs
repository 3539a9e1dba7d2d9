//! The end-to-end harness: a Redis container per run, and per test its own
//! key prefix, mock upstream and relay, all on 127.0.0.1 and port 0.

pub mod cluster;
pub mod env;
pub mod fixtures;
pub mod proxy;
pub mod raw;
pub mod redis;
pub mod snapshot;

pub use env::{TestEnv, TestResponse};
pub use mock_upstream::{Answer, Chunk, Profile};

/// Relay keys in the relay's own format. K1 is open, K2 allows only
/// Claude Code, K3 has a model allow-list.
pub const K1: &str = "cr_1111111111111111111111111111111111111111111111111111111111111111";
pub const K2: &str = "cr_2222222222222222222222222222222222222222222222222222222222222222";
pub const K3: &str = "cr_3333333333333333333333333333333333333333333333333333333333333333";

pub const SONNET: &str = "claude-sonnet-4-5-20250929";

/// A key prefix of its own for one test, so tests share Redis but no keys.
pub fn fresh_prefix() -> String {
    format!("t-{}:", &uuid::Uuid::new_v4().simple().to_string()[..12])
}

/// The upstream's answer in case C03 a: 4 input, 2455 cache-read and 23
/// output tokens, which cost 1093500 n$ on Sonnet 4.5.
pub fn case_c03_a() -> Answer {
    Answer::sse_standard(mock_upstream::SseStandard {
        input: 4,
        cache_read: 2455,
        output: 23,
        ..mock_upstream::SseStandard::default()
    })
}

/// The standard request body of the cases.
pub fn body(stream: bool) -> String {
    format!(
        r#"{{"model":"{SONNET}","max_tokens":64,"stream":{stream},"messages":[{{"role":"user","content":"hi"}}]}}"#
    )
}

/// Logs of the relay and the mock while tests run, when `TEST_LOG` is set
/// (to a filter such as `debug`, or to anything for `info`).
pub fn init_test_log() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        if let Ok(filter) = std::env::var("TEST_LOG") {
            let filter = tracing_subscriber::EnvFilter::try_new(&filter)
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
            let _ = tracing_subscriber::fmt()
                .with_env_filter(filter)
                .with_test_writer()
                .try_init();
        }
    });
}

/// A usage offset under which it is about noon now, so that no test meets
/// the end of a usage day (or of a week starting at midnight) while it runs.
pub fn midday_offset() -> time::UtcOffset {
    let hour = i8::try_from(time::OffsetDateTime::now_utc().hour()).unwrap_or(0);
    let shift = (12 - hour).rem_euclid(24);
    let shift = if shift > 12 { shift - 24 } else { shift };
    time::UtcOffset::from_hms(shift, 0, 0).expect("an offset within a day")
}

/// A small deterministic generator, so a failing run can be replayed with
/// its seed.
pub struct Lcg(pub u64);

impl Lcg {
    /// A number below `bound` (0 when `bound` is 0).
    pub fn next(&mut self, bound: usize) -> usize {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((self.0 >> 33) as usize) % bound.max(1)
    }
}
