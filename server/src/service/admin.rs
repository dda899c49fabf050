//! `AdminService` over gRPC: decode, call `app::admin`, encode.

use std::collections::BTreeSet;
use std::sync::Arc;

use holdfast_proto::v1 as pb;
use holdfast_proto::v1::admin_service_server::AdminService;
use tonic::{Request, Response, Status};

use super::{authenticate, decoded};
use crate::app::App;
use crate::auth::{Principal, Role, TokenSource};
use crate::convert;

pub struct AdminApi {
    app: Arc<App>,
}

impl AdminApi {
    pub fn new(app: Arc<App>) -> Self {
        AdminApi { app }
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
        let principal = authenticate(&self.app, &request, "CreateToken")?;
        let request = request.into_inner();
        let roles = request
            .roles
            .iter()
            .map(|role| convert::role_from_proto(*role))
            .collect::<Result<BTreeSet<Role>, _>>();
        let roles = decoded(&self.app, &principal, "CreateToken", &[Role::Admin], roles).await?;
        let (token, created) = self
            .app
            .create_token(&principal, request.name, roles)
            .await?;
        Ok(Response::new(pb::CreateTokenResponse {
            info: Some(token_info(&created)),
            token,
        }))
    }

    async fn list_tokens(
        &self,
        request: Request<pb::ListTokensRequest>,
    ) -> Result<Response<pb::ListTokensResponse>, Status> {
        let principal = authenticate(&self.app, &request, "ListTokens")?;
        let tokens = self.app.list_tokens(&principal).await?;
        Ok(Response::new(pb::ListTokensResponse {
            tokens: tokens.iter().map(token_info).collect(),
        }))
    }

    async fn who_am_i(
        &self,
        request: Request<pb::WhoAmIRequest>,
    ) -> Result<Response<pb::TokenInfo>, Status> {
        let principal = authenticate(&self.app, &request, "WhoAmI")?;
        let principal = self.app.who_am_i(&principal).await?;
        Ok(Response::new(token_info(&principal)))
    }

    async fn revoke_token(
        &self,
        request: Request<pb::RevokeTokenRequest>,
    ) -> Result<Response<pb::RevokeTokenResponse>, Status> {
        let principal = authenticate(&self.app, &request, "RevokeToken")?;
        self.app
            .revoke_token(&principal, request.into_inner().name)
            .await?;
        Ok(Response::new(pb::RevokeTokenResponse {}))
    }

    async fn backup(
        &self,
        request: Request<pb::BackupRequest>,
    ) -> Result<Response<pb::BackupResponse>, Status> {
        let principal = authenticate(&self.app, &request, "Backup")?;
        let summary = self
            .app
            .backup(&principal, request.into_inner().out_dir)
            .await?;
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
