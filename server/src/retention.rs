//! Stored retention policies and holds, and their conversion into the pure rules of the
//! `holdfast-retention` crate.

use chrono::{DateTime, TimeDelta, Utc};
use holdfast_retention::decide::Settings;
use holdfast_retention::policy::{Hold, Period, Policy};
use serde::{Deserialize, Serialize};
use ulid::Ulid;

use crate::config::RetentionConfig;
use crate::domain::MailboxId;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PolicyRecord {
    pub id: Ulid,
    pub policy: Policy,
    pub created_at: DateTime<Utc>,
    pub created_by: String,
    pub updated_at: DateTime<Utc>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HoldKind {
    /// Forever (`None`) or N days from each item's `created_at`.
    Litigation { days: Option<u32> },
    /// Nothing in the mailbox is destroyed before `until`.
    Delay { until: DateTime<Utc> },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HoldRecord {
    pub id: Ulid,
    pub mailbox: MailboxId,
    pub kind: HoldKind,
    pub created_at: DateTime<Utc>,
    pub created_by: String,
    pub released_at: Option<DateTime<Utc>>,
    pub released_by: Option<String>,
}

impl HoldRecord {
    pub fn is_active(&self, now: DateTime<Utc>) -> bool {
        self.released_at.is_none()
            && match self.kind {
                HoldKind::Litigation { .. } => true,
                HoldKind::Delay { until } => now < until,
            }
    }

    /// The pure rule's view of this hold.
    pub fn to_hold(&self) -> Hold {
        match self.kind {
            HoldKind::Litigation { days } => Hold::Litigation {
                id: self.id.to_string(),
                days,
            },
            HoldKind::Delay { until } => Hold::Delay {
                id: self.id.to_string(),
                until,
            },
        }
    }
}

pub fn settings(config: &RetentionConfig) -> Settings {
    Settings {
        default_retention: (config.default_retention_days > 0)
            .then_some(Period::Days(config.default_retention_days)),
        holds_area_minimum_age: TimeDelta::hours(i64::from(config.holds_area_minimum_age_hours)),
    }
}
