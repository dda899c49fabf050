//! The PostgreSQL backend (cluster mode): so far the metadata and audit seams, which every
//! node shares. The schema lives in the numbered `.sql` files beside this module and is
//! applied on connect, under an advisory lock so that nodes starting together apply it once.
//!
//! The seams are synchronous (they run on blocking threads), so this uses the synchronous
//! `postgres` client, pooled by r2d2. A call must not run on an async worker thread.

use std::time::Duration;

use postgres::error::SqlState;
use postgres::NoTls;
use r2d2_postgres::PostgresConnectionManager;
use serde::de::DeserializeOwned;
use serde::Serialize;

use super::keys::META_REPLAN;
use super::{
    check_audit_chain, AuditTrail, Lease, Leases, Metadata, PolicyWrite, RulesWrite, StoreError,
};
use crate::records::{AuditIntent, AuditRecord, CaseRecord, HoldRecord, PolicyRecord, TokenRecord};

pub(crate) type Manager = PostgresConnectionManager<NoTls>;

/// Schema versions in order; each is applied once, in one transaction with its version row.
const MIGRATIONS: &[(i32, &str)] = &[
    (1, include_str!("0001_metadata.sql")),
    (2, include_str!("0002_leases.sql")),
    (3, include_str!("0003_items.sql")),
    (4, include_str!("0004_rules_head.sql")),
    (5, include_str!("0005_object_locks.sql")),
    (6, include_str!("0006_lock_retry.sql")),
    (7, include_str!("0007_splits.sql")),
    (8, include_str!("0008_search_nodes.sql")),
    (9, include_str!("0009_search_plans.sql")),
];

/// Advisory lock keys (one namespace: "hf" in the high bytes).
const MIGRATION_LOCK: i64 = 0x6866_0000_0001;
const AUDIT_LOCK: i64 = 0x6866_0000_0002;

/// How long a call waits for a pooled connection before it fails as unavailable.
const CONNECTION_WAIT: Duration = Duration::from_secs(10);

pub struct PgStore {
    /// Always `Some` until dropped.
    pool: Option<r2d2::Pool<Manager>>,
}

impl Drop for PgStore {
    fn drop(&mut self) {
        // Each pooled client owns a runtime, which must not be dropped on an async worker.
        if let Some(pool) = self.pool.take() {
            super::drop_off_async(pool);
        }
    }
}

impl From<postgres::Error> for StoreError {
    fn from(error: postgres::Error) -> Self {
        if error.code() == Some(&SqlState::DISK_FULL) {
            StoreError::NoSpace(format!("PostgreSQL: {error}"))
        } else {
            StoreError::Engine(format!("PostgreSQL: {error}"))
        }
    }
}

fn pool_error(error: r2d2::Error) -> StoreError {
    StoreError::Engine(format!("PostgreSQL: no connection: {error}"))
}

fn corrupt(table: &'static str, error: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt {
        column_family: table,
        reason: error.to_string(),
    }
}

fn to_json<T: Serialize>(value: &T) -> String {
    serde_json::to_string(value).expect("records serialise")
}

fn from_json<T: DeserializeOwned>(table: &'static str, text: &str) -> Result<T, StoreError> {
    serde_json::from_str(text).map_err(|error| corrupt(table, error))
}

