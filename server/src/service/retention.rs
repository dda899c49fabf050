//! `RetentionService` over gRPC: policies, litigation and delay holds, explanations, previews,
//! mailbox status, the sweeper and dispositions. Each handler authenticates, decodes, calls
//! the application layer (`app::policies`, `app::holds`, `app::explain`, `app::sweeps`) and
//! encodes.

use std::sync::Arc;

use holdfast_proto::v1 as pb;
use holdfast_proto::v1::retention_service_server::RetentionService;
use holdfast_retention::decide::RetainUntil;
use holdfast_retention::policy::{Action, Period, Scope};
use tonic::{Request, Response, Status};

use super::authenticate;
use crate::app::policies::PolicySpec;
use crate::app::App;
use crate::convert;
use crate::lifecycle::{HoldKind, HoldRecord, PolicyRecord};

pub struct RetentionApi {
    app: Arc<App>,
}

impl RetentionApi {
    pub fn new(app: Arc<App>) -> Self {
        RetentionApi { app }
    }
}

fn spec_from_proto(spec: pb::PolicySpec) -> PolicySpec {
    PolicySpec {
        name: spec.name,
        org_wide: spec.org_wide,
        include: spec.include,
        exclude: spec.exclude,
        apps: spec.apps,
        action: match pb::PolicyAction::try_from(spec.action) {
            Ok(pb::PolicyAction::RetainOnly) => Some(Action::RetainOnly),
            Ok(pb::PolicyAction::DeleteOnly) => Some(Action::DeleteOnly),
            Ok(pb::PolicyAction::RetainThenDelete) => Some(Action::RetainThenDelete),
            _ => None,
        },
        days: spec.days,
        enabled: spec.enabled,
    }
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

pub(crate) fn hold_to_proto(record: &HoldRecord) -> pb::HoldInfo {
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

#[tonic::async_trait]
impl RetentionService for RetentionApi {
    async fn create_policy(
        &self,
        request: Request<pb::CreatePolicyRequest>,
    ) -> Result<Response<pb::RetentionPolicy>, Status> {
        let principal = authenticate(&self.app, &request, "CreatePolicy")?;
        let spec = spec_from_proto(request.into_inner().spec.unwrap_or_default());
        let record = self.app.create_policy(&principal, spec).await?;
        Ok(Response::new(policy_to_proto(&record)))
    }

    async fn get_policy(
        &self,
        request: Request<pb::PolicyRef>,
    ) -> Result<Response<pb::RetentionPolicy>, Status> {
        let principal = authenticate(&self.app, &request, "GetPolicy")?;
        let record = self
            .app
            .get_policy(&principal, &request.get_ref().id)
            .await?;
        Ok(Response::new(policy_to_proto(&record)))
    }

    async fn list_policies(
        &self,
        request: Request<pb::ListPoliciesRequest>,
    ) -> Result<Response<pb::ListPoliciesResponse>, Status> {
        let principal = authenticate(&self.app, &request, "ListPolicies")?;
        let policies = self.app.list_policies(&principal).await?;
        Ok(Response::new(pb::ListPoliciesResponse {
            policies: policies.iter().map(policy_to_proto).collect(),
        }))
    }

    async fn update_policy(
        &self,
        request: Request<pb::UpdatePolicyRequest>,
    ) -> Result<Response<pb::RetentionPolicy>, Status> {
        let principal = authenticate(&self.app, &request, "UpdatePolicy")?;
        let request = request.into_inner();
        let spec = spec_from_proto(request.spec.unwrap_or_default());
        let record = self
            .app
            .update_policy(&principal, &request.id, spec)
            .await?;
        Ok(Response::new(policy_to_proto(&record)))
    }

    async fn delete_policy(
        &self,
        request: Request<pb::PolicyRef>,
    ) -> Result<Response<pb::DeletePolicyResponse>, Status> {
        let principal = authenticate(&self.app, &request, "DeletePolicy")?;
        self.app
            .delete_policy(&principal, &request.get_ref().id)
            .await?;
        Ok(Response::new(pb::DeletePolicyResponse {}))
    }

    async fn lock_policy(
        &self,
        request: Request<pb::PolicyRef>,
    ) -> Result<Response<pb::RetentionPolicy>, Status> {
        let principal = authenticate(&self.app, &request, "LockPolicy")?;
        let record = self
            .app
            .lock_policy(&principal, &request.get_ref().id)
            .await?;
        Ok(Response::new(policy_to_proto(&record)))
    }

    async fn place_litigation_hold(
        &self,
        request: Request<pb::PlaceLitigationHoldRequest>,
    ) -> Result<Response<pb::HoldInfo>, Status> {
        let principal = authenticate(&self.app, &request, "PlaceLitigationHold")?;
        let request = request.into_inner();
        let record = self
            .app
            .place_litigation_hold(&principal, &request.mailbox_id, request.days)
            .await?;
        Ok(Response::new(hold_to_proto(&record)))
    }

    async fn release_hold(
        &self,
        request: Request<pb::HoldRef>,
    ) -> Result<Response<pb::HoldInfo>, Status> {
        let principal = authenticate(&self.app, &request, "ReleaseHold")?;
        let record = self
            .app
            .release_hold(&principal, &request.get_ref().id)
            .await?;
        Ok(Response::new(hold_to_proto(&record)))
    }

    async fn clear_delay_hold(
        &self,
        request: Request<pb::HoldRef>,
    ) -> Result<Response<pb::HoldInfo>, Status> {
        let principal = authenticate(&self.app, &request, "ClearDelayHold")?;
        let record = self
            .app
            .clear_delay_hold(&principal, &request.get_ref().id)
            .await?;
        Ok(Response::new(hold_to_proto(&record)))
    }

    async fn list_holds(
        &self,
        request: Request<pb::ListHoldsRequest>,
    ) -> Result<Response<pb::ListHoldsResponse>, Status> {
        let principal = authenticate(&self.app, &request, "ListHolds")?;
        let request = request.into_inner();
        let holds = self
            .app
            .list_holds(&principal, &request.mailbox_id, request.include_released)
            .await?;
        Ok(Response::new(pb::ListHoldsResponse {
            holds: holds.iter().map(hold_to_proto).collect(),
        }))
    }

    async fn explain_retention(
        &self,
        request: Request<pb::ExplainRetentionRequest>,
    ) -> Result<Response<pb::ExplainRetentionResponse>, Status> {
        let principal = authenticate(&self.app, &request, "ExplainRetention")?;
        let explanation = self
            .app
            .explain_retention(&principal, &request.get_ref().id)
            .await?;
        let decision = explanation.decision;
        let interaction = convert::interaction_to_proto(explanation.item);
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
            reasons: explanation.reasons,
        }))
    }

    async fn preview_policy(
        &self,
        request: Request<pb::PreviewPolicyRequest>,
    ) -> Result<Response<pb::PreviewPolicyResponse>, Status> {
        let principal = authenticate(&self.app, &request, "PreviewPolicy")?;
        let request = request.into_inner();
        let spec = spec_from_proto(request.spec.unwrap_or_default());
        let preview = self
            .app
            .preview_policy(&principal, &request.policy_id, spec)
            .await?;
        Ok(Response::new(pb::PreviewPolicyResponse {
            items_examined: preview.items_examined,
            total_move_now: preview.total_move_now,
            total_destroyable: preview.total_destroyable,
            mailboxes: preview
                .mailboxes
                .into_iter()
                .map(|m| pb::MailboxPreview {
                    mailbox_id: m.mailbox_id,
                    items: m.items,
                    move_now: m.move_now,
                    destroyable: m.destroyable,
                })
                .collect(),
        }))
    }

    async fn get_mailbox_status(
        &self,
        request: Request<pb::GetMailboxStatusRequest>,
    ) -> Result<Response<pb::MailboxStatus>, Status> {
        let principal = authenticate(&self.app, &request, "GetMailboxStatus")?;
        let status = self
            .app
            .mailbox_status(&principal, &request.get_ref().mailbox_id)
            .await?;
        Ok(Response::new(pb::MailboxStatus {
            mailbox_id: status.mailbox.to_string(),
            active_items: status.active_items,
            holds_area_items: status.holds_area_items,
            policies: status.policies.iter().map(policy_to_proto).collect(),
            holds: status.holds.iter().map(hold_to_proto).collect(),
            default_retention_days: status.default_retention_days,
        }))
    }

    async fn run_sweep(
        &self,
        request: Request<pb::RunSweepRequest>,
    ) -> Result<Response<pb::SweepStats>, Status> {
        let principal = authenticate(&self.app, &request, "RunSweep")?;
        let stats = self.app.run_sweep(&principal).await?;
        Ok(Response::new(sweep_stats_to_proto(&stats)))
    }

    async fn get_sweeper_status(
        &self,
        request: Request<pb::GetSweeperStatusRequest>,
    ) -> Result<Response<pb::SweeperStatus>, Status> {
        let principal = authenticate(&self.app, &request, "GetSweeperStatus")?;
        let report = self.app.sweeper_status(&principal).await?;
        let status = report.status;
        Ok(Response::new(pb::SweeperStatus {
            running: status.running,
            last_run: status.last_run.as_ref().map(sweep_stats_to_proto),
            last_error: status.last_error.unwrap_or_default(),
            totals: Some(sweep_stats_to_proto(&status.totals)),
            interval_seconds: status.interval_seconds,
            replan_pending: report.replan_pending,
            unevaluable_hold_ids: status
                .last_run
                .iter()
                .flat_map(|run| run.unevaluable_holds.keys().cloned())
                .collect(),
            erasure_pending: report.erasure_pending,
            erasure_oldest: report.erasure_oldest.map(convert::time_to_timestamp),
            erasure_bound_seconds: report.erasure_bound_seconds,
            erased_total: status.erased_total,
            last_erasure_error: status.last_erasure_error.unwrap_or_default(),
        }))
    }

    async fn list_dispositions(
        &self,
        request: Request<pb::ListDispositionsRequest>,
    ) -> Result<Response<pb::ListDispositionsResponse>, Status> {
        let principal = authenticate(&self.app, &request, "ListDispositions")?;
        let request = request.into_inner();
        let page = self
            .app
            .list_dispositions(
                &principal,
                &request.mailbox_id,
                request.page_size,
                &request.page_token,
            )
            .await?;
        let dispositions = page
            .dispositions
            .iter()
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
            next_page_token: page.next_page_token,
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
