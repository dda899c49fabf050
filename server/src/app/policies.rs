//! Retention policies (SPEC §3): create, read, list, change, delete, lock, and preview the
//! impact of a change before saving it. Changes need `retention_admin`; reading takes
//! `retention_admin`, `ediscovery_admin`, `auditor` or `admin`. Every change is saved with
//! the re-plan it needs and the audit entry it owes in one write.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use holdfast_retention::decide::{self, Item};
use holdfast_retention::policy::{Action, Period, Policy, PolicyError, Scope};
use holdfast_retention::ItemLocation;
use serde_json::json;
use ulid::Ulid;

use super::{blocking, now, parse_ulid, App};
use crate::admission::Work;
use crate::audit_intent::AuditIntent;
use crate::auth::{Principal, Role};
use crate::domain::MailboxId;
use crate::error::Error;
use crate::lifecycle::{HoldRecord, PolicyRecord, ReplanScope};
use crate::store::PolicyWrite;

/// Who changes policies and holds, previews, and runs the sweeper.
pub const RETENTION_ADMIN: &[Role] = &[Role::RetentionAdmin];
/// Who reads policies, holds and explanations.
pub const RETENTION_READERS: &[Role] = &[
    Role::RetentionAdmin,
    Role::EdiscoveryAdmin,
    Role::Auditor,
    Role::Admin,
];

/// A policy as a caller describes it (validated into a `Policy` here).
#[derive(Debug, Clone, Default)]
pub struct PolicySpec {
    pub name: String,
    pub org_wide: bool,
    pub include: Vec<String>,
    pub exclude: Vec<String>,
    /// Empty: every app.
    pub apps: Vec<String>,
    /// `None`: not given (refused).
    pub action: Option<Action>,
    /// 0: forever.
    pub days: u32,
    pub enabled: bool,
}

impl PolicySpec {
    /// What an audit entry records of the spec.
    fn parameters(&self) -> serde_json::Value {
        json!({ "name": self.name, "action": self.action.map(action_name), "days": self.days,
            "enabled": self.enabled, "org_wide": self.org_wide, "include": self.include,
            "exclude": self.exclude, "apps": self.apps })
    }
}

pub fn action_name(action: Action) -> &'static str {
    match action {
        Action::RetainOnly => "retain_only",
        Action::DeleteOnly => "delete_only",
        Action::RetainThenDelete => "retain_then_delete",
    }
}

/// What a policy (new, or a change to one) would do now, per mailbox.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PolicyPreview {
    pub items_examined: u64,
    pub total_move_now: u64,
    pub total_destroyable: u64,
    /// Mailboxes where the policy applies to an item or changes an outcome.
    pub mailboxes: Vec<MailboxPreview>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MailboxPreview {
    pub mailbox_id: String,
    /// Items the policy applies to.
    pub items: u64,
    /// Items that would leave the user's view at the next pass and do not today.
    pub move_now: u64,
    /// Items that would become destroyable (once past the holds-area minimum age).
    pub destroyable: u64,
}

impl App {
    pub async fn create_policy(
        &self,
        principal: &Principal,
        spec: PolicySpec,
    ) -> Result<PolicyRecord, Error> {
        self.authorize(principal, "CreatePolicy", RETENTION_ADMIN)
            .await?;
        let id = Ulid::new();
        let intent = AuditIntent::new(
            &principal.name,
            "CreatePolicy",
            &id.to_string(),
            &spec.parameters(),
        );
        let outcome = async {
            let policy = policy_from_spec(id, &spec, false)?;
            if self
                .policies()
                .await?
                .iter()
                .any(|p| p.policy.name.eq_ignore_ascii_case(&policy.name))
            {
                return Err(Error::AlreadyExists(format!(
                    "a policy named {:?} exists",
                    policy.name
                )));
            }
            let at = now();
            let scope = ReplanScope::of_policy(&policy);
            self.save_policy(
                PolicyRecord {
                    id,
                    policy,
                    created_at: at,
                    created_by: principal.name.clone(),
                    updated_at: at,
                },
                scope,
                intent.clone(),
            )
            .await
        }
        .await;
        self.audited_intent(principal, "CreatePolicy", intent, outcome)
            .await
    }

    pub async fn get_policy(&self, principal: &Principal, id: &str) -> Result<PolicyRecord, Error> {
        self.authorize(principal, "GetPolicy", RETENTION_READERS)
            .await?;
        self.policy(id).await
    }

    pub async fn list_policies(&self, principal: &Principal) -> Result<Vec<PolicyRecord>, Error> {
        self.authorize(principal, "ListPolicies", RETENTION_READERS)
            .await?;
        self.policies().await
    }

