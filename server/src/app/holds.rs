//! Case holds (SPEC §4, §6): placed, listed and released by a case's members; and the one way
//! any hold change is saved (with the re-plan it needs and its audit intent, atomically, while
//! the sweeper cannot be between its last hold check and a destruction).

use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde_json::json;
use ulid::Ulid;

use super::matches::Matches;
use super::policies::{RETENTION_ADMIN, RETENTION_READERS};
use super::search::complete_index;
use super::EDISCOVERY;
use super::{blocking, now, parse_ulid, App};
use crate::audit_intent::AuditIntent;
use crate::auth::Principal;
use crate::cases;
use crate::error::Error;
use crate::lifecycle::{case_hold_text, HoldKind, HoldRecord, ReplanScope};

/// A case hold to place: the case's custodians (or a subset), optionally narrowed by a KQL
/// query and a created range.
#[derive(Debug, Clone, Default)]
pub struct NewCaseHold {
    pub case_id: String,
    pub name: String,
    /// A subset of the case's custodians; empty: all of them.
    pub custodians: Vec<String>,
    /// KQL; empty: everything in the custodians' mailboxes.
    pub query: String,
    pub created_from: Option<DateTime<Utc>>,
    pub created_to: Option<DateTime<Utc>>,
}

/// A hold and, for an active case hold, how many stored items it covers now.
#[derive(Debug, Clone)]
pub struct HoldView {
    pub record: HoldRecord,
    pub items_held: u64,
}

impl App {
    pub async fn place_case_hold(
        &self,
        principal: &Principal,
        new: NewCaseHold,
    ) -> Result<HoldView, Error> {
        self.authorize(principal, "PlaceCaseHold", EDISCOVERY)
            .await?;
        let parameters = json!({ "name": new.name, "custodians": new.custodians,
            "query": new.query, "created_from": new.created_from.map(|t| t.timestamp()),
            "created_to": new.created_to.map(|t| t.timestamp()) });
        let intent = AuditIntent::new(&principal.name, "PlaceCaseHold", &new.case_id, &parameters);
        let outcome = async {
            // Under the cases lock: CloseCase cannot close the case while this hold is placed.
            let _cases = self.cases_lock.lock().await;
            let case = self.load_case(principal, &new.case_id).await?;
            case.require_open()?;
            cases::validate_name(&new.name)?;
            let custodians = case.search_scope(&new.custodians)?;
            if let (Some(from), Some(to)) = (new.created_from, new.created_to) {
                if from >= to {
                    return Err(Error::invalid("created_to", "must be after created_from"));
                }
            }
            // The hold's query must translate against the index now (prefixes within their
            // limits), or it is not saved: a hold that cannot be evaluated protects nothing
            // predictable.
            let (query_text, matched) =
                case_hold_text(&new.query, new.created_from, new.created_to)?;
            let index = complete_index(&self.index)?;
            let fanout = self.fanout.clone();
            let mailboxes = custodians.to_vec();
            blocking(move || {
                Matches::open(&index, fanout.as_ref(), &query_text, &matched, &mailboxes)?.check()
            })
            .await?;
            let record = HoldRecord {
                id: Ulid::new(),
                mailboxes: custodians.into_iter().collect(),
                kind: HoldKind::Case {
                    case_id: case.id,
                    name: new.name.clone(),
                    query: new.query.clone(),
                    created_from: new.created_from,
                    created_to: new.created_to,
                },
                created_at: now(),
                created_by: principal.name.clone(),
                released_at: None,
                released_by: None,
            };
            save_holds(self, vec![record.clone()], None, Some(intent.clone())).await?;
            Ok(record)
        }
        .await;
        let record = self
            .audited_intent(principal, "PlaceCaseHold", intent, outcome)
            .await?;
        let items_held = self.items_held(&record).await?;
        Ok(HoldView { record, items_held })
    }

