//! The door check in front of every holdfast gRPC service (issue 8, defect 5).
//!
//! A call without a valid bearer token is refused here, from its headers alone, before its
//! body is read or decoded: a flood of anonymous 16 MiB requests costs the server a header
//! lookup each, not a decode. Refusals are counted per source and audited once per window
//! (`refusals.rs`); past its rate a source gets RESOURCE_EXHAUSTED. Calls with a valid token
//! go on to their handler, which checks the token's roles (and audits a refusal there).
//! Health checks and reflection are not gated. An admitted call's handler runs on a task of
//! its own, so that it finishes (with its audit entry) even when the caller goes away.

use std::future::Future;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tonic::body::Body;
use tonic::transport::server::{TcpConnectInfo, TlsConnectInfo};
use tonic::Status;

use crate::app::ingest::INGESTERS;
use crate::auth::{Principal, TokenRegistry};
use crate::refusals::Refusals;

/// Concurrent HTTP/2 streams (calls) one connection may have open, on either front door
/// (tonic otherwise lifts hyper's default and allows any number).
pub const MAX_STREAMS_PER_CONNECTION: u32 = 256;

/// The gRPC path prefix of holdfast's own services.
const GATED_PREFIX: &str = "/holdfast.v1.";

/// The gRPC path prefix of the calls between the nodes of a cluster.
const NODE_PREFIX: &str = "/holdfast.cluster.v1.";

/// OTLP trace export on the gRPC port: gated like holdfast's own ingest.
const OTLP_EXPORT: &str = "/opentelemetry.proto.collector.trace.v1.TraceService/Export";

/// The gated method of a request path ("InteractionService/Ingest", "OtlpExport"), or
/// `None` for ungated services (health, reflection).
fn gated_method(path: &str) -> Option<&str> {
    if path == OTLP_EXPORT {
        return Some("OtlpExport");
    }
    path.strip_prefix(GATED_PREFIX)
}

/// The method names of holdfast's services, from the compiled descriptor: a refusal is
/// counted under one of these or under "unknown", never under a name the caller made up.
fn known_methods() -> &'static std::collections::HashSet<String> {
    static METHODS: std::sync::OnceLock<std::collections::HashSet<String>> =
        std::sync::OnceLock::new();
    METHODS.get_or_init(|| {
        use prost::Message as _;
        let set = prost_types::FileDescriptorSet::decode(holdfast_proto::v1::FILE_DESCRIPTOR_SET)
            .unwrap_or_default();
        set.file
            .iter()
            .flat_map(|file| &file.service)
            .flat_map(|service| &service.method)
            .filter_map(|method| method.name.clone())
            .collect()
    })
}

/// What the gate needs: the token registry and the refusal counters (and the application,
/// to audit a refused ingest).
#[derive(Clone)]
pub struct Gate {
    app: Arc<crate::app::App>,
    tokens: Arc<TokenRegistry>,
    refusals: Arc<Refusals>,
    /// How long a source past its rate waits for each refusal.
    tarpit: Duration,
    /// The tasks of admitted calls: shutdown waits for them before it closes the store.
    handlers: Handlers,
    /// OTLP exports decoded and stored at once: a gzipped export a few KB long can decode
    /// to gigabytes of spans, so only a few are in memory together (the rest wait).
    otlp_calls: Arc<tokio::sync::Semaphore>,
}

/// OTLP exports in progress at once on the gRPC port.
const OTLP_CALLS_AT_ONCE: usize = 4;

/// Counts the admitted calls still running: each holds a clone of the `Arc`.
#[derive(Clone, Default)]
pub struct Handlers(Arc<()>);

