//! Bearer tokens and online backups (`admin` principals). Every change and every backup is
//! audited, refused ones too.

use std::collections::BTreeSet;
use std::sync::Arc;

use serde_json::json;

use super::{blocking, now, App};
use crate::auth::{Principal, Role};
use crate::backup::{self, BackupSummary};
use crate::error::Error;

const ADMIN: &[Role] = &[Role::Admin];

/// Every role: anyone with a valid token may ask who it is.
pub const EVERYONE: &[Role] = &Role::ALL;

impl App {
    /// Mints a token; the answer is the only time its text is seen.
    pub async fn create_token(
        &self,
        principal: &Principal,
        name: String,
        roles: BTreeSet<Role>,
    ) -> Result<(String, Principal), Error> {
        self.authorize(principal, "CreateToken", ADMIN).await?;
        let role_names: Vec<&str> = roles.iter().map(|role| role.as_str()).collect();
        let parameters = json!({ "roles": role_names });
        let tokens = Arc::clone(&self.tokens);
        let (creating, created_by) = (name.clone(), principal.name.clone());
        let created =
            blocking(move || tokens.create_blocking(&creating, roles, &created_by, now())).await;
        let result = match &created {
            Ok(_) => "ok".to_string(),
            Err(error) => format!("error: {error}"),
        };
        self.audit_done(principal, "CreateToken", name, parameters, result)
            .await?;
        created
    }

    pub async fn list_tokens(&self, principal: &Principal) -> Result<Vec<Principal>, Error> {
        self.authorize(principal, "ListTokens", ADMIN).await?;
        Ok(self.tokens.list())
    }

    /// The caller itself.
    pub async fn who_am_i(&self, principal: &Principal) -> Result<Principal, Error> {
        self.authorize(principal, "WhoAmI", EVERYONE).await?;
        Ok(principal.clone())
    }

    pub async fn revoke_token(&self, principal: &Principal, name: String) -> Result<(), Error> {
        self.authorize(principal, "RevokeToken", ADMIN).await?;
        let tokens = Arc::clone(&self.tokens);
        let revoking = name.clone();
        let revoked = blocking(move || tokens.revoke_blocking(&revoking)).await;
        let result = match &revoked {
            Ok(_) => "ok".to_string(),
            Err(error) => format!("error: {error}"),
        };
        self.audit_done(principal, "RevokeToken", name, json!({}), result)
            .await?;
        revoked.map(|_| ())
    }

    /// An online backup into `out_dir` on the server's filesystem (one at a time).
    pub async fn backup(
        &self,
        principal: &Principal,
        out_dir: String,
    ) -> Result<BackupSummary, Error> {
        self.authorize(principal, "Backup", ADMIN).await?;
        let store = Arc::clone(&self.store);
        let data_dir = self.data_dir.clone();
        let path = std::path::PathBuf::from(&out_dir);
        // One at a time: the permit moves into the closure, so it is held exactly as long as
        // the backup runs.
        let running = Arc::clone(&self.backup_running)
            .try_lock_owned()
            .map_err(|_| {
                Error::ResourceExhausted("a backup is already running; try again later".into())
            });
        let written = match running {
            Ok(running) => {
                blocking(move || {
                    let _running = running;
                    backup::backup(store.as_ref(), &data_dir, &path)
                })
                .await
            }
            Err(error) => Err(error),
        };
        let parameters = match &written {
            Ok(summary) => json!({
                "files": summary.files,
                "bytes": summary.bytes,
                "audit_sequence": summary.audit_sequence,
                "audit_head_hash": summary.audit_head_hash,
                "manifest_sha256": summary.manifest_sha256,
            }),
            Err(_) => json!({}),
        };
        let summary = self
            .audited(principal, "Backup", out_dir, parameters, written)
            .await?;
        tracing::info!(
            out_dir = %summary.out_dir.display(),
            files = summary.files,
            bytes = summary.bytes,
            seconds = summary.duration.as_secs_f64(),
            "backup written"
        );
        Ok(summary)
    }
}