    /// A case's holds, each active one with the items it holds now.
    pub async fn list_case_holds(
        &self,
        principal: &Principal,
        case_id: &str,
        include_released: bool,
    ) -> Result<Vec<HoldView>, Error> {
        self.authorize(principal, "ListCaseHolds", EDISCOVERY)
            .await?;
        let case = self
            .member_case(principal, "ListCaseHolds", case_id)
            .await?;
        let mut holds = Vec::new();
        for record in self.case_holds(case.id, include_released).await? {
            let items_held = if record.released_at.is_none() {
                self.items_held(&record).await?
            } else {
                0
            };
            holds.push(HoldView { record, items_held });
        }
        Ok(holds)
    }

    /// Releases a case hold; a delay hold takes its place (SPEC §4.3).
    pub async fn release_case_hold(
        &self,
        principal: &Principal,
        case_id: &str,
        hold_id: &str,
    ) -> Result<HoldRecord, Error> {
        self.authorize(principal, "ReleaseCaseHold", EDISCOVERY)
            .await?;
        let intent = AuditIntent::new(
            &principal.name,
            "ReleaseCaseHold",
            hold_id,
            &json!({ "case_id": case_id, "delay_hold_days": self.retention.delay_hold_days }),
        );
        let outcome = async {
            let case = self.load_case(principal, case_id).await?;
            let wanted = parse_ulid("hold_id", hold_id)?;
            let hold = self
                .case_holds(case.id, true)
                .await?
                .into_iter()
                .find(|h| h.id == wanted)
                .ok_or_else(|| Error::NotFound(format!("case {} has no hold {wanted}", case.id)))?;
            release_with_delay_audited(self, hold, principal, Some(intent.clone())).await
        }
        .await;
        self.audited_intent(principal, "ReleaseCaseHold", intent, outcome)
            .await
    }
}

/// Stores hold records, the re-plan of `replan` and the audit intent in one atomic write.
pub(crate) async fn save_holds(
    app: &App,
    holds: Vec<HoldRecord>,
    replan: Option<ReplanScope>,
    intent: Option<AuditIntent>,
) -> Result<(), Error> {
    let lifecycle = Arc::clone(&app.lifecycle);
    blocking(move || Ok(lifecycle.save_holds(holds, replan, intent, now())?)).await
}

/// Releases a hold (see `Lifecycle::release_hold`: delay holds, the release, the re-plan and the
/// audit entry owed are one atomic write).
pub(crate) async fn release_with_delay_audited(
    app: &App,
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
    let lifecycle = Arc::clone(&app.lifecycle);
    let delay_days = app.retention.delay_hold_days;
    let by = principal.name.clone();
    blocking(move || Ok(lifecycle.release_hold(hold, &by, delay_days, intent, now())?)).await
}

impl App {
    /// A litigation hold on one mailbox: forever (`days` 0) or for `days` from each item's
    /// creation.
    pub async fn place_litigation_hold(
        &self,
        principal: &Principal,
        mailbox_id: &str,
        days: u32,
    ) -> Result<HoldRecord, Error> {
        self.authorize(principal, "PlaceLitigationHold", RETENTION_ADMIN)
            .await?;
        let intent = AuditIntent::new(
            &principal.name,
            "PlaceLitigationHold",
            mailbox_id,
            &json!({ "days": days }),
        );
        let outcome = async {
            let mailbox = crate::validate::parse_mailbox("mailbox_id", mailbox_id)?;
            if days > holdfast_retention::policy::MAX_DAYS {
                return Err(Error::invalid("days", "at most 36500"));
            }
            let record = HoldRecord {
                id: Ulid::new(),
                mailboxes: [mailbox].into(),
                kind: HoldKind::Litigation {
                    days: (days > 0).then_some(days),
                },
                created_at: now(),
                created_by: principal.name.clone(),
                released_at: None,
                released_by: None,
            };
            save_holds(self, vec![record.clone()], None, Some(intent.clone())).await?;
            Ok(record)
        }
        .await;
        self.audited_intent(principal, "PlaceLitigationHold", intent, outcome)
            .await
    }

