//! Retention policies and holds (SPEC §3.1, §3.4, §4), and their validation.

use std::collections::BTreeSet;

use chrono::{DateTime, TimeDelta, Utc};
use serde::{Deserialize, Serialize};

/// Longest finite retention, in days (100 years).
pub const MAX_DAYS: u32 = 36_500;

/// Which mailboxes a policy covers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Scope {
    /// Every mailbox but the excluded ones.
    OrgWide { exclude: BTreeSet<String> },
    /// Only these mailboxes (never empty).
    Include(BTreeSet<String>),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    /// Keep for the period (or forever); do nothing at the end.
    RetainOnly,
    /// Delete when the item reaches the age.
    DeleteOnly,
    /// Keep for the period, then delete.
    RetainThenDelete,
}

impl Action {
    pub fn retains(self) -> bool {
        matches!(self, Action::RetainOnly | Action::RetainThenDelete)
    }

    pub fn deletes(self) -> bool {
        matches!(self, Action::DeleteOnly | Action::RetainThenDelete)
    }
}

/// How long, counted from an item's `created_at`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Period {
    Days(u32),
    Forever,
}

impl Period {
    /// The end of the period for an item created at `created_at`; `None` for forever.
    pub fn end(self, created_at: DateTime<Utc>) -> Option<DateTime<Utc>> {
        match self {
            Period::Days(days) => Some(created_at + TimeDelta::days(i64::from(days))),
            Period::Forever => None,
        }
    }

