//! eDiscovery cases (SPEC §6): create, read, list, change members and custodians, close.
//! Only `ediscovery` and `ediscovery_admin` principals work with cases, and only in cases they
//! are members of (an `ediscovery_admin` sees every case).

use std::sync::Arc;

use serde_json::json;

use super::matches::Matches;
use super::search::complete_index;
use super::{blocking, now, parse_ulid, App, EDISCOVERY};
use crate::auth::Principal;
use crate::cases::{self, CaseRecord, CaseStatus};
use crate::domain::MailboxId;
use crate::error::Error;
use crate::lifecycle::{HoldKind, HoldRecord};

/// A case to create. The creator is always a member.
#[derive(Debug, Clone, Default)]
pub struct NewCase {
    pub name: String,
    pub description: String,
    pub members: Vec<String>,
    pub custodians: Vec<String>,
}

/// A change to a case: an empty name or description leaves it as it is.
#[derive(Debug, Clone, Default)]
pub struct CaseChange {
    pub name: String,
    pub description: String,
    pub add_members: Vec<String>,
    pub remove_members: Vec<String>,
    pub add_custodians: Vec<String>,
    pub remove_custodians: Vec<String>,
}

impl App {
    pub async fn create_case(
        &self,
        principal: &Principal,
        new: NewCase,
    ) -> Result<CaseRecord, Error> {
        self.authorize(principal, "CreateCase", EDISCOVERY).await?;
        cases::validate_name(&new.name)?;
        cases::validate_description(&new.description)?;
        let mut members = cases::parse_members("members", &new.members)?;
        members.insert(principal.name.clone());
        let custodians = cases::parse_custodians("custodians", &new.custodians)?;
        // Two creations with one name cannot both pass the check.
        let _cases = self.cases_lock.lock().await;
        let store = Arc::clone(&self.store);
        let name = new.name.clone();
        let taken = blocking(move || {
            Ok(store
                .list_cases()?
                .iter()
                .any(|case| case.name.eq_ignore_ascii_case(&name)))
        })
        .await?;
        if taken {
            return Err(Error::AlreadyExists(format!(
                "a case named {:?} exists",
                new.name
            )));
        }
        let case = CaseRecord {
            id: ulid::Ulid::new(),
            name: new.name,
            description: new.description,
            status: CaseStatus::Open,
            members,
            custodians,
            created_at: now(),
            created_by: principal.name.clone(),
            closed_at: None,
        };
        let case = self.save_case(case).await?;
        self.audit_done(
            principal,
            "CreateCase",
            case.id.to_string(),
            json!({ "name": case.name, "members": case.members, "custodians": case.custodians }),
            "ok".into(),
        )
        .await?;
        Ok(case)
    }

    pub async fn get_case(
        &self,
        principal: &Principal,
        case_id: &str,
    ) -> Result<CaseRecord, Error> {
        self.authorize(principal, "GetCase", EDISCOVERY).await?;
        self.member_case(principal, "GetCase", case_id).await
    }

    /// The cases `principal` may see, oldest first.
    pub async fn list_cases(&self, principal: &Principal) -> Result<Vec<CaseRecord>, Error> {
        self.authorize(principal, "ListCases", EDISCOVERY).await?;
        let store = Arc::clone(&self.store);
        let all = blocking(move || Ok(store.list_cases()?)).await?;
        Ok(all
            .into_iter()
            .filter(|case| case.is_accessible_by(principal))
            .collect())
    }

    pub async fn update_case(
        &self,
        principal: &Principal,
        case_id: &str,
        change: CaseChange,
    ) -> Result<CaseRecord, Error> {
        self.authorize(principal, "UpdateCase", EDISCOVERY).await?;
        let add_members = cases::parse_members("add_members", &change.add_members);
        let remove_members = cases::parse_members("remove_members", &change.remove_members);
        let add_custodians = cases::parse_custodians("add_custodians", &change.add_custodians);
        let remove_custodians =
            cases::parse_custodians("remove_custodians", &change.remove_custodians);
        let parameters = json!({
            "name": change.name,
            "add_members": add_members.as_ref().ok(),
            "remove_members": remove_members.as_ref().ok(),
            "add_custodians": add_custodians.as_ref().ok(),
            "remove_custodians": remove_custodians.as_ref().ok(),
        });
        let outcome = async {
            // Read, change and write under the cases lock: a racing CloseCase cannot be undone.
            let _cases = self.cases_lock.lock().await;
            let mut case = self.load_case(principal, case_id).await?;
            case.require_open()?;
            if !change.name.is_empty() {
                cases::validate_name(&change.name)?;
                case.name = change.name.clone();
            }
            if !change.description.is_empty() {
                cases::validate_description(&change.description)?;
                case.description = change.description.clone();
            }
            let (add_members, remove_members) = (add_members?, remove_members?);
            let (add_custodians, remove_custodians) = (add_custodians?, remove_custodians?);
            case.members.extend(add_members);
            case.members.retain(|m| !remove_members.contains(m));
            case.custodians.extend(add_custodians);
            case.custodians.retain(|m| !remove_custodians.contains(m));
            if case.members.len() > cases::MAX_CASE_LIST
                || case.custodians.len() > cases::MAX_CASE_LIST
            {
                return Err(Error::invalid("case", "too many members or custodians"));
            }
            self.save_case(case).await
        }
        .await;
        self.audited(
            principal,
            "UpdateCase",
            case_id.to_string(),
            parameters,
            outcome,
        )
        .await
    }

