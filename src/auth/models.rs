//! Model restrictions. A dated model id (`claude-sonnet-4-5-20250929`)
//! and its family alias (`claude-sonnet-4-5`) name the same model; nothing
//! else is normalised, so there is no prefix matching.

/// The id without a trailing `-YYYYMMDD` snapshot date.
pub fn family(model: &str) -> &str {
    match model.rsplit_once('-') {
        Some((base, date)) if is_date(date) && !base.is_empty() => base,
        _ => model,
    }
}

fn is_date(text: &str) -> bool {
    text.len() == 8 && text.bytes().all(|b| b.is_ascii_digit()) && text.starts_with("20")
}

/// Whether a rule naming `listed` covers the requested `model`.
pub fn same_model(listed: &str, model: &str) -> bool {
    listed == model || family(listed) == family(model)
}

/// Allow-list (empty = everything) and deny-list, deny winning.
pub fn model_allowed(allowed: &[String], denied: &[String], model: &str) -> bool {
    let listed = |list: &[String]| list.iter().any(|entry| same_model(entry, model));
    (allowed.is_empty() || listed(allowed)) && !listed(denied)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn list(items: &[&str]) -> Vec<String> {
        items.iter().map(|item| (*item).to_owned()).collect()
    }

    #[test]
    fn allow_list_matches_aliases_and_dated_ids_but_not_prefixes() {
        let allowed = list(&["claude-haiku-4-5", "claude-sonnet-4-5"]);
        let cases = [
            ("claude-haiku-4-5", true),
            ("claude-haiku-4-5-20251001", true),
            ("claude-sonnet-4-5-20250929", true),
            ("claude-opus-4-5-20251101", false),
            ("claude-haiku-4-5-evil", false),
            ("claude-haiku-4", false),
            ("claude-haiku-4-5-2025100", false),
        ];
        for (model, expected) in cases {
            assert_eq!(model_allowed(&allowed, &[], model), expected, "{model}");
        }
    }

    #[test]
    fn a_dated_entry_allows_its_alias_and_other_snapshots() {
        let allowed = list(&["claude-sonnet-4-5-20250929"]);
        assert!(model_allowed(&allowed, &[], "claude-sonnet-4-5"));
        assert!(model_allowed(&allowed, &[], "claude-sonnet-4-5-20250929"));
    }

    #[test]
    fn deny_list_wins_over_allow_list() {
        let everything: Vec<String> = Vec::new();
        let denied = list(&["claude-opus-4-5"]);
        assert!(!model_allowed(
            &everything,
            &denied,
            "claude-opus-4-5-20251101"
        ));
        assert!(model_allowed(&everything, &denied, "claude-opus-4-1"));
    }

    proptest! {
        #[test]
        fn prop_alias_and_dated_id_match_both_ways(
            base in "claude-[a-z]{2,8}-[0-9](-[0-9])?",
            date in "20[0-9]{6}",
        ) {
            let dated = format!("{base}-{date}");
            prop_assert!(same_model(&base, &dated));
            prop_assert!(same_model(&dated, &base));
            prop_assert!(model_allowed(std::slice::from_ref(&base), &[], &dated));
            prop_assert!(model_allowed(std::slice::from_ref(&dated), &[], &base));
        }

        #[test]
        fn prop_a_denied_model_is_refused_whatever_the_allow_list_says(
            base in "claude-[a-z]{2,8}-[0-9]",
            date in "20[0-9]{6}",
            deny_dated in any::<bool>(),
            ask_dated in any::<bool>(),
            others in proptest::collection::vec("claude-[a-z]{2,8}-[0-9]", 0..3),
        ) {
            let dated = format!("{base}-{date}");
            let denied = vec![if deny_dated { dated.clone() } else { base.clone() }];
            let model = if ask_dated { &dated } else { &base };
            let mut allowed = others;
            allowed.push(model.clone());

            prop_assert!(!model_allowed(&allowed, &denied, model));
            prop_assert!(!model_allowed(&[], &denied, model));
        }

        #[test]
        fn prop_models_of_different_families_never_match(
            first in "claude-[a-z]{2,8}-[0-9]",
            second in "claude-[a-z]{2,8}-[0-9]",
            first_date in proptest::option::of("20[0-9]{6}"),
            second_date in proptest::option::of("20[0-9]{6}"),
        ) {
            prop_assume!(first != second);
            let with = |base: &str, date: &Option<String>| match date {
                Some(date) => format!("{base}-{date}"),
                None => base.to_owned(),
            };

            let listed = with(&first, &first_date);
            let asked = with(&second, &second_date);

            prop_assert!(!same_model(&listed, &asked));
            prop_assert!(!model_allowed(std::slice::from_ref(&listed), &[], &asked));
        }

        #[test]
        fn prop_no_prefix_matching(
            base in "claude-[a-z]{2,8}-[0-9]",
            tail in "-?[a-z0-9]{1,6}",
        ) {
            let longer = format!("{base}{tail}");
            prop_assume!(family(&longer) != base.as_str());
            prop_assert!(!model_allowed(std::slice::from_ref(&base), &[], &longer));
            prop_assert!(!model_allowed(std::slice::from_ref(&longer), &[], &base));
        }
    }
}