/// A count or position as PostgreSQL's bigint (saturating: nothing is that large).
fn bigint(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

impl PgStore {
    /// Gives up every lease held by an earlier run of node `node` (holders are
    /// `<node>/<run>`), so that a restarted node takes its leases back at once rather than
    /// after they expire. The next holder bumps each lease's epoch, which fences anything
    /// an earlier run still writes. Node names are unique in a cluster. Answers how many.
    pub fn release_leases_of_node(&self, node: &str, this_run: &str) -> Result<u64, StoreError> {
        Ok(self.connection()?.execute(
            "UPDATE leases SET expires_at = '-infinity'
             WHERE starts_with(holder, $1 || '/') AND holder <> $2
               AND expires_at > clock_timestamp()",
            &[&node, &this_run],
        )?)
    }

    /// Connects (at most `max_connections` at once) and brings the schema up to date.
    /// A database whose schema is newer than this binary knows is refused.
    pub fn connect(
        mut config: postgres::Config,
        max_connections: u32,
    ) -> Result<PgStore, StoreError> {
        // A peer that vanishes (a half-open connection) is noticed rather than waited for.
        config
            .keepalives(true)
            .keepalives_idle(Duration::from_secs(30));
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(Duration::from_secs(10));
        }
        let pool = r2d2::Pool::builder()
            .max_size(max_connections.max(1))
            .min_idle(Some(1))
            .connection_timeout(CONNECTION_WAIT)
            .build(PostgresConnectionManager::new(config, NoTls))
            .map_err(pool_error)?;
        let store = PgStore { pool: Some(pool) };
        store.migrate()?;
        Ok(store)
    }

    pub(crate) fn connection(&self) -> Result<r2d2::PooledConnection<Manager>, StoreError> {
        self.pool
            .as_ref()
            .expect("the pool lives until the store is dropped")
            .get()
            .map_err(pool_error)
    }

    fn migrate(&self) -> Result<(), StoreError> {
        let mut connection = self.connection()?;
        let mut transaction = connection.transaction()?;
        transaction.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])?;
        transaction.batch_execute(
            "CREATE TABLE IF NOT EXISTS holdfast_schema (
                 version integer PRIMARY KEY,
                 applied_at timestamptz NOT NULL DEFAULT now())",
        )?;
        let current: i32 = transaction
            .query_one("SELECT coalesce(max(version), 0) FROM holdfast_schema", &[])?
            .get(0);
        let known = MIGRATIONS.last().map_or(0, |(version, _)| *version);
        if current > known {
            return Err(StoreError::UnsupportedFormat {
                path: "the PostgreSQL database".into(),
                found: format!("{current} (this binary knows up to {known})"),
            });
        }
        for (version, sql) in MIGRATIONS.iter().filter(|(v, _)| *v > current) {
            transaction.batch_execute(sql)?;
            transaction.execute(
                "INSERT INTO holdfast_schema (version) VALUES ($1)",
                &[version],
            )?;
            tracing::info!(version, "applied a PostgreSQL schema migration");
        }
        transaction.commit()?;
        Ok(())
    }

    /// Inserts or replaces the record of `key` in `table` (a constant of this module).
    fn upsert(&self, table: &'static str, key: &[u8], record: &str) -> Result<(), StoreError> {
        upsert(&mut *self.connection()?, table, key, record)
    }

    fn delete(&self, table: &'static str, key: &[u8]) -> Result<(), StoreError> {
        delete(&mut *self.connection()?, table, key)
    }

    /// Every record of `table` in key order.
    fn list<T: DeserializeOwned>(&self, table: &'static str) -> Result<Vec<T>, StoreError> {
        let key = key_column(table);
        self.connection()?
            .query(&format!("SELECT record FROM {table} ORDER BY {key}"), &[])?
            .iter()
            .map(|row| from_json(table, row.get(0)))
            .collect()
    }
}

