//! Reading, listing and deleting a user's interactions (SPEC §2); ingest is in `ingest.rs`.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use holdfast_retention::MoveReason;
use serde_json::json;

use super::{audit_settling, blocking, now, page_size, App};
use crate::admission::Work;
use crate::audit::AuditEvent;
use crate::audit_intent::AuditIntent;
use crate::auth::{Principal, Role};
use crate::domain::{HistorySelector, InteractionId, ListCursor, ListQuery, StoredInteraction};
use crate::error::Error;
use crate::page_token::{self, PayloadReader, TokenKind};
use crate::validate;

/// Who may read one interaction: the backend (ACTIVE items only), or an administrator (any
/// location, audited).
const READERS: &[Role] = &[Role::Ingest, Role::EdiscoveryAdmin, Role::Admin];
/// Who lists and deletes a user's history.
pub const OWNERS: &[Role] = &[Role::Ingest, Role::Admin];

/// A page of one mailbox's ACTIVE items, newest first.
#[derive(Debug, Clone, Default)]
pub struct ListRequest {
    pub mailbox_id: String,
    /// Empty: every thread.
    pub thread_id: String,
    pub created_from: Option<DateTime<Utc>>,
    pub created_to: Option<DateTime<Utc>>,
    pub page_size: u32,
    pub page_token: String,
}

#[derive(Debug, Clone)]
pub struct InteractionPage {
    pub interactions: Vec<StoredInteraction>,
    /// Empty on the last page.
    pub next_page_token: String,
}

/// What a user deletes: a mailbox's history, or one thread's, optionally only before a time.
#[derive(Debug, Clone, Default)]
pub struct DeleteHistoryRequest {
    pub mailbox_id: String,
    pub thread_id: String,
    pub before: Option<DateTime<Utc>>,
}

impl App {
    pub async fn get_interaction(
        &self,
        principal: &Principal,
        id: &str,
    ) -> Result<StoredInteraction, Error> {
        self.authorize(principal, "GetInteraction", READERS).await?;
        let id: InteractionId = id
            .parse()
            .map_err(|reason: String| Error::invalid("id", reason))?;
        let store = Arc::clone(&self.store);
        let found = blocking(move || Ok(store.get_interaction(id)?)).await?;
        let privileged = principal.has_any(&[Role::EdiscoveryAdmin, Role::Admin]);
        let item = match found {
            Some(item) if privileged || item.location.is_visible_to_user() => item,
            _ => return Err(Error::NotFound(format!("no interaction with id {id}"))),
        };
        if privileged {
            // Reading content outside the user's own view is a compliance action.
            self.audit_done(
                principal,
                "GetInteraction",
                id.to_string(),
                json!({ "mailbox_id": item.content.mailbox_id.as_str() }),
                "ok".into(),
            )
            .await?;
        }
        Ok(item)
    }

    pub async fn list_interactions(
        &self,
        principal: &Principal,
        request: ListRequest,
    ) -> Result<InteractionPage, Error> {
        self.authorize(principal, "ListInteractions", OWNERS)
            .await?;
        let limit = page_size(request.page_size)?;
        let query = ListQuery {
            mailbox_id: validate::parse_mailbox("mailbox_id", &request.mailbox_id)?,
            thread_id: request.thread_id,
            created_from: request.created_from,
            created_to: request.created_to,
        };
        validate::check_thread_id("thread_id", &query.thread_id, &self.limits)?;
        if let (Some(from), Some(to)) = (query.created_from, query.created_to) {
            if from > to {
                return Err(Error::invalid("created_from", "is after created_to"));
            }
        }
        let token_context = list_token_context(&query);
        let cursor = match request.page_token.as_str() {
            "" => None,
            token => {
                let payload = self.page_tokens.open(
                    TokenKind::ListInteractions,
                    token_context,
                    token,
                    now(),
                )?;
                let mut reader = PayloadReader::new(&payload);
                let cursor = ListCursor {
                    created_micros: reader.i64()?,
                    id: InteractionId::from_bytes(reader.bytes16()?),
                };
                reader.finish()?;
                Some(cursor)
            }
        };
        if !principal.has_any(&[Role::Ingest]) {
            // An administrator reading a user's history is a compliance action.
            self.audit_done(
                principal,
                "ListInteractions",
                query.mailbox_id.to_string(),
                json!({ "thread_id": query.thread_id, "page_token": request.page_token }),
                "ok".into(),
            )
            .await?;
        }
        let store = Arc::clone(&self.store);
        let (interactions, next) =
            blocking(move || Ok(store.list_active(&query, cursor, limit)?)).await?;
        Ok(InteractionPage {
            interactions,
            next_page_token: next
                .map(|cursor| {
                    let mut payload = cursor.created_micros.to_be_bytes().to_vec();
                    payload.extend_from_slice(&cursor.id.to_bytes());
                    self.page_tokens.seal(
                        TokenKind::ListInteractions,
                        token_context,
                        &payload,
                        now(),
                    )
                })
                .unwrap_or_default(),
        })
    }

