//! The limit and usage scripts on a three-node Redis Cluster: each script
//! touches only keys of one hash tag, so it runs on whichever node owns
//! that tag. A script that mixed slots would fail with CROSSSLOT.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use claude_relay::limits::admission::{self, Ask, BudgetPeriod, Decision, Refusal};
use claude_relay::limits::spec::{Budgets, Family, KeyLimits, RateWindow};
use claude_relay::limits::{lease, status};
use claude_relay::store::{Conn, KeyRecord, PickArg, PickReply, PickRequest, Store};
use claude_relay::usage::Usage;
use claude_relay::usage::record::{Recorder, Subject, UsageEvent};
use time::{OffsetDateTime, UtcOffset};

use crate::harness::{SONNET, cluster};

/// The node (by port) serving each slot range, from `CLUSTER NODES`.
async fn slot_owners(node: &str) -> Vec<(u16, u16, String)> {
    let client = redis::Client::open(node).expect("a node URL");
    let mut conn = client
        .get_multiplexed_async_connection()
        .await
        .expect("reaching a node");
    let text: String = redis::cmd("CLUSTER")
        .arg("NODES")
        .query_async(&mut conn)
        .await
        .expect("CLUSTER NODES");
    let mut owners = Vec::new();
    for line in text.lines() {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let address = fields[1].split('@').next().unwrap_or_default().to_owned();
        for range in &fields[8..] {
            let (start, end) = range.split_once('-').unwrap_or((range, range));
            owners.push((
                start.parse().expect("a slot number"),
                end.parse().expect("a slot number"),
                address.clone(),
            ));
        }
    }
    owners
}

async fn slot_of(node: &str, key: &str) -> u16 {
    let client = redis::Client::open(node).expect("a node URL");
    let mut conn = client
        .get_multiplexed_async_connection()
        .await
        .expect("reaching a node");
    redis::cmd("CLUSTER")
        .arg("KEYSLOT")
        .arg(key)
        .query_async(&mut conn)
        .await
        .expect("CLUSTER KEYSLOT")
}

/// Relay key ids whose hash tags live on three different nodes.
async fn keys_on_every_node(store: &Store, node: &str) -> Vec<String> {
    let owners = slot_owners(node).await;
    let mut by_node: HashMap<String, String> = HashMap::new();
    for i in 0..200 {
        let id = format!("key-{i}");
        let slot = slot_of(node, &store.names().key_tag(&id)).await;
        let owner = owners
            .iter()
            .find(|(start, end, _)| (*start..=*end).contains(&slot))
            .map(|(_, _, address)| address.clone())
            .expect("every slot is served");
        by_node.entry(owner).or_insert(id);
        if by_node.len() == 3 {
            break;
        }
    }
    by_node.into_values().collect()
}

fn limits() -> KeyLimits {
    KeyLimits {
        concurrency: 1,
        rate: Some(RateWindow {
            window_secs: 30 * 86_400,
            requests: 10,
            tokens: 1_000_000,
            cost_nano_usd: 1_000_000_000,
        }),
        budgets: Budgets {
            daily_nano_usd: 1_093_500,
            weekly_nano_usd: 50_000_000,
            total_nano_usd: 50_000_000,
        },
        family_budgets: [(
            Family::Sonnet,
            Budgets {
                weekly_nano_usd: 50_000_000,
                ..Budgets::default()
            },
        )]
        .into(),
        ..KeyLimits::default()
    }
}

/// The cluster's nodes, and a store and recorder on it under a prefix of
/// this test's own.
async fn on_the_cluster() -> (Vec<String>, Store, Recorder) {
    let nodes = cluster::nodes();
    let conn = Conn::cluster(&nodes)
        .await
        .expect("connecting to the cluster");
    let store = Store::from_conn(conn, &crate::harness::fresh_prefix());
    let recorder = Recorder::new(store.clone(), UtcOffset::UTC);
    (nodes, store, recorder)
}

fn ask<'a>(id: &'a str, limits: &'a KeyLimits, request_id: &'a str) -> Ask<'a> {
    Ask {
        key_id: id,
        limits,
        model: SONNET,
        request_id,
        lease_ttl: Duration::from_secs(60),
        offset: UtcOffset::UTC,
    }
}

