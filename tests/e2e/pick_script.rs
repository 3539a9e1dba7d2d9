//! The pick script chooses the first account inside Redis; the pure
//! `scheduler::order` orders the rest. Both must apply one rule, so this
//! drives the real script with random account states (health, last use,
//! leases against a concurrency limit, spending against a daily quota)
//! and compares.

use std::sync::Arc;
use std::time::Duration;

use claude_relay::limits::{KeyLimits, lease};
use claude_relay::scheduler::order::{Ranked, order};
use claude_relay::store::records::{AccountStatus, Cooldown, CooldownReason, HealthState};
use claude_relay::store::{PickArg, PickReply, PickRequest, Seen, Store};
use claude_relay::usage::Usage;
use claude_relay::usage::record::{Recorder, UsageEvent};
use proptest::prelude::*;
use proptest::test_runner::{Config as ProptestConfig, TestRunner};
use time::{OffsetDateTime, UtcOffset};

const IDS: [&str; 5] = ["a1", "a2", "a3", "a4", "a5"];
const QUOTA: u64 = 1_000_000;
const MEMBER: &str = "req_pick";

#[derive(Debug, Clone)]
struct Account {
    tier: u8,
    priority: u32,
    /// 0 usable, 1 cooling, 2 held.
    state: u8,
    concurrency_limit: u32,
    /// Leases other requests hold.
    leases: u64,
    quota: u64,
    spent: u64,
}

#[derive(Debug, Clone)]
struct Case {
    accounts: Vec<Account>,
    /// The order in which accounts were last used, oldest first.
    used: Vec<usize>,
    sticky: Option<usize>,
    /// Whether the request takes a lease (a Messages request).
    leased: bool,
}

fn account() -> impl Strategy<Value = Account> {
    (
        (
            0u8..2,
            0u32..3,
            prop_oneof![4 => Just(0u8), 1 => Just(1u8), 1 => Just(2u8)],
        ),
        (0u32..3, 0u64..4),
        (
            prop_oneof![Just(0), Just(QUOTA)],
            prop_oneof![Just(0), Just(QUOTA - 1), Just(QUOTA), Just(2 * QUOTA)],
        ),
    )
        .prop_map(
            |((tier, priority, state), (concurrency_limit, leases), (quota, spent))| Account {
                tier,
                priority,
                state,
                concurrency_limit,
                leases,
                quota,
                spent,
            },
        )
}

fn cases() -> impl Strategy<Value = Case> {
    proptest::collection::vec(account(), 1..=IDS.len()).prop_flat_map(|accounts| {
        let n = accounts.len();
        let used = proptest::sample::subsequence((0..n).collect::<Vec<_>>(), 0..=n).prop_shuffle();
        let sticky = proptest::option::of(0..n);
        (Just(accounts), used, sticky, any::<bool>()).prop_map(
            |(accounts, used, sticky, leased)| Case {
                accounts,
                used,
                sticky,
                leased,
            },
        )
    })
}

