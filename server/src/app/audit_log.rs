//! Reading and verifying the audit log (SPEC §7): `auditor` and `admin` principals.

use std::sync::Arc;

use chrono::{DateTime, Utc};

use super::{now, page_size, App};
use crate::admission::Work;
use crate::audit::{AuditQuery, AuditRecord, Verification};
use crate::auth::{Principal, Role};
use crate::error::Error;
use crate::page_token::{self, PayloadReader, TokenKind};

pub const AUDITORS: &[Role] = &[Role::Auditor, Role::Admin];

/// A query of the audit log: filters, a page size (0: the default) and the page token of
/// the page before (empty for the first).
#[derive(Debug, Clone, Default)]
pub struct AuditLogRequest {
    pub query: AuditQuery,
    pub page_size: u32,
    pub page_token: String,
}

/// One page of audit entries, oldest first.
#[derive(Debug, Clone)]
pub struct AuditPage {
    pub entries: Vec<AuditRecord>,
    /// Empty on the last page.
    pub next_page_token: String,
}

impl App {
    pub async fn query_audit_log(
        &self,
        principal: &Principal,
        request: AuditLogRequest,
    ) -> Result<AuditPage, Error> {
        self.authorize(principal, "QueryAuditLog", AUDITORS).await?;
        let limit = page_size(request.page_size)?;
        let query = request.query;
        let token_context = audit_token_context(&query);
        let from_sequence = match request.page_token.as_str() {
            "" => 1,
            token => {
                let payload =
                    self.page_tokens
                        .open(TokenKind::QueryAuditLog, token_context, token, now())?;
                let mut reader = PayloadReader::new(&payload);
                let sequence = reader.u64()?;
                reader.finish()?;
                sequence
            }
        };
        let audit = Arc::clone(&self.audit);
        let slot = self.admission.admit(Work::Search, &principal.name)?;
        let (entries, next) = self
            .admission
            .search(slot, move || {
                Ok(audit.query_blocking(&query, from_sequence, limit)?)
            })
            .await?;
        Ok(AuditPage {
            entries,
            next_page_token: next
                .map(|sequence| {
                    self.page_tokens.seal(
                        TokenKind::QueryAuditLog,
                        token_context,
                        &sequence.to_be_bytes(),
                        now(),
                    )
                })
                .unwrap_or_default(),
        })
    }

    /// Walks the whole hash chain.
    pub async fn verify_audit_log(&self, principal: &Principal) -> Result<Verification, Error> {
        self.authorize(principal, "VerifyAuditLog", AUDITORS)
            .await?;
        // Reading the whole chain is long: it counts as one of the principal's long
        // operations, and runs one at a time server-wide (apart from DeleteHistory and Purge).
        let slot = self.admission.admit(Work::LongOperation, &principal.name)?;
        let audit = Arc::clone(&self.audit);
        self.admission
            .verification(slot, move || Ok(audit.verify_blocking()?))
            .await
    }
}

/// What a QueryAuditLog page token is bound to: the filters of the query.
fn audit_token_context(query: &AuditQuery) -> [u8; 16] {
    let micros = |time: Option<DateTime<Utc>>| {
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
