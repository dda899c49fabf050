//! `AdminService`: bearer tokens and backups. Every change and every backup is audited.

use std::collections::BTreeSet;
use std::sync::Arc;

use holdfast_proto::v1 as pb;
use holdfast_proto::v1::admin_service_server::AdminService;
use serde_json::json;
use tonic::{Request, Response, Status};

use super::{blocking, now, Shared};
use crate::auth::{Principal, Role, TokenSource};
use crate::backup;
use crate::convert;
use crate::error::Error;

pub struct AdminApi {
    shared: Arc<Shared>,
}

impl AdminApi {
    pub fn new(shared: Arc<Shared>) -> Self {
        AdminApi { shared }
    }
}

fn token_info(principal: &Principal) -> pb::TokenInfo {
    pb::TokenInfo {
        name: principal.name.clone(),
        roles: principal
            .roles
            .iter()
            .map(|role| convert::role_to_proto(*role) as i32)
            .collect(),
        created_at: principal.created_at.map(convert::time_to_timestamp),
        created_by: principal.created_by.clone(),
        hash_prefix: hex::encode(&principal.token_sha256[..6]),
        source: match principal.source {
            TokenSource::Config => "config".into(),
            TokenSource::Api => "api".into(),
        },
    }
}

#[tonic::async_trait]
impl AdminService for AdminApi {
    async fn create_token(
        &self,
        request: Request<pb::CreateTokenRequest>,
    ) -> Result<Response<pb::CreateTokenResponse>, Status> {
        let principal = self
            .shared
            .authorize(&request, "CreateToken", &[Role::Admin])
            .await?;
        let request = request.into_inner();
        let roles = request
            .roles
            .iter()
            .map(|role| convert::role_from_proto(*role))
            .collect::<Result<BTreeSet<Role>, _>>()?;
        let role_names: Vec<&str> = roles.iter().map(|role| role.as_str()).collect();
        let parameters = json!({ "roles": role_names });
        let tokens = Arc::clone(&self.shared.tokens);
        let (name, created_by) = (request.name.clone(), principal.name.clone());
        let created =
            blocking(move || tokens.create_blocking(&name, roles, &created_by, now())).await;
        let result = match &created {
            Ok(_) => "ok".to_string(),
            Err(error) => format!("error: {error}"),
        };
        self.shared
            .audit_done(&principal, "CreateToken", request.name, parameters, result)
            .await?;
        let (token, created) = created?;
        Ok(Response::new(pb::CreateTokenResponse {
            info: Some(token_info(&created)),
            token,
        }))
    }

    async fn list_tokens(
        &self,
        request: Request<pb::ListTokensRequest>,
    ) -> Result<Response<pb::ListTokensResponse>, Status> {
        self.shared
            .authorize(&request, "ListTokens", &[Role::Admin])
            .await?;
        let tokens = self.shared.tokens.list().iter().map(token_info).collect();
        Ok(Response::new(pb::ListTokensResponse { tokens }))
    }

    async fn who_am_i(
        &self,
        request: Request<pb::WhoAmIRequest>,
    ) -> Result<Response<pb::TokenInfo>, Status> {
        let everyone = [
            Role::Ingest,
            Role::Ediscovery,
            Role::EdiscoveryAdmin,
            Role::RetentionAdmin,
            Role::Purge,
            Role::Auditor,
            Role::Admin,
        ];
        let principal = self.shared.authorize(&request, "WhoAmI", &everyone).await?;
        Ok(Response::new(token_info(&principal)))
    }

    async fn revoke_token(
        &self,
        request: Request<pb::RevokeTokenRequest>,
    ) -> Result<Response<pb::RevokeTokenResponse>, Status> {
        let principal = self
            .shared
            .authorize(&request, "RevokeToken", &[Role::Admin])
            .await?;
        let name = request.into_inner().name;
        let tokens = Arc::clone(&self.shared.tokens);
        let revoking = name.clone();
        let revoked = blocking(move || tokens.revoke_blocking(&revoking)).await;
        let result = match &revoked {
            Ok(_) => "ok".to_string(),
            Err(error) => format!("error: {error}"),
        };
        self.shared
            .audit_done(&principal, "RevokeToken", name, json!({}), result)
            .await?;
        revoked?;
        Ok(Response::new(pb::RevokeTokenResponse {}))
    }

    async fn backup(
        &self,
        request: Request<pb::BackupRequest>,
    ) -> Result<Response<pb::BackupResponse>, Status> {
        let principal = self
            .shared
            .authorize(&request, "Backup", &[Role::Admin])
            .await?;
        let out_dir = request.into_inner().out_dir;
        let shared = Arc::clone(&self.shared);
        let path = std::path::PathBuf::from(&out_dir);
        let written = blocking(move || {
            let _running = shared.backup_running.try_lock().map_err(|_| {
                Error::ResourceExhausted("a backup is already running; try again later".into())
            })?;
            backup::backup(shared.store.as_ref(), &shared.data_dir, &path)
        })
        .await;
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
            .shared
            .audited(&principal, "Backup", out_dir, parameters, written)
            .await?;
        tracing::info!(
            out_dir = %summary.out_dir.display(),
            files = summary.files,
            bytes = summary.bytes,
            seconds = summary.duration.as_secs_f64(),
            "backup written"
        );
        Ok(Response::new(pb::BackupResponse {
            out_dir: summary.out_dir.display().to_string(),
            files: summary.files,
            bytes: summary.bytes,
            audit_sequence: summary.audit_sequence,
            audit_head_hash: summary.audit_head_hash,
            manifest_sha256: summary.manifest_sha256,
            index_included: false,
            duration_ms: summary.duration.as_millis() as u64,
        }))
    }
}
