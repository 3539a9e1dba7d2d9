//! One connection type for a single Redis and for Redis Cluster, so every
//! script and command is written once.

use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::cluster_async::ClusterConnection;
use redis::{Cmd, Pipeline, RedisFuture, Value};
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

impl ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Conn::Single(conn) => conn.req_packed_command(cmd),
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
            Conn::Single(conn) => conn.req_packed_commands(pipeline, offset, count),
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
