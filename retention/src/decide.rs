//! The principles of retention (SPEC §3.2) for one item: from the policies, default retention
//! and holds that apply to it, when it leaves the user's view, until when it is retained, and
//! whether it may be destroyed now — with the reasons.
//!
//! 1. Retention wins over deletion: never destroyed while any setting still retains it.
//! 2. The longest retention wins: `retain_until = max(created_at + period)` over the retaining
//!    policies (forever beats any date).
//! 3. Explicit wins over implicit for *when to delete*: if a delete-capable policy that names
//!    the mailbox applies, org-wide delete-capable policies are ignored.
//! 4. The shortest deletion wins among those left: `delete_at = min(created_at + period)`.
//!
//! An item leaves the user's view at `delete_at`. It may be destroyed when it is in the holds
//! area, has spent the minimum age there, is past `retain_until`, and no hold covers it.
//! Default retention (from the server's config) applies only when no policy does, as a
//! retain-then-delete policy of that period.

use chrono::{DateTime, TimeDelta, Utc};
use serde::{Deserialize, Serialize};

use crate::policy::{Hold, Period, Policy};
use crate::ItemLocation;

/// What the decision needs to know about an item.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Item<'a> {
    /// Lower-cased mailbox id.
    pub mailbox: &'a str,
    pub app: &'a str,
    pub created_at: DateTime<Utc>,
    pub location: ItemLocation,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Settings {
    /// Applies when no policy does; `None`: items without a policy are kept forever.
    pub default_retention: Option<Period>,
    /// How long an item stays in the holds area at least.
    pub holds_area_minimum_age: TimeDelta,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            default_retention: None,
            holds_area_minimum_age: TimeDelta::days(1),
        }
    }
}

/// Until when an item is retained.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RetainUntil {
    /// Nothing retains it.
    Nothing,
    Date(DateTime<Utc>),
    Forever,
}

/// Why an item is where it is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Reason {
    /// This policy retains the item until the given time (or forever).
    RetainedBy {
        policy: String,
        until: Option<DateTime<Utc>>,
    },
    /// This policy sets the deletion time.
    DeletedBy { policy: String, at: DateTime<Utc> },
    /// A delete-capable org-wide policy ignored because an explicit one applies.
    OverriddenByExplicit { policy: String },
    /// The server's default retention applies (no policy does).
    DefaultRetention { until: Option<DateTime<Utc>> },
    /// This hold covers the item now.
    HeldBy { hold: String },
    /// The item must stay in the holds area until then.
    MinimumAge { until: DateTime<Utc> },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    pub retain_until: RetainUntil,
    /// When the item leaves the user's view; `None`: never, by retention.
    pub delete_at: Option<DateTime<Utc>>,
    /// An ACTIVE item whose `delete_at` has come: move it to the holds area now.
    pub move_now: bool,
    /// May be destroyed now.
    pub destroyable: bool,
    /// When to look at the item again, if anything could change by time alone.
    pub next_check: Option<DateTime<Utc>>,
    pub reasons: Vec<Reason>,
}

