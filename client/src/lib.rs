//! holdfast-client: a typed Rust client for holdfast, an interaction builder, a batching
//! ingest helper whose retries never duplicate, and (in `cli`) the `holdfast` command.

pub mod builder;
pub mod cli;
pub mod ingester;

pub use holdfast_export::{bag, json};

use std::path::PathBuf;
use std::str::FromStr;

use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::interceptor::InterceptedService;
use tonic::service::Interceptor;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};
use tonic::{Request, Status};

pub use builder::InteractionBuilder;
pub use holdfast_proto::v1 as pb;
pub use ingester::{BatchingIngester, IngestSummary, IngesterOptions};

use pb::admin_service_client::AdminServiceClient;
use pb::audit_service_client::AuditServiceClient;
use pb::discovery_service_client::DiscoveryServiceClient;
use pb::interaction_service_client::InteractionServiceClient;
use pb::retention_service_client::RetentionServiceClient;

#[derive(Debug, Clone, thiserror::Error)]
pub enum ClientError {
    #[error("cannot connect to {addr}: {reason}")]
    Connect { addr: String, reason: String },
    #[error("invalid client configuration: {0}")]
    Config(String),
    #[error("{}: {}", code_name(.0.code()), .0.message())]
    Status(Status),
    #[error("the ingest helper stopped before answering")]
    IngesterStopped,
}

impl From<Status> for ClientError {
    fn from(status: Status) -> Self {
        ClientError::Status(status)
    }
}

fn code_name(code: tonic::Code) -> &'static str {
    match code {
        tonic::Code::Ok => "OK",
        tonic::Code::Cancelled => "CANCELLED",
        tonic::Code::Unknown => "UNKNOWN",
        tonic::Code::InvalidArgument => "INVALID_ARGUMENT",
        tonic::Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
        tonic::Code::NotFound => "NOT_FOUND",
        tonic::Code::AlreadyExists => "ALREADY_EXISTS",
        tonic::Code::PermissionDenied => "PERMISSION_DENIED",
        tonic::Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        tonic::Code::FailedPrecondition => "FAILED_PRECONDITION",
        tonic::Code::Aborted => "ABORTED",
        tonic::Code::OutOfRange => "OUT_OF_RANGE",
        tonic::Code::Unimplemented => "UNIMPLEMENTED",
        tonic::Code::Internal => "INTERNAL",
        tonic::Code::Unavailable => "UNAVAILABLE",
        tonic::Code::DataLoss => "DATA_LOSS",
        tonic::Code::Unauthenticated => "UNAUTHENTICATED",
    }
}

impl ClientError {
    /// The server's message, when it answered (empty otherwise).
    pub fn message(&self) -> &str {
        match self {
            ClientError::Status(status) => status.message(),
            _ => "",
        }
    }

    /// The gRPC code, when the server answered.
    pub fn code(&self) -> Option<tonic::Code> {
        match self {
            ClientError::Status(status) => Some(status.code()),
            _ => None,
        }
    }

    /// Whether sending the same request again may succeed.
    pub fn is_retryable(&self) -> bool {
        match self {
            ClientError::Status(status) => matches!(
                status.code(),
                tonic::Code::Unavailable
                    | tonic::Code::DeadlineExceeded
                    | tonic::Code::ResourceExhausted
                    | tonic::Code::Aborted
                    | tonic::Code::Unknown
            ),
            ClientError::Connect { .. } => true,
            ClientError::Config(_) | ClientError::IngesterStopped => false,
        }
    }
}

/// TLS settings of a client.
#[derive(Debug, Clone, Default)]
pub struct TlsOptions {
    /// PEM CA that signed the server's certificate.
    pub ca_file: Option<PathBuf>,
    /// Name to check the server's certificate against (default: the address's host).
    pub domain: Option<String>,
    /// Client certificate and key (PEM), for servers that verify clients.
    pub client_cert_file: Option<PathBuf>,
    pub client_key_file: Option<PathBuf>,
}

