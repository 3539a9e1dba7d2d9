//! A three-node Redis Cluster in containers from the same local image,
//! started once per test binary on first use. The nodes use host
//! networking and announce 127.0.0.1 with their own port, so every
//! redirect the client follows stays on loopback (mapped ports would
//! announce addresses the host cannot reach).
//!
//! The containers are labelled like the single Redis (`redis::LABEL`), so
//! `scripts/test.sh` removes them when the run ends.

use std::net::TcpListener;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use testcontainers::core::{ExecCommand, WaitFor};
use testcontainers::runners::AsyncRunner;
use testcontainers::{ContainerAsync, GenericImage, ImageExt};

use super::redis::{image_name, test_labels};

static CLUSTER: OnceLock<Result<Vec<u16>, String>> = OnceLock::new();

/// `redis://127.0.0.1:<port>` of each node. Panics with the cause when the
/// cluster does not come up.
pub fn nodes() -> Vec<String> {
    match CLUSTER.get_or_init(start_in_background) {
        Ok(ports) => ports
            .iter()
            .map(|port| format!("redis://127.0.0.1:{port}"))
            .collect(),
        Err(message) => panic!("{message}"),
    }
}

fn start_in_background() -> Result<Vec<u16>, String> {
    // Nodes left by dead test processes would hold ports for nothing.
    super::redis::remove_orphans();
    super::redis::hold_for_the_run("the cluster", start)
}

type Node = ContainerAsync<GenericImage>;

async fn start() -> Result<(Vec<Node>, Vec<u16>), String> {
    let ports = free_ports(3)?;
    let mut containers = Vec::new();
    for port in &ports {
        containers.push(start_node(*port).await?);
    }
    let mut create = vec!["redis-cli".to_owned(), "--cluster".into(), "create".into()];
    create.extend(ports.iter().map(|port| format!("127.0.0.1:{port}")));
    create.extend(["--cluster-replicas", "0", "--cluster-yes"].map(str::to_owned));
    let mut created = containers[0]
        .exec(ExecCommand::new(create))
        .await
        .map_err(|err| format!("redis-cli --cluster create did not run: {err}"))?;
    let output = created.stdout_to_vec().await.unwrap_or_default();
    let output = String::from_utf8_lossy(&output).into_owned();
    if !output.contains("All 16384 slots covered") {
        return Err(format!("redis-cli --cluster create failed:\n{output}"));
    }
    for port in &ports {
        wait_until_ok(*port).await?;
    }
    Ok((containers, ports))
}

async fn start_node(port: u16) -> Result<Node, String> {
    let image = image_name();
    let (name, tag) = image.rsplit_once(':').unwrap_or((image.as_str(), "latest"));
    let port_text = port.to_string();
    let config_file = format!("nodes-{port}.conf");
    GenericImage::new(name, tag)
        .with_wait_for(WaitFor::message_on_stdout("Ready to accept connections"))
        .with_network("host")
        .with_cmd([
            "/usr/bin/redis-server",
            "--port",
            &port_text,
            "--bind",
            "127.0.0.1",
            "--protected-mode",
            "no",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            "/data",
            "--cluster-enabled",
            "yes",
            "--cluster-config-file",
            &config_file,
            "--cluster-announce-ip",
            "127.0.0.1",
        ])
        .with_labels(test_labels())
        .start()
        .await
        .map_err(|err| {
            format!(
                "The Redis Cluster node on port {port} ({image}, host networking) did not \
                 start: {err}. Run scripts/build-redis-image.sh; the engine must offer host \
                 networking."
            )
        })
}

/// Ports free for a node and for its cluster bus (port + 10000).
fn free_ports(count: usize) -> Result<Vec<u16>, String> {
    let seed = u64::from(std::process::id())
        ^ std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |now| u64::from(now.subsec_nanos()));
    let mut ports = Vec::new();
    for offset in 0..2000u64 {
        let port = 20_000 + u16::try_from((seed + offset * 7) % 10_000).unwrap_or(0);
        let free = |port: u16| TcpListener::bind(("127.0.0.1", port)).is_ok();
        if !ports.contains(&port) && free(port) && free(port + 10_000) {
            ports.push(port);
            if ports.len() == count {
                return Ok(ports);
            }
        }
    }
    Err("no free ports for a Redis Cluster between 20000 and 39999".to_owned())
}

/// Waits until the node reports every slot served.
async fn wait_until_ok(port: u16) -> Result<(), String> {
    let deadline = Instant::now() + Duration::from_secs(30);
    let client = redis::Client::open(format!("redis://127.0.0.1:{port}"))
        .map_err(|err| format!("node {port}: {err}"))?;
    loop {
        let info = async {
            let mut conn = client.get_multiplexed_async_connection().await?;
            redis::cmd("CLUSTER")
                .arg("INFO")
                .query_async::<String>(&mut conn)
                .await
        };
        match info.await {
            Ok(info) if info.contains("cluster_state:ok") => return Ok(()),
            Ok(_) | Err(_) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Ok(info) => return Err(format!("node {port} never became ready:\n{info}")),
            Err(err) => return Err(format!("node {port} never answered: {err}")),
        }
    }
}
