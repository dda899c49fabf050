//! `RetentionService`: policies, litigation and delay holds, and `ExplainRetention`. Every
//! change is audited, refused ones too.

use std::collections::BTreeSet;
use std::sync::Arc;

use holdfast_proto::v1 as pb;
use holdfast_proto::v1::retention_service_server::RetentionService;
use holdfast_retention::decide::{self, Item, Reason, RetainUntil};
use holdfast_retention::policy::{Action, Period, Policy, PolicyError, Scope};
use holdfast_retention::ItemLocation;
use serde_json::json;
use tonic::{Request, Response, Status};
use ulid::Ulid;

use super::{blocking, now, Shared};
use crate::admission::Work;
use crate::audit_intent::AuditIntent;
use crate::auth::{Principal, Role};
use crate::convert;
use crate::domain::{InteractionId, MailboxId};
use crate::error::Error;
use crate::page_token::{self, PayloadReader, TokenKind};
use crate::retention::{HoldKind, HoldRecord, PolicyRecord, ReplanScope};
use crate::store::PolicyWrite;

const ADMIN: &[Role] = &[Role::RetentionAdmin];
const DISPOSITIONS: &[Role] = &[Role::RetentionAdmin, Role::Auditor, Role::Admin];
const EXPLAIN: &[Role] = &[
    Role::RetentionAdmin,
    Role::EdiscoveryAdmin,
    Role::Auditor,
    Role::Admin,
];

pub struct RetentionApi {
    shared: Arc<Shared>,
}

impl RetentionApi {
    pub fn new(shared: Arc<Shared>) -> Self {
        RetentionApi { shared }
    }

    async fn policies(&self) -> Result<Vec<PolicyRecord>, Error> {
        let store = Arc::clone(&self.shared.store);
        blocking(move || Ok(store.list_policies()?)).await
    }

    async fn holds(&self) -> Result<Vec<HoldRecord>, Error> {
        let store = Arc::clone(&self.shared.store);
        blocking(move || Ok(store.list_holds()?)).await
    }

    async fn hold(&self, id: &str) -> Result<HoldRecord, Error> {
        let wanted = parse_id("id", id)?;
        self.holds()
            .await?
            .into_iter()
            .find(|h| h.id == wanted)
            .ok_or_else(|| Error::NotFound(format!("no hold with id {wanted}")))
    }