fn key_column(table: &'static str) -> &'static str {
    match table {
        "meta" => "name",
        "tokens" => "sha256",
        "audit_log" => "sequence",
        _ => "id",
    }
}

fn upsert(
    client: &mut impl postgres::GenericClient,
    table: &'static str,
    key: &[u8],
    record: &str,
) -> Result<(), StoreError> {
    let column = key_column(table);
    client.execute(
        &format!(
            "INSERT INTO {table} ({column}, record) VALUES ($1, $2)
             ON CONFLICT ({column}) DO UPDATE SET record = EXCLUDED.record"
        ),
        &[&key, &record],
    )?;
    Ok(())
}

fn delete(
    client: &mut impl postgres::GenericClient,
    table: &'static str,
    key: &[u8],
) -> Result<(), StoreError> {
    let column = key_column(table);
    client.execute(&format!("DELETE FROM {table} WHERE {column} = $1"), &[&key])?;
    Ok(())
}

/// Sets (or removes) a `meta` value only while it is `expected` (`None`: absent), in one
/// statement; answers whether it did.
fn swap_meta(
    client: &mut impl postgres::GenericClient,
    name: &[u8],
    expected: Option<&[u8]>,
    value: Option<&[u8]>,
) -> Result<bool, StoreError> {
    let changed = match (expected, value) {
        (None, None) => {
            return Ok(client
                .query_opt("SELECT 1 FROM meta WHERE name = $1", &[&name])?
                .is_none())
        }
        (None, Some(value)) => client.execute(
            "INSERT INTO meta (name, value) VALUES ($1, $2) ON CONFLICT (name) DO NOTHING",
            &[&name, &value],
        )?,
        (Some(expected), Some(value)) => client.execute(
            "UPDATE meta SET value = $3 WHERE name = $1 AND value = $2",
            &[&name, &expected, &value],
        )?,
        (Some(expected), None) => client.execute(
            "DELETE FROM meta WHERE name = $1 AND value = $2",
            &[&name, &expected],
        )?,
    };
    Ok(changed == 1)
}

fn put_meta(
    client: &mut impl postgres::GenericClient,
    name: &[u8],
    value: &[u8],
) -> Result<(), StoreError> {
    client.execute(
        "INSERT INTO meta (name, value) VALUES ($1, $2)
         ON CONFLICT (name) DO UPDATE SET value = EXCLUDED.value",
        &[&name, &value],
    )?;
    Ok(())
}

fn last_audit_record(
    client: &mut impl postgres::GenericClient,
) -> Result<Option<AuditRecord>, StoreError> {
    client
        .query_opt(
            "SELECT record FROM audit_log ORDER BY sequence DESC LIMIT 1",
            &[],
        )?
        .map(|row| from_json("audit_log", row.get(0)))
        .transpose()
}

/// Counts a change of the retention rules in `transaction` (its row lock is held until the
/// transaction ends: a sweeper step that read the old value FOR SHARE finishes first).
fn bump_rules(transaction: &mut postgres::Transaction<'_>) -> Result<(), StoreError> {
    transaction.execute("UPDATE rules_head SET generation = generation + 1", &[])?;
    Ok(())
}

impl Metadata for PgStore {
    fn get_meta(&self, name: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self
            .connection()?
            .query_opt("SELECT value FROM meta WHERE name = $1", &[&name])?
            .map(|row| row.get(0)))
    }

    fn put_meta(&self, name: &[u8], value: Option<&[u8]>) -> Result<(), StoreError> {
        let mut connection = self.connection()?;
        match value {
            Some(value) => put_meta(&mut *connection, name, value),
            None => delete(&mut *connection, "meta", name),
        }
    }

    fn swap_meta(
        &self,
        name: &[u8],
        expected: Option<&[u8]>,
        value: Option<&[u8]>,
    ) -> Result<bool, StoreError> {
        swap_meta(&mut *self.connection()?, name, expected, value)
    }

    fn write_rules(&self, write: &RulesWrite) -> Result<(), StoreError> {
        let mut connection = self.connection()?;
        let mut transaction = connection.transaction()?;
        // Only a change of policies or holds changes the rules (a re-plan request alone
        // does not: counting it would make every node that sees the counter move ask for
        // another re-plan, for ever).
        if !write.holds.is_empty() || write.policy.is_some() {
            bump_rules(&mut transaction)?;
        }
        for hold in &write.holds {
            upsert(
                &mut transaction,
                "holds",
                &hold.id.to_bytes(),
                &to_json(hold),
            )?;
        }
        match &write.policy {
            Some(PolicyWrite::Put(policy)) => upsert(
                &mut transaction,
                "policies",
                &policy.id.to_bytes(),
                &to_json(policy),
            )?,
            Some(PolicyWrite::Delete(id)) => delete(&mut transaction, "policies", &id.to_bytes())?,
            None => {}
        }
        if let Some(job) = &write.replan_job {
            let read = write.replan_job_read.as_deref();
            if !swap_meta(&mut transaction, META_REPLAN, read, Some(job))? {
                return Err(StoreError::Fenced(
                    "another node changed the pending re-plan meanwhile".into(),
                ));
            }
        }
        if let Some(intent) = &write.audit_intent {
            let mut intent = intent.clone();
            // Any head committed before this write will do: the owed entry is appended after
            // this write commits, so it comes after that head whatever other nodes append.
            intent.after_sequence = last_audit_record(&mut transaction)?.map_or(0, |r| r.sequence);
            upsert(
                &mut transaction,
                "audit_intents",
                &intent.id.to_bytes(),
                &to_json(&intent),
            )?;
        }
        transaction.commit()?;
        Ok(())
    }

    fn audit_intents(&self) -> Result<Vec<AuditIntent>, StoreError> {
        self.list("audit_intents")
    }

    fn clear_audit_intent(&self, id: ulid::Ulid) -> Result<(), StoreError> {
        self.delete("audit_intents", &id.to_bytes())
    }

    fn put_policy(&self, policy: &PolicyRecord) -> Result<(), StoreError> {
        let mut connection = self.connection()?;
        let mut transaction = connection.transaction()?;
        bump_rules(&mut transaction)?;
        upsert(
            &mut transaction,
            "policies",
            &policy.id.to_bytes(),
            &to_json(policy),
        )?;
        Ok(transaction.commit()?)
    }

    fn delete_policy(&self, id: ulid::Ulid) -> Result<(), StoreError> {
        let mut connection = self.connection()?;
        let mut transaction = connection.transaction()?;
        bump_rules(&mut transaction)?;
        delete(&mut transaction, "policies", &id.to_bytes())?;
        Ok(transaction.commit()?)
    }

    fn list_policies(&self) -> Result<Vec<PolicyRecord>, StoreError> {
        self.list("policies")
    }

    fn put_hold(&self, hold: &HoldRecord) -> Result<(), StoreError> {
        let mut connection = self.connection()?;
        let mut transaction = connection.transaction()?;
        bump_rules(&mut transaction)?;
        upsert(
            &mut transaction,
            "holds",
            &hold.id.to_bytes(),
            &to_json(hold),
        )?;
        Ok(transaction.commit()?)
    }

    fn list_holds(&self) -> Result<Vec<HoldRecord>, StoreError> {
        self.list("holds")
    }

    fn put_case(&self, case: &CaseRecord) -> Result<(), StoreError> {
        self.upsert("cases", &case.id.to_bytes(), &to_json(case))
    }

    fn get_case(&self, id: ulid::Ulid) -> Result<Option<CaseRecord>, StoreError> {
        self.connection()?
            .query_opt(
                "SELECT record FROM cases WHERE id = $1",
                &[&&id.to_bytes()[..]],
            )?
            .map(|row| from_json("cases", row.get(0)))
            .transpose()
    }

    fn list_cases(&self) -> Result<Vec<CaseRecord>, StoreError> {
        self.list("cases")
    }

    fn put_token(&self, token_sha256: [u8; 32], record: &TokenRecord) -> Result<(), StoreError> {
        self.upsert("tokens", &token_sha256, &to_json(record))
    }

    fn delete_token(&self, token_sha256: [u8; 32]) -> Result<(), StoreError> {
        self.delete("tokens", &token_sha256)
    }

    fn rules_generation(&self) -> Result<u64, StoreError> {
        let generation: i64 = self
            .connection()?
            .query_one("SELECT generation FROM rules_head", &[])?
            .get(0);
        Ok(u64::try_from(generation).unwrap_or(0))
    }

    fn list_tokens(&self) -> Result<Vec<([u8; 32], TokenRecord)>, StoreError> {
        self.connection()?
            .query("SELECT sha256, record FROM tokens ORDER BY sha256", &[])?
            .iter()
            .map(|row| {
                let hash: &[u8] = row.get(0);
                let hash: [u8; 32] = hash
                    .try_into()
                    .map_err(|_| corrupt("tokens", "key is not 32 bytes"))?;
                Ok((hash, from_json("tokens", row.get(1))?))
            })
            .collect()
    }
}

