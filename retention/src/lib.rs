//! The pure rules of holdfast's retention: where an item is (`Location`), why it moved
//! (`MoveReason`), policies and holds (`policy`), and the principles of retention that decide
//! when an item leaves the user's view and when it may be destroyed (`decide`). No RocksDB,
//! no tonic, no clock: time is always a parameter.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

pub mod decide;
pub mod policy;

/// Where an item lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Location {
    /// Visible to its user.
    Active,
    /// Hidden from the user, still discoverable until destroyed.
    HoldsArea,
}

/// Why an item left the user's view.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MoveReason {
    /// A retention policy's delete date was reached.
    Expired,
    /// The user deleted it (`DeleteHistory`).
    UserDeleted,
    /// An eDiscovery purge request (data spillage).
    PurgeRequested,
}

/// The location record of an item: ACTIVE, or in the holds area since `moved_at` because of
/// `reason`. Content is immutable; only this record changes over an item's life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ItemLocation {
    Active,
    HoldsArea {
        reason: MoveReason,
        moved_at: DateTime<Utc>,
    },
}

impl ItemLocation {
    pub fn location(&self) -> Location {
        match self {
            ItemLocation::Active => Location::Active,
            ItemLocation::HoldsArea { .. } => Location::HoldsArea,
        }
    }

    /// Moves an item to the holds area. An item already there keeps its first reason and time:
    /// the holds-area minimum age counts from the first move, and the first reason is the one
    /// auditors need.
    pub fn move_to_holds_area(self, reason: MoveReason, now: DateTime<Utc>) -> ItemLocation {
        match self {
            ItemLocation::Active => ItemLocation::HoldsArea {
                reason,
                moved_at: now,
            },
            already @ ItemLocation::HoldsArea { .. } => already,
        }
    }

    /// Whether the item's user can see it.
    pub fn is_visible_to_user(&self) -> bool {
        matches!(self, ItemLocation::Active)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn moving_twice_keeps_the_first_reason_and_time() {
        let first = Utc.with_ymd_and_hms(2025, 3, 1, 0, 0, 0).unwrap();
        let later = Utc.with_ymd_and_hms(2026, 3, 1, 0, 0, 0).unwrap();
        let moved = ItemLocation::Active.move_to_holds_area(MoveReason::UserDeleted, first);
        let again = moved.move_to_holds_area(MoveReason::Expired, later);
        assert_eq!(
            again,
            ItemLocation::HoldsArea {
                reason: MoveReason::UserDeleted,
                moved_at: first
            }
        );
        assert!(!again.is_visible_to_user());
        assert_eq!(again.location(), Location::HoldsArea);
    }

    #[test]
    fn active_items_are_visible() {
        assert!(ItemLocation::Active.is_visible_to_user());
        assert_eq!(ItemLocation::Active.location(), Location::Active);
    }
}
