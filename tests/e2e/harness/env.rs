//! `TestEnv`: one test's relay, mock upstream and Redis prefix.

use std::net::SocketAddr;

use bytes::Bytes;
use clap::Parser;
use claude_relay::admin::seed::SeedFile;
use claude_relay::cli::{Cli, Command};
use claude_relay::store::cipher::generate_key;
use claude_relay::store::{Health, Store};
use claude_relay::usage::record::{Counters, Period, Recorder, Subject};
use claude_relay::{Application, Config};
use mock_upstream::{MockConfig, MockUpstream, Profile, RecordedRequest};
use reqwest::Method;
use reqwest::header::HeaderMap;
use serde_json::{Value, json};

use super::{K1, K2, K3};

type ConfigEdit = Box<dyn FnOnce(&mut Config) + Send>;

/// What a test wants before its relay starts.
pub struct Builder {
    accounts: Vec<Value>,
    keys: Vec<Value>,
    profiles: Vec<(String, Profile)>,
    edits: Vec<ConfigEdit>,
    seed: bool,
}

pub struct TestEnv {
    pub mock: MockUpstream,
    pub recorder: Recorder,
    /// The relay's store, for reading the state it left.
    pub store: Store,
    /// The configuration the relay runs with (secrets included).
    pub config: Config,
    relay: SocketAddr,
    http: reqwest::Client,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    /// More relays on the same Redis prefix: other instances.
    others: Vec<(SocketAddr, tokio::sync::oneshot::Sender<()>)>,
}

/// An answer read whole.
#[derive(Debug)]
pub struct TestResponse {
    pub status: u16,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl TestResponse {
    pub async fn read(response: reqwest::Response) -> TestResponse {
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let body = response.bytes().await.expect("reading the relay's answer");
        TestResponse {
            status,
            headers,
            body,
        }
    }

    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|err| panic!("answer is not JSON ({err}): {}", self.text()))
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|value| value.to_str().ok())
    }

    /// `error.code` of a relay error body.
    pub fn error_code(&self) -> String {
        self.json()["error"]["code"]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }
}

/// Account `A` (`sk-up-A`, priority 1) or `B` (`sk-up-B`, priority 2)
/// pointing at `${MOCK_URL}`.
pub fn account(name: &str, priority: u32) -> Value {
    json!({
        "id": format!("acct-{}", name.to_lowercase()),
        "name": name,
        "kind": "console",
        "base_url": "${MOCK_URL}",
        "credential": format!("sk-up-{name}"),
        "priority": priority,
        "schedulable": true,
    })
}

impl Builder {
    /// Only account A, and the keys K1, K2, K3.
    pub fn new() -> Builder {
        Builder {
            accounts: vec![account("A", 1)],
            keys: vec![
                json!({"id": "key-1", "name": "K1", "key": K1}),
                json!({"id": "key-2", "name": "K2", "key": K2, "allowed_clients": ["claude_code"]}),
                json!({"id": "key-3", "name": "K3", "key": K3,
                       "allowed_models": ["claude-haiku-4-5", "claude-sonnet-4-5"]}),
            ],
            profiles: vec![
                ("sk-up-A".into(), Profile::Ok),
                ("sk-up-B".into(), Profile::Ok),
            ],
            edits: Vec::new(),
            seed: true,
        }
    }

    /// Accounts A and B.
    pub fn two_accounts(mut self) -> Builder {
        self.accounts.push(account("B", 2));
        self
    }

    /// Replaces the accounts with these seed entries.
    pub fn accounts(mut self, accounts: Vec<Value>) -> Builder {
        self.accounts = accounts;
        self
    }

    /// Adds these fields (limits, typically) to key K1.
    pub fn k1(mut self, fields: Value) -> Builder {
        if let (Some(Value::Object(k1)), Value::Object(fields)) = (self.keys.first_mut(), fields) {
            k1.extend(fields);
        }
        self
    }

    pub fn key(mut self, key: Value) -> Builder {
        self.keys.push(key);
        self
    }

    pub fn profile(mut self, credential: &str, profile: Profile) -> Builder {
        self.profiles.push((credential.to_owned(), profile));
        self
    }

    pub fn config(mut self, edit: impl FnOnce(&mut Config) + Send + 'static) -> Builder {
        self.edits.push(Box::new(edit));
        self
    }

    /// Starts without writing the seed (for a relay whose Redis is down).
    pub async fn start_without_seed(mut self) -> TestEnv {
        self.seed = false;
        self.start().await
    }

