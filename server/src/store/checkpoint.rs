//! Online, consistent copies of the store (RocksDB checkpoints) for backups.

use std::path::Path;

use rocksdb::checkpoint::Checkpoint;
use rocksdb::{IteratorMode, Options, DB};

use super::keys::CF_AUDIT;
use super::rocks::{corrupt, RocksStore};
use super::StoreError;
use crate::records::AuditRecord;

impl RocksStore {
    /// A RocksDB checkpoint of every column family in `dir`: memtables are flushed first,
    /// immutable SST files are hard-linked (copied across filesystems) and the live WAL is
    /// copied, so the copy holds every write acknowledged before the call began and opens
    /// as a complete store. Writes go on meanwhile. Returns the newest audit entry of the
    /// copy, read back from it (read-only), so that the head recorded in a backup manifest
    /// is exactly the copy's.
    pub(super) fn create_checkpoint(&self, dir: &Path) -> Result<Option<AuditRecord>, StoreError> {
        Checkpoint::new(&self.db)?.create_checkpoint(dir)?;
        let options = Options::default();
        let families = DB::list_cf(&options, dir)?;
        let copy = DB::open_cf_for_read_only(&options, dir, &families, false)?;
        let audit = copy
            .cf_handle(CF_AUDIT)
            .ok_or_else(|| corrupt(CF_AUDIT, "the checkpoint has no audit column family"))?;
        let last = match copy.iterator_cf(audit, IteratorMode::End).next() {
            None => None,
            Some(entry) => {
                let (_, value) = entry?;
                Some(serde_json::from_slice(&value).map_err(|error| corrupt(CF_AUDIT, error))?)
            }
        };
        Ok(last)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{AuditTrail, Snapshots};

    #[test]
    fn a_checkpoint_opens_as_a_store_with_the_same_audit_head() {
        let dir = tempfile::tempdir().unwrap();
        let store = RocksStore::open(&dir.path().join("store")).unwrap();
        assert_eq!(store.checkpoint(&dir.path().join("empty")).unwrap(), None);
        let record = AuditRecord {
            sequence: 1,
            time: chrono::Utc::now(),
            actor: "tester".into(),
            action: "Test".into(),
            target: String::new(),
            parameters: serde_json::json!({}),
            result: "ok".into(),
            previous_hash: String::new(),
            hash: "h".into(),
        };
        store.append_audit_record(&record).unwrap();
        let copy_dir = dir.path().join("copy");
        let head = store.checkpoint(&copy_dir).unwrap();
        assert_eq!(head, Some(record.clone()));
        // Writes after the checkpoint are not in it.
        let later = AuditRecord {
            sequence: 2,
            previous_hash: record.hash.clone(),
            ..record.clone()
        };
        store.append_audit_record(&later).unwrap();
        let copy = RocksStore::open(&copy_dir).unwrap();
        assert_eq!(copy.last_audit_record().unwrap(), Some(record));
        // The target must not exist.
        assert!(store.checkpoint(&copy_dir).is_err());
    }
}