    /// Closes a case that has no active hold.
    pub async fn close_case(
        &self,
        principal: &Principal,
        case_id: &str,
    ) -> Result<CaseRecord, Error> {
        self.authorize(principal, "CloseCase", EDISCOVERY).await?;
        let outcome = async {
            // Under the cases lock: no hold can be placed between the check and the save.
            let _cases = self.cases_lock.lock().await;
            let mut case = self.load_case(principal, case_id).await?;
            case.require_open()?;
            let case_id = case.id;
            let holds = self.case_holds(case_id, false).await?;
            if !holds.is_empty() {
                return Err(Error::FailedPrecondition(format!(
                    "case {case_id} has {} active hold(s); release them before closing it",
                    holds.len()
                )));
            }
            case.status = CaseStatus::Closed;
            case.closed_at = Some(now());
            self.save_case(case).await
        }
        .await;
        self.audited(
            principal,
            "CloseCase",
            case_id.to_string(),
            json!({}),
            outcome,
        )
        .await
    }

    /// `load_case` for calls that do not audit their outcome: a principal who is not a member
    /// is refused and the refusal is audited (SPEC §7).
    pub(crate) async fn member_case(
        &self,
        principal: &Principal,
        action: &'static str,
        case_id: &str,
    ) -> Result<CaseRecord, Error> {
        let loaded = self.load_case(principal, case_id).await;
        if let Err(error @ Error::PermissionDenied(_)) = &loaded {
            self.audit_refusal(principal, action, case_id.to_string(), error)
                .await;
        }
        loaded
    }

    /// The case `case_id`, if `principal` may see it.
    pub(crate) async fn load_case(
        &self,
        principal: &Principal,
        case_id: &str,
    ) -> Result<CaseRecord, Error> {
        let id = parse_ulid("case_id", case_id)?;
        let store = Arc::clone(&self.store);
        let case = blocking(move || Ok(store.get_case(id)?))
            .await?
            .ok_or_else(|| Error::NotFound(format!("no case with id {id}")))?;
        if !case.is_accessible_by(principal) {
            return Err(Error::PermissionDenied(format!(
                "{} is not a member of case {id}",
                principal.name
            )));
        }
        Ok(case)
    }

    /// The holds of a case: the active ones, or all of them.
    pub(crate) async fn case_holds(
        &self,
        case_id: ulid::Ulid,
        include_released: bool,
    ) -> Result<Vec<HoldRecord>, Error> {
        let store = Arc::clone(&self.store);
        let at = now();
        let holds = blocking(move || Ok(store.list_holds()?)).await?;
        Ok(holds
            .into_iter()
            .filter(|h| matches!(&h.kind, HoldKind::Case { case_id: c, .. } if *c == case_id))
            .filter(|h| include_released || h.is_active(at))
            .collect())
    }

    /// How many stored items a case hold covers now, by the search index.
    pub(crate) async fn items_held(&self, hold: &HoldRecord) -> Result<u64, Error> {
        let Some(query) = hold.leaf_query() else {
            return Ok(0);
        };
        let (query_text, query) = query?;
        let mailboxes: Vec<MailboxId> = hold.mailboxes.iter().cloned().collect();
        let index = complete_index(&self.index)?;
        let fanout = self.fanout.clone();
        blocking(move || {
            Matches::open(&index, fanout.as_ref(), &query_text, &query, &mailboxes)?.count(None)
        })
        .await
    }

    async fn save_case(&self, case: CaseRecord) -> Result<CaseRecord, Error> {
        let store = Arc::clone(&self.store);
        blocking(move || {
            store.put_case(&case)?;
            Ok(case)
        })
        .await
    }
}

/// An item of a case's custodians, as a reviewer opens it, with the turns of its thread that
/// are still in the user's view (newest first, at most `THREAD_CONTEXT`).
#[derive(Debug, Clone)]
pub struct CaseItem {
    pub item: crate::domain::StoredInteraction,
    pub thread: Vec<crate::domain::StoredInteraction>,
}

/// Most turns of a thread shown around an item.
pub const THREAD_CONTEXT: usize = 50;

impl App {
    /// Opens one item for a member of an open case whose custodians include the item's
    /// mailbox. Reading content is a compliance action: it is audited ("ViewItem").
    pub async fn case_item(
        &self,
        principal: &Principal,
        case_id: &str,
        item_id: &str,
    ) -> Result<CaseItem, Error> {
        self.authorize(principal, "ViewItem", EDISCOVERY).await?;
        let case = self.member_case(principal, "ViewItem", case_id).await?;
        case.require_open()?;
        let id: crate::domain::InteractionId = item_id
            .parse()
            .map_err(|reason: String| Error::invalid("id", reason))?;
        let store = Arc::clone(&self.store);
        let custodians = case.custodians.clone();
        let found = blocking(move || {
            let Some(item) = store.get_interaction(id)? else {
                return Ok(None);
            };
            // Another case's item is as unknown as a missing one.
            if !custodians.contains(&item.content.mailbox_id) {
                return Ok(None);
            }
            let query = crate::domain::ListQuery {
                mailbox_id: item.content.mailbox_id.clone(),
                thread_id: item.content.thread_id.clone(),
                created_from: None,
                created_to: None,
            };
            let (thread, _) = if item.content.thread_id.is_empty() {
                (Vec::new(), None)
            } else {
                store.list_active(&query, None, THREAD_CONTEXT)?
            };
            Ok(Some(CaseItem { item, thread }))
        })
        .await?;
        let Some(found) = found else {
            return Err(Error::NotFound(format!(
                "case {} has no item {id}",
                case.id
            )));
        };
        self.audit_done(
            principal,
            "ViewItem",
            id.to_string(),
            json!({ "case_id": case.id.to_string(),
                    "mailbox_id": found.item.content.mailbox_id.as_str(),
                    "thread_items_shown": found.thread.iter().map(|t| t.id.to_string()).collect::<Vec<_>>() }),
            "ok".into(),
        )
        .await?;
        Ok(found)
    }
}
