//! The order in which a request tries accounts. Pure, so that its promises
//! are checked by property tests; the pick script applies the same rule
//! to choose the first account inside Redis.

/// One candidate account with what the pick script saw of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ranked<'a> {
    pub id: &'a str,
    /// 0: the key's own accounts; 1: the shared pool it may spill into.
    pub tier: u8,
    /// Lower first.
    pub priority: u32,
    /// Never used sorts before any use.
    pub last_used_ms: Option<u64>,
    /// Neither cooling down nor held out by a status.
    pub usable: bool,
}

/// Positions of the usable candidates in the order they are tried: the
/// sticky account first when it is usable, then by tier, priority, least
/// recent use and finally position, so equal accounts take turns.
pub fn order(candidates: &[Ranked<'_>], sticky: Option<&str>) -> Vec<usize> {
    let mut usable: Vec<usize> = (0..candidates.len())
        .filter(|&at| candidates[at].usable)
        .collect();
    usable.sort_by_key(|&at| {
        let candidate = &candidates[at];
        let pinned = sticky == Some(candidate.id);
        (
            !pinned,
            candidate.tier,
            candidate.priority,
            candidate.last_used_ms.map_or(0, |ms| ms.saturating_add(1)),
            at,
        )
    });
    usable
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const IDS: [&str; 8] = ["a", "b", "c", "d", "e", "f", "g", "h"];

    fn candidates() -> impl Strategy<Value = Vec<Ranked<'static>>> {
        let one = (
            0u8..2,
            0u32..4,
            proptest::option::of(0u64..5),
            any::<bool>(),
        );
        proptest::collection::vec(one, 0..IDS.len()).prop_map(|rows| {
            rows.into_iter()
                .enumerate()
                .map(|(at, (tier, priority, last_used_ms, usable))| Ranked {
                    id: IDS[at],
                    tier,
                    priority,
                    last_used_ms,
                    usable,
                })
                .collect()
        })
    }

    fn sticky_of(candidates: &[Ranked<'static>], pick: usize) -> Option<&'static str> {
        candidates.get(pick).map(|candidate| candidate.id)
    }

    #[test]
    fn priority_comes_before_last_use() {
        let list = [
            Ranked {
                id: "late",
                tier: 0,
                priority: 2,
                last_used_ms: None,
                usable: true,
            },
            Ranked {
                id: "busy",
                tier: 0,
                priority: 1,
                last_used_ms: Some(9),
                usable: true,
            },
            Ranked {
                id: "idle",
                tier: 0,
                priority: 1,
                last_used_ms: Some(3),
                usable: true,
            },
            Ranked {
                id: "down",
                tier: 0,
                priority: 0,
                last_used_ms: None,
                usable: false,
            },
        ];

        assert_eq!(order(&list, None), [2, 1, 0]);
        assert_eq!(order(&list, Some("late")), [0, 2, 1]);
        assert_eq!(order(&list, Some("down")), [2, 1, 0]);
    }

    proptest! {
        #[test]
        fn prop_no_unusable_account_is_ever_chosen(list in candidates(), pick in 0usize..10) {
            let tried = order(&list, sticky_of(&list, pick));

            let usable = list.iter().filter(|c| c.usable).count();
            prop_assert_eq!(tried.len(), usable);
            let mut unique = tried.clone();
            unique.sort_unstable();
            unique.dedup();
            prop_assert_eq!(unique.len(), usable);
            prop_assert!(tried.iter().all(|&at| list[at].usable));
        }

        #[test]
        fn prop_a_usable_sticky_account_goes_first(list in candidates(), pick in 0usize..64) {
            // Built rather than filtered: any list with an account, that
            // account made usable, so no draw is wasted.
            prop_assume!(!list.is_empty());
            let mut list = list;
            let pick = pick % list.len();
            list[pick].usable = true;

            let tried = order(&list, Some(list[pick].id));

            prop_assert_eq!(tried[0], pick);
        }

        #[test]
        fn prop_tier_then_priority_is_respected(list in candidates(), pick in 0usize..10) {
            let sticky = sticky_of(&list, pick);
            let tried = order(&list, sticky);

            let rest: Vec<&Ranked<'_>> = tried
                .iter()
                .map(|&at| &list[at])
                .filter(|c| Some(c.id) != sticky)
                .collect();
            for pair in rest.windows(2) {
                prop_assert!((pair[0].tier, pair[0].priority) <= (pair[1].tier, pair[1].priority));
            }
        }

        #[test]
        fn prop_ties_go_to_the_least_recently_used(list in candidates()) {
            let tried = order(&list, None);

            for pair in tried.windows(2) {
                let (a, b) = (&list[pair[0]], &list[pair[1]]);
                if (a.tier, a.priority) == (b.tier, b.priority) {
                    prop_assert!(a.last_used_ms.is_none() || a.last_used_ms <= b.last_used_ms);
                }
            }
        }

        /// Picking the first and marking it used, over and over, spreads
        /// requests evenly over accounts of equal priority.
        #[test]
        fn prop_repeated_picks_spread_evenly_over_ties(
            used in proptest::collection::vec(proptest::option::of(0u64..100), 1..6),
            rounds in 1usize..40,
        ) {
            let mut list: Vec<Ranked<'_>> = used
                .iter()
                .enumerate()
                .map(|(at, &last_used_ms)| Ranked {
                    id: IDS[at], tier: 0, priority: 1, last_used_ms, usable: true,
                })
                .collect();
            let mut picks = vec![0usize; list.len()];

            for round in 0..rounds {
                let first = order(&list, None)[0];
                picks[first] += 1;
                list[first].last_used_ms = Some(1000 + round as u64);
            }

            let fewest = picks.iter().min().copied().unwrap_or(0);
            let most = picks.iter().max().copied().unwrap_or(0);
            prop_assert!(most - fewest <= 1, "{:?}", picks);
        }
    }
}