#[tokio::test]
async fn limit_and_usage_scripts_are_slot_safe_on_a_three_node_cluster() {
    let (nodes, store, recorder) = on_the_cluster().await;
    let limits = limits();

    let ids = keys_on_every_node(&store, &nodes[0]).await;
    let mut slots = BTreeSet::new();
    for id in &ids {
        slots.insert(slot_of(&nodes[0], &store.names().key_tag(id)).await);
    }
    assert_eq!(ids.len(), 3, "relay keys on each of the three nodes");
    assert_eq!(slots.len(), 3);
    assert!(
        mixes_slots_fails(&store, &ids).await,
        "a script across two tags fails on the cluster"
    );

    for id in &ids {
        let first = admission::decide(&store, &ask(id, &limits, "req_1"))
            .await
            .unwrap();
        let second = admission::decide(&store, &ask(id, &limits, "req_2"))
            .await
            .unwrap();
        let Decision::Admitted(admission) = first else {
            panic!("{id}: the first request is admitted");
        };
        let (lease, take_back) = admission.split();
        let lease = lease.unwrap_or_else(|| panic!("{id}: the admission holds a lease"));
        let Decision::Refused(Refusal::Concurrency { in_use: 1, .. }) = second else {
            panic!("{id}: the second request waits for the first");
        };
        drop(lease);
        let set = store.names().leases(&store.names().key_tag(id));
        until_empty(&store, &set).await;
        // Taking the admission back runs the undo script: on the key's slot.
        let admitted = store.names().admitted(&store.names().key_tag(id), "req_1");
        take_back.run();
        until_gone(&store, &admitted).await;

        recorder.record(&case_a(id, &limits)).await.unwrap();

        let key = KeyRecord {
            limits: limits.clone(),
            ..KeyRecord::new(id, id, String::new())
        };
        let seen = status::read(&store, &key, UtcOffset::UTC).await.unwrap();
        assert_eq!(seen.today.requests, 1);
        assert_eq!(seen.today.cost_nano_usd, 1_093_500);
        assert_eq!(seen.spend_week["all"], 1_093_500);
        assert_eq!(seen.spend_week["sonnet"], 1_093_500);
        let window = seen.window.expect("the window");
        assert_eq!(
            window.used["requests"], 0,
            "the admitted request was taken back, the refused one never counted"
        );
        assert_eq!(window.used["tokens"], 4 + 2455 + 23);
        let third = admission::decide(&store, &ask(id, &limits, "req_3"))
            .await
            .unwrap();
        let Decision::Refused(Refusal::Budget {
            period: BudgetPeriod::Daily,
            used_nano_usd: 1_093_500,
            ..
        }) = third
        else {
            panic!("{id}: the daily budget is reached");
        };
    }
    let account = recorder
        .read(
            Subject::Account("acct-a"),
            &[claude_relay::usage::record::Period::Total],
        )
        .await
        .unwrap();
    assert_eq!(account[0].requests, 3);
}

/// A script over two keys' tags: what the relay's scripts must never be.
async fn mixes_slots_fails(store: &Store, ids: &[String]) -> bool {
    let names = store.names();
    let result: redis::RedisResult<i64> = redis::cmd("EVAL")
        .arg("redis.call('INCR', KEYS[1]); return redis.call('INCR', KEYS[2])")
        .arg(2)
        .arg(names.usage_tag(Subject::Key(&ids[0])))
        .arg(names.usage_tag(Subject::Key(&ids[1])))
        .query_async(&mut store.conn())
        .await;
    result
        .is_err_and(|err| err.kind() == redis::ErrorKind::Server(redis::ServerErrorKind::CrossSlot))
}

fn case_a(id: &str, limits: &KeyLimits) -> UsageEvent {
    UsageEvent {
        request_id: format!("req_1_{id}"),
        key_id: id.to_owned(),
        account_id: "acct-a".into(),
        model: SONNET.into(),
        requested_model: SONNET.into(),
        usage: Usage {
            input_tokens: 4,
            output_tokens: 23,
            cache_read_input_tokens: 2455,
            ..Usage::default()
        },
        cost_nano_usd: 1_093_500,
        at: OffsetDateTime::now_utc(),
        key_limits: Arc::new(limits.clone()),
    }
}

async fn until_empty(store: &Store, set: &str) {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !lease::live(&mut store.conn(), set)
        .await
        .expect("reading leases")
        .is_empty()
    {
        assert!(
            std::time::Instant::now() < deadline,
            "the lease was never released"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn until_gone(store: &Store, key: &str) {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let exists: bool = redis::cmd("EXISTS")
            .arg(key)
            .query_async(&mut store.conn())
            .await
            .expect("asking the cluster");
        if !exists {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{key} was never removed"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// The pick script reads account leases and the copy of each account's
/// spending under `{accounts}`, while the usage write that fills the copy
/// also touches the account's own tag: both run on the cluster.
#[tokio::test]
async fn account_leases_and_quotas_are_slot_safe_on_a_three_node_cluster() {
    let (nodes, store, recorder) = on_the_cluster().await;
    let names = store.names();
    let own_slot = slot_of(&nodes[0], &names.account_tag("acct-q")).await;
    let pick_slot = slot_of(&nodes[0], &names.accounts_version()).await;
    assert_ne!(
        own_slot, pick_slot,
        "the counters and the pick on two slots"
    );
    let at = OffsetDateTime::now_utc();
    let mut spent = case_a("acct-q-key", &KeyLimits::default());
    spent.account_id = "acct-q".into();
    spent.at = at;
    recorder.record(&spent).await.unwrap();
    let args = [
        PickArg {
            id: "acct-q",
            tier: 0,
            priority: 1,
            concurrency_limit: 0,
            daily_quota_nano_usd: 1_000_000,
        },
        PickArg {
            id: "acct-l",
            tier: 0,
            priority: 2,
            concurrency_limit: 1,
            daily_quota_nano_usd: 0,
        },
    ];
    let pick = |member| PickRequest {
        candidates: &args,
        sticky: None,
        lease: Some((member, Duration::from_secs(60))),
        day: at.date(),
    };

    let first = store.pick("*", &pick("req_1")).await.unwrap();
    let second = store.pick("*", &pick("req_2")).await.unwrap();

    let PickReply::Picked { chosen, seen, .. } = first else {
        panic!("stale without a version check");
    };
    assert_eq!(chosen.as_deref(), Some("acct-l"));
    assert!(seen[0].over_quota(), "{seen:?}");
    let PickReply::Picked { chosen, seen, .. } = second else {
        panic!("stale without a version check");
    };
    assert_eq!(chosen, None);
    assert!(seen[1].full(), "{seen:?}");
    let set = names.account_leases("acct-l");
    lease::release(&mut store.conn(), &set, "req_1")
        .await
        .unwrap();
    until_empty(&store, &set).await;
}
