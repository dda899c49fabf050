//! `AuditService`: read and verify the audit log (auditor and admin roles).

use std::sync::Arc;

use holdfast_proto::v1 as pb;
use holdfast_proto::v1::audit_service_server::AuditService;
use tonic::{Request, Response, Status};

use super::{now, page_size, Shared};
use crate::admission::Work;
use crate::audit::{AuditQuery, AuditRecord};
use crate::auth::Role;
use crate::convert;
use crate::page_token::{self, PayloadReader, TokenKind};

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

/// What a QueryAuditLog page token is bound to: the filters of the query.
fn audit_token_context(query: &AuditQuery) -> [u8; 16] {
    let micros = |time: Option<chrono::DateTime<chrono::Utc>>| {
        time.map(|t| t.timestamp_micros().to_be_bytes().to_vec())
            .unwrap_or_default()
    };
    let text = |value: &Option<String>| match value {
        Some(value) => [b"=".as_slice(), value.as_bytes()].concat(),
        None => Vec::new(),
    };
    page_token::context(&[
        &micros(query.time_from),
        &micros(query.time_to),
        &text(&query.actor),
        &text(&query.action),
    ])
}

#[tonic::async_trait]
impl AuditService for AuditApi {
    async fn query_audit_log(
        &self,
        request: Request<pb::QueryAuditLogRequest>,
    ) -> Result<Response<pb::QueryAuditLogResponse>, Status> {
        let principal = self
            .shared
            .authorize(&request, "QueryAuditLog", &[Role::Auditor, Role::Admin])
            .await?;
        let request = request.into_inner();
        let limit = page_size(request.page_size)?;
        let non_empty = |s: String| if s.is_empty() { None } else { Some(s) };
        let query = AuditQuery {
            time_from: convert::optional_time("time_from", request.time_from.as_ref())?,
            time_to: convert::optional_time("time_to", request.time_to.as_ref())?,
            actor: non_empty(request.actor),
            action: non_empty(request.action),
        };
        let token_context = audit_token_context(&query);
        let from_sequence = match request.page_token.as_str() {
            "" => 1,
            token => {
                let payload = self.shared.page_tokens.open(
                    TokenKind::QueryAuditLog,
                    token_context,
                    token,
                    now(),
                )?;
                let mut reader = PayloadReader::new(&payload);
                let sequence = reader.u64()?;
                reader.finish()?;
                sequence
            }
        };
        let audit = Arc::clone(&self.shared.audit);
        let slot = self.shared.admission.admit(Work::Search, &principal.name)?;
        let (entries, next) = self
            .shared
            .admission
            .search(slot, move || {
                Ok(audit.query_blocking(&query, from_sequence, limit)?)
            })
            .await?;
        Ok(Response::new(pb::QueryAuditLogResponse {
            entries: entries.into_iter().map(entry_to_proto).collect(),
            next_page_token: next
                .map(|sequence| {
                    self.shared.page_tokens.seal(
                        TokenKind::QueryAuditLog,
                        token_context,
                        &sequence.to_be_bytes(),
                        now(),
                    )
                })
                .unwrap_or_default(),
        }))
    }

    async fn verify_audit_log(
        &self,
        request: Request<pb::VerifyAuditLogRequest>,
    ) -> Result<Response<pb::VerifyAuditLogResponse>, Status> {
        let principal = self
            .shared
            .authorize(&request, "VerifyAuditLog", &[Role::Auditor, Role::Admin])
            .await?;
        // Reading the whole chain is long: it counts as one of the principal's long
        // operations, and runs one at a time server-wide (apart from DeleteHistory and Purge).
        let slot = self
            .shared
            .admission
            .admit(Work::LongOperation, &principal.name)?;
        let audit = Arc::clone(&self.shared.audit);
        let verification = self
            .shared
            .admission
            .verification(slot, move || Ok(audit.verify_blocking()?))
            .await?;
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
