//! eDiscovery cases (SPEC §6): who may work in a case, which mailboxes it searches.

use std::collections::BTreeSet;

use crate::auth::{Principal, Role};
use crate::domain::MailboxId;
use crate::error::Error;

pub use crate::records::{CaseRecord, CaseStatus};

/// Most members or custodians per case.
pub const MAX_CASE_LIST: usize = 10_000;

pub fn validate_name(name: &str) -> Result<(), Error> {
    let length = name.chars().count();
    if !(1..=200).contains(&length) {
        return Err(Error::invalid("name", "must be 1-200 characters"));
    }
    if name.chars().any(char::is_control) {
        return Err(Error::invalid("name", "contains a control character"));
    }
    Ok(())
}

pub fn validate_description(description: &str) -> Result<(), Error> {
    if description.len() > 8192 {
        return Err(Error::invalid("description", "is longer than 8192 bytes"));
    }
    Ok(())
}

pub fn parse_members(field: &str, names: &[String]) -> Result<BTreeSet<String>, Error> {
    if names.len() > MAX_CASE_LIST {
        return Err(Error::invalid(
            field,
            format!("more than {MAX_CASE_LIST} entries"),
        ));
    }
    names
        .iter()
        .map(|name| {
            crate::auth::validate_principal_name(name)
                .map(|()| name.clone())
                .map_err(|reason| Error::invalid(field, format!("{name:?}: {reason}")))
        })
        .collect()
}

pub fn parse_custodians(field: &str, mailboxes: &[String]) -> Result<BTreeSet<MailboxId>, Error> {
    if mailboxes.len() > MAX_CASE_LIST {
        return Err(Error::invalid(
            field,
            format!("more than {MAX_CASE_LIST} entries"),
        ));
    }
    mailboxes
        .iter()
        .map(|m| MailboxId::parse(m).map_err(|reason| Error::invalid(field, reason)))
        .collect()
}

impl CaseRecord {
    /// Whether `principal` may see and use this case.
    pub fn is_accessible_by(&self, principal: &Principal) -> bool {
        principal.roles.contains(&Role::EdiscoveryAdmin) || self.members.contains(&principal.name)
    }

    pub fn require_open(&self) -> Result<(), Error> {
        match self.status {
            CaseStatus::Open => Ok(()),
            CaseStatus::Closed => Err(Error::FailedPrecondition(format!(
                "case {} is closed",
                self.id
            ))),
        }
    }

    /// The mailboxes a search covers: all custodians, or the named subset of them.
    pub fn search_scope(&self, requested: &[String]) -> Result<Vec<MailboxId>, Error> {
        if requested.is_empty() {
            if self.custodians.is_empty() {
                return Err(Error::FailedPrecondition(format!(
                    "case {} has no custodians to search",
                    self.id
                )));
            }
            return Ok(self.custodians.iter().cloned().collect());
        }
        let subset = parse_custodians("mailboxes", requested)?;
        if let Some(outsider) = subset.iter().find(|m| !self.custodians.contains(m)) {
            return Err(Error::invalid(
                "mailboxes",
                format!("{outsider} is not a custodian of this case"),
            ));
        }
        Ok(subset.into_iter().collect())
    }
}