#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// e.g. `http://127.0.0.1:50051` or `https://holdfast.example:50051`.
    pub addr: String,
    pub token: String,
    pub tls: Option<TlsOptions>,
}

/// Adds `authorization: Bearer <token>` to every call.
#[derive(Clone)]
pub struct BearerAuth(MetadataValue<Ascii>);

impl Interceptor for BearerAuth {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        request
            .metadata_mut()
            .insert("authorization", self.0.clone());
        Ok(request)
    }
}

type Authed = InterceptedService<Channel, BearerAuth>;

/// A connection to one holdfast server. Cheap to clone; clones share the connection.
#[derive(Clone)]
pub struct HoldfastClient {
    interactions: InteractionServiceClient<Authed>,
    admin: AdminServiceClient<Authed>,
    audit: AuditServiceClient<Authed>,
    /// Cases, search, export, case holds and purge requests.
    discovery: DiscoveryServiceClient<Authed>,
    /// Retention policies, holds and explanations.
    retention: RetentionServiceClient<Authed>,
}

fn read_file(path: &PathBuf) -> Result<Vec<u8>, ClientError> {
    std::fs::read(path)
        .map_err(|error| ClientError::Config(format!("cannot read {}: {error}", path.display())))
}

/// A typed method for one unary RPC: the request message in, the response message out.
macro_rules! unary {
    ($(#[$doc:meta])* $name:ident, $service:ident, $request:ty => $response:ty) => {
        $(#[$doc])*
        pub async fn $name(&self, request: $request) -> Result<$response, ClientError> {
            Ok(self.$service.clone().$name(request).await?.into_inner())
        }
    };
}

impl HoldfastClient {
    unary!(
        /// Places a hold on a case's custodians (all or some), optionally narrowed by a query.
        place_case_hold, discovery, pb::PlaceCaseHoldRequest => pb::HoldInfo
    );
    unary!(list_case_holds, discovery, pb::ListCaseHoldsRequest => pb::ListHoldsResponse);
    unary!(release_case_hold, discovery, pb::ReleaseCaseHoldRequest => pb::HoldInfo);
    unary!(
        /// Moves matching items of a case's custodians to the holds area (or selects them,
        /// with `dry_run`).
        purge, discovery, pb::PurgeRequest => pb::PurgeResponse
    );
    unary!(create_policy, retention, pb::CreatePolicyRequest => pb::RetentionPolicy);
    unary!(get_policy, retention, pb::PolicyRef => pb::RetentionPolicy);
    unary!(list_policies, retention, pb::ListPoliciesRequest => pb::ListPoliciesResponse);
    unary!(update_policy, retention, pb::UpdatePolicyRequest => pb::RetentionPolicy);
    unary!(delete_policy, retention, pb::PolicyRef => pb::DeletePolicyResponse);
    unary!(
        /// Preservation lock: from now on the policy can only become stricter.
        lock_policy, retention, pb::PolicyRef => pb::RetentionPolicy
    );
    unary!(place_litigation_hold, retention, pb::PlaceLitigationHoldRequest => pb::HoldInfo);
    unary!(release_hold, retention, pb::HoldRef => pb::HoldInfo);
    unary!(clear_delay_hold, retention, pb::HoldRef => pb::HoldInfo);
    unary!(list_holds, retention, pb::ListHoldsRequest => pb::ListHoldsResponse);
    unary!(
        /// Why an item is still here, and until when.
        explain_retention, retention, pb::ExplainRetentionRequest => pb::ExplainRetentionResponse
    );
    unary!(
        /// What a policy would do if saved now, per mailbox.
        preview_policy, retention, pb::PreviewPolicyRequest => pb::PreviewPolicyResponse
    );
    unary!(get_mailbox_status, retention, pb::GetMailboxStatusRequest => pb::MailboxStatus);
    unary!(run_sweep, retention, pb::RunSweepRequest => pb::SweepStats);
    unary!(get_sweeper_status, retention, pb::GetSweeperStatusRequest => pb::SweeperStatus);
    unary!(
        list_dispositions, retention, pb::ListDispositionsRequest => pb::ListDispositionsResponse
    );

    pub async fn connect(config: ClientConfig) -> Result<HoldfastClient, ClientError> {
        let auth = MetadataValue::from_str(&format!("Bearer {}", config.token))
            .map_err(|_| ClientError::Config("the token contains invalid characters".into()))?;
        let mut endpoint = Endpoint::from_shared(config.addr.clone())
            .map_err(|error| ClientError::Config(format!("invalid address: {error}")))?
            .tcp_nodelay(true)
            .connect_timeout(std::time::Duration::from_secs(10));
        if let Some(tls) = &config.tls {
            let mut tls_config = ClientTlsConfig::new();
            if let Some(ca) = &tls.ca_file {
                tls_config = tls_config.ca_certificate(Certificate::from_pem(read_file(ca)?));
            }
            if let Some(domain) = &tls.domain {
                tls_config = tls_config.domain_name(domain.clone());
            }
            match (&tls.client_cert_file, &tls.client_key_file) {
                (Some(cert), Some(key)) => {
                    tls_config =
                        tls_config.identity(Identity::from_pem(read_file(cert)?, read_file(key)?));
                }
                (None, None) => {}
                _ => {
                    return Err(ClientError::Config(
                        "a client certificate needs both a cert and a key file".into(),
                    ))
                }
            }
            endpoint = endpoint
                .tls_config(tls_config)
                .map_err(|error| ClientError::Config(format!("invalid TLS settings: {error}")))?;
        }
        let channel = endpoint
            .connect()
            .await
            .map_err(|error| ClientError::Connect {
                addr: config.addr.clone(),
                reason: error_chain(&error),
            })?;
        Ok(HoldfastClient::from_channel(channel, BearerAuth(auth)))
    }

    fn from_channel(channel: Channel, auth: BearerAuth) -> HoldfastClient {
        let max = 64 << 20;
        HoldfastClient {
            interactions: InteractionServiceClient::with_interceptor(channel.clone(), auth.clone())
                .max_decoding_message_size(max)
                .max_encoding_message_size(max),
            admin: AdminServiceClient::with_interceptor(channel.clone(), auth.clone()),
            audit: AuditServiceClient::with_interceptor(channel.clone(), auth.clone()),
            discovery: DiscoveryServiceClient::with_interceptor(channel.clone(), auth.clone())
                .max_decoding_message_size(max),
            retention: RetentionServiceClient::with_interceptor(channel, auth),
        }
    }

    pub async fn ingest(
        &self,
        interactions: Vec<pb::InteractionInput>,
    ) -> Result<pb::IngestResponse, ClientError> {
        let request = pb::IngestRequest {
            interactions,
            sequence: 0,
        };
        Ok(self
            .interactions
            .clone()
            .ingest(request)
            .await?
            .into_inner())
    }

    /// Opens a bidirectional ingest stream. Send batches on the returned sender; read one
    /// response per batch, in order, from the stream.
    pub async fn ingest_stream(
        &self,
        batches: impl tokio_stream::Stream<Item = pb::IngestRequest> + Send + 'static,
    ) -> Result<tonic::Streaming<pb::IngestResponse>, ClientError> {
        Ok(self
            .interactions
            .clone()
            .ingest_stream(batches)
            .await?
            .into_inner())
    }

    pub async fn get(&self, id: &str) -> Result<pb::Interaction, ClientError> {
        let request = pb::GetInteractionRequest { id: id.to_string() };
        Ok(self
            .interactions
            .clone()
            .get_interaction(request)
            .await?
            .into_inner())
    }

    pub async fn list(
        &self,
        request: pb::ListInteractionsRequest,
    ) -> Result<pb::ListInteractionsResponse, ClientError> {
        Ok(self
            .interactions
            .clone()
            .list_interactions(request)
            .await?
            .into_inner())
    }

    pub async fn delete_history(
        &self,
        request: pb::DeleteHistoryRequest,
    ) -> Result<pb::DeleteHistoryResponse, ClientError> {
        Ok(self
            .interactions
            .clone()
            .delete_history(request)
            .await?
            .into_inner())
    }

    pub async fn create_token(
        &self,
        name: &str,
        roles: Vec<pb::Role>,
    ) -> Result<pb::CreateTokenResponse, ClientError> {
        let request = pb::CreateTokenRequest {
            name: name.to_string(),
            roles: roles.into_iter().map(|role| role as i32).collect(),
        };
        Ok(self.admin.clone().create_token(request).await?.into_inner())
    }

    pub async fn list_tokens(&self) -> Result<Vec<pb::TokenInfo>, ClientError> {
        Ok(self
            .admin
            .clone()
            .list_tokens(pb::ListTokensRequest {})
            .await?
            .into_inner()
            .tokens)
    }

    /// Asks the server to write an online backup into `out_dir` on the server's filesystem.
    pub async fn backup(&self, out_dir: &str) -> Result<pb::BackupResponse, ClientError> {
        let request = pb::BackupRequest {
            out_dir: out_dir.to_string(),
        };
        Ok(self.admin.clone().backup(request).await?.into_inner())
    }

    pub async fn who_am_i(&self) -> Result<pb::TokenInfo, ClientError> {
        Ok(self
            .admin
            .clone()
            .who_am_i(pb::WhoAmIRequest {})
            .await?
            .into_inner())
    }

    pub async fn revoke_token(&self, name: &str) -> Result<(), ClientError> {
        let request = pb::RevokeTokenRequest {
            name: name.to_string(),
        };
        self.admin.clone().revoke_token(request).await?;
        Ok(())
    }

    pub async fn query_audit_log(
        &self,
        request: pb::QueryAuditLogRequest,
    ) -> Result<pb::QueryAuditLogResponse, ClientError> {
        Ok(self
            .audit
            .clone()
            .query_audit_log(request)
            .await?
            .into_inner())
    }

    pub async fn create_case(
        &self,
        request: pb::CreateCaseRequest,
    ) -> Result<pb::Case, ClientError> {
        Ok(self
            .discovery
            .clone()
            .create_case(request)
            .await?
            .into_inner())
    }

    pub async fn get_case(&self, case_id: &str) -> Result<pb::Case, ClientError> {
        let request = pb::GetCaseRequest {
            case_id: case_id.to_string(),
        };
        Ok(self.discovery.clone().get_case(request).await?.into_inner())
    }

    pub async fn list_cases(&self) -> Result<Vec<pb::Case>, ClientError> {
        Ok(self
            .discovery
            .clone()
            .list_cases(pb::ListCasesRequest {})
            .await?
            .into_inner()
            .cases)
    }

    pub async fn update_case(
        &self,
        request: pb::UpdateCaseRequest,
    ) -> Result<pb::Case, ClientError> {
        Ok(self
            .discovery
            .clone()
            .update_case(request)
            .await?
            .into_inner())
    }

    pub async fn close_case(&self, case_id: &str) -> Result<pb::Case, ClientError> {
        let request = pb::CloseCaseRequest {
            case_id: case_id.to_string(),
        };
        Ok(self
            .discovery
            .clone()
            .close_case(request)
            .await?
            .into_inner())
    }

    pub async fn search(
        &self,
        request: pb::SearchRequest,
    ) -> Result<pb::SearchResponse, ClientError> {
        Ok(self.discovery.clone().search(request).await?.into_inner())
    }

    /// Streams every matching item, then a trailer.
    pub async fn export(
        &self,
        request: pb::ExportRequest,
    ) -> Result<tonic::Streaming<pb::ExportMessage>, ClientError> {
        Ok(self.discovery.clone().export(request).await?.into_inner())
    }

    pub async fn verify_audit_log(&self) -> Result<pb::VerifyAuditLogResponse, ClientError> {
        Ok(self
            .audit
            .clone()
            .verify_audit_log(pb::VerifyAuditLogRequest {})
            .await?
            .into_inner())
    }
}

fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
