//! "Why is this still here": the retention decision for one item in words, and a mailbox's
//! status (the policies and holds on it, its item counts).

use std::sync::Arc;

use holdfast_retention::decide::{Decision, Reason};

use super::policies::RETENTION_READERS;
use super::{blocking, now, App};
use crate::auth::Principal;
use crate::domain::{InteractionId, MailboxId, StoredInteraction};
use crate::error::Error;
use crate::lifecycle::{HoldRecord, PolicyRecord};

/// An item and what retention decides for it now.
#[derive(Debug, Clone)]
pub struct Explanation {
    pub item: StoredInteraction,
    pub decision: Decision,
    /// `decision.reasons` in words.
    pub reasons: Vec<String>,
}

/// The policies and holds on one mailbox, and its item counts.
#[derive(Debug, Clone)]
pub struct MailboxStatus {
    pub mailbox: MailboxId,
    pub active_items: u64,
    pub holds_area_items: u64,
    /// The enabled policies whose scope takes the mailbox in (for some or every app).
    pub policies: Vec<PolicyRecord>,
    /// The active holds on it.
    pub holds: Vec<HoldRecord>,
    pub default_retention_days: u32,
}

impl App {
    pub async fn explain_retention(
        &self,
        principal: &Principal,
        id: &str,
    ) -> Result<Explanation, Error> {
        self.authorize(principal, "ExplainRetention", RETENTION_READERS)
            .await?;
        let id: InteractionId = id
            .parse()
            .map_err(|reason: String| Error::invalid("id", reason))?;
        let store = Arc::clone(&self.store);
        let sweeper = Arc::clone(&self.sweeper);
        let at = now();
        let (item, decision) = blocking(move || {
            let item = store
                .get_interaction(id)?
                .ok_or_else(|| Error::NotFound(format!("no interaction with id {id}")))?;
            let planned = store
                .planned_items(&[id])?
                .pop()
                .flatten()
                .ok_or_else(|| Error::NotFound(format!("no interaction with id {id}")))?;
            let decision = sweeper.explain(&planned, at)?;
            Ok((item, decision))
        })
        .await?;
        let reasons = decision.reasons.iter().map(describe).collect();
        Ok(Explanation {
            item,
            decision,
            reasons,
        })
    }

    pub async fn mailbox_status(
        &self,
        principal: &Principal,
        mailbox_id: &str,
    ) -> Result<MailboxStatus, Error> {
        self.authorize(principal, "GetMailboxStatus", RETENTION_READERS)
            .await?;
        let mailbox = crate::validate::parse_mailbox("mailbox_id", mailbox_id)?;
        let at = now();
        let policies = self
            .policies()
            .await?
            .into_iter()
            .filter(|r| r.policy.enabled && r.policy.in_scope(mailbox.as_str()))
            .collect();
        let holds = self
            .holds()
            .await?
            .into_iter()
            .filter(|h| h.is_active(at) && h.is_on(&mailbox))
            .collect();
        let store = Arc::clone(&self.store);
        let counted = mailbox.clone();
        let (active_items, holds_area_items) =
            blocking(move || Ok(store.count_mailbox(&counted)?)).await?;
        Ok(MailboxStatus {
            mailbox,
            active_items,
            holds_area_items,
            policies,
            holds,
            default_retention_days: self.retention.default_retention_days,
        })
    }
}

/// A retention reason in words, for people.
pub fn describe(reason: &Reason) -> String {
    let time =
        |t: &chrono::DateTime<chrono::Utc>| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    match reason {
        Reason::RetainedBy {
            policy,
            until: Some(until),
        } => {
            format!("retained by policy {policy} until {}", time(until))
        }
        Reason::RetainedBy {
            policy,
            until: None,
        } => format!("retained forever by policy {policy}"),
        Reason::DeletedBy { policy, at } => {
            format!("leaves the user's view at {} by policy {policy}", time(at))
        }
        Reason::OverriddenByExplicit { policy } => {
            format!("org-wide policy {policy} ignored for deletion: an explicit policy applies")
        }
        Reason::DefaultRetention { until: Some(until) } => {
            format!(
                "default retention (no policy applies) until {}",
                time(until)
            )
        }
        Reason::DefaultRetention { until: None } => "default retention forever".into(),
        Reason::HeldBy { hold } => format!("held by hold {hold}"),
        Reason::MinimumAge { until } => format!("in the holds area at least until {}", time(until)),
    }
}
