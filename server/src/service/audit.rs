//! `AuditService` over gRPC: decode, call `app::audit_log`, encode.

use std::sync::Arc;

use holdfast_proto::v1 as pb;
use holdfast_proto::v1::audit_service_server::AuditService;
use tonic::{Request, Response, Status};

use super::{authenticate, decoded};
use crate::app::audit_log::AuditLogRequest;
use crate::app::audit_log::AUDITORS;
use crate::app::App;
use crate::audit::{AuditQuery, AuditRecord};
use crate::convert;

pub struct AuditApi {
    app: Arc<App>,
}

impl AuditApi {
    pub fn new(app: Arc<App>) -> Self {
        AuditApi { app }
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
        let principal = authenticate(&self.app, &request, "QueryAuditLog")?;
        let request = request.into_inner();
        let non_empty = |s: String| if s.is_empty() { None } else { Some(s) };
        let query = AuditLogRequest {
            query: AuditQuery {
                time_from: decoded(
                    &self.app,
                    &principal,
                    "QueryAuditLog",
                    AUDITORS,
                    convert::optional_time("time_from", request.time_from.as_ref()),
                )
                .await?,
                time_to: decoded(
                    &self.app,
                    &principal,
                    "QueryAuditLog",
                    AUDITORS,
                    convert::optional_time("time_to", request.time_to.as_ref()),
                )
                .await?,
                actor: non_empty(request.actor),
                action: non_empty(request.action),
            },
            page_size: request.page_size,
            page_token: request.page_token,
        };
        let page = self.app.query_audit_log(&principal, query).await?;
        Ok(Response::new(pb::QueryAuditLogResponse {
            entries: page.entries.into_iter().map(entry_to_proto).collect(),
            next_page_token: page.next_page_token,
        }))
    }

    async fn verify_audit_log(
        &self,
        request: Request<pb::VerifyAuditLogRequest>,
    ) -> Result<Response<pb::VerifyAuditLogResponse>, Status> {
        let principal = authenticate(&self.app, &request, "VerifyAuditLog")?;
        let verification = self.app.verify_audit_log(&principal).await?;
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
