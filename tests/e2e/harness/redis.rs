//! One Redis container per test binary, from the locally built image.
//!
//! The container lives in a thread of its own for the whole run (a static
//! is never dropped), so `scripts/test.sh` removes the containers labelled
//! with its run id when it exits, and each test process first removes
//! containers of test processes that are gone.

use std::sync::OnceLock;

use testcontainers::core::{IntoContainerPort, WaitFor};
use testcontainers::runners::AsyncRunner;
use testcontainers::{GenericImage, ImageExt};

pub const LABEL: &str = "claude-relay-test";
const DEFAULT_IMAGE: &str = "claude-relay-redis:local";

static REDIS: OnceLock<Result<String, String>> = OnceLock::new();

/// The image to start: `TEST_REDIS_IMAGE`, else the local build.
pub fn image_name() -> String {
    std::env::var("TEST_REDIS_IMAGE").unwrap_or_else(|_| DEFAULT_IMAGE.to_owned())
}

/// `redis://127.0.0.1:<mapped port>` of this run's container. Panics with
/// one sentence naming the fix when no engine or no image is there.
pub fn redis_url() -> String {
    match REDIS.get_or_init(start_in_background) {
        Ok(url) => url.clone(),
        Err(message) => panic!("{message}"),
    }
}

fn start_in_background() -> Result<String, String> {
    remove_orphans();
    hold_for_the_run("Redis", start)
}

/// Runs `start` on a runtime of its own, in a thread that lives for the
/// whole run: what it starts (containers) is held there and never
/// dropped. Returns what `start` reported.
pub fn hold_for_the_run<T, Held, Fut>(
    what: &'static str,
    start: impl FnOnce() -> Fut + Send + 'static,
) -> Result<T, String>
where
    T: Send + 'static,
    Held: 'static,
    Fut: std::future::Future<Output = Result<(Held, T), String>> + 'static,
{
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let runtime = match tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        {
            Ok(runtime) => runtime,
            Err(err) => {
                let _ = tx.send(Err(format!("cannot start a runtime for {what}: {err}")));
                return;
            }
        };
        runtime.block_on(async move {
            match start().await {
                Ok((held, reported)) => {
                    let _ = tx.send(Ok(reported));
                    let _keep = held;
                    std::future::pending::<()>().await;
                }
                Err(message) => {
                    let _ = tx.send(Err(message));
                }
            }
        });
    });
    rx.recv()
        .unwrap_or_else(|_| Err(format!("the thread starting {what} died")))
}

/// The labels of every test container: what `scripts/test.sh` and
/// `remove_orphans` find them by. The host label keeps one machine's tests
/// from touching another's containers on a shared engine.
pub fn test_labels() -> [(String, String); 4] {
    [
        (LABEL.to_owned(), "1".to_owned()),
        (format!("{LABEL}.pid"), std::process::id().to_string()),
        (
            format!("{LABEL}.run"),
            std::env::var("TEST_RUN_ID").unwrap_or_default(),
        ),
        (format!("{LABEL}.host"), host()),
    ]
}

fn host() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|name| name.trim().to_owned())
        .unwrap_or_default()
}

/// Checks the engine and the image before anything is started, so a
/// missing image is reported at once and never sent to a registry.
pub fn preflight(image: &str) -> Result<(), String> {
    let output = std::process::Command::new("docker")
        .args(["image", "inspect", "--format", "{{.Id}}", image])
        .output()
        .map_err(|err| {
            format!("No docker command ({err}): install Docker, then run scripts/test.sh.")
        })?;
    if output.status.success() {
        return Ok(());
    }
    let said = String::from_utf8_lossy(&output.stderr);
    if said.contains("No such image") {
        Err(format!(
            "The Redis image {image} is missing: run scripts/build-redis-image.sh, \
             or set TEST_REDIS_IMAGE to an image that exists."
        ))
    } else {
        Err(format!(
            "No Docker engine answered ({}): start a Docker engine, then run scripts/test.sh.",
            said.trim()
        ))
    }
}

async fn start() -> Result<(testcontainers::ContainerAsync<GenericImage>, String), String> {
    let image = image_name();
    preflight(&image)?;
    let (name, tag) = image.rsplit_once(':').unwrap_or((image.as_str(), "latest"));
    let container = GenericImage::new(name, tag)
        .with_exposed_port(6379.tcp())
        .with_wait_for(WaitFor::message_on_stdout("Ready to accept connections"))
        .with_labels(test_labels())
        .with_host_config_modifier(publish_on_loopback_only)
        .start()
        .await
        .map_err(|err| explain(&image, &err))?;
    let port = container
        .get_host_port_ipv4(6379)
        .await
        .map_err(|err| format!("Redis container started but its port is unknown: {err}"))?;
    Ok((container, format!("redis://127.0.0.1:{port}")))
}

/// Publishes the Redis port on 127.0.0.1 alone (a free port picked by the
/// engine), not on every interface: the test Redis has no password.
fn publish_on_loopback_only(host: &mut testcontainers::bollard::models::HostConfig) {
    use testcontainers::bollard::models::PortBinding;
    host.publish_all_ports = Some(false);
    host.port_bindings = Some(
        [(
            "6379/tcp".to_owned(),
            Some(vec![PortBinding {
                host_ip: Some("127.0.0.1".to_owned()),
                host_port: Some(String::new()),
            }]),
        )]
        .into(),
    );
}

fn explain(image: &str, err: &testcontainers::TestcontainersError) -> String {
    let text = err.to_string();
    if text.contains("docker client") || text.contains("Socket not found") {
        format!(
            "No Docker engine answered ({text}): start a Docker engine, then run scripts/test.sh."
        )
    } else if text.contains("pull") || text.contains("No such image") {
        format!(
            "The Redis image {image} is missing ({text}): run scripts/build-redis-image.sh, \
             or set TEST_REDIS_IMAGE to an image that exists."
        )
    } else {
        format!("The Redis container {image} did not start: {text}")
    }
}

/// Removes this machine's test containers whose test process no longer
/// runs.
pub fn remove_orphans() {
    let Ok(output) = std::process::Command::new("docker")
        .args(["ps", "-a", "--filter", &format!("label={LABEL}")])
        .args(["--filter", &format!("label={LABEL}.host={}", host())])
        .args([
            "--format",
            &format!("{{{{.ID}}}} {{{{.Label \"{LABEL}.pid\"}}}}"),
        ])
        .output()
    else {
        return;
    };
    for line in String::from_utf8_lossy(&output.stdout).lines() {
        let Some((id, pid)) = line.split_once(' ') else {
            continue;
        };
        let alive = pid
            .parse::<u32>()
            .is_ok_and(|pid| std::path::Path::new(&format!("/proc/{pid}")).exists());
        if !alive {
            let _ = std::process::Command::new("docker")
                .args(["rm", "-f", id])
                .output();
        }
    }
}
