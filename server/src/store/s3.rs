//! Content in an S3 bucket with Object Lock (cluster mode): one object per interaction,
//! whose retention date and legal hold the storage engine itself enforces, so that neither a
//! compromised node nor an administrator holding the bucket's credentials can destroy what
//! a policy retains or a hold preserves.
//!
//! How retention maps onto Object Lock (chosen in `Lifecycle::plan_new`): retention by a
//! preservation-locked policy is a COMPLIANCE retention (nobody can shorten it); by unlocked
//! policies only, a GOVERNANCE retention (only a caller allowed to bypass governance, which
//! holdfast is, can shorten or pass it). An object's legal hold flag is on while a litigation,
//! case or delay hold covers its item (`ClusterStore::sync_locks`). Deleting a version is
//! refused by the engine while its retention runs or its legal hold is on.
//!
//! The seams are synchronous; this module owns a small runtime and blocks on it, so its
//! calls must run on blocking threads, never on an async worker.

use std::time::Duration;

use aws_sdk_s3::config::{BehaviorVersion, Credentials, Region};
use aws_sdk_s3::error::ProvideErrorMetadata;
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{
    ObjectLockEnabled, ObjectLockLegalHold, ObjectLockLegalHoldStatus, ObjectLockMode,
    ObjectLockRetention, ObjectLockRetentionMode,
};
use chrono::{DateTime, Utc};

use super::StoreError;

/// Where the bucket is and who holdfast is to it.
#[derive(Clone)]
pub struct S3Config {
    /// e.g. `https://s3.eu-west-1.amazonaws.com`, or a SeaweedFS / MinIO / Ceph gateway.
    pub endpoint: String,
    pub region: String,
    pub bucket: String,
    pub access_key: String,
    pub secret_key: String,
}

impl std::fmt::Debug for S3Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3Config")
            .field("endpoint", &self.endpoint)
            .field("region", &self.region)
            .field("bucket", &self.bucket)
            .finish_non_exhaustive()
    }
}

/// The retention an object gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Retention {
    /// Nobody can shorten it or delete the object before `until`.
    Compliance { until: DateTime<Utc> },
    /// Only a caller allowed to bypass governance retention (holdfast) can shorten it.
    Governance { until: DateTime<Utc> },
}

impl Retention {
    fn mode(&self) -> ObjectLockRetentionMode {
        match self {
            Retention::Compliance { .. } => ObjectLockRetentionMode::Compliance,
            Retention::Governance { .. } => ObjectLockRetentionMode::Governance,
        }
    }

    fn until(&self) -> aws_sdk_s3::primitives::DateTime {
        let (Retention::Compliance { until } | Retention::Governance { until }) = self;
        aws_sdk_s3::primitives::DateTime::from_millis(until.timestamp_millis())
    }
}

/// A stored object version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectVersion {
    pub key: String,
    pub version_id: String,
}

/// Whether an engine's error code says a version has no lock of the kind asked (AWS and
/// SeaweedFS name it differently).
fn no_lock_configured(code: Option<&str>) -> bool {
    matches!(
        code,
        Some(
            "NoSuchObjectLockConfiguration"
                | "ObjectLockConfigurationNotFoundError"
                | "NoSuchObjectLegalHold"
        )
    )
}

/// A change of one version's locks (`ObjectLockStore::change_locks`): a new retention (with
/// whether to bypass GOVERNANCE, for a change of mode to COMPLIANCE with an earlier date),
/// and the legal hold set or cleared; `None` leaves that part as it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LockChange {
    pub version: ObjectVersion,
    pub retention: Option<(Retention, bool)>,
    pub legal_hold: Option<bool>,
}

/// Why the engine refused to delete or shorten: its lock applies.
pub const LOCKED: &str =
    "the object is locked (its retention has not ended, or it is under legal hold)";

/// Requests in flight at once for `put_many` and `get_many`.
const PARALLEL: usize = 64;

pub struct ObjectLockStore {
    client: aws_sdk_s3::Client,
    bucket: String,
    /// Always `Some` until dropped.
    runtime: Option<tokio::runtime::Runtime>,
}