    /// Releases a litigation hold; a delay hold takes its place.
    pub async fn release_hold(&self, principal: &Principal, id: &str) -> Result<HoldRecord, Error> {
        self.authorize(principal, "ReleaseHold", RETENTION_ADMIN)
            .await?;
        let delay_days = self.retention.delay_hold_days;
        let intent = AuditIntent::new(
            &principal.name,
            "ReleaseHold",
            id,
            &json!({ "delay_hold_days": delay_days }),
        );
        let outcome = async {
            let hold = self.hold(id).await?;
            match hold.kind {
                HoldKind::Delay { .. } => Err(Error::FailedPrecondition(
                    "a delay hold is ended with ClearDelayHold".into(),
                )),
                HoldKind::Case { case_id, .. } => Err(Error::FailedPrecondition(format!(
                    "a case hold is released by its case's members (ReleaseCaseHold, case {case_id})"
                ))),
                HoldKind::Litigation { .. } => {
                    release_with_delay_audited(self, hold, principal, Some(intent.clone())).await
                }
            }
        }
        .await;
        self.audited_intent(principal, "ReleaseHold", intent, outcome)
            .await
    }

    /// Ends a delay hold early.
    pub async fn clear_delay_hold(
        &self,
        principal: &Principal,
        id: &str,
    ) -> Result<HoldRecord, Error> {
        self.authorize(principal, "ClearDelayHold", RETENTION_ADMIN)
            .await?;
        let intent = AuditIntent::new(&principal.name, "ClearDelayHold", id, &json!({}));
        let outcome = async {
            let mut hold = self.hold(id).await?;
            let wanted = hold.id;
            // An ended delay hold keeps nothing: "clearing" it would only rewrite its history.
            if !matches!(hold.kind, HoldKind::Delay { .. }) || !hold.is_active(now()) {
                return Err(Error::FailedPrecondition(format!(
                    "{wanted} is not an active delay hold"
                )));
            }
            hold.released_at = Some(now());
            hold.released_by = Some(principal.name.clone());
            // The cleared hold and the re-plan it needs are one write.
            let scope = ReplanScope::Mailboxes(hold.mailboxes.clone());
            save_holds(self, vec![hold.clone()], Some(scope), Some(intent.clone())).await?;
            Ok(hold)
        }
        .await;
        self.audited_intent(principal, "ClearDelayHold", intent, outcome)
            .await
    }

    /// Every hold (of one mailbox when `mailbox_id` is not empty), active ones only unless
    /// `include_released`.
    pub async fn list_holds(
        &self,
        principal: &Principal,
        mailbox_id: &str,
        include_released: bool,
    ) -> Result<Vec<HoldRecord>, Error> {
        self.authorize(principal, "ListHolds", RETENTION_READERS)
            .await?;
        let mailbox = match mailbox_id {
            "" => None,
            raw => Some(crate::validate::parse_mailbox("mailbox_id", raw)?),
        };
        let at = now();
        Ok(self
            .holds()
            .await?
            .into_iter()
            .filter(|h| mailbox.as_ref().is_none_or(|m| h.is_on(m)))
            .filter(|h| include_released || h.is_active(at))
            .collect())
    }

    /// Every hold record, released ones too.
    pub(crate) async fn holds(&self) -> Result<Vec<HoldRecord>, Error> {
        let store = Arc::clone(&self.store);
        blocking(move || Ok(store.list_holds()?)).await
    }

    async fn hold(&self, id: &str) -> Result<HoldRecord, Error> {
        let wanted = parse_ulid("id", id)?;
        self.holds()
            .await?
            .into_iter()
            .find(|h| h.id == wanted)
            .ok_or_else(|| Error::NotFound(format!("no hold with id {wanted}")))
    }
}