impl AuditTrail for PgStore {
    fn last_audit_record(&self) -> Result<Option<AuditRecord>, StoreError> {
        last_audit_record(&mut *self.connection()?)
    }

    fn append_audit_records(&self, records: &[AuditRecord]) -> Result<(), StoreError> {
        self.append_audit_chained(&mut |_| records.to_vec())
            .map(drop)
    }

    fn append_audit_chained(
        &self,
        chain: &mut dyn FnMut(Option<&AuditRecord>) -> Vec<AuditRecord>,
    ) -> Result<Vec<AuditRecord>, StoreError> {
        let mut connection = self.connection()?;
        let mut transaction = connection.transaction()?;
        // One appender at a time across every node, so that the head read is the head the
        // entries follow when they commit.
        // A node that stalls holding the lock must not stall every other node's audit log for
        // ever: waiting and statements are bounded, and a timeout fails this group (retried
        // by its callers) without storing any of it.
        transaction
            .batch_execute("SET LOCAL lock_timeout = '10s'; SET LOCAL statement_timeout = '30s'")?;
        transaction.execute("SELECT pg_advisory_xact_lock($1)", &[&AUDIT_LOCK])?;
        let head = last_audit_record(&mut transaction)?;
        let records = chain(head.as_ref());
        check_audit_chain(head.as_ref(), &records)?;
        if records.is_empty() {
            return Ok(records);
        }
        let sequences: Vec<i64> = records.iter().map(|r| bigint(r.sequence)).collect();
        let values: Vec<String> = records.iter().map(to_json).collect();
        transaction.execute(
            "INSERT INTO audit_log (sequence, record)
             SELECT * FROM unnest($1::bigint[], $2::text[])",
            &[&sequences, &values],
        )?;
        transaction.commit()?;
        Ok(records)
    }