    pub async fn update_policy(
        &self,
        principal: &Principal,
        id: &str,
        spec: PolicySpec,
    ) -> Result<PolicyRecord, Error> {
        self.authorize(principal, "UpdatePolicy", RETENTION_ADMIN)
            .await?;
        let intent = AuditIntent::new(&principal.name, "UpdatePolicy", id, &spec.parameters());
        let outcome = async {
            let mut record = self.policy(id).await?;
            let updated = policy_from_spec(record.id, &spec, record.policy.locked)?;
            record.policy.check_change(&updated).map_err(policy_error)?;
            let scope =
                ReplanScope::of_policy(&record.policy).union(ReplanScope::of_policy(&updated));
            record.policy = updated;
            record.updated_at = now();
            self.save_policy(record, scope, intent.clone()).await
        }
        .await;
        self.audited_intent(principal, "UpdatePolicy", intent, outcome)
            .await
    }

    pub async fn delete_policy(&self, principal: &Principal, id: &str) -> Result<(), Error> {
        self.authorize(principal, "DeletePolicy", RETENTION_ADMIN)
            .await?;
        let intent = AuditIntent::new(&principal.name, "DeletePolicy", id, &json!({}));
        let outcome = async {
            let record = self.policy(id).await?;
            record.policy.check_delete().map_err(policy_error)?;
            let scope = ReplanScope::of_policy(&record.policy);
            self.change_policy(scope, PolicyWrite::Delete(record.id), intent.clone())
                .await
        }
        .await;
        self.audited_intent(principal, "DeletePolicy", intent, outcome)
            .await
    }

    /// Preservation lock: from now on the policy can only be made stricter.
    pub async fn lock_policy(
        &self,
        principal: &Principal,
        id: &str,
    ) -> Result<PolicyRecord, Error> {
        self.authorize(principal, "LockPolicy", RETENTION_ADMIN)
            .await?;
        let intent = AuditIntent::new(&principal.name, "LockPolicy", id, &json!({}));
        let outcome = async {
            let mut record = self.policy(id).await?;
            if !record.policy.enabled {
                return Err(Error::FailedPrecondition(
                    "only an enabled policy can be locked".into(),
                ));
            }
            record.policy.locked = true;
            record.updated_at = now();
            // Locking changes no outcome. Where the storage enforces retention, though, the
            // items it retains are re-planned: their content's retention becomes COMPLIANCE.
            let scope = if self.store.enforces_locks() {
                ReplanScope::of_policy(&record.policy)
            } else {
                ReplanScope::Mailboxes(Default::default())
            };
            self.save_policy(record, scope, intent.clone()).await
        }
        .await;
        self.audited_intent(principal, "LockPolicy", intent, outcome)
            .await
    }

    /// What `spec` would do if saved now (as a new policy, or replacing `policy_id`): a scan
    /// of every item in its scope, run as a long operation.
    pub async fn preview_policy(
        &self,
        principal: &Principal,
        policy_id: &str,
        spec: PolicySpec,
    ) -> Result<PolicyPreview, Error> {
        self.authorize(principal, "PreviewPolicy", RETENTION_ADMIN)
            .await?;
        let slot = self.admission.admit(Work::LongOperation, &principal.name)?;
        let mut current: Vec<PolicyRecord> = self.policies().await?;
        let (id, locked, replaced) = match policy_id {
            "" => (Ulid::new(), false, None),
            raw => {
                let record = self.policy(raw).await?;
                (record.id, record.policy.locked, Some(record.policy))
            }
        };
        let proposed = policy_from_spec(id, &spec, locked)?;
        if let Some(old) = &replaced {
            old.check_change(&proposed).map_err(policy_error)?;
        }
        let scope = replaced.as_ref().map_or_else(
            || ReplanScope::of_policy(&proposed),
            |old| ReplanScope::of_policy(old).union(ReplanScope::of_policy(&proposed)),
        );
        let before: Vec<Policy> = current.iter().map(|r| r.policy.clone()).collect();
        current.retain(|r| r.id != id);
        let mut after: Vec<Policy> = current.into_iter().map(|r| r.policy).collect();
        after.push(proposed);
        let holds = self.holds().await?;
        let store = Arc::clone(&self.store);
        let settings = self.lifecycle.settings;
        // A scan of every item: a long operation, bounded server-wide.
        self.admission
            .long_operation(slot, move || {
                let at = now();
                let mut by_mailbox: BTreeMap<String, MailboxPreview> = BTreeMap::new();
                let mut preview = PolicyPreview::default();
                let mut cursor = None;
                loop {
                    let scanned = store.scan_planned_items(cursor, 10_000)?;
                    let Some(last) = scanned.last() else { break };
                    cursor = Some(match last {
                        Ok(item) => item.id,
                        Err((id, _)) => *id,
                    });
                    // An unreadable record is left out of the preview (the sweeper reports it).
                    for item in scanned
                        .iter()
                        .filter_map(|entry| entry.as_ref().ok())
                        .filter(|i| scope.contains(&i.facts.mailbox))
                    {
                        preview.items_examined += 1;
                        // A case hold's query counts as matching here: a preview does not
                        // run queries, so it may show fewer items going than will go, never
                        // more.
                        let covering: Vec<_> = holds
                            .iter()
                            .filter(|h| {
                                h.covers(&item.facts.mailbox, item.facts.created_at, at, || true)
                            })
                            .map(HoldRecord::to_hold)
                            .collect();
                        let view = |policies: &[Policy], location| {
                            decide::decide(
                                &Item {
                                    mailbox: item.facts.mailbox.as_str(),
                                    app: &item.facts.app,
                                    created_at: item.facts.created_at,
                                    location,
                                },
                                policies,
                                &covering,
                                &settings,
                                at,
                            )
                        };
                        let old = view(&before, item.location);
                        let new = view(&after, item.location);
                        // An item the new policy moves now becomes destroyable once it has
                        // spent the minimum age in the holds area, if nothing else keeps it.
                        let new_destroyable = if new.move_now {
                            let moved = ItemLocation::Active.move_to_holds_area(
                                holdfast_retention::MoveReason::Expired,
                                at - settings.holds_area_minimum_age,
                            );
                            view(&after, moved).destroyable
                        } else {
                            new.destroyable
                        };
                        let entry = by_mailbox
                            .entry(item.facts.mailbox.to_string())
                            .or_insert_with(|| MailboxPreview {
                                mailbox_id: item.facts.mailbox.to_string(),
                                ..Default::default()
                            });
                        if after.iter().any(|p| {
                            p.id == id.to_string()
                                && p.applies_to(item.facts.mailbox.as_str(), &item.facts.app)
                        }) {
                            entry.items += 1;
                        }
                        if new.move_now && !old.move_now {
                            entry.move_now += 1;
                            preview.total_move_now += 1;
                        }
                        if new_destroyable && !old.destroyable {
                            entry.destroyable += 1;
                            preview.total_destroyable += 1;
                        }
                    }
                }
                preview.mailboxes = by_mailbox
                    .into_values()
                    .filter(|m| m.items + m.move_now + m.destroyable > 0)
                    .collect();
                Ok(preview)
            })
            .await
    }