/// Applies the principles of retention to one item at `now`. `policies` may contain every
/// policy; those that do not apply to the item are ignored. `holds` are the holds on the
/// item's mailbox (case holds only when they match the item).
pub fn decide(
    item: &Item<'_>,
    policies: &[Policy],
    holds: &[Hold],
    settings: &Settings,
    now: DateTime<Utc>,
) -> Decision {
    let mut reasons = Vec::new();
    let applicable: Vec<&Policy> = policies
        .iter()
        .filter(|p| p.applies_to(item.mailbox, item.app))
        .collect();

    // Principle 2: the longest retention wins.
    let mut retain_until = RetainUntil::Nothing;
    // Principles 3 and 4: explicit first, then the shortest deletion.
    let mut delete_at: Option<DateTime<Utc>> = None;
    if applicable.is_empty() {
        if let Some(period) = settings.default_retention {
            let end = period.end(item.created_at);
            retain_until = end.map_or(RetainUntil::Forever, RetainUntil::Date);
            delete_at = end;
            reasons.push(Reason::DefaultRetention { until: end });
        }
    } else {
        for policy in applicable.iter().filter(|p| p.action.retains()) {
            let end = policy.period.end(item.created_at);
            retain_until = match (retain_until, end) {
                (RetainUntil::Forever, _) | (_, None) => RetainUntil::Forever,
                (RetainUntil::Date(a), Some(b)) => RetainUntil::Date(a.max(b)),
                (RetainUntil::Nothing, Some(b)) => RetainUntil::Date(b),
            };
            reasons.push(Reason::RetainedBy {
                policy: policy.id.clone(),
                until: end,
            });
        }
        let deleting: Vec<&&Policy> = applicable
            .iter()
            .filter(|p| p.action.deletes() && p.period != Period::Forever)
            .collect();
        let explicit = deleting.iter().any(|p| p.is_explicit_for(item.mailbox));
        for policy in deleting {
            if explicit && !policy.is_explicit_for(item.mailbox) {
                reasons.push(Reason::OverriddenByExplicit {
                    policy: policy.id.clone(),
                });
                continue;
            }
            if let Some(end) = policy.period.end(item.created_at) {
                if delete_at.is_none_or(|current| end < current) {
                    delete_at = Some(end);
                }
                reasons.push(Reason::DeletedBy {
                    policy: policy.id.clone(),
                    at: end,
                });
            }
        }
        // Keep only the deciding deletion among the DeletedBy reasons.
        if let Some(at) = delete_at {
            reasons.retain(|r| !matches!(r, Reason::DeletedBy { at: other, .. } if *other != at));
        }
    }

    let covering: Vec<&Hold> = holds
        .iter()
        .filter(|h| h.covers(item.created_at, now))
        .collect();
    for hold in &covering {
        reasons.push(Reason::HeldBy {
            hold: hold.id().to_string(),
        });
    }

    let move_now =
        matches!(item.location, ItemLocation::Active) && delete_at.is_some_and(|at| at <= now);
    let retained_now = match retain_until {
        RetainUntil::Nothing => false,
        RetainUntil::Forever => true,
        RetainUntil::Date(until) => now < until,
    };
    let (destroyable, next_check) = match item.location {
        ItemLocation::Active => (false, delete_at.filter(|at| *at > now).or(delete_at)),
        ItemLocation::HoldsArea { moved_at, .. } => {
            let old_enough_at = moved_at + settings.holds_area_minimum_age;
            if now < old_enough_at {
                reasons.push(Reason::MinimumAge {
                    until: old_enough_at,
                });
            }
            let destroyable = now >= old_enough_at && !retained_now && covering.is_empty();
            // Time alone can end the minimum age, the retention and time-limited holds.
            let mut candidates = vec![old_enough_at];
            if let RetainUntil::Date(until) = retain_until {
                candidates.push(until);
            }
            for hold in &covering {
                match hold {
                    Hold::Delay { until, .. } => candidates.push(*until),
                    Hold::Litigation {
                        days: Some(days), ..
                    } => candidates.push(item.created_at + TimeDelta::days(i64::from(*days))),
                    _ => {}
                }
            }
            let next = if destroyable || retain_until == RetainUntil::Forever {
                None
            } else {
                candidates.into_iter().max()
            };
            (destroyable, next)
        }
    };
    Decision {
        retain_until,
        delete_at,
        move_now,
        destroyable,
        next_check,
        reasons,
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use proptest::prelude::*;

    use super::*;
    use crate::policy::{Action, Scope};
    use crate::MoveReason;

    fn date(y: i32, m: u32, d: u32) -> DateTime<Utc> {
        use chrono::TimeZone;
        Utc.with_ymd_and_hms(y, m, d, 0, 0, 0).unwrap()
    }

    fn years(n: i64) -> TimeDelta {
        TimeDelta::days(365 * n)
    }

    fn policy(id: &str, scope: Scope, action: Action, period_years: Option<u32>) -> Policy {
        Policy {
            id: id.into(),
            name: id.into(),
            scope,
            apps: None,
            action,
            period: period_years.map_or(Period::Forever, |y| Period::Days(365 * y)),
            enabled: true,
            locked: false,
        }
    }

    fn org() -> Scope {
        Scope::OrgWide {
            exclude: BTreeSet::new(),
        }
    }

    fn alice() -> Scope {
        Scope::Include(["alice@contoso.com".to_string()].into())
    }

    fn active<'a>(mailbox: &'a str) -> Item<'a> {
        Item {
            mailbox,
            app: "Word",
            created_at: date(2025, 3, 1),
            location: ItemLocation::Active,
        }
    }

    fn moved(item: Item<'_>, at: DateTime<Utc>) -> Item<'_> {
        Item {
            location: ItemLocation::HoldsArea {
                reason: MoveReason::Expired,
                moved_at: at,
            },
            ..item
        }
    }

    fn zero_age() -> Settings {
        Settings {
            default_retention: None,
            holds_area_minimum_age: TimeDelta::zero(),
        }
    }

    const ALICE: &str = "alice@contoso.com";
    const BOB: &str = "bob@contoso.com";

    #[test]
    fn spec_row_1_delete_3y_and_retain_then_delete_5y() {
        let policies = [
            policy("d3", org(), Action::DeleteOnly, Some(3)),
            policy("rd5", org(), Action::RetainThenDelete, Some(5)),
        ];
        let created = date(2025, 3, 1);
        let decision = decide(
            &active(ALICE),
            &policies,
            &[],
            &zero_age(),
            created + years(3),
        );
        assert_eq!(decision.delete_at, Some(created + years(3)));
        assert_eq!(decision.retain_until, RetainUntil::Date(created + years(5)));
        assert!(decision.move_now);
        // In the holds area it stays discoverable, and is destroyed only after 5 years.
        let held = moved(active(ALICE), created + years(3));
        assert!(!decide(&held, &policies, &[], &zero_age(), created + years(4)).destroyable);
        assert!(decide(&held, &policies, &[], &zero_age(), created + years(5)).destroyable);
    }

    #[test]
    fn spec_row_2_retain_only_5y_org_and_10y_alice() {
        let policies = [
            policy("r5", org(), Action::RetainOnly, Some(5)),
            policy("r10", alice(), Action::RetainOnly, Some(10)),
        ];
        let created = date(2025, 3, 1);
        let decision = decide(
            &active(ALICE),
            &policies,
            &[],
            &zero_age(),
            created + years(20),
        );
        assert_eq!(decision.delete_at, None, "never moved by retention");
        assert!(!decision.move_now);
        // Deleted by alice: kept in the holds area until 10 years.
        let deleted = Item {
            location: ItemLocation::HoldsArea {
                reason: MoveReason::UserDeleted,
                moved_at: created,
            },
            ..active(ALICE)
        };
        assert!(!decide(&deleted, &policies, &[], &zero_age(), created + years(9)).destroyable);
        assert!(decide(&deleted, &policies, &[], &zero_age(), created + years(10)).destroyable);
    }

    #[test]
    fn spec_row_3_explicit_wins_over_org_wide() {
        let policies = [
            policy("d10", org(), Action::DeleteOnly, Some(10)),
            policy("d5", alice(), Action::DeleteOnly, Some(5)),
        ];
        let created = date(2025, 3, 1);
        let for_alice = decide(&active(ALICE), &policies, &[], &zero_age(), created);
        assert_eq!(for_alice.delete_at, Some(created + years(5)));
        assert!(for_alice.reasons.contains(&Reason::OverriddenByExplicit {
            policy: "d10".into()
        }));
        let for_bob = decide(&active(BOB), &policies, &[], &zero_age(), created);
        assert_eq!(for_bob.delete_at, Some(created + years(10)));
    }

    #[test]
    fn spec_row_4_shortest_deletion_wins() {
        let policies = [
            policy("d10", alice(), Action::DeleteOnly, Some(10)),
            policy("d7", alice(), Action::DeleteOnly, Some(7)),
        ];
        let created = date(2025, 3, 1);
        let decision = decide(&active(ALICE), &policies, &[], &zero_age(), created);
        assert_eq!(decision.delete_at, Some(created + years(7)));
        assert_eq!(
            decision.reasons,
            [Reason::DeletedBy {
                policy: "d7".into(),
                at: created + years(7)
            }]
        );
    }

    #[test]
    fn spec_row_5_nothing_applies_kept_forever() {
        let decision = decide(&active(ALICE), &[], &[], &zero_age(), date(2100, 1, 1));
        assert_eq!(decision.delete_at, None);
        assert_eq!(decision.retain_until, RetainUntil::Nothing);
        assert!(!decision.move_now && !decision.destroyable);
        // Deleted by the user with nothing retaining it: destroyable after the minimum age.
        let settings = Settings::default();
        let deleted = moved(active(ALICE), date(2025, 3, 2));
        assert!(!decide(&deleted, &[], &[], &settings, date(2025, 3, 2)).destroyable);
        assert!(decide(&deleted, &[], &[], &settings, date(2025, 3, 3)).destroyable);
    }

    #[test]
    fn default_retention_applies_only_without_a_policy() {
        let settings = Settings {
            default_retention: Some(Period::Days(365)),
            holds_area_minimum_age: TimeDelta::zero(),
        };
        let created = date(2025, 3, 1);
        let decision = decide(&active(ALICE), &[], &[], &settings, created);
        assert_eq!(decision.delete_at, Some(created + TimeDelta::days(365)));
        let policies = [policy("r10", alice(), Action::RetainOnly, Some(10))];
        let decision = decide(&active(ALICE), &policies, &[], &settings, created);
        assert_eq!(decision.delete_at, None);
    }

    #[test]
    fn holds_block_destruction_and_say_so() {
        let created = date(2025, 3, 1);
        let deleted = moved(active(ALICE), created);
        let holds = [Hold::Litigation {
            id: "lit".into(),
            days: None,
        }];
        let decision = decide(&deleted, &[], &holds, &zero_age(), created + years(50));
        assert!(!decision.destroyable);
        assert!(decision
            .reasons
            .contains(&Reason::HeldBy { hold: "lit".into() }));
        let delay = [Hold::Delay {
            id: "delay".into(),
            until: created + TimeDelta::days(30),
        }];
        let decision = decide(
            &deleted,
            &[],
            &delay,
            &zero_age(),
            created + TimeDelta::days(29),
        );
        assert!(!decision.destroyable);
        assert_eq!(decision.next_check, Some(created + TimeDelta::days(30)));
        assert!(
            decide(
                &deleted,
                &[],
                &delay,
                &zero_age(),
                created + TimeDelta::days(30)
            )
            .destroyable
        );
    }

    #[test]
    fn disabled_and_app_limited_policies() {
        let mut p = policy("r", org(), Action::RetainOnly, None);
        p.apps = Some(["teams".to_string()].into());
        let created = date(2025, 3, 1);
        let deleted = moved(active(ALICE), created);
        assert!(
            decide(&deleted, &[p.clone()], &[], &zero_age(), created).destroyable,
            "Word is not Teams"
        );
        let teams = Item {
            app: "Teams",
            ..deleted.clone()
        };
        assert!(!decide(&teams, &[p.clone()], &[], &zero_age(), created).destroyable);
        p.enabled = false;
        assert!(decide(&teams, &[p], &[], &zero_age(), created).destroyable);
    }

    fn arbitrary_policy() -> impl Strategy<Value = Policy> {
        (
            0..3u8,
            prop::bool::ANY,
            prop::option::of(1u32..4000),
            prop::bool::ANY,
            0..1000u32,
        )
            .prop_map(|(action, explicit, days, enabled, id)| {
                let action = [
                    Action::RetainOnly,
                    Action::DeleteOnly,
                    Action::RetainThenDelete,
                ][action as usize];
                let period = match (action, days) {
                    (Action::RetainOnly, None) => Period::Forever,
                    (_, Some(days)) => Period::Days(days),
                    (_, None) => Period::Days(365),
                };
                Policy {
                    id: format!("p{id}"),
                    name: "p".into(),
                    scope: if explicit { alice() } else { org() },
                    apps: None,
                    action,
                    period,
                    enabled,
                    locked: false,
                }
            })
    }

    fn arbitrary_hold() -> impl Strategy<Value = Hold> {
        prop_oneof![
            prop::option::of(1u32..4000).prop_map(|days| Hold::Litigation {
                id: "lit".into(),
                days
            }),
            Just(Hold::Case {
                id: "case-hold".into(),
                case_id: "c".into()
            }),
            (0i64..4000).prop_map(|d| Hold::Delay {
                id: "delay".into(),
                until: date(2025, 3, 1) + TimeDelta::days(d)
            }),
        ]
    }

    proptest! {
        #[test]
        fn a_held_item_is_never_destroyable(
            policies in prop::collection::vec(arbitrary_policy(), 0..5),
            hold in arbitrary_hold(),
            moved_days in 0i64..5000,
            now_days in 0i64..10000,
        ) {
            let created = date(2025, 3, 1);
            let now = created + TimeDelta::days(now_days);
            let item = moved(active(ALICE), created + TimeDelta::days(moved_days));
            let decision = decide(&item, &policies, std::slice::from_ref(&hold), &zero_age(), now);
            if hold.covers(created, now) {
                prop_assert!(!decision.destroyable);
            }
        }

        #[test]
        fn retention_always_beats_deletion(
            policies in prop::collection::vec(arbitrary_policy(), 0..6),
            now_days in 0i64..20000,
        ) {
            let created = date(2025, 3, 1);
            let now = created + TimeDelta::days(now_days);
            let item = moved(active(ALICE), created);
            let decision = decide(&item, &policies, &[], &zero_age(), now);
            match decision.retain_until {
                RetainUntil::Forever => prop_assert!(!decision.destroyable),
                RetainUntil::Date(until) if decision.destroyable => prop_assert!(now >= until),
                _ => {}
            }
        }

        #[test]
        fn an_unheld_unretained_item_past_the_minimum_age_is_destroyable(
            delete_days in prop::collection::vec(1u32..4000, 0..4),
            age_hours in 0i64..100,
            extra_hours in 0i64..100,
        ) {
            let policies: Vec<Policy> = delete_days
                .iter()
                .map(|d| Policy { period: Period::Days(*d), ..policy("d", org(), Action::DeleteOnly, Some(1)) })
                .collect();
            let settings = Settings { default_retention: None, holds_area_minimum_age: TimeDelta::hours(age_hours) };
            let moved_at = date(2026, 1, 1);
            let item = moved(active(ALICE), moved_at);
            let now = moved_at + TimeDelta::hours(age_hours + extra_hours);
            prop_assert!(decide(&item, &policies, &[], &settings, now).destroyable);
        }

        #[test]
        fn adding_a_retaining_policy_never_makes_an_item_go_sooner(
            policies in prop::collection::vec(arbitrary_policy(), 0..5),
            retain_days in prop::option::of(1u32..8000),
            explicit in prop::bool::ANY,
            moved_days in 0i64..5000,
            now_days in 0i64..20000,
        ) {
            let created = date(2025, 3, 1);
            let now = created + TimeDelta::days(now_days);
            let extra = Policy {
                period: retain_days.map_or(Period::Forever, Period::Days),
                ..policy("extra", if explicit { alice() } else { org() }, Action::RetainOnly, None)
            };
            let mut more = policies.clone();
            more.push(extra);
            for item in [active(ALICE), moved(active(ALICE), created + TimeDelta::days(moved_days))] {
                let before = decide(&item, &policies, &[], &zero_age(), now);
                let after = decide(&item, &more, &[], &zero_age(), now);
                prop_assert!(!after.destroyable || before.destroyable);
                prop_assert!(!after.move_now || before.move_now);
            }
        }
    }
}