    pub async fn start(self) -> TestEnv {
        super::init_test_log();
        let redis_url = super::redis::redis_url();
        let prefix = super::fresh_prefix();

        let mut mock_config = MockConfig::default();
        for (credential, profile) in self.profiles {
            mock_config = mock_config.with_profile(&credential, profile);
        }
        let mock = MockUpstream::start(mock_config)
            .await
            .expect("starting the mock upstream");

        let mut config = Config {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            ..Config::default()
        };
        config.redis.url = redis_url.into();
        config.redis.prefix = prefix;
        config.secrets.account_key = Some(generate_key().expect("a random account key"));
        for edit in self.edits {
            edit(&mut config);
        }
        let store = Store::connect(&config.redis).expect("connecting to Redis");

        if self.seed {
            let seed = json!({ "accounts": self.accounts, "keys": self.keys }).to_string();
            let mock_url = mock.url();
            let seed = SeedFile::parse(&seed, &|name| {
                (name == "MOCK_URL").then(|| mock_url.clone())
            })
            .expect("the test seed is valid");
            seed.apply(&store, &config.secrets)
                .await
                .expect("seeding Redis");
        }

        let (relay, recorder, stop) = start_relay(&config).await;

        TestEnv {
            mock,
            recorder,
            store,
            config,
            relay,
            http: reqwest::Client::builder()
                .no_proxy()
                .build()
                .expect("test HTTP client"),
            stop: Some(stop),
            others: Vec::new(),
        }
    }
}

async fn start_relay(config: &Config) -> (SocketAddr, Recorder, tokio::sync::oneshot::Sender<()>) {
    let app = Application::build(config.clone())
        .await
        .expect("building the relay");
    let relay = app.local_addr().expect("relay address");
    let recorder = app.recorder();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(app.run_until_stopped(async move {
        let _ = stopped.await;
    }));
    (relay, recorder, stop)
}

impl TestEnv {
    /// Account A, keys K1, K2, K3.
    pub async fn start() -> TestEnv {
        Builder::new().start().await
    }

    pub fn builder() -> Builder {
        Builder::new()
    }