impl Drop for ObjectLockStore {
    fn drop(&mut self) {
        // Without waiting: a runtime dropped the usual way panics in an async context.
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

/// An S3 error as a store error. The message names the operation and the engine's error
/// code, never object content.
fn s3_error<E>(operation: &str, error: aws_sdk_s3::error::SdkError<E>) -> StoreError
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
{
    let code = error.code().unwrap_or("no code").to_string();
    let detail = match &error {
        aws_sdk_s3::error::SdkError::ServiceError(service) => {
            service.err().message().unwrap_or("no message").to_string()
        }
        other => other.to_string(),
    };
    StoreError::Engine(format!("S3 {operation}: {code}: {detail}"))
}

impl ObjectLockStore {
    /// Connects and checks that the bucket exists with Object Lock enabled, creating it
    /// (with Object Lock) when it does not exist. A bucket without Object Lock is refused:
    /// the engine would not protect what holdfast stores there.
    pub fn open(config: &S3Config) -> Result<ObjectLockStore, StoreError> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("holdfast-s3")
            .enable_all()
            .build()
            .map_err(|error| StoreError::Engine(format!("cannot start the S3 runtime: {error}")))?;
        let http = aws_smithy_http_client::Builder::new()
            .tls_provider(aws_smithy_http_client::tls::Provider::Rustls(
                aws_smithy_http_client::tls::rustls_provider::CryptoMode::Ring,
            ))
            .build_https();
        let s3_config = aws_sdk_s3::Config::builder()
            .behavior_version(BehaviorVersion::latest())
            .endpoint_url(&config.endpoint)
            .region(Region::new(config.region.clone()))
            .credentials_provider(Credentials::new(
                &config.access_key,
                &config.secret_key,
                None,
                None,
                "holdfast configuration",
            ))
            .force_path_style(true)
            .http_client(http)
            .timeout_config(
                aws_sdk_s3::config::timeout::TimeoutConfig::builder()
                    .connect_timeout(Duration::from_secs(5))
                    .operation_timeout(Duration::from_secs(60))
                    .build(),
            )
            .build();
        let store = ObjectLockStore {
            client: aws_sdk_s3::Client::from_conf(s3_config),
            bucket: config.bucket.clone(),
            runtime: Some(runtime),
        };
        store.ensure_bucket()?;
        Ok(store)
    }

    fn runtime(&self) -> &tokio::runtime::Runtime {
        self.runtime
            .as_ref()
            .expect("the runtime lives until the store is dropped")
    }

    fn ensure_bucket(&self) -> Result<(), StoreError> {
        let client = &self.client;
        let bucket = &self.bucket;
        self.runtime().block_on(async {
            let exists = match client.head_bucket().bucket(bucket).send().await {
                Ok(_) => true,
                Err(error) if error.raw_response().map(|r| r.status().as_u16()) == Some(404) => {
                    false
                }
                Err(error) => return Err(s3_error("HeadBucket", error)),
            };
            if !exists {
                match client
                    .create_bucket()
                    .bucket(bucket)
                    .object_lock_enabled_for_bucket(true)
                    .send()
                    .await
                {
                    Ok(_) => {}
                    // Another node starting at the same moment created it first: its Object
                    // Lock is checked below like any existing bucket's.
                    Err(error) if error.code() == Some("BucketAlreadyOwnedByYou") => {}
                    Err(error) => return Err(s3_error("CreateBucket", error)),
                }
            }
            let enabled = match client
                .get_object_lock_configuration()
                .bucket(bucket)
                .send()
                .await
            {
                Ok(lock) => {
                    lock.object_lock_configuration()
                        .and_then(|c| c.object_lock_enabled())
                        == Some(&ObjectLockEnabled::Enabled)
                }
                Err(error) if error.code() == Some("ObjectLockConfigurationNotFoundError") => false,
                Err(error) => return Err(s3_error("GetObjectLockConfiguration", error)),
            };
            if !enabled {
                return Err(StoreError::Engine(format!(
                    "bucket {bucket} does not have Object Lock enabled; holdfast stores content \
                     only where the storage enforces retention and holds"
                )));
            }
            Ok(())
        })
    }

    /// Stores `bytes` as a new version of `key` with its retention (if any) and legal hold,
    /// durably, and answers the version.
    pub fn put(
        &self,
        key: &str,
        bytes: Vec<u8>,
        retention: Option<Retention>,
        legal_hold: bool,
    ) -> Result<ObjectVersion, StoreError> {
        self.runtime()
            .block_on(self.put_async(key, bytes, retention, legal_hold))
    }

    async fn put_async(
        &self,
        key: &str,
        bytes: Vec<u8>,
        retention: Option<Retention>,
        legal_hold: bool,
    ) -> Result<ObjectVersion, StoreError> {
        {
            let mut put = self
                .client
                .put_object()
                .bucket(&self.bucket)
                .key(key)
                .body(ByteStream::from(bytes));
            if let Some(retention) = retention {
                put = put
                    .object_lock_mode(match retention {
                        Retention::Compliance { .. } => ObjectLockMode::Compliance,
                        Retention::Governance { .. } => ObjectLockMode::Governance,
                    })
                    .object_lock_retain_until_date(retention.until());
            }
            if legal_hold {
                put = put.object_lock_legal_hold_status(ObjectLockLegalHoldStatus::On);
            }
            let output = put
                .send()
                .await
                .map_err(|error| s3_error("PutObject", error))?;
            let version_id = output.version_id().ok_or_else(|| {
                StoreError::Engine(format!(
                    "S3 PutObject: no version id: is versioning on for bucket {}?",
                    self.bucket
                ))
            })?;
            Ok(ObjectVersion {
                key: key.to_string(),
                version_id: version_id.to_string(),
            })
        }
    }

    /// Why the engine denied a change of `version`: `Locked` when its retention runs or its
    /// legal hold is on (read back from the engine), otherwise the denial itself (missing
    /// permissions or wrong credentials are not a lock).
    async fn denied(
        &self,
        operation: &str,
        version: &ObjectVersion,
        denial: StoreError,
    ) -> StoreError {
        // What cannot be read back counts as no lock: the denial itself is answered.
        let retained = self
            .retention_async(version)
            .await
            .ok()
            .flatten()
            .is_some_and(|(until, _)| until > Utc::now());
        let held = self.legal_hold_async(version).await.unwrap_or(false);
        if retained || held {
            StoreError::Locked(format!("{operation}: {LOCKED}"))
        } else {
            denial
        }
    }

    /// Stores several objects at once (up to `PARALLEL` requests in flight), as `put` does
    /// each, and answers their versions in order. The first failure fails the call; objects
    /// already stored by then stay (the caller's janitor list names them).
    pub fn put_many(
        &self,
        objects: Vec<(String, Vec<u8>, Option<Retention>, bool)>,
    ) -> Result<Vec<ObjectVersion>, StoreError> {
        use futures::{StreamExt, TryStreamExt};
        self.runtime().block_on(
            futures::stream::iter(objects)
                .map(|(key, bytes, retention, legal_hold)| async move {
                    self.put_async(&key, bytes, retention, legal_hold).await
                })
                .buffered(PARALLEL)
                .try_collect(),
        )
    }

    /// The bytes of several versions at once, in order (`None`: no such version).
    pub fn get_many(&self, versions: &[ObjectVersion]) -> Result<Vec<Option<Vec<u8>>>, StoreError> {
        use futures::{StreamExt, TryStreamExt};
        self.runtime().block_on(
            futures::stream::iter(versions)
                .map(|version| self.get_async(version))
                .buffered(PARALLEL)
                .try_collect(),
        )
    }

    /// Every version of `key`.
    pub fn versions_of(&self, key: &str) -> Result<Vec<ObjectVersion>, StoreError> {
        self.runtime().block_on(async {
            let output = self
                .client
                .list_object_versions()
                .bucket(&self.bucket)
                .prefix(key)
                .send()
                .await
                .map_err(|error| s3_error("ListObjectVersions", error))?;
            Ok(output
                .versions()
                .iter()
                .filter(|v| v.key() == Some(key))
                .filter_map(|v| {
                    Some(ObjectVersion {
                        key: key.to_string(),
                        version_id: v.version_id()?.to_string(),
                    })
                })
                .collect())
        })
    }

    /// The bytes of a version; `None` when it does not exist.
    pub fn get(&self, version: &ObjectVersion) -> Result<Option<Vec<u8>>, StoreError> {
        self.runtime().block_on(self.get_async(version))
    }

    async fn get_async(&self, version: &ObjectVersion) -> Result<Option<Vec<u8>>, StoreError> {
        {
            let output = match self
                .client
                .get_object()
                .bucket(&self.bucket)
                .key(&version.key)
                .version_id(&version.version_id)
                .send()
                .await
            {
                Ok(output) => output,
                Err(error) if matches!(error.code(), Some("NoSuchKey" | "NoSuchVersion")) => {
                    return Ok(None)
                }
                Err(error) => return Err(s3_error("GetObject", error)),
            };
            let bytes = output
                .body
                .collect()
                .await
                .map_err(|error| StoreError::Engine(format!("S3 GetObject body: {error}")))?;
            Ok(Some(bytes.into_bytes().to_vec()))
        }
    }

    /// Sets a version's retention. Lengthening is always allowed; shortening a GOVERNANCE
    /// retention needs `bypass_governance` (holdfast's own permission); shortening a
    /// COMPLIANCE retention is refused by the engine (`StoreError::Locked`).
    pub fn set_retention(
        &self,
        version: &ObjectVersion,
        retention: Retention,
        bypass_governance: bool,
    ) -> Result<(), StoreError> {
        self.runtime()
            .block_on(self.set_retention_async(version, retention, bypass_governance))
    }

    async fn set_retention_async(
        &self,
        version: &ObjectVersion,
        retention: Retention,
        bypass_governance: bool,
    ) -> Result<(), StoreError> {
        {
            match self
                .client
                .put_object_retention()
                .bucket(&self.bucket)
                .key(&version.key)
                .version_id(&version.version_id)
                .retention(
                    ObjectLockRetention::builder()
                        .mode(retention.mode())
                        .retain_until_date(retention.until())
                        .build(),
                )
                .bypass_governance_retention(bypass_governance)
                .send()
                .await
            {
                Ok(_) => Ok(()),
                Err(error) if error.code() == Some("AccessDenied") => {
                    let denial = s3_error("PutObjectRetention", error);
                    Err(self.denied("PutObjectRetention", version, denial).await)
                }
                Err(error) => Err(s3_error("PutObjectRetention", error)),
            }
        }
    }

    /// Sets or clears a version's legal hold.
    pub fn set_legal_hold(&self, version: &ObjectVersion, on: bool) -> Result<(), StoreError> {
        self.runtime()
            .block_on(self.set_legal_hold_async(version, on))
    }

    async fn set_legal_hold_async(
        &self,
        version: &ObjectVersion,
        on: bool,
    ) -> Result<(), StoreError> {
        {
            let status = if on {
                ObjectLockLegalHoldStatus::On
            } else {
                ObjectLockLegalHoldStatus::Off
            };
            self.client
                .put_object_legal_hold()
                .bucket(&self.bucket)
                .key(&version.key)
                .version_id(&version.version_id)
                .legal_hold(ObjectLockLegalHold::builder().status(status).build())
                .send()
                .await
                .map_err(|error| s3_error("PutObjectLegalHold", error))?;
            Ok(())
        }
    }

    /// Applies several lock changes at once (up to `PARALLEL` versions in flight), each
    /// version's legal hold, then its retention, and answers each change's result in order:
    /// one refused change does not stop the others.
    pub fn change_locks(&self, changes: &[LockChange]) -> Vec<Result<(), StoreError>> {
        use futures::StreamExt;
        self.runtime().block_on(
            futures::stream::iter(changes)
                .map(|change| async move {
                    // Each part on its own: a refused retention change never keeps a legal
                    // hold from being set (the hold first: it protects at once).
                    let held = match change.legal_hold {
                        Some(on) => self.set_legal_hold_async(&change.version, on).await,
                        None => Ok(()),
                    };
                    let retained = match change.retention {
                        Some((retention, bypass)) => {
                            self.set_retention_async(&change.version, retention, bypass)
                                .await
                        }
                        None => Ok(()),
                    };
                    held.and(retained)
                })
                .buffered(PARALLEL)
                .collect(),
        )
    }

    /// A version's legal hold as the engine has it.
    pub fn legal_hold(&self, version: &ObjectVersion) -> Result<bool, StoreError> {
        self.runtime().block_on(self.legal_hold_async(version))
    }

    async fn legal_hold_async(&self, version: &ObjectVersion) -> Result<bool, StoreError> {
        {
            let output = self
                .client
                .get_object_legal_hold()
                .bucket(&self.bucket)
                .key(&version.key)
                .version_id(&version.version_id)
                .send()
                .await;
            match output {
                Ok(output) => Ok(output.legal_hold().and_then(|h| h.status())
                    == Some(&ObjectLockLegalHoldStatus::On)),
                // No legal hold was ever set on the version.
                Err(error) if no_lock_configured(error.code()) => Ok(false),
                Err(error) => Err(s3_error("GetObjectLegalHold", error)),
            }
        }
    }

    /// A version's retention as the engine has it: (until, COMPLIANCE?).
    pub fn retention(
        &self,
        version: &ObjectVersion,
    ) -> Result<Option<(DateTime<Utc>, bool)>, StoreError> {
        self.runtime().block_on(self.retention_async(version))
    }

    async fn retention_async(
        &self,
        version: &ObjectVersion,
    ) -> Result<Option<(DateTime<Utc>, bool)>, StoreError> {
        {
            let output = match self
                .client
                .get_object_retention()
                .bucket(&self.bucket)
                .key(&version.key)
                .version_id(&version.version_id)
                .send()
                .await
            {
                Ok(output) => output,
                Err(error) if no_lock_configured(error.code()) => return Ok(None),
                Err(error) => return Err(s3_error("GetObjectRetention", error)),
            };
            let Some(retention) = output.retention() else {
                return Ok(None);
            };
            let Some(until) = retention
                .retain_until_date()
                .and_then(|d| d.to_millis().ok())
                .and_then(DateTime::<Utc>::from_timestamp_millis)
            else {
                return Ok(None);
            };
            Ok(Some((
                until,
                retention.mode() == Some(&ObjectLockRetentionMode::Compliance),
            )))
        }
    }

    /// Deletes a version for good; the engine refuses (`StoreError::Locked`) while its
    /// retention runs or its legal hold is on.
    pub fn destroy(&self, version: &ObjectVersion) -> Result<(), StoreError> {
        self.destroy_with(version, false)
    }

    /// Deletes a version for good; with `bypass_governance` (holdfast's own permission) a
    /// GOVERNANCE retention does not stand in the way, a COMPLIANCE retention or a legal
    /// hold still does.
    pub fn destroy_with(
        &self,
        version: &ObjectVersion,
        bypass_governance: bool,
    ) -> Result<(), StoreError> {
        self.runtime().block_on(async {
            match self
                .client
                .delete_object()
                .bucket(&self.bucket)
                .key(&version.key)
                .version_id(&version.version_id)
                .bypass_governance_retention(bypass_governance)
                .send()
                .await
            {
                Ok(_) => Ok(()),
                Err(error) if error.code() == Some("AccessDenied") => {
                    let denial = s3_error("DeleteObject", error);
                    Err(self.denied("DeleteObject", version, denial).await)
                }
                Err(error) => Err(s3_error("DeleteObject", error)),
            }
        })
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use chrono::TimeDelta;

    use super::*;

    /// The tests' S3 gateway, as `scripts/seaweedfs.sh start` prints it
    /// (`endpoint=… access_key=… secret_key=…`); `scripts/test.sh` starts one and sets it.
    const S3_VARIABLE: &str = "HOLDFAST_TEST_S3";

    /// The tests' bucket: one per test process. Each bucket costs the gateway volumes of
    /// its own, so a bucket per test would exhaust a small one; object keys (ULIDs) never
    /// collide between tests.
    fn bucket() -> &'static str {
        static BUCKET: std::sync::OnceLock<String> = std::sync::OnceLock::new();
        BUCKET.get_or_init(|| {
            format!(
                "holdfast-test-{}",
                ulid::Ulid::new().to_string().to_lowercase()
            )
        })
    }

    /// The tests' S3 gateway and bucket; `None` (saying so) when there is none, which CI
    /// does not allow.
    pub(crate) fn config() -> Option<S3Config> {
        let Some(line) = std::env::var_os(S3_VARIABLE) else {
            assert!(
                std::env::var_os("CI").is_none(),
                "{S3_VARIABLE} is not set: in CI the Object Lock tests must run \
                 (scripts/test.sh starts SeaweedFS and sets it)"
            );
            eprintln!("skipped: set {S3_VARIABLE} (scripts/seaweedfs.sh start DIR prints it)");
            return None;
        };
        let line = line.into_string().unwrap();
        let field = |name: &str| {
            line.split_whitespace()
                .find_map(|pair| pair.strip_prefix(&format!("{name}=")))
                .unwrap()
                .to_string()
        };
        Some(S3Config {
            endpoint: field("endpoint"),
            region: "us-east-1".into(),
            bucket: bucket().to_string(),
            access_key: field("access_key"),
            secret_key: field("secret_key"),
        })
    }

    fn in_days(days: i64) -> DateTime<Utc> {
        Utc::now() + TimeDelta::days(days)
    }

    #[test]
    fn a_retained_object_cannot_be_deleted_or_its_compliance_retention_shortened() {
        let Some(config) = config() else { return };
        let store = ObjectLockStore::open(&config).unwrap();
        let version = store
            .put(
                "v1/a",
                b"record".to_vec(),
                Some(Retention::Compliance { until: in_days(30) }),
                false,
            )
            .unwrap();
        assert!(matches!(
            store.destroy(&version),
            Err(StoreError::Locked(_))
        ));
        assert!(matches!(
            store.set_retention(&version, Retention::Compliance { until: in_days(1) }, true),
            Err(StoreError::Locked(_))
        ));
        // Lengthening is allowed, and the object is still there, unchanged.
        store
            .set_retention(
                &version,
                Retention::Compliance { until: in_days(60) },
                false,
            )
            .unwrap();
        assert!(matches!(
            store.destroy(&version),
            Err(StoreError::Locked(_))
        ));
        assert_eq!(
            store.get(&version).unwrap().as_deref(),
            Some(&b"record"[..])
        );
    }

    #[test]
    fn a_legally_held_object_cannot_be_deleted_until_its_hold_is_cleared() {
        let Some(config) = config() else { return };
        let store = ObjectLockStore::open(&config).unwrap();
        let version = store.put("v1/b", b"held".to_vec(), None, true).unwrap();
        assert!(matches!(
            store.destroy(&version),
            Err(StoreError::Locked(_))
        ));
        assert_eq!(store.get(&version).unwrap().as_deref(), Some(&b"held"[..]));
        store.set_legal_hold(&version, false).unwrap();
        store.destroy(&version).unwrap();
        assert_eq!(store.get(&version).unwrap(), None);
        // A hold set after the write protects as well.
        let later = store.put("v1/c", b"later".to_vec(), None, false).unwrap();
        store.set_legal_hold(&later, true).unwrap();
        assert!(matches!(store.destroy(&later), Err(StoreError::Locked(_))));
    }

    #[test]
    fn a_governance_retention_is_shortened_only_with_the_bypass() {
        let Some(config) = config() else { return };
        let store = ObjectLockStore::open(&config).unwrap();
        let version = store
            .put(
                "v1/d",
                b"governed".to_vec(),
                Some(Retention::Governance { until: in_days(30) }),
                false,
            )
            .unwrap();
        assert!(matches!(
            store.destroy(&version),
            Err(StoreError::Locked(_))
        ));
        let shorter = Retention::Governance { until: in_days(1) };
        assert!(matches!(
            store.set_retention(&version, shorter, false),
            Err(StoreError::Locked(_))
        ));
        store.set_retention(&version, shorter, true).unwrap();
        // Still retained until the shorter date.
        assert!(matches!(
            store.destroy(&version),
            Err(StoreError::Locked(_))
        ));
        assert_eq!(
            store.get(&version).unwrap().as_deref(),
            Some(&b"governed"[..])
        );
    }

    /// Nodes of a cluster starting together on a bucket that does not exist yet: one creates
    /// it, and none fails because another was first.
    #[test]
    fn nodes_opening_a_missing_bucket_at_once_all_start() {
        let Some(config) = config() else { return };
        let fresh = S3Config {
            bucket: format!("{}-together", config.bucket),
            ..config
        };
        let start = std::sync::Barrier::new(4);
        let opened: Vec<bool> = std::thread::scope(|scope| {
            let handles: Vec<_> = (0..4)
                .map(|_| {
                    scope.spawn(|| {
                        start.wait();
                        ObjectLockStore::open(&fresh).is_ok()
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        assert_eq!(opened, vec![true; 4]);
    }

    #[test]
    fn a_bucket_without_object_lock_is_refused() {
        let Some(config) = config() else { return };
        let locked = ObjectLockStore::open(&config).unwrap();
        let plain = format!("{}-plain", config.bucket);
        locked
            .runtime()
            .block_on(locked.client.create_bucket().bucket(&plain).send())
            .unwrap();
        let error = ObjectLockStore::open(&S3Config {
            bucket: plain,
            ..config
        })
        .err()
        .unwrap();
        assert!(
            error
                .to_string()
                .contains("does not have Object Lock enabled"),
            "{error}"
        );
    }
}
