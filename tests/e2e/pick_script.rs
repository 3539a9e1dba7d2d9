//! The pick script chooses the first account inside Redis; the pure
//! `scheduler::order` orders the rest. Both must apply one rule, so this
//! drives the real script with random account states and compares.

use std::time::Duration;

use claude_relay::scheduler::order::{Ranked, order};
use claude_relay::store::records::{AccountStatus, Cooldown, CooldownReason, HealthState};
use claude_relay::store::{PickArg, PickReply, Store};
use proptest::prelude::*;
use proptest::test_runner::{Config as ProptestConfig, TestRunner};

const IDS: [&str; 5] = ["a1", "a2", "a3", "a4", "a5"];

#[derive(Debug, Clone)]
struct Case {
    /// Per account: tier, priority, state (0 usable, 1 cooling, 2 held).
    accounts: Vec<(u8, u32, u8)>,
    /// The order in which accounts were last used, oldest first.
    used: Vec<usize>,
    sticky: Option<usize>,
}

fn cases() -> impl Strategy<Value = Case> {
    let account = (
        0u8..2,
        0u32..3,
        prop_oneof![4 => Just(0u8), 1 => Just(1u8), 1 => Just(2u8)],
    );
    proptest::collection::vec(account, 1..=IDS.len()).prop_flat_map(|accounts| {
        let n = accounts.len();
        let used = proptest::sample::subsequence((0..n).collect::<Vec<_>>(), 0..=n).prop_shuffle();
        let sticky = proptest::option::of(0..n);
        (Just(accounts), used, sticky).prop_map(|(accounts, used, sticky)| Case {
            accounts,
            used,
            sticky,
        })
    })
}

async fn arrange(store: &Store, case: &Case) {
    for &at in &case.used {
        store
            .mark_served(IDS[at], None)
            .await
            .expect("marking a use");
        // Distinct scores: the script's clock has millisecond steps.
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    if let Some(at) = case.sticky {
        // Also a use of that account; the comparison reads what the script saw.
        let ttl = Duration::from_secs(60);
        store
            .mark_served(IDS[at], Some(("conv", ttl)))
            .await
            .expect("mapping the conversation");
    }
    for (at, &(_, _, state)) in case.accounts.iter().enumerate() {
        match state {
            1 => {
                let cooldown = Cooldown {
                    reason: CooldownReason::RateLimited,
                    upstream_status: Some(429),
                    since: 0,
                };
                let _ = store
                    .cool_down(IDS[at], &cooldown, Duration::from_secs(60))
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
                    .set_account_status(IDS[at], &status)
                    .await
                    .expect("a status");
            }
            _ => {}
        }
    }
}

async fn check(case: Case) -> Result<(), TestCaseError> {
    let mut config = claude_relay::Config::default();
    config.redis.url = crate::harness::redis::redis_url().into();
    config.redis.prefix = format!("t-pick-{}:", uuid::Uuid::new_v4().simple());
    let store = Store::connect(&config.redis).expect("a store");
    arrange(&store, &case).await;
    let args: Vec<PickArg<'_>> = case
        .accounts
        .iter()
        .enumerate()
        .map(|(at, &(tier, priority, _))| PickArg {
            id: IDS[at],
            tier,
            priority,
        })
        .collect();

    let reply = store
        .pick("*", &args, Some(("conv", Duration::from_secs(60))))
        .await
        .expect("the pick");

    let PickReply::Picked {
        chosen,
        sticky,
        seen,
    } = reply
    else {
        return Err(TestCaseError::fail("stale without a version check"));
    };
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
    let expected = order(&ranked, sticky.as_deref())
        .first()
        .map(|&at| IDS[at].to_owned());
    prop_assert_eq!(chosen, expected, "{:?} saw {:?}", case, seen);
    Ok(())
}

#[test]
fn prop_pick_script_chooses_what_the_pure_order_puts_first() {
    let runtime = tokio::runtime::Runtime::new().expect("a runtime");
    let mut runner = TestRunner::new(ProptestConfig {
        cases: 40,
        ..ProptestConfig::default()
    });

    let result = runner.run(&cases(), |case| runtime.block_on(check(case)));

    if let Err(failure) = result {
        panic!("{failure}");
    }
}
