//! `RetentionService`: policies, litigation and delay holds, and `ExplainRetention`. Every
//! change is audited, refused ones too.

use std::collections::BTreeSet;
use std::sync::Arc;

use chrono::TimeDelta;
use holdfast_proto::v1 as pb;
use holdfast_proto::v1::retention_service_server::RetentionService;
use holdfast_retention::decide::{self, Item, Reason, RetainUntil};
use holdfast_retention::policy::{Action, Period, Policy, PolicyError, Scope};
use serde_json::json;
use tonic::{Request, Response, Status};
use ulid::Ulid;

use super::{blocking, now, Shared};
use crate::auth::{Principal, Role};
use crate::convert;
use crate::domain::{InteractionId, MailboxId};
use crate::error::Error;
use crate::retention::{self, HoldKind, HoldRecord, PolicyRecord};

const ADMIN: &[Role] = &[Role::RetentionAdmin];
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

    async fn save_policy(&self, record: PolicyRecord) -> Result<PolicyRecord, Error> {
        let store = Arc::clone(&self.shared.store);
        blocking(move || {
            store.put_policy(&record)?;
            Ok(record)
        })
        .await
    }

    async fn save_hold(&self, record: HoldRecord) -> Result<HoldRecord, Error> {
        let store = Arc::clone(&self.shared.store);
        blocking(move || {
            store.put_hold(&record)?;
            Ok(record)
        })
        .await
    }

    /// Audits the outcome of a change, refused or not, then returns it.
    async fn audited<T>(
        &self,
        principal: &Principal,
        action: &'static str,
        target: String,
        parameters: serde_json::Value,
        outcome: Result<T, Error>,
    ) -> Result<T, Status> {
        let result = match &outcome {
            Ok(_) => "ok".to_string(),
            Err(error) => format!("refused: {error}"),
        };
        self.shared
            .audit_done(principal, action, target, parameters, result)
            .await?;
        outcome.map_err(Status::from)
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

fn hold_to_proto(record: &HoldRecord) -> pb::HoldInfo {
    let (kind, days, until) = match record.kind {
        HoldKind::Litigation { days } => (pb::HoldKind::Litigation, days.unwrap_or(0), None),
        HoldKind::Delay { until } => (
            pb::HoldKind::Delay,
            0,
            Some(convert::time_to_timestamp(until)),
        ),
    };
    pb::HoldInfo {
        id: record.id.to_string(),
        kind: kind as i32,
        mailbox_id: record.mailbox.to_string(),
        days,
        until,
        created_at: Some(convert::time_to_timestamp(record.created_at)),
        created_by: record.created_by.clone(),
        released_at: record.released_at.map(convert::time_to_timestamp),
        released_by: record.released_by.clone().unwrap_or_default(),
    }
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
            self.save_policy(PolicyRecord {
                id,
                policy,
                created_at: at,
                created_by: principal.name.clone(),
                updated_at: at,
            })
            .await
        }
        .await;
        let record = self
            .audited(
                &principal,
                "CreatePolicy",
                id.to_string(),
                parameters,
                outcome,
            )
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
        let outcome = async {
            let mut record = self.policy(&request.id).await?;
            let updated = policy_from_spec(record.id, &spec, record.policy.locked)?;
            record.policy.check_change(&updated).map_err(policy_error)?;
            record.policy = updated;
            record.updated_at = now();
            self.save_policy(record).await
        }
        .await;
        let record = self
            .audited(&principal, "UpdatePolicy", request.id, parameters, outcome)
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
        let outcome = async {
            let record = self.policy(&id).await?;
            record.policy.check_delete().map_err(policy_error)?;
            let store = Arc::clone(&self.shared.store);
            blocking(move || Ok(store.delete_policy(record.id)?)).await
        }
        .await;
        self.audited(&principal, "DeletePolicy", id, json!({}), outcome)
            .await?;
        Ok(Response::new(pb::DeletePolicyResponse {}))
    }

    async fn lock_policy(
        &self,
        request: Request<pb::PolicyRef>,
    ) -> Result<Response<pb::RetentionPolicy>, Status> {
        let principal = self.shared.authorize(&request, "LockPolicy", ADMIN).await?;
        let id = request.into_inner().id;
        let outcome = async {
            let mut record = self.policy(&id).await?;
            if !record.policy.enabled {
                return Err(Error::FailedPrecondition(
                    "only an enabled policy can be locked".into(),
                ));
            }
            record.policy.locked = true;
            record.updated_at = now();
            self.save_policy(record).await
        }
        .await;
        let record = self
            .audited(&principal, "LockPolicy", id, json!({}), outcome)
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
        let outcome = async {
            let mailbox = convert::parse_mailbox("mailbox_id", &request.mailbox_id)?;
            if request.days > holdfast_retention::policy::MAX_DAYS {
                return Err(Error::invalid("days", "at most 36500"));
            }
            self.save_hold(HoldRecord {
                id: Ulid::new(),
                mailbox,
                kind: HoldKind::Litigation {
                    days: (request.days > 0).then_some(request.days),
                },
                created_at: now(),
                created_by: principal.name.clone(),
                released_at: None,
                released_by: None,
            })
            .await
        }
        .await;
        let record = self
            .audited(
                &principal,
                "PlaceLitigationHold",
                request.mailbox_id.clone(),
                json!({ "days": request.days }),
                outcome,
            )
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
        let delay_days = i64::from(self.shared.retention.delay_hold_days);
        let outcome = async {
            let mut hold = self.hold(&id).await?;
            let wanted = hold.id;
            if hold.released_at.is_some() {
                return Err(Error::FailedPrecondition(format!(
                    "hold {wanted} is already released"
                )));
            }
            if matches!(hold.kind, HoldKind::Delay { .. }) {
                return Err(Error::FailedPrecondition(
                    "a delay hold is ended with ClearDelayHold".into(),
                ));
            }
            let at = now();
            hold.released_at = Some(at);
            hold.released_by = Some(principal.name.clone());
            // The delay hold first, so that no instant is left without protection.
            if delay_days > 0 {
                self.save_hold(HoldRecord {
                    id: Ulid::new(),
                    mailbox: hold.mailbox.clone(),
                    kind: HoldKind::Delay {
                        until: at + TimeDelta::days(delay_days),
                    },
                    created_at: at,
                    created_by: principal.name.clone(),
                    released_at: None,
                    released_by: None,
                })
                .await?;
            }
            self.save_hold(hold).await
        }
        .await;
        let record = self
            .audited(
                &principal,
                "ReleaseHold",
                id,
                json!({ "delay_hold_days": delay_days }),
                outcome,
            )
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
            self.save_hold(hold).await
        }
        .await;
        let record = self
            .audited(&principal, "ClearDelayHold", id, json!({}), outcome)
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
            .filter(|h| mailbox.as_ref().is_none_or(|m| &h.mailbox == m))
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
        let item = blocking(move || Ok(store.get_interaction(id)?))
            .await?
            .ok_or_else(|| Error::NotFound(format!("no interaction with id {id}")))?;
        let at = now();
        let policies: Vec<Policy> = self
            .policies()
            .await?
            .into_iter()
            .map(|r| r.policy)
            .collect();
        let holds: Vec<_> = self
            .holds()
            .await?
            .iter()
            .filter(|h| h.mailbox == item.content.mailbox_id && h.is_active(at))
            .map(HoldRecord::to_hold)
            .collect();
        let decision = decide::decide(
            &Item {
                mailbox: item.content.mailbox_id.as_str(),
                app: &item.content.app,
                created_at: item.content.created_at,
                location: item.location,
            },
            &policies,
            &holds,
            &retention::settings(&self.shared.retention),
            at,
        );
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
}
