//! One connection type for a single Redis and for Redis Cluster, so every
//! script and command is written once.

use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::cluster_async::ClusterConnection;
use std::future::Future;
use std::time::{Duration, Instant};

use redis::{Cmd, ErrorKind, Pipeline, RedisError, RedisFuture, ServerErrorKind, Value};
use secrecy::ExposeSecret;

use crate::config::RedisSettings;

#[derive(Clone)]
pub enum Conn {
    Single(ConnectionManager),
    Cluster(ClusterConnection),
}

impl Conn {
    /// A single-node connection that is established on first use and
    /// re-established after failures, with bounded waits so a Redis outage
    /// turns into a quick `store_unavailable` instead of a hung request.
    pub fn lazy(settings: &RedisSettings) -> anyhow::Result<Conn> {
        let client = redis::Client::open(settings.url.expose_secret())
            .map_err(|err| anyhow::anyhow!("invalid Redis URL: {:?}", err.kind()))?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(settings.connect_timeout))
            .set_response_timeout(Some(settings.response_timeout))
            .set_number_of_retries(1)
            .set_max_delay(std::time::Duration::from_millis(500));
        Ok(Conn::Single(ConnectionManager::new_lazy_with_config(
            client, config,
        )?))
    }

    /// A connection to a Redis Cluster through any of its nodes.
    pub async fn cluster(nodes: &[String]) -> anyhow::Result<Conn> {
        let client = redis::cluster::ClusterClient::new(nodes.to_vec())?;
        Ok(Conn::Cluster(client.get_async_connection().await?))
    }
}

/// How long a command is retried while Redis loads its data after a
/// restart (it answers `LOADING` meanwhile).
const LOADING_PATIENCE: Duration = Duration::from_secs(2);
const LOADING_PAUSE: Duration = Duration::from_millis(100);

/// Commands that change nothing, and so may be sent twice.
const READS: &[&[u8]] = &[
    b"GET",
    b"MGET",
    b"HGET",
    b"HMGET",
    b"HGETALL",
    b"HEXISTS",
    b"EXISTS",
    b"PING",
    b"PTTL",
    b"TTL",
    b"ZRANGE",
    b"ZRANGEBYSCORE",
    b"ZSCORE",
    b"ZCARD",
    b"SMEMBERS",
    b"SCARD",
    b"TYPE",
];

fn is_read(cmd: &Cmd) -> bool {
    match cmd.args_iter().next() {
        Some(redis::Arg::Simple(name)) => READS.iter().any(|read| read.eq_ignore_ascii_case(name)),
        _ => false,
    }
}

/// Whether to send the command again, on a connection made anew. A
/// connection found dead (Redis restarted while this instance was idle)
/// fails the first command sent on it, and the manager reconnects: a read
/// is worth one more try. Scripts and writes are not: the dead connection
/// may have carried them to Redis before it died, and running them twice
/// would count twice (a request refused with 503 takes its admission
/// back instead). A Redis still loading its data refused the command
/// unrun, which any command is worth trying again until it is ready.
fn retry_after(err: &RedisError, read: bool, tries: u32, since: Instant) -> Option<Duration> {
    let dropped = (err.is_connection_dropped() || err.is_connection_refusal()) && !err.is_timeout();
    if dropped && read && tries == 1 {
        return Some(Duration::ZERO);
    }
    let loading = err.kind() == ErrorKind::Server(ServerErrorKind::BusyLoading);
    (loading && since.elapsed() < LOADING_PATIENCE).then_some(LOADING_PAUSE)
}

/// Runs `send` until it succeeds or [`retry_after`] says to stop.
async fn with_retries<T, F>(read: bool, mut send: impl FnMut() -> F) -> redis::RedisResult<T>
where
    F: Future<Output = redis::RedisResult<T>>,
{
    let since = Instant::now();
    let mut tries = 0;
    loop {
        tries += 1;
        match send().await {
            Err(err) => match retry_after(&err, read, tries, since) {
                Some(pause) => tokio::time::sleep(pause).await,
                None => return Err(err),
            },
            answer => return answer,
        }
    }
}

impl ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Conn::Single(conn) => Box::pin(with_retries(is_read(cmd), move || {
                let mut conn = conn.clone();
                async move { conn.req_packed_command(cmd).await }
            })),
            Conn::Cluster(conn) => conn.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Conn::Single(conn) => {
                Box::pin(with_retries(pipeline.cmd_iter().all(is_read), move || {
                    let mut conn = conn.clone();
                    async move { conn.req_packed_commands(pipeline, offset, count).await }
                }))
            }
            Conn::Cluster(conn) => conn.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Conn::Single(conn) => conn.get_db(),
            Conn::Cluster(conn) => conn.get_db(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn io(kind: std::io::ErrorKind) -> RedisError {
        std::io::Error::from(kind).into()
    }

    #[test]
    fn a_read_on_a_dead_connection_is_tried_once_more_and_nothing_else_is() {
        let now = Instant::now();
        let dead = io(std::io::ErrorKind::BrokenPipe);
        let refused = io(std::io::ErrorKind::ConnectionRefused);
        let timed_out = io(std::io::ErrorKind::TimedOut);

        assert_eq!(retry_after(&dead, true, 1, now), Some(Duration::ZERO));
        assert_eq!(retry_after(&refused, true, 1, now), Some(Duration::ZERO));
        assert_eq!(retry_after(&dead, true, 2, now), None);
        assert_eq!(
            retry_after(&dead, false, 1, now),
            None,
            "scripts and writes: never"
        );
        assert_eq!(retry_after(&timed_out, true, 1, now), None);
        assert!(is_read(redis::cmd("HGET").arg("k").arg("f")));
        assert!(!is_read(redis::cmd("EVALSHA").arg("abc").arg(0)));
        assert!(!is_read(redis::cmd("HINCRBY").arg("k").arg("f").arg(1)));
    }

    #[test]
    fn a_loading_redis_is_waited_for_within_the_patience() {
        let loading: RedisError =
            (ErrorKind::Server(ServerErrorKind::BusyLoading), "LOADING").into();
        let long_ago = Instant::now() - LOADING_PATIENCE - Duration::from_millis(1);

        assert_eq!(
            retry_after(&loading, false, 3, Instant::now()),
            Some(LOADING_PAUSE)
        );
        assert_eq!(retry_after(&loading, false, 3, long_ago), None);
    }
}
