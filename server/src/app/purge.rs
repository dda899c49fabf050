//! Search-and-purge (SPEC §6): the active items of a case's custodians matching a query move
//! to the holds area (oldest first, at most `purge_max_per_mailbox` per mailbox), where the
//! sweeper destroys them unless a hold keeps them. Needs the `purge` role and membership of an
//! open case. A dry run selects without moving.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde_json::json;

use super::export::ID_PAGE;
use super::matches::{kql_text, Matches};
use super::search::{complete_index, parse_query};
use super::{audit_settling, now, App};
use crate::admission::Work;
use crate::audit::AuditEvent;
use crate::audit_intent::AuditIntent;
use crate::auth::{Principal, Role};
use crate::domain::{InteractionId, MailboxId};
use crate::error::Error;

pub const PURGE: &[Role] = &[Role::Purge];

#[derive(Debug, Clone, Default)]
pub struct PurgeRequest {
    pub case_id: String,
    pub query: String,
    /// A subset of the case's custodians; empty: all of them.
    pub mailboxes: Vec<String>,
    pub dry_run: bool,
}

/// What one mailbox's purge matched, selected (up to the cap) and moved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PurgeMailbox {
    pub mailbox_id: MailboxId,
    pub matched: u64,
    pub selected: u64,
    pub moved: u64,
    /// More matched than the cap allows in one purge: run it again for the rest.
    pub capped: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PurgeReport {
    pub dry_run: bool,
    pub max_per_mailbox: u32,
    /// Every item selected, in id order per mailbox.
    pub ids: Vec<InteractionId>,
    pub mailboxes: Vec<PurgeMailbox>,
}

impl App {
    pub async fn purge(
        &self,
        principal: &Principal,
        request: PurgeRequest,
    ) -> Result<PurgeReport, Error> {
        self.authorize(principal, "Purge", PURGE).await?;
        let cap = self.retention.purge_max_per_mailbox as usize;
        let dry_run = request.dry_run;
        let parameters_of = {
            let (query_text, mailbox_list) = (request.query.clone(), request.mailboxes.clone());
            move |ids: Vec<String>| {
                json!({ "query": query_text, "mailboxes": mailbox_list,
                        "dry_run": dry_run, "max_per_mailbox": cap, "ids": ids })
            }
        };
        let admitted = async {
            let case = self.load_case(principal, &request.case_id).await?;
            case.require_open()?;
            if request.query.trim().is_empty() {
                return Err(Error::invalid(
                    "query",
                    "a purge needs a query (it never selects every item)",
                ));
            }
            let query = parse_query(&request.query)?;
            let mailboxes = case.search_scope(&request.mailboxes)?;
            complete_index(&self.index)?;
            let slot = self.admission.admit(Work::LongOperation, &principal.name)?;
            Ok((query, mailboxes, slot))
        }
        .await;
        let (query, mailboxes, slot) = match admitted {
            Ok(admitted) => admitted,
            Err(error) => {
                self.audit_done(
                    principal,
                    "Purge",
                    request.case_id.clone(),
                    parameters_of(Vec::new()),
                    format!("refused: {error}"),
                )
                .await?;
                return Err(error);
            }
        };
        let index = Arc::clone(&self.index);
        let fanout = self.fanout.clone();
        let query_text = kql_text(&request.query);
        let store = Arc::clone(&self.store);
        let audit = Arc::clone(&self.audit);
        let actor = principal.name.clone();
        let target = request.case_id.clone();
        let intent = AuditIntent::new(&actor, "Purge", &target, &parameters_of(Vec::new()));
        // The purge and its audit entry run in one closure on a blocking thread: a caller
        // that goes away (deadline, reset stream) cannot leave a purge unaudited. The entry
        // owed is saved first, so a crash during the purge is audited at the next start.
        self.admission
            .long_operation(slot, move || {
                let intent = intent.save_before(store.as_ref())?;
                let outcome = crate::workers::catch_panic("Purge", || {
                    let pages =
                        Matches::open(&index, fanout.as_ref(), &query_text, &query, &mailboxes)?;
                    // Only ACTIVE items move; oldest first (ids sort by time), up to the cap.
                    // The matches are walked page by page in id order: memory is bounded by
                    // the cap per mailbox, not by the number of matches.
                    let mut by_mailbox: BTreeMap<MailboxId, (u64, Vec<InteractionId>)> =
                        BTreeMap::new();
                    let mut after = None;
                    loop {
                        let ids = pages.page(after, ID_PAGE)?;
                        let Some(&last) = ids.last() else { break };
                        after = Some(last);
                        for chunk in ids.chunks(10_000) {
                            for item in store.planned_items(chunk)?.into_iter().flatten() {
                                if item.location.is_visible_to_user() {
                                    let (matched, selected) =
                                        by_mailbox.entry(item.facts.mailbox).or_default();
                                    *matched += 1;
                                    if selected.len() < cap {
                                        selected.push(item.id);
                                    }
                                }
                            }
                        }
                        if ids.len() < ID_PAGE {
                            break;
                        }
                    }
                    let mut report = PurgeReport {
                        dry_run,
                        max_per_mailbox: cap as u32,
                        ids: Vec::new(),
                        mailboxes: Vec::new(),
                    };
                    for (mailbox, (matched, selected)) in by_mailbox {
                        let moved = if dry_run {
                            0
                        } else {
                            store
                                .move_ids_to_holds_area(
                                    &selected,
                                    holdfast_retention::MoveReason::PurgeRequested,
                                    now(),
                                )?
                                .len() as u64
                        };
                        report.ids.extend(selected.iter().copied());
                        report.mailboxes.push(PurgeMailbox {
                            mailbox_id: mailbox,
                            matched,
                            selected: selected.len() as u64,
                            moved,
                            capped: matched > cap as u64,
                        });
                    }
                    Ok(report)
                });
                let (result, ids) = match &outcome {
                    Ok(report) => (
                        format!(
                            "ok: {} item(s) {}",
                            report.ids.len(),
                            if report.dry_run {
                                "selected (dry run)"
                            } else {
                                "moved to the holds area"
                            }
                        ),
                        report.ids.iter().map(ToString::to_string).collect(),
                    ),
                    Err(error) => (format!("refused: {error}"), Vec::new()),
                };
                audit_settling(
                    store.as_ref(),
                    &audit,
                    &intent,
                    AuditEvent {
                        actor,
                        action: "Purge",
                        target,
                        parameters: parameters_of(ids),
                        result,
                    },
                )?;
                outcome
            })
            .await
    }
}