    /// Moves the selected ACTIVE items to the holds area; answers how many moved.
    pub async fn delete_history(
        &self,
        principal: &Principal,
        request: DeleteHistoryRequest,
    ) -> Result<u64, Error> {
        self.authorize(principal, "DeleteHistory", OWNERS).await?;
        let selector = HistorySelector {
            mailbox_id: validate::parse_mailbox("mailbox_id", &request.mailbox_id)?,
            thread_id: request.thread_id,
            before: request.before,
        };
        validate::check_thread_id("thread_id", &selector.thread_id, &self.limits)?;
        let parameters = json!({
            "thread_id": selector.thread_id,
            "before": selector.before,
        });
        let target = selector.mailbox_id.to_string();
        let store = Arc::clone(&self.store);
        let audit = Arc::clone(&self.audit);
        let slot = match self.admission.admit(Work::LongOperation, &principal.name) {
            Ok(slot) => slot,
            Err(refused) => {
                self.audit_done(
                    principal,
                    "DeleteHistory",
                    target,
                    parameters,
                    format!("error: {refused}"),
                )
                .await?;
                return Err(refused);
            }
        };
        let actor = principal.name.clone();
        let intent = AuditIntent::new(&actor, "DeleteHistory", &target, &parameters);
        // The move and its audit entry run in one closure on a blocking thread: a caller that
        // goes away (deadline, reset stream) cannot leave a move unaudited. The entry owed is
        // saved first, so a crash during the move is audited at the next start.
        let num_moved = self
            .admission
            .long_operation(slot, move || {
                let intent = intent.save_before(store.as_ref())?;
                let moved = crate::workers::catch_panic("DeleteHistory", || {
                    Ok(store.move_to_holds_area(&selector, MoveReason::UserDeleted, now())?)
                });
                let result = match &moved {
                    Ok(num_moved) => format!("ok: moved {num_moved} to the holds area"),
                    Err(error) => format!("error: {error}"),
                };
                audit_settling(
                    store.as_ref(),
                    &audit,
                    &intent,
                    AuditEvent {
                        actor,
                        action: "DeleteHistory",
                        target,
                        parameters,
                        result,
                    },
                )?;
                moved
            })
            .await?;
        metrics::counter!("holdfast_moved_to_holds_area_total", "reason" => "user_deleted")
            .increment(num_moved);
        Ok(num_moved)
    }
}

/// What a ListInteractions page token is bound to: the mailbox, thread and created range.
fn list_token_context(query: &ListQuery) -> [u8; 16] {
    let micros = |time: Option<DateTime<Utc>>| {
        time.map(|t| t.timestamp_micros().to_be_bytes().to_vec())
            .unwrap_or_default()
    };
    page_token::context(&[
        query.mailbox_id.as_str().as_bytes(),
        query.thread_id.as_bytes(),
        &micros(query.created_from),
        &micros(query.created_to),
    ])
}