    fn scan_audit_records(
        &self,
        from_sequence: u64,
        limit: usize,
    ) -> Result<Vec<AuditRecord>, StoreError> {
        self.connection()?
            .query(
                "SELECT record FROM audit_log WHERE sequence >= $1 ORDER BY sequence LIMIT $2",
                &[&bigint(from_sequence), &bigint(limit as u64)],
            )?
            .iter()
            .map(|row| from_json("audit_log", row.get(0)))
            .collect()
    }
}

impl Leases for PgStore {
    fn acquire_lease(
        &self,
        name: &str,
        holder: &str,
        ttl: Duration,
    ) -> Result<Option<Lease>, StoreError> {
        // Whole milliseconds, rounded up: a lease shorter than that is never answered expired.
        let ttl_ms =
            bigint(u64::try_from(ttl.as_nanos().div_ceil(1_000_000).max(1)).unwrap_or(u64::MAX));
        // One statement: PostgreSQL locks the row, so of racing nodes exactly one wins.
        let row = self.connection()?.query_opt(
            "INSERT INTO leases AS l (name, holder, epoch, expires_at)
             VALUES ($1, $2, 1, clock_timestamp() + $3::bigint * interval '1 millisecond')
             ON CONFLICT (name) DO UPDATE SET
                 holder = EXCLUDED.holder,
                 epoch = CASE WHEN l.holder = EXCLUDED.holder AND l.expires_at > clock_timestamp()
                              THEN l.epoch ELSE l.epoch + 1 END,
                 expires_at = EXCLUDED.expires_at
             WHERE l.holder = EXCLUDED.holder OR l.expires_at <= clock_timestamp()
             RETURNING epoch, (extract(epoch FROM expires_at) * 1000000)::bigint",
            &[&name, &holder, &ttl_ms],
        )?;
        row.map(|row| {
            let (epoch, expires_us): (i64, i64) = (row.get(0), row.get(1));
            Ok(Lease {
                epoch: u64::try_from(epoch).map_err(|_| corrupt("leases", "negative epoch"))?,
                expires_at: chrono::DateTime::from_timestamp_micros(expires_us)
                    .ok_or_else(|| corrupt("leases", "expiry out of range"))?,
            })
        })
        .transpose()
    }