async fn arrange(store: &Store, case: &Case, at: OffsetDateTime) {
    for &i in &case.used {
        store
            .mark_served(IDS[i], None)
            .await
            .expect("marking a use");
        // Distinct scores: the script's clock has millisecond steps.
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    if let Some(i) = case.sticky {
        // Also a use of that account; the comparison reads what the script saw.
        let ttl = Duration::from_secs(60);
        store
            .mark_served(IDS[i], Some(("conv", ttl)))
            .await
            .expect("mapping the conversation");
    }
    for (i, account) in case.accounts.iter().enumerate() {
        arrange_health(store, IDS[i], account.state).await;
        arrange_load(store, IDS[i], account, at).await;
    }
}

async fn arrange_health(store: &Store, id: &str, state: u8) {
    match state {
        1 => {
            let cooldown = Cooldown {
                reason: CooldownReason::RateLimited,
                upstream_status: Some(429),
                since: 0,
            };
            let _ = store
                .cool_down(id, &cooldown, Duration::from_secs(60))
                .await
                .expect("a cooldown");
        }
        2 => {
            let status = AccountStatus {
                state: HealthState::Unauthorized,
                upstream_status: 401,
                reason: "test".into(),
                since: 0,
            };
            store
                .set_account_status(id, &status)
                .await
                .expect("a status");
        }
        _ => {}
    }
}

/// Leases held by other requests, and spending counted the way the relay
/// counts an answer.
async fn arrange_load(store: &Store, id: &str, account: &Account, at: OffsetDateTime) {
    let set = store.names().account_leases(id);
    for n in 0..account.leases {
        let taken = lease::acquire(
            &mut store.conn(),
            &set,
            &format!("req_other_{n}"),
            Duration::from_secs(60),
            100,
        )
        .await
        .expect("a lease");
        assert!(taken.admitted);
    }
    if account.spent > 0 {
        let recorder = Recorder::new(store.clone(), UtcOffset::UTC);
        let event = UsageEvent {
            request_id: format!("req_spent_{id}"),
            key_id: "key-1".into(),
            account_id: id.to_owned(),
            model: crate::harness::SONNET.into(),
            requested_model: crate::harness::SONNET.into(),
            usage: Usage::default(),
            cost_nano_usd: account.spent,
            at,
            key_limits: Arc::new(KeyLimits::default()),
        };
        recorder.record(&event).await.expect("counting usage");
    }
}

async fn check(case: Case) -> Result<(), TestCaseError> {
    let mut config = claude_relay::Config::default();
    config.redis.url = crate::harness::redis::redis_url().into();
    config.redis.prefix = format!("t-pick-{}:", uuid::Uuid::new_v4().simple());
    let store = Store::connect(&config.redis).expect("a store");
    let at = OffsetDateTime::now_utc();
    arrange(&store, &case, at).await;
    let args: Vec<PickArg<'_>> = case
        .accounts
        .iter()
        .enumerate()
        .map(|(i, account)| PickArg {
            id: IDS[i],
            tier: account.tier,
            priority: account.priority,
            concurrency_limit: account.concurrency_limit,
            daily_quota_nano_usd: account.quota,
        })
        .collect();
    let request = PickRequest {
        candidates: &args,
        sticky: Some(("conv", Duration::from_secs(60))),
        lease: case.leased.then_some((MEMBER, Duration::from_secs(60))),
        day: at.date(),
    };

    let reply = store.pick("*", &request).await.expect("the pick");

    let PickReply::Picked {
        chosen,
        sticky,
        seen,
    } = reply
    else {
        return Err(TestCaseError::fail("stale without a version check"));
    };
    check_seen(&case, &seen)?;
    let ranked: Vec<Ranked<'_>> = args
        .iter()
        .zip(&seen)
        .map(|(arg, seen)| Ranked {
            id: arg.id,
            tier: arg.tier,
            priority: arg.priority,
            last_used_ms: seen.last_used_ms,
            usable: seen.usable(),
        })
        .collect();
    let first = order(&ranked, sticky.as_deref()).first().copied();
    prop_assert_eq!(
        chosen.as_deref(),
        first.map(|i| IDS[i]),
        "{:?} saw {:?}",
        case,
        seen
    );
    check_leases(&store, &case, first).await
}

/// The script reports what was arranged: leases where a limit counts
/// them, spending where a quota reads it.
fn check_seen(case: &Case, seen: &[Seen]) -> Result<(), TestCaseError> {
    prop_assert_eq!(seen.len(), case.accounts.len());
    for (account, seen) in case.accounts.iter().zip(seen) {
        let limited = case.leased && account.concurrency_limit > 0;
        let in_use = if limited { account.leases } else { 0 };
        let spent = if account.quota > 0 { account.spent } else { 0 };
        prop_assert_eq!(seen.in_use, in_use, "{:?}", account);
        prop_assert_eq!(seen.spent_nano_usd, spent, "{:?}", account);
    }
    Ok(())
}

/// The chosen account holds the request's lease when it has a limit; no
/// other account does.
async fn check_leases(
    store: &Store,
    case: &Case,
    first: Option<usize>,
) -> Result<(), TestCaseError> {
    for (i, account) in case.accounts.iter().enumerate() {
        let set = store.names().account_leases(IDS[i]);
        let live = lease::live(&mut store.conn(), &set)
            .await
            .expect("reading leases");
        let holds = live.iter().any(|(member, _)| member == MEMBER);
        let expected = first == Some(i) && case.leased && account.concurrency_limit > 0;
        prop_assert_eq!(holds, expected, "{:?} holds {:?}", account, live);
        if expected {
            prop_assert!(account.leases < u64::from(account.concurrency_limit));
        }
    }
    Ok(())
}

#[test]
fn prop_pick_script_chooses_what_the_pure_order_puts_first() {
    let runtime = tokio::runtime::Runtime::new().expect("a runtime");
    let mut runner = TestRunner::new(ProptestConfig {
        cases: 48,
        ..ProptestConfig::default()
    });

    let result = runner.run(&cases(), |case| runtime.block_on(check(case)));

    if let Err(failure) = result {
        panic!("{failure}");
    }
}