    async fn policy(&self, id: &str) -> Result<PolicyRecord, Error> {
        let id = parse_id("id", id)?;
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
        let rules = Arc::clone(&self.shared.rules);
        blocking(move || Ok(rules.change_policies(scope, now(), change, Some(intent))?)).await
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

fn parse_id(field: &str, id: &str) -> Result<Ulid, Error> {
    Ulid::from_string(id).map_err(|_| Error::invalid(field, "not an id (26-character ULID)"))
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

/// Builds a policy from its wire form, validated.
fn policy_from_spec(id: Ulid, spec: &pb::PolicySpec, locked: bool) -> Result<Policy, Error> {
    let action = match pb::PolicyAction::try_from(spec.action) {
        Ok(pb::PolicyAction::RetainOnly) => Action::RetainOnly,
        Ok(pb::PolicyAction::DeleteOnly) => Action::DeleteOnly,
        Ok(pb::PolicyAction::RetainThenDelete) => Action::RetainThenDelete,
        _ => {
            return Err(Error::invalid(
                "action",
                "must be retain_only, delete_only or retain_then_delete",
            ))
        }
    };
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

fn policy_to_proto(record: &PolicyRecord) -> pb::RetentionPolicy {
    let policy = &record.policy;
    let (org_wide, include, exclude) = match &policy.scope {
        Scope::OrgWide { exclude } => (true, Vec::new(), exclude.iter().cloned().collect()),
        Scope::Include(include) => (false, include.iter().cloned().collect(), Vec::new()),
    };
    pb::RetentionPolicy {
        id: record.id.to_string(),
        spec: Some(pb::PolicySpec {
            name: policy.name.clone(),
            org_wide,
            include,
            exclude,
            apps: policy.apps.iter().flatten().cloned().collect(),
            action: match policy.action {
                Action::RetainOnly => pb::PolicyAction::RetainOnly,
                Action::DeleteOnly => pb::PolicyAction::DeleteOnly,
                Action::RetainThenDelete => pb::PolicyAction::RetainThenDelete,
            } as i32,
            days: match policy.period {
                Period::Days(days) => days,
                Period::Forever => 0,
            },
            enabled: policy.enabled,
        }),
        locked: policy.locked,
        created_at: Some(convert::time_to_timestamp(record.created_at)),
        created_by: record.created_by.clone(),
        updated_at: Some(convert::time_to_timestamp(record.updated_at)),
    }
}

pub(super) fn hold_to_proto(record: &HoldRecord) -> pb::HoldInfo {
    let mut info = pb::HoldInfo {
        id: record.id.to_string(),
        created_at: Some(convert::time_to_timestamp(record.created_at)),
        created_by: record.created_by.clone(),
        released_at: record.released_at.map(convert::time_to_timestamp),
        released_by: record.released_by.clone().unwrap_or_default(),
        ..pb::HoldInfo::default()
    };
    let only_mailbox = || {
        record
            .mailboxes
            .iter()
            .next()
            .map(ToString::to_string)
            .unwrap_or_default()
    };
    match &record.kind {
        HoldKind::Litigation { days } => {
            info.kind = pb::HoldKind::Litigation as i32;
            info.mailbox_id = only_mailbox();
            info.days = days.unwrap_or(0);
        }
        HoldKind::Delay { until } => {
            info.kind = pb::HoldKind::Delay as i32;
            info.mailbox_id = only_mailbox();
            info.until = Some(convert::time_to_timestamp(*until));
        }
        HoldKind::Case {
            case_id,
            name,
            query,
            created_from,
            created_to,
        } => {
            info.kind = pb::HoldKind::Case as i32;
            info.case_id = case_id.to_string();
            info.name = name.clone();
            info.custodians = record.mailboxes.iter().map(ToString::to_string).collect();
            info.query = query.clone();
            info.created_from = created_from.map(convert::time_to_timestamp);
            info.created_to = created_to.map(convert::time_to_timestamp);
        }
    }
    info
}

/// Stores a hold change while the sweeper cannot be between its last hold check and a
/// destruction.
pub(super) async fn save_hold(
    shared: &Shared,
    record: HoldRecord,
    intent: Option<AuditIntent>,
) -> Result<HoldRecord, Error> {
    save_holds(shared, vec![record.clone()], None, intent).await?;
    Ok(record)
}

/// Stores hold records, the re-plan of `replan` and the audit intent in one atomic write.
async fn save_holds(
    shared: &Shared,
    holds: Vec<HoldRecord>,
    replan: Option<ReplanScope>,
    intent: Option<AuditIntent>,
) -> Result<(), Error> {
    let rules = Arc::clone(&shared.rules);
    blocking(move || Ok(rules.save_holds(holds, replan, intent, now())?)).await
}

/// Releases a hold (see `Rules::release_hold`: delay holds, the release, the re-plan and the
/// audit entry owed are one atomic write).
pub(super) async fn release_with_delay_audited(
    shared: &Shared,
    hold: HoldRecord,
    principal: &Principal,
    intent: Option<AuditIntent>,
) -> Result<HoldRecord, Error> {
    if hold.released_at.is_some() {
        return Err(Error::FailedPrecondition(format!(
            "hold {} is already released",
            hold.id
        )));
    }
    let rules = Arc::clone(&shared.rules);
    let delay_days = shared.retention.delay_hold_days;
    let by = principal.name.clone();
    blocking(move || Ok(rules.release_hold(hold, &by, delay_days, intent, now())?)).await
}

fn describe(reason: &Reason) -> String {
    let time =
        |t: &chrono::DateTime<chrono::Utc>| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    match reason {
        Reason::RetainedBy {
            policy,
            until: Some(until),
        } => {
            format!("retained by policy {policy} until {}", time(until))
        }
        Reason::RetainedBy {
            policy,
            until: None,
        } => format!("retained forever by policy {policy}"),
        Reason::DeletedBy { policy, at } => {
            format!("leaves the user's view at {} by policy {policy}", time(at))
        }
        Reason::OverriddenByExplicit { policy } => {
            format!("org-wide policy {policy} ignored for deletion: an explicit policy applies")
        }
        Reason::DefaultRetention { until: Some(until) } => {
            format!(
                "default retention (no policy applies) until {}",
                time(until)
            )
        }
        Reason::DefaultRetention { until: None } => "default retention forever".into(),
        Reason::HeldBy { hold } => format!("held by hold {hold}"),
        Reason::MinimumAge { until } => format!("in the holds area at least until {}", time(until)),
    }
}

#[tonic::async_trait]
impl RetentionService for RetentionApi {
    async fn create_policy(
        &self,
        request: Request<pb::CreatePolicyRequest>,
    ) -> Result<Response<pb::RetentionPolicy>, Status> {
        let principal = self
            .shared
            .authorize(&request, "CreatePolicy", ADMIN)
            .await?;
        let spec = request.into_inner().spec.unwrap_or_default();
        let id = Ulid::new();
        let parameters = json!({ "name": spec.name, "action": spec.action, "days": spec.days,
            "org_wide": spec.org_wide, "include": spec.include, "exclude": spec.exclude, "apps": spec.apps });
        let intent = AuditIntent::new(
            &principal.name,
            "CreatePolicy",
            &id.to_string(),
            &parameters,
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
        let record = self
            .shared
            .audited_intent(&principal, "CreatePolicy", intent, outcome)
            .await?;
        Ok(Response::new(policy_to_proto(&record)))
    }

    async fn get_policy(
        &self,
        request: Request<pb::PolicyRef>,
    ) -> Result<Response<pb::RetentionPolicy>, Status> {
        self.shared
            .authorize(&request, "GetPolicy", EXPLAIN)
            .await?;
        let record = self.policy(&request.get_ref().id).await?;
        Ok(Response::new(policy_to_proto(&record)))
    }

    async fn list_policies(
        &self,
        request: Request<pb::ListPoliciesRequest>,
    ) -> Result<Response<pb::ListPoliciesResponse>, Status> {
        self.shared
            .authorize(&request, "ListPolicies", EXPLAIN)
            .await?;
        let policies = self.policies().await?.iter().map(policy_to_proto).collect();
        Ok(Response::new(pb::ListPoliciesResponse { policies }))
    }

    async fn update_policy(
        &self,
        request: Request<pb::UpdatePolicyRequest>,
    ) -> Result<Response<pb::RetentionPolicy>, Status> {
        let principal = self
            .shared
            .authorize(&request, "UpdatePolicy", ADMIN)
            .await?;
        let request = request.into_inner();
        let spec = request.spec.unwrap_or_default();
        let parameters = json!({ "name": spec.name, "action": spec.action, "days": spec.days, "enabled": spec.enabled,
            "org_wide": spec.org_wide, "include": spec.include, "exclude": spec.exclude, "apps": spec.apps });
        let intent = AuditIntent::new(&principal.name, "UpdatePolicy", &request.id, &parameters);
        let outcome = async {
            let mut record = self.policy(&request.id).await?;
            let updated = policy_from_spec(record.id, &spec, record.policy.locked)?;
            record.policy.check_change(&updated).map_err(policy_error)?;
            let scope =
                ReplanScope::of_policy(&record.policy).union(ReplanScope::of_policy(&updated));
            record.policy = updated;
            record.updated_at = now();
            self.save_policy(record, scope, intent.clone()).await
        }
        .await;
        let record = self
            .shared
            .audited_intent(&principal, "UpdatePolicy", intent, outcome)
            .await?;
        Ok(Response::new(policy_to_proto(&record)))
    }

    async fn delete_policy(
        &self,
        request: Request<pb::PolicyRef>,
    ) -> Result<Response<pb::DeletePolicyResponse>, Status> {
        let principal = self
            .shared
            .authorize(&request, "DeletePolicy", ADMIN)
            .await?;
        let id = request.into_inner().id;
        let intent = AuditIntent::new(&principal.name, "DeletePolicy", &id, &json!({}));
        let outcome = async {
            let record = self.policy(&id).await?;
            record.policy.check_delete().map_err(policy_error)?;
            let scope = ReplanScope::of_policy(&record.policy);
            self.change_policy(scope, PolicyWrite::Delete(record.id), intent.clone())
                .await
        }
        .await;
        self.shared
            .audited_intent(&principal, "DeletePolicy", intent, outcome)
            .await?;
        Ok(Response::new(pb::DeletePolicyResponse {}))
    }

    async fn lock_policy(
        &self,
        request: Request<pb::PolicyRef>,
    ) -> Result<Response<pb::RetentionPolicy>, Status> {
        let principal = self.shared.authorize(&request, "LockPolicy", ADMIN).await?;
        let id = request.into_inner().id;
        let intent = AuditIntent::new(&principal.name, "LockPolicy", &id, &json!({}));
        let outcome = async {
            let mut record = self.policy(&id).await?;
            if !record.policy.enabled {
                return Err(Error::FailedPrecondition(
                    "only an enabled policy can be locked".into(),
                ));
            }
            record.policy.locked = true;
            record.updated_at = now();
            // Locking changes no outcome: nothing to re-plan.
            self.save_policy(
                record,
                ReplanScope::Mailboxes(Default::default()),
                intent.clone(),
            )
            .await
        }
        .await;
        let record = self
            .shared
            .audited_intent(&principal, "LockPolicy", intent, outcome)
            .await?;
        Ok(Response::new(policy_to_proto(&record)))
    }

    async fn place_litigation_hold(
        &self,
        request: Request<pb::PlaceLitigationHoldRequest>,
    ) -> Result<Response<pb::HoldInfo>, Status> {
        let principal = self
            .shared
            .authorize(&request, "PlaceLitigationHold", ADMIN)
            .await?;
        let request = request.into_inner();
        let intent = AuditIntent::new(
            &principal.name,
            "PlaceLitigationHold",
            &request.mailbox_id,
            &json!({ "days": request.days }),
        );
        let outcome = async {
            let mailbox = convert::parse_mailbox("mailbox_id", &request.mailbox_id)?;
            if request.days > holdfast_retention::policy::MAX_DAYS {
                return Err(Error::invalid("days", "at most 36500"));
            }
            let record = HoldRecord {
                id: Ulid::new(),
                mailboxes: [mailbox].into(),
                kind: HoldKind::Litigation {
                    days: (request.days > 0).then_some(request.days),
                },
                created_at: now(),
                created_by: principal.name.clone(),
                released_at: None,
                released_by: None,
            };
            save_holds(
                &self.shared,
                vec![record.clone()],
                None,
                Some(intent.clone()),
            )
            .await?;
            Ok(record)
        }
        .await;
        let record = self
            .shared
            .audited_intent(&principal, "PlaceLitigationHold", intent, outcome)
            .await?;
        Ok(Response::new(hold_to_proto(&record)))
    }

    async fn release_hold(
        &self,
        request: Request<pb::HoldRef>,
    ) -> Result<Response<pb::HoldInfo>, Status> {
        let principal = self
            .shared
            .authorize(&request, "ReleaseHold", ADMIN)
            .await?;
        let id = request.into_inner().id;
        let delay_days = self.shared.retention.delay_hold_days;
        let intent = AuditIntent::new(
            &principal.name,
            "ReleaseHold",
            &id,
            &json!({ "delay_hold_days": delay_days }),
        );
        let outcome = async {
            let hold = self.hold(&id).await?;
            match hold.kind {
                HoldKind::Delay { .. } => Err(Error::FailedPrecondition(
                    "a delay hold is ended with ClearDelayHold".into(),
                )),
                HoldKind::Case { case_id, .. } => Err(Error::FailedPrecondition(format!(
                    "a case hold is released by its case's members (ReleaseCaseHold, case {case_id})"
                ))),
                HoldKind::Litigation { .. } => {
                    release_with_delay_audited(
                        &self.shared,
                        hold,
                        &principal,
                        Some(intent.clone()),
                    )
                    .await
                }
            }
        }
        .await;
        let record = self
            .shared
            .audited_intent(&principal, "ReleaseHold", intent, outcome)
            .await?;
        Ok(Response::new(hold_to_proto(&record)))
    }

    async fn clear_delay_hold(
        &self,
        request: Request<pb::HoldRef>,
    ) -> Result<Response<pb::HoldInfo>, Status> {
        let principal = self
            .shared
            .authorize(&request, "ClearDelayHold", ADMIN)
            .await?;
        let id = request.into_inner().id;
        let intent = AuditIntent::new(&principal.name, "ClearDelayHold", &id, &json!({}));
        let outcome = async {
            let mut hold = self.hold(&id).await?;
            let wanted = hold.id;
            if !matches!(hold.kind, HoldKind::Delay { .. }) || hold.released_at.is_some() {
                return Err(Error::FailedPrecondition(format!(
                    "{wanted} is not an active delay hold"
                )));
            }
            hold.released_at = Some(now());
            hold.released_by = Some(principal.name.clone());
            // The cleared hold and the re-plan it needs are one write.
            let scope = ReplanScope::Mailboxes(hold.mailboxes.clone());
            save_holds(
                &self.shared,
                vec![hold.clone()],
                Some(scope),
                Some(intent.clone()),
            )
            .await?;
            Ok(hold)
        }
        .await;
        let record = self
            .shared
            .audited_intent(&principal, "ClearDelayHold", intent, outcome)
            .await?;
        Ok(Response::new(hold_to_proto(&record)))
    }

    async fn list_holds(
        &self,
        request: Request<pb::ListHoldsRequest>,
    ) -> Result<Response<pb::ListHoldsResponse>, Status> {
        self.shared
            .authorize(&request, "ListHolds", EXPLAIN)
            .await?;
        let request = request.into_inner();
        let mailbox = match request.mailbox_id.as_str() {
            "" => None,
            raw => Some(convert::parse_mailbox("mailbox_id", raw)?),
        };
        let at = now();
        let holds = self
            .holds()
            .await?
            .iter()
            .filter(|h| mailbox.as_ref().is_none_or(|m| h.is_on(m)))
            .filter(|h| request.include_released || h.is_active(at))
            .map(hold_to_proto)
            .collect();
        Ok(Response::new(pb::ListHoldsResponse { holds }))
    }

    async fn explain_retention(
        &self,
        request: Request<pb::ExplainRetentionRequest>,
    ) -> Result<Response<pb::ExplainRetentionResponse>, Status> {
        self.shared
            .authorize(&request, "ExplainRetention", EXPLAIN)
            .await?;
        let id: InteractionId = request
            .get_ref()
            .id
            .parse()
            .map_err(|reason: String| Error::invalid("id", reason))?;
        let store = Arc::clone(&self.shared.store);
        let sweeper = Arc::clone(&self.shared.sweeper);
        let at = now();
        let (item, decision) = blocking(move || {
            let item = store
                .get_interaction(id)?
                .ok_or_else(|| Error::NotFound(format!("no interaction with id {id}")))?;
            let planned = store
                .planned_items(&[id])?
                .pop()
                .flatten()
                .ok_or_else(|| Error::NotFound(format!("no interaction with id {id}")))?;
            let decision = sweeper.explain(&planned, at)?;
            Ok((item, decision))
        })
        .await?;
        let interaction = convert::interaction_to_proto(item);
        Ok(Response::new(pb::ExplainRetentionResponse {
            id: interaction.id,
            mailbox_id: interaction.mailbox_id,
            location: interaction.location,
            move_reason: interaction.move_reason,
            moved_at: interaction.moved_at,
            created_at: interaction.created_at,
            retain_until: match decision.retain_until {
                RetainUntil::Date(until) => Some(convert::time_to_timestamp(until)),
                _ => None,
            },
            retained_forever: decision.retain_until == RetainUntil::Forever,
            delete_at: decision.delete_at.map(convert::time_to_timestamp),
            destroyable: decision.destroyable,
            next_check: decision.next_check.map(convert::time_to_timestamp),
            reasons: decision.reasons.iter().map(describe).collect(),
        }))
    }

    async fn preview_policy(
        &self,
        request: Request<pb::PreviewPolicyRequest>,
    ) -> Result<Response<pb::PreviewPolicyResponse>, Status> {
        let principal = self
            .shared
            .authorize(&request, "PreviewPolicy", ADMIN)
            .await?;
        let slot = self
            .shared
            .admission
            .admit(Work::LongOperation, &principal.name)?;
        let request = request.into_inner();
        let spec = request.spec.unwrap_or_default();
        let mut current: Vec<PolicyRecord> = self.policies().await?;
        let (id, locked, replaced) = match request.policy_id.as_str() {
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
        let store = Arc::clone(&self.shared.store);
        let settings = self.shared.rules.settings;
        // A scan of every item: a long operation, bounded server-wide.
        let response = self
            .shared
            .admission
            .long_operation(slot, move || {
                let at = now();
                let mut by_mailbox: std::collections::BTreeMap<String, pb::MailboxPreview> =
                    Default::default();
                let mut response = pb::PreviewPolicyResponse::default();
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
                        response.items_examined += 1;
                        // Case holds count as covering here: a preview does not run their queries.
                        let covering: Vec<_> = holds
                            .iter()
                            .filter(|h| h.is_active(at) && h.is_on(&item.facts.mailbox))
                            .filter(|h| h.admits_created_at(item.facts.created_at))
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
                        // An item the new policy moves now becomes destroyable once it has spent
                        // the minimum age in the holds area, if nothing else keeps it.
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
                            .or_insert_with(|| pb::MailboxPreview {
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
                            response.total_move_now += 1;
                        }
                        if new_destroyable && !old.destroyable {
                            entry.destroyable += 1;
                            response.total_destroyable += 1;
                        }
                    }
                }
                response.mailboxes = by_mailbox
                    .into_values()
                    .filter(|m| m.items + m.move_now + m.destroyable > 0)
                    .collect();
                Ok(response)
            })
            .await?;
        Ok(Response::new(response))
    }

    async fn get_mailbox_status(
        &self,
        request: Request<pb::GetMailboxStatusRequest>,
    ) -> Result<Response<pb::MailboxStatus>, Status> {
        self.shared
            .authorize(&request, "GetMailboxStatus", EXPLAIN)
            .await?;
        let mailbox = convert::parse_mailbox("mailbox_id", &request.get_ref().mailbox_id)?;
        let at = now();
        let policies = self
            .policies()
            .await?
            .iter()
            .filter(|r| {
                r.policy.enabled
                    && match &r.policy.scope {
                        Scope::OrgWide { exclude } => !exclude.contains(mailbox.as_str()),
                        Scope::Include(included) => included.contains(mailbox.as_str()),
                    }
            })
            .map(policy_to_proto)
            .collect();
        let holds = self
            .holds()
            .await?
            .iter()
            .filter(|h| h.is_active(at) && h.is_on(&mailbox))
            .map(hold_to_proto)
            .collect();
        let store = Arc::clone(&self.shared.store);
        let counted = mailbox.clone();
        let (active, held) = blocking(move || Ok(store.count_mailbox(&counted)?)).await?;
        Ok(Response::new(pb::MailboxStatus {
            mailbox_id: mailbox.to_string(),
            active_items: active,
            holds_area_items: held,
            policies,
            holds,
            default_retention_days: self.shared.retention.default_retention_days,
        }))
    }

    async fn run_sweep(
        &self,
        request: Request<pb::RunSweepRequest>,
    ) -> Result<Response<pb::SweepStats>, Status> {
        let principal = self.shared.authorize(&request, "RunSweep", ADMIN).await?;
        let (reply, answer) = tokio::sync::oneshot::channel();
        let requests = self.shared.sweep_requests.clone();
        let outcome = async {
            // Never wait for room in the sweeper's queue on a thread: a full queue is an answer.
            requests
                .try_send(crate::sweeper::SweepRequest { reply })
                .map_err(|error| match error {
                    std::sync::mpsc::TrySendError::Full(_) => Error::ResourceExhausted(
                        "sweep requests are already queued; try again when they are done".into(),
                    ),
                    std::sync::mpsc::TrySendError::Disconnected(_) => {
                        Error::Unavailable("the sweeper has stopped".into())
                    }
                })?;
            answer
                .await
                .map_err(|_| Error::Unavailable("the sweeper has stopped".into()))?
        }
        .await;
        let stats = self
            .shared
            .audited(&principal, "RunSweep", String::new(), json!({}), outcome)
            .await?;
        Ok(Response::new(sweep_stats_to_proto(&stats)))
    }

    async fn get_sweeper_status(
        &self,
        request: Request<pb::GetSweeperStatusRequest>,
    ) -> Result<Response<pb::SweeperStatus>, Status> {
        self.shared
            .authorize(&request, "GetSweeperStatus", EXPLAIN)
            .await?;
        let status = self.shared.sweeper.status();
        let rules = Arc::clone(&self.shared.rules);
        let store = Arc::clone(&self.shared.store);
        let (pending, (erasure_pending, erasure_oldest)) =
            blocking(move || Ok((rules.replan_job()?, store.erasure_status()?))).await?;
        Ok(Response::new(pb::SweeperStatus {
            running: status.running,
            last_run: status.last_run.as_ref().map(sweep_stats_to_proto),
            last_error: status.last_error.unwrap_or_default(),
            totals: Some(sweep_stats_to_proto(&status.totals)),
            interval_seconds: status.interval_seconds,
            replan_pending: pending.is_some(),
            unevaluable_hold_ids: status
                .last_run
                .iter()
                .flat_map(|run| run.unevaluable_holds.keys().cloned())
                .collect(),
            erasure_pending,
            erasure_oldest: erasure_oldest.map(convert::time_to_timestamp),
            erasure_bound_seconds: self.shared.sweeper.erasure_bound().as_secs(),
            erased_total: status.erased_total,
            last_erasure_error: status.last_erasure_error.unwrap_or_default(),
        }))
    }

    async fn list_dispositions(
        &self,
        request: Request<pb::ListDispositionsRequest>,
    ) -> Result<Response<pb::ListDispositionsResponse>, Status> {
        self.shared
            .authorize(&request, "ListDispositions", DISPOSITIONS)
            .await?;
        let request = request.into_inner();
        let mailbox = match request.mailbox_id.as_str() {
            "" => None,
            raw => Some(convert::parse_mailbox("mailbox_id", raw)?),
        };
        let limit = super::page_size(request.page_size)?;
        let token_context =
            page_token::context(&[mailbox.as_ref().map_or(&b""[..], |m| m.as_str().as_bytes())]);
        let after = match request.page_token.as_str() {
            "" => None,
            token => {
                let payload = self.shared.page_tokens.open(
                    TokenKind::ListDispositions,
                    token_context,
                    token,
                    now(),
                )?;
                let mut reader = PayloadReader::new(&payload);
                let after = (reader.i64()?, InteractionId::from_bytes(reader.bytes16()?));
                reader.finish()?;
                Some(after)
            }
        };
        let store = Arc::clone(&self.shared.store);
        let found =
            blocking(move || Ok(store.list_dispositions(mailbox.as_ref(), after, limit + 1)?))
                .await?;
        let next_page_token = if found.len() > limit {
            let last = &found[limit - 1];
            let mut payload = last.purged_at.timestamp_micros().to_be_bytes().to_vec();
            payload.extend_from_slice(&last.id.to_bytes());
            self.shared.page_tokens.seal(
                TokenKind::ListDispositions,
                token_context,
                &payload,
                now(),
            )
        } else {
            String::new()
        };
        let dispositions = found
            .iter()
            .take(limit)
            .map(|d| pb::Disposition {
                id: d.id.to_string(),
                mailbox_id: d.mailbox.to_string(),
                content_sha256: d.content_sha256.clone(),
                created_at: Some(convert::time_to_timestamp(d.created_at)),
                moved_at: Some(convert::time_to_timestamp(d.moved_at)),
                purged_at: Some(convert::time_to_timestamp(d.purged_at)),
                reason: convert::move_reason_to_proto(d.reason) as i32,
                policies: d.policies.clone(),
            })
            .collect();
        Ok(Response::new(pb::ListDispositionsResponse {
            dispositions,
            next_page_token,
        }))
    }
}

fn sweep_stats_to_proto(stats: &crate::sweeper::SweepStats) -> pb::SweepStats {
    pb::SweepStats {
        started_at: stats.started_at.map(convert::time_to_timestamp),
        duration_ms: stats.duration_ms,
        examined: stats.examined,
        moved: stats.moved,
        destroyed: stats.destroyed,
        skipped_held: stats.skipped_held,
        errors: stats.errors,
        item_errors: stats.item_errors,
        unevaluable_holds: stats.unevaluable_holds.len() as u64,
    }
}