    /// The relay's listening address.
    pub fn addr(&self) -> SocketAddr {
        self.relay
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.relay, path)
    }

    /// Starts another relay instance on the same Redis prefix; instance 0
    /// is the first one.
    pub async fn add_instance(&mut self) {
        let (relay, _, stop) = start_relay(&self.config).await;
        self.others.push((relay, stop));
    }

    /// How many relay instances run.
    pub fn instances(&self) -> usize {
        1 + self.others.len()
    }

    /// A Messages request to instance `index` (modulo the instances).
    pub fn messages_on(
        &self,
        index: usize,
        key: &str,
        body: impl Into<String>,
    ) -> reqwest::RequestBuilder {
        let addr = match index % self.instances() {
            0 => self.relay,
            other => self.others[other - 1].0,
        };
        self.http
            .post(format!("http://{addr}/v1/messages"))
            .header("content-type", "application/json")
            .header("anthropic-version", "2023-06-01")
            .header("x-api-key", key)
            .body(body.into())
    }

    /// The live concurrency leases of a key.
    pub async fn leases(&self, key_id: &str) -> Vec<(String, std::time::Duration)> {
        let names = self.store.names();
        self.live_leases(&names.leases(&names.key_tag(key_id)))
            .await
    }

    /// The live concurrency leases of an account.
    pub async fn account_leases(&self, account_id: &str) -> Vec<(String, std::time::Duration)> {
        self.live_leases(&self.store.names().account_leases(account_id))
            .await
    }

    async fn live_leases(&self, set: &str) -> Vec<(String, std::time::Duration)> {
        claude_relay::limits::lease::live(&mut self.store.conn(), set)
            .await
            .expect("reading leases")
    }

    /// Waits until a key holds no lease (releases run after the answer,
    /// off the client's path); fails after ten seconds.
    pub async fn until_no_leases(&self, key_id: &str) {
        let names = self.store.names();
        self.until_empty(&names.leases(&names.key_tag(key_id)))
            .await;
    }

    /// Waits until an account holds no lease; fails after ten seconds.
    pub async fn until_no_account_leases(&self, account_id: &str) {
        self.until_empty(&self.store.names().account_leases(account_id))
            .await;
    }

    async fn until_empty(&self, set: &str) {
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            let leases = self.live_leases(set).await;
            if leases.is_empty() {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "leases still held on {set}: {leases:?}"
            );
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
    }

    /// A request to the relay with no headers set.
    pub fn request(&self, method: Method, path: &str) -> reqwest::RequestBuilder {
        self.http.request(method, self.url(path))
    }

    /// A Messages request with the default headers of the cases.
    pub fn messages(&self, key: &str, body: impl Into<String>) -> reqwest::RequestBuilder {
        self.request(Method::POST, "/v1/messages")
            .header("content-type", "application/json")
            .header("anthropic-version", "2023-06-01")
            .header("x-api-key", key)
            .body(body.into())
    }

    pub async fn send(&self, request: reqwest::RequestBuilder) -> TestResponse {
        TestResponse::read(request.send().await.expect("sending to the relay")).await
    }

    pub async fn post_messages(&self, key: &str, body: impl Into<String>) -> TestResponse {
        self.send(self.messages(key, body)).await
    }

    /// Starts a stream through account A that takes six deltas 600 ms apart,
    /// and reads it until five have arrived: the stream, still running, and
    /// how long it has run.
    pub async fn long_stream(
        &self,
        key: &str,
    ) -> (
        impl futures::Stream<Item = reqwest::Result<Bytes>> + Unpin,
        std::time::Duration,
    ) {
        use futures::StreamExt;
        let deltas: Vec<String> = (0..6).map(|i| format!("w{i} ")).collect();
        self.mock.push_answers(
            "sk-up-A",
            vec![mock_upstream::Answer::sse_standard(
                mock_upstream::SseStandard {
                    deltas,
                    delta_pause_ms: 600,
                    ..mock_upstream::SseStandard::default()
                },
            )],
        );
        let started = std::time::Instant::now();
        let answer = self
            .messages(key, super::body(true))
            .send()
            .await
            .expect("sending");
        let mut stream = answer.bytes_stream();
        let mut seen = String::new();
        while seen.matches("event: content_block_delta").count() < 5 {
            let chunk = stream.next().await.expect("more events").expect("a chunk");
            seen.push_str(&String::from_utf8_lossy(&chunk));
        }
        (stream, started.elapsed())
    }

    /// All-time counters of `subject`.
    pub async fn total(&self, subject: Subject<'_>) -> Counters {
        self.recorder
            .read(subject, &[Period::Total])
            .await
            .expect("reading counters")[0]
    }

    /// Nothing reached the upstream and no key counted anything.
    pub async fn assert_untouched(&self) {
        assert!(self.mock.journal().is_empty(), "the upstream was reached");
        for key in ["key-1", "key-2", "key-3"] {
            let counted = self.settled_total(Subject::Key(key)).await;
            assert_eq!(counted, Counters::default(), "{key} counted usage");
        }
    }

    /// All-time counters of `subject` once no count is in flight.
    pub async fn settled_total(&self, subject: Subject<'_>) -> Counters {
        self.recorder
            .drain(std::time::Duration::from_secs(10))
            .await;
        self.total(subject).await
    }

    /// Waits until `subject` has counted `requests` requests (counting runs
    /// after the answer, off the client's path), then until no count is in
    /// flight, and returns its all-time counters.
    pub async fn usage_after(&self, subject: Subject<'_>, requests: u64) -> Counters {
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            let counters = self.total(subject).await;
            if counters.requests >= requests || tokio::time::Instant::now() > deadline {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        self.recorder
            .drain(std::time::Duration::from_secs(10))
            .await;
        self.total(subject).await
    }

    /// Runs `claude-relay keys ARGS` against this relay's store and returns
    /// what it printed.
    pub async fn keys_cli(&self, args: &[&str]) -> anyhow::Result<String> {
        let argv = ["claude-relay", "keys"].iter().chain(args);
        let cli = Cli::try_parse_from(argv)?;
        let Command::Keys { command } = cli.command else {
            anyhow::bail!("not a keys command");
        };
        let mut out = Vec::new();
        claude_relay::admin::keys::run(command, &self.config, &mut out).await?;
        Ok(String::from_utf8(out)?)
    }

    /// What the mock received with account `name`'s credential (`A`, `B`).
    pub fn seen_by(&self, name: &str) -> Vec<RecordedRequest> {
        self.mock.requests_for(&format!("sk-up-{name}"))
    }

    /// The health the relay left in Redis for account `name` (`acct-<name>`).
    pub async fn health(&self, name: &str) -> Health {
        let id = format!("acct-{}", name.to_lowercase());
        let today = time::OffsetDateTime::now_utc()
            .to_offset(self.config.usage_utc_offset)
            .date();
        let mut all = self
            .store
            .account_health(&[&id], today)
            .await
            .expect("reading account health");
        all.pop().expect("one row per account")
    }

    /// Runs `claude-relay accounts ...` against this relay's store and
    /// returns what it printed.
    pub async fn accounts_cli(&self, args: &[&str]) -> anyhow::Result<String> {
        use clap::Parser;
        let cli = claude_relay::cli::Cli::try_parse_from(
            ["claude-relay", "accounts"].iter().chain(args),
        )?;
        let claude_relay::cli::Command::Accounts { command } = cli.command else {
            anyhow::bail!("not an accounts command");
        };
        let mut out = Vec::new();
        claude_relay::admin::accounts::run(command, &self.store, &self.config, &mut out).await?;
        Ok(String::from_utf8_lossy(&out).into_owned())
    }
}

impl Drop for TestEnv {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        for (_, stop) in self.others.drain(..) {
            let _ = stop.send(());
        }
    }
}
