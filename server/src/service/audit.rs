//! `AuditService`: read and verify the audit log (auditor and admin roles).

use std::sync::Arc;

use holdfast_proto::v1 as pb;
use holdfast_proto::v1::audit_service_server::AuditService;
use tonic::{Request, Response, Status};

use super::{blocking, page_size, Shared};
use crate::audit::{AuditQuery, AuditRecord};
use crate::auth::Role;
use crate::convert;
use crate::error::Error;

pub struct AuditApi {
    shared: Arc<Shared>,
}

impl AuditApi {
    pub fn new(shared: Arc<Shared>) -> Self {
        AuditApi { shared }
    }
}

fn entry_to_proto(record: AuditRecord) -> pb::AuditEntry {
    pb::AuditEntry {
        sequence: record.sequence,
        time: Some(convert::time_to_timestamp(record.time)),
        actor: record.actor,
        action: record.action,
        target: record.target,
        parameters_json: record.parameters.to_string(),
        result: record.result,
        previous_hash: record.previous_hash,
        hash: record.hash,
    }
}

#[tonic::async_trait]
impl AuditService for AuditApi {
    async fn query_audit_log(
        &self,
        request: Request<pb::QueryAuditLogRequest>,
    ) -> Result<Response<pb::QueryAuditLogResponse>, Status> {
        self.shared
            .authorize(&request, "QueryAuditLog", &[Role::Auditor, Role::Admin])
            .await?;
        let request = request.into_inner();
        let limit = page_size(request.page_size)?;
        let from_sequence = match request.page_token.as_str() {
            "" => 1,
            token => token
                .parse::<u64>()
                .map_err(|_| Error::invalid("page_token", "not a page token from this server"))?,
        };
        let non_empty = |s: String| if s.is_empty() { None } else { Some(s) };
        let query = AuditQuery {
            time_from: convert::optional_time("time_from", request.time_from.as_ref())?,
            time_to: convert::optional_time("time_to", request.time_to.as_ref())?,
            actor: non_empty(request.actor),
            action: non_empty(request.action),
        };
        let audit = Arc::clone(&self.shared.audit);
        let (entries, next) =
            blocking(move || Ok(audit.query_blocking(&query, from_sequence, limit)?)).await?;
        Ok(Response::new(pb::QueryAuditLogResponse {
            entries: entries.into_iter().map(entry_to_proto).collect(),
            next_page_token: next
                .map(|sequence| sequence.to_string())
                .unwrap_or_default(),
        }))
    }

    async fn verify_audit_log(
        &self,
        request: Request<pb::VerifyAuditLogRequest>,
    ) -> Result<Response<pb::VerifyAuditLogResponse>, Status> {
        self.shared
            .authorize(&request, "VerifyAuditLog", &[Role::Auditor, Role::Admin])
            .await?;
        let audit = Arc::clone(&self.shared.audit);
        let verification = blocking(move || Ok(audit.verify_blocking()?)).await?;
        let (first_bad_sequence, problem) = verification.problem.unwrap_or_default();
        Ok(Response::new(pb::VerifyAuditLogResponse {
            intact: problem.is_empty(),
            num_entries: verification.num_entries,
            head_hash: verification.head_hash,
            first_bad_sequence,
            problem,
        }))
    }
}