    /// Every policy, by id.
    pub(crate) async fn policies(&self) -> Result<Vec<PolicyRecord>, Error> {
        let store = Arc::clone(&self.store);
        blocking(move || Ok(store.list_policies()?)).await
    }

    async fn policy(&self, id: &str) -> Result<PolicyRecord, Error> {
        let id = parse_ulid("id", id)?;
        self.policies()
            .await?
            .into_iter()
            .find(|p| p.id == id)
            .ok_or_else(|| Error::NotFound(format!("no policy with id {id}")))
    }

    /// Stores a policy change with ingest paused, re-plans `scope`, and records the audit
    /// entry owed by the change in the same write.
    async fn change_policy(
        &self,
        scope: ReplanScope,
        change: PolicyWrite,
        intent: AuditIntent,
    ) -> Result<(), Error> {
        let lifecycle = Arc::clone(&self.lifecycle);
        blocking(move || Ok(lifecycle.change_policies(scope, now(), change, Some(intent))?)).await
    }

    async fn save_policy(
        &self,
        record: PolicyRecord,
        scope: ReplanScope,
        intent: AuditIntent,
    ) -> Result<PolicyRecord, Error> {
        self.change_policy(scope, PolicyWrite::Put(record.clone()), intent)
            .await?;
        Ok(record)
    }
}

fn policy_error(error: PolicyError) -> Error {
    match error {
        PolicyError::Invalid { field, reason } => Error::invalid(field, reason),
        PolicyError::Locked { .. } => Error::FailedPrecondition(error.to_string()),
    }
}

fn mailboxes(field: &str, values: &[String]) -> Result<BTreeSet<String>, Error> {
    values
        .iter()
        .map(|v| {
            MailboxId::parse(v)
                .map(|m| m.to_string())
                .map_err(|reason| Error::invalid(field, reason))
        })
        .collect()
}

/// Builds a policy from its spec, validated.
fn policy_from_spec(id: Ulid, spec: &PolicySpec, locked: bool) -> Result<Policy, Error> {
    let action = spec.action.ok_or_else(|| {
        Error::invalid(
            "action",
            "must be retain_only, delete_only or retain_then_delete",
        )
    })?;
    let include = mailboxes("include", &spec.include)?;
    let exclude = mailboxes("exclude", &spec.exclude)?;
    let scope = if spec.org_wide {
        if !include.is_empty() {
            return Err(Error::invalid(
                "include",
                "an org-wide policy takes only an exclude list",
            ));
        }
        Scope::OrgWide { exclude }
    } else {
        if !exclude.is_empty() {
            return Err(Error::invalid(
                "exclude",
                "only an org-wide policy takes an exclude list",
            ));
        }
        Scope::Include(include)
    };
    let apps: BTreeSet<String> = spec.apps.iter().map(|a| a.to_lowercase()).collect();
    let policy = Policy {
        id: id.to_string(),
        name: spec.name.clone(),
        scope,
        apps: (!apps.is_empty()).then_some(apps),
        action,
        period: if spec.days == 0 {
            Period::Forever
        } else {
            Period::Days(spec.days)
        },
        enabled: spec.enabled,
        locked,
    };
    policy.validate().map_err(policy_error)?;
    Ok(policy)
}
