//! The sweeper as people drive it: a pass now, its status, and the disposition records of
//! what it destroyed.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde_json::json;

use super::policies::{RETENTION_ADMIN, RETENTION_READERS};
use super::{blocking, now, page_size, App};
use crate::auth::{Principal, Role};
use crate::domain::InteractionId;
use crate::error::Error;
use crate::page_token::{self, PayloadReader, TokenKind};
use crate::store::Disposition;
use crate::sweeper::{SweepStats, SweeperStatus};

/// Who reads disposition records.
pub const DISPOSITIONS: &[Role] = &[Role::RetentionAdmin, Role::Auditor, Role::Admin];

/// The sweeper's state and the eraser's.
#[derive(Debug, Clone)]
pub struct SweeperReport {
    pub status: SweeperStatus,
    /// A policy or hold change's re-plan is still under way.
    pub replan_pending: bool,
    /// Destroyed items whose text is not yet erased from the files, and the oldest.
    pub erasure_pending: u64,
    pub erasure_oldest: Option<DateTime<Utc>>,
    pub erasure_bound_seconds: u64,
}

/// One page of disposition records, newest first.
#[derive(Debug, Clone)]
pub struct DispositionPage {
    pub dispositions: Vec<Disposition>,
    /// Empty on the last page.
    pub next_page_token: String,
}

impl App {
    /// Runs one sweeper pass now and answers with what it did.
    pub async fn run_sweep(&self, principal: &Principal) -> Result<SweepStats, Error> {
        self.authorize(principal, "RunSweep", RETENTION_ADMIN)
            .await?;
        let (reply, answer) = tokio::sync::oneshot::channel();
        let requests = self.sweep_requests.clone();
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
        self.audited(principal, "RunSweep", String::new(), json!({}), outcome)
            .await
    }

    pub async fn sweeper_status(&self, principal: &Principal) -> Result<SweeperReport, Error> {
        self.authorize(principal, "GetSweeperStatus", RETENTION_READERS)
            .await?;
        let status = self.sweeper.status();
        let lifecycle = Arc::clone(&self.lifecycle);
        let store = Arc::clone(&self.store);
        let (pending, (erasure_pending, erasure_oldest)) =
            blocking(move || Ok((lifecycle.replan_job()?, store.erasure_status()?))).await?;
        Ok(SweeperReport {
            status,
            replan_pending: pending.is_some(),
            erasure_pending,
            erasure_oldest,
            erasure_bound_seconds: self.sweeper.erasure_bound().as_secs(),
        })
    }

    /// Disposition records (of one mailbox when `mailbox_id` is not empty), newest first.
    pub async fn list_dispositions(
        &self,
        principal: &Principal,
        mailbox_id: &str,
        requested_page_size: u32,
        page_token: &str,
    ) -> Result<DispositionPage, Error> {
        self.authorize(principal, "ListDispositions", DISPOSITIONS)
            .await?;
        let mailbox = match mailbox_id {
            "" => None,
            raw => Some(crate::validate::parse_mailbox("mailbox_id", raw)?),
        };
        let limit = page_size(requested_page_size)?;
        let token_context =
            page_token::context(&[mailbox.as_ref().map_or(&b""[..], |m| m.as_str().as_bytes())]);
        let after = match page_token {
            "" => None,
            token => {
                let payload = self.page_tokens.open(
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
        let store = Arc::clone(&self.store);
        let mut found =
            blocking(move || Ok(store.list_dispositions(mailbox.as_ref(), after, limit + 1)?))
                .await?;
        let next_page_token = if found.len() > limit {
            let last = &found[limit - 1];
            let mut payload = last.purged_at.timestamp_micros().to_be_bytes().to_vec();
            payload.extend_from_slice(&last.id.to_bytes());
            self.page_tokens
                .seal(TokenKind::ListDispositions, token_context, &payload, now())
        } else {
            String::new()
        };
        found.truncate(limit);
        Ok(DispositionPage {
            dispositions: found,
            next_page_token,
        })
    }
}