impl Handlers {
    /// Waits until no admitted call is running (polled; used once, at shutdown).
    pub async fn wait(&self) {
        while Arc::strong_count(&self.0) > 1 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

impl Gate {
    pub fn new(app: Arc<crate::app::App>, tarpit: Duration) -> Gate {
        Gate {
            tokens: Arc::clone(&app.tokens),
            refusals: Arc::clone(&app.refusals),
            app,
            tarpit,
            handlers: Handlers::default(),
            otlp_calls: Arc::new(tokio::sync::Semaphore::new(OTLP_CALLS_AT_ONCE)),
        }
    }

    /// The admitted calls' tasks (see `handlers`).
    pub fn handlers(&self) -> Handlers {
        self.handlers.clone()
    }

    /// `Ok` when the call may go on to its handler; otherwise the status to answer with and
    /// whether the source is past its rate.
    fn check<B>(&self, request: &http::Request<B>) -> Result<(), (Status, bool)> {
        if request.uri().path().starts_with(NODE_PREFIX) {
            return self.check_node(request);
        }
        let Some(method) = gated_method(request.uri().path()) else {
            return Ok(());
        };
        let token = request
            .headers()
            .get(http::header::AUTHORIZATION)
            .ok_or("missing authorization metadata (expected `Bearer <token>`)".to_string())
            .and_then(|value| crate::app::parse_bearer(value.as_bytes()));
        let reason = match token.map(|token| self.tokens.authenticate(token)) {
            Ok(Some(_)) => return Ok(()),
            Ok(None) => "unknown bearer token".to_string(),
            Err(reason) => reason,
        };
        // "InteractionService/Ingest" -> "Ingest"
        let action = method.rsplit('/').next().unwrap_or(method);
        let action = if known_methods().contains(action) || action == "OtlpExport" {
            action
        } else {
            "unknown"
        };
        let status: Status =
            crate::app::refuse_anonymous(&self.refusals, remote_ip(request), action, &reason)
                .into();
        let limited = status.code() == tonic::Code::ResourceExhausted;
        Err((status, limited))
    }
}

impl Gate {
    /// A call between the nodes of a cluster: admitted only with the cluster's node key (no
    /// token opens it). A refusal counts against its source as an anonymous call does.
    fn check_node<B>(&self, request: &http::Request<B>) -> Result<(), (Status, bool)> {
        let presented = request
            .headers()
            .get(crate::search::fanout::NODE_KEY_HEADER)
            .map(|value| value.as_bytes());
        let accepted = match (&self.app.fanout, presented) {
            (Some(fanout), Some(presented)) => fanout.accepts(presented),
            _ => false,
        };
        if accepted {
            return Ok(());
        }
        let status: Status = crate::app::refuse_anonymous(
            &self.refusals,
            remote_ip(request),
            "unknown",
            "a call between cluster nodes without the cluster's node key",
        )
        .into();
        let limited = status.code() == tonic::Code::ResourceExhausted;
        Err((status, limited))
    }

    /// An ingest request is the one large message: a principal without the ingest role is
    /// refused (and audited) from its headers, so that tonic never decodes (and allocates
    /// for) its body. Answers the principal and the action to refuse.
    fn ingest_refusal<B>(&self, request: &http::Request<B>) -> Option<(Principal, &'static str)> {
        let action = match gated_method(request.uri().path())? {
            "InteractionService/Ingest" => "Ingest",
            "InteractionService/IngestStream" => "IngestStream",
            "OtlpExport" => "OtlpExport",
            _ => return None,
        };
        let value = request.headers().get(http::header::AUTHORIZATION)?;
        let token = crate::app::parse_bearer(value.as_bytes()).ok()?;
        let principal = self.tokens.authenticate(token)?;
        (!principal.has_any(INGESTERS)).then_some((principal, action))
    }
}

fn remote_ip<B>(request: &http::Request<B>) -> Option<IpAddr> {
    let extensions = request.extensions();
    extensions
        .get::<TcpConnectInfo>()
        .and_then(TcpConnectInfo::remote_addr)
        .or_else(|| {
            extensions
                .get::<TlsConnectInfo<TcpConnectInfo>>()
                .and_then(|info| info.get_ref().remote_addr())
        })
        .map(|address| address.ip())
}

impl<S> tower_layer::Layer<S> for Gate {
    type Service = Gated<S>;

    fn layer(&self, inner: S) -> Gated<S> {
        Gated {
            gate: self.clone(),
            inner,
        }
    }
}

/// A service behind the gate.
#[derive(Clone)]
pub struct Gated<S> {
    gate: Gate,
    inner: S,
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

impl<S, B> tower_service::Service<http::Request<B>> for Gated<S>
where
    S: tower_service::Service<http::Request<B>, Response = http::Response<Body>>,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
{
    type Response = http::Response<Body>;
    type Error = S::Error;
    type Future = BoxFuture<Result<http::Response<Body>, S::Error>>;

    fn poll_ready(&mut self, context: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(context)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        if let Some((principal, action)) = self.gate.ingest_refusal(&request) {
            drop(request);
            let app = Arc::clone(&self.gate.app);
            // On a task counted in `Handlers`, as an admitted call: a caller that goes away
            // cannot drop the refusal's audit entry.
            let running = Arc::clone(&self.gate.handlers.0);
            let refusal = tokio::spawn(async move {
                let _running = running;
                match app.authorize(&principal, action, INGESTERS).await {
                    Err(error) => Status::from(error),
                    Ok(()) => Status::internal("internal error: the ingest role check disagreed"),
                }
            });
            return Box::pin(async move {
                let status = refusal
                    .await
                    .unwrap_or_else(|_| Status::internal("internal error: a refusal panicked"));
                Ok(status.into_http::<Body>())
            });
        }
        match self.gate.check(&request) {
            // An admitted call runs to its end on a task of its own: a caller that goes away
            // (RST_STREAM, grpc-timeout) drops only the wait for the answer, never a handler
            // between its action and the action's audit entry.
            Ok(()) => {
                let running = Arc::clone(&self.gate.handlers.0);
                // The body is decoded when the call is first polled, after the permit.
                let otlp = (request.uri().path() == OTLP_EXPORT)
                    .then(|| Arc::clone(&self.gate.otlp_calls));
                let call = self.inner.call(request);
                let handler = tokio::spawn(async move {
                    let _running = running;
                    let _permit = match otlp {
                        Some(calls) => calls.acquire_owned().await.ok(),
                        None => None,
                    };
                    call.await
                });
                Box::pin(async move {
                    match handler.await {
                        Ok(answer) => answer,
                        Err(_) => Ok(Status::internal("internal error: a handler panicked")
                            .into_http::<Body>()),
                    }
                })
            }
            // The body is never read: dropping the request resets the stream.
            Err((status, false)) => Box::pin(std::future::ready(Ok(status.into_http::<Body>()))),
            // Past its rate, a source waits for its answer (holding no thread): a caller
            // that retries at once, as a flood does, is slowed to a few calls a second per
            // stream instead of costing the server every cycle it can send.
            Err((status, true)) => {
                drop(request);
                let tarpit = self.gate.tarpit;
                Box::pin(async move {
                    tokio::time::sleep(tarpit).await;
                    Ok(status.into_http::<Body>())
                })
            }
        }
    }
}