    fn at_least(self, other: Period) -> bool {
        match (self, other) {
            (Period::Forever, _) => true,
            (Period::Days(_), Period::Forever) => false,
            (Period::Days(a), Period::Days(b)) => a >= b,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Policy {
    pub id: String,
    pub name: String,
    pub scope: Scope,
    /// Only items of these apps (lower-cased); `None`: every app.
    pub apps: Option<BTreeSet<String>>,
    pub action: Action,
    pub period: Period,
    pub enabled: bool,
    /// Preservation lock (SPEC §3.4).
    pub locked: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PolicyError {
    #[error("invalid {field}: {reason}")]
    Invalid { field: &'static str, reason: String },
    #[error("policy {policy} is under a preservation lock: {reason}")]
    Locked { policy: String, reason: String },
}

fn invalid(field: &'static str, reason: impl Into<String>) -> PolicyError {
    PolicyError::Invalid {
        field,
        reason: reason.into(),
    }
}

impl Policy {
    /// Checks a policy on its own.
    pub fn validate(&self) -> Result<(), PolicyError> {
        let name_length = self.name.chars().count();
        if !(1..=200).contains(&name_length) || self.name.chars().any(char::is_control) {
            return Err(invalid(
                "name",
                "must be 1-200 characters without control characters",
            ));
        }
        if let Scope::Include(mailboxes) = &self.scope {
            if mailboxes.is_empty() {
                // The reference silently widens such a policy to everyone; holdfast refuses.
                return Err(invalid(
                    "scope",
                    "an include list needs at least one mailbox (removing the last one would \
                     not widen the policy to everyone; delete or disable the policy instead)",
                ));
            }
        }
        if let Some(apps) = &self.apps {
            if apps.is_empty() {
                return Err(invalid("apps", "an app restriction needs at least one app"));
            }
        }
        match self.period {
            Period::Days(0) => return Err(invalid("period", "must be at least 1 day")),
            Period::Days(days) if days > MAX_DAYS => {
                return Err(invalid(
                    "period",
                    format!("must be at most {MAX_DAYS} days"),
                ))
            }
            Period::Forever if self.action.deletes() => {
                return Err(invalid("period", "a deleting policy needs a finite period"))
            }
            _ => {}
        }
        Ok(())
    }

    /// Whether the policy's scope takes in `mailbox` (lower-cased), whatever the app and
    /// whether or not the policy is enabled.
    pub fn in_scope(&self, mailbox: &str) -> bool {
        match &self.scope {
            Scope::OrgWide { exclude } => !exclude.contains(mailbox),
            Scope::Include(mailboxes) => mailboxes.contains(mailbox),
        }
    }

    /// Whether the policy covers items of `mailbox` (lower-cased) from `app`.
    pub fn applies_to(&self, mailbox: &str, app: &str) -> bool {
        if !self.enabled {
            return false;
        }
        self.in_scope(mailbox)
            && self
                .apps
                .as_ref()
                .is_none_or(|apps| apps.contains(&app.to_lowercase()))
    }

    /// Whether the policy names `mailbox` explicitly (principle 3: explicit wins).
    pub fn is_explicit_for(&self, mailbox: &str) -> bool {
        matches!(&self.scope, Scope::Include(mailboxes) if mailboxes.contains(mailbox))
    }

    /// Checks a change against the preservation lock: a locked policy stays enabled and
    /// locked, keeps its action, its period only grows, mailboxes may be added but not
    /// removed, and its app restriction may only widen.
    pub fn check_change(&self, new: &Policy) -> Result<(), PolicyError> {
        if !self.locked {
            return Ok(());
        }
        let refuse = |reason: &str| {
            Err(PolicyError::Locked {
                policy: self.id.clone(),
                reason: reason.to_string(),
            })
        };
        if !new.locked {
            return refuse("the lock cannot be removed");
        }
        if !new.enabled {
            return refuse("it cannot be disabled");
        }
        if new.action != self.action {
            return refuse("its action cannot change");
        }
        if !new.period.at_least(self.period) {
            return refuse("its period can only grow");
        }
        let narrows = match (&self.scope, &new.scope) {
            (Scope::OrgWide { exclude: old }, Scope::OrgWide { exclude: new }) => {
                !new.is_subset(old)
            }
            (Scope::Include(old), Scope::Include(new)) => !old.is_subset(new),
            (Scope::Include(old), Scope::OrgWide { exclude }) => {
                old.iter().any(|mailbox| exclude.contains(mailbox))
            }
            (Scope::OrgWide { .. }, Scope::Include(_)) => true,
        };
        if narrows {
            return refuse("mailboxes can be added to it but not removed");
        }
        let apps_narrow = match (&self.apps, &new.apps) {
            (_, None) => false,
            (None, Some(_)) => true,
            (Some(old), Some(new)) => !old.is_subset(new),
        };
        if apps_narrow {
            return refuse("its app restriction can only widen");
        }
        Ok(())
    }

    /// Checks a deletion against the preservation lock.
    pub fn check_delete(&self) -> Result<(), PolicyError> {
        if self.locked {
            return Err(PolicyError::Locked {
                policy: self.id.clone(),
                reason: "it cannot be deleted".into(),
            });
        }
        Ok(())
    }
}

/// A hold that covers an item. For case holds the caller evaluates custodians, query and
/// date range with the search semantics and passes only the holds that match the item.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Hold {
    /// On a whole mailbox: forever, or for `days` counted from each item's `created_at`.
    Litigation { id: String, days: Option<u32> },
    /// A case hold whose custodians, query and date range match the item.
    Case { id: String, case_id: String },
    /// After a hold was released from the mailbox: nothing in it is destroyed until `until`.
    Delay { id: String, until: DateTime<Utc> },
}

impl Hold {
    pub fn id(&self) -> &str {
        match self {
            Hold::Litigation { id, .. } | Hold::Case { id, .. } | Hold::Delay { id, .. } => id,
        }
    }

    /// Whether the hold covers an item created at `created_at`, at `now`.
    pub fn covers(&self, created_at: DateTime<Utc>, now: DateTime<Utc>) -> bool {
        match self {
            Hold::Litigation { days: None, .. } | Hold::Case { .. } => true,
            Hold::Litigation {
                days: Some(days), ..
            } => now < created_at + TimeDelta::days(i64::from(*days)),
            Hold::Delay { until, .. } => now < *until,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(scope: Scope, action: Action, period: Period) -> Policy {
        Policy {
            id: "p1".into(),
            name: "p".into(),
            scope,
            apps: None,
            action,
            period,
            enabled: true,
            locked: false,
        }
    }

    fn include(names: &[&str]) -> Scope {
        Scope::Include(names.iter().map(|n| n.to_string()).collect())
    }

    #[test]
    fn validation() {
        assert!(policy(include(&[]), Action::RetainOnly, Period::Forever)
            .validate()
            .is_err());
        assert!(policy(include(&["a"]), Action::DeleteOnly, Period::Forever)
            .validate()
            .is_err());
        assert!(policy(include(&["a"]), Action::DeleteOnly, Period::Days(0))
            .validate()
            .is_err());
        assert!(policy(include(&["a"]), Action::RetainOnly, Period::Forever)
            .validate()
            .is_ok());
        let mut apps = policy(include(&["a"]), Action::RetainOnly, Period::Days(30));
        apps.apps = Some(BTreeSet::new());
        assert!(apps.validate().is_err());
    }

    #[test]
    fn scope_apps_and_enabled() {
        let mut p = policy(
            Scope::OrgWide {
                exclude: ["bob".to_string()].into(),
            },
            Action::DeleteOnly,
            Period::Days(30),
        );
        assert!(p.applies_to("alice", "Word"));
        assert!(!p.applies_to("bob", "Word"));
        p.apps = Some(["teams".to_string()].into());
        assert!(!p.applies_to("alice", "Word"));
        assert!(p.applies_to("alice", "Teams"));
        p.enabled = false;
        assert!(!p.applies_to("alice", "Teams"));
        assert!(!p.is_explicit_for("alice"));
        assert!(
            policy(include(&["alice"]), Action::RetainOnly, Period::Forever)
                .is_explicit_for("alice")
        );
    }

    #[test]
    fn the_preservation_lock() {
        let mut locked = policy(include(&["a"]), Action::RetainThenDelete, Period::Days(365));
        locked.locked = true;
        let change = |f: &dyn Fn(&mut Policy)| {
            let mut new = locked.clone();
            f(&mut new);
            locked.check_change(&new)
        };
        assert!(change(&|p| p.period = Period::Days(400)).is_ok());
        assert!(change(&|p| p.scope = include(&["a", "b"])).is_ok());
        assert!(change(&|p| p.period = Period::Days(300)).is_err());
        assert!(change(&|p| p.enabled = false).is_err());
        assert!(change(&|p| p.locked = false).is_err());
        assert!(change(&|p| p.scope = include(&["b"])).is_err());
        assert!(change(&|p| p.action = Action::DeleteOnly).is_err());
        assert!(change(&|p| p.apps = Some(["word".to_string()].into())).is_err());
        assert!(locked.check_delete().is_err());
        let unlocked = policy(include(&["a"]), Action::RetainOnly, Period::Days(1));
        assert!(unlocked.check_delete().is_ok());
    }

    #[test]
    fn holds_cover_by_kind() {
        let created = DateTime::parse_from_rfc3339("2025-03-01T00:00:00Z")
            .unwrap()
            .to_utc();
        let now = created + TimeDelta::days(10);
        assert!(Hold::Litigation {
            id: "h".into(),
            days: None
        }
        .covers(created, now));
        assert!(Hold::Litigation {
            id: "h".into(),
            days: Some(11)
        }
        .covers(created, now));
        assert!(!Hold::Litigation {
            id: "h".into(),
            days: Some(10)
        }
        .covers(created, now));
        assert!(Hold::Delay {
            id: "d".into(),
            until: now + TimeDelta::seconds(1)
        }
        .covers(created, now));
        assert!(!Hold::Delay {
            id: "d".into(),
            until: now
        }
        .covers(created, now));
    }
}