    fn release_lease(&self, name: &str, holder: &str) -> Result<(), StoreError> {
        self.connection()?.execute(
            "UPDATE leases SET expires_at = '-infinity' WHERE name = $1 AND holder = $2",
            &[&name, &holder],
        )?;
        Ok(())
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::store::conformance::{self, Fixture};

    /// Where the tests' PostgreSQL is: `scripts/test.sh` starts one (`scripts/postgres.sh`)
    /// and sets this to its URL.
    const URL_VARIABLE: &str = "HOLDFAST_TEST_POSTGRES_URL";

    /// A fresh database on the tests' PostgreSQL, dropped at the end.
    pub struct Postgres {
        admin: postgres::Config,
        config: postgres::Config,
        name: String,
    }

    impl Fixture for Postgres {
        type Store = PgStore;

        fn available() -> bool {
            if std::env::var_os(URL_VARIABLE).is_some() {
                return true;
            }
            assert!(
                std::env::var_os("CI").is_none(),
                "{URL_VARIABLE} is not set: in CI the PostgreSQL conformance cases must run \
                 (scripts/test.sh starts a server and sets it)"
            );
            eprintln!("skipped: set {URL_VARIABLE} (scripts/postgres.sh start DIR prints one)");
            false
        }

        fn new() -> Postgres {
            let url = std::env::var(URL_VARIABLE).unwrap();
            let admin: postgres::Config = url.parse().unwrap();
            let name = format!(
                "holdfast_test_{}",
                ulid::Ulid::new().to_string().to_lowercase()
            );
            let mut client = admin.connect(NoTls).unwrap();
            client
                .batch_execute(&format!("CREATE DATABASE {name}"))
                .unwrap();
            let mut config = admin.clone();
            config.dbname(&name);
            Postgres {
                admin,
                config,
                name,
            }
        }

        fn open(&self) -> Arc<PgStore> {
            Arc::new(PgStore::connect(self.config.clone(), 4).unwrap())
        }
    }

    impl Postgres {
        /// How to reach the fresh database.
        pub fn config(&self) -> postgres::Config {
            self.config.clone()
        }
    }

    impl Drop for Postgres {
        fn drop(&mut self) {
            if let Ok(mut client) = self.admin.connect(NoTls) {
                let _ = client.batch_execute(&format!(
                    "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                    self.name
                ));
            }
        }
    }

    conformance::shared_state_cases!(Postgres);

    /// A re-plan request alone does not count as a change of the rules (every node would
    /// otherwise ask for another), and a job written from a stale read is refused.
    #[test]
    fn re_plan_jobs_are_swapped_not_overwritten_and_do_not_move_the_rules() {
        if !Postgres::available() {
            return;
        }
        let fixture = Postgres::new();
        let store = fixture.open();
        let before = store.rules_generation().unwrap();
        let job = |n: u8| Some(vec![b'{', b'0' + n, b'}']);
        store
            .write_rules(&RulesWrite {
                replan_job: job(1),
                ..RulesWrite::default()
            })
            .unwrap();
        assert_eq!(store.rules_generation().unwrap(), before);
        // Made from "no job" while job 1 is stored: refused, job 1 stays.
        assert!(matches!(
            store.write_rules(&RulesWrite {
                replan_job: job(2),
                ..RulesWrite::default()
            }),
            Err(StoreError::Fenced(_))
        ));
        store
            .write_rules(&RulesWrite {
                replan_job: job(2),
                replan_job_read: job(1),
                ..RulesWrite::default()
            })
            .unwrap();
        assert_eq!(store.get_meta(META_REPLAN).unwrap(), job(2));
        // Finishing job 1 removes nothing now.
        assert!(!store
            .swap_meta(META_REPLAN, job(1).as_deref(), None)
            .unwrap());
        assert!(store
            .swap_meta(META_REPLAN, job(2).as_deref(), None)
            .unwrap());
        assert_eq!(store.get_meta(META_REPLAN).unwrap(), None);
    }

    /// A restarted node takes its earlier run's leases back at once, with a new epoch; other
    /// nodes' leases stay theirs.
    #[test]
    fn a_restarted_node_takes_back_only_its_own_leases() {
        if !Postgres::available() {
            return;
        }
        let fixture = Postgres::new();
        let store = fixture.open();
        let ttl = Duration::from_secs(60);
        let old = store
            .acquire_lease("sweeper", "node1/run-a", ttl)
            .unwrap()
            .unwrap();
        store
            .acquire_lease("janitor", "node10/run-x", ttl)
            .unwrap()
            .unwrap();
        assert_eq!(
            store.acquire_lease("sweeper", "node1/run-b", ttl).unwrap(),
            None
        );
        assert_eq!(
            store
                .release_leases_of_node("node1", "node1/run-b")
                .unwrap(),
            1
        );
        let new = store
            .acquire_lease("sweeper", "node1/run-b", ttl)
            .unwrap()
            .unwrap();
        assert!(new.epoch > old.epoch, "the earlier run is fenced");
        // node10 is another node, although its name starts with node1.
        assert_eq!(
            store.acquire_lease("janitor", "node1/run-b", ttl).unwrap(),
            None
        );
        // This run's own leases are never released.
        assert_eq!(
            store
                .release_leases_of_node("node1", "node1/run-b")
                .unwrap(),
            0
        );
    }

    #[test]
    fn nodes_connecting_together_apply_the_schema_once_and_a_newer_schema_is_refused() {
        if !Postgres::available() {
            return;
        }
        let fixture = Postgres::new();
        std::thread::scope(|scope| {
            for _ in 0..4 {
                scope.spawn(|| fixture.open());
            }
        });
        let mut client = fixture.config.connect(NoTls).unwrap();
        let versions: i64 = client
            .query_one("SELECT count(*) FROM holdfast_schema", &[])
            .unwrap()
            .get(0);
        assert_eq!(versions, MIGRATIONS.len() as i64);
        client
            .execute("INSERT INTO holdfast_schema (version) VALUES (1000)", &[])
            .unwrap();
        assert!(matches!(
            PgStore::connect(fixture.config.clone(), 1),
            Err(StoreError::UnsupportedFormat { .. })
        ));
    }

    #[test]
    fn an_unreachable_database_is_an_error_not_a_hang() {
        let mut config = postgres::Config::new();
        config
            .host("127.0.0.1")
            .port(1)
            .user("nobody")
            .connect_timeout(Duration::from_secs(1));
        assert!(matches!(
            PgStore::connect(config, 1),
            Err(StoreError::Engine(_))
        ));
    }
}
