//! The HTTP/JSON front door (`http_listen`, default 127.0.0.1:8080; TLS when `[tls]` is
//! configured). The same operations as gRPC, through the same application layer (`app/`),
//! with the same bearer tokens (`Authorization: Bearer <token>`). The OpenAPI 3 document,
//! generated from the handlers' types, is served at `/api/openapi.json`.
//!
//! As at the gRPC gate, a call without a valid token is refused from its headers before its
//! body is read, counted per source (`refusals.rs`), and made to wait past the source's rate.
//! An admitted call runs on a task of its own, so that a client that disconnects cannot split
//! an action from its audit entry; shutdown waits for those tasks (`gate::Handlers`).

pub mod api;
pub mod console;
pub mod error;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use axum::extract::{ConnectInfo, DefaultBodyLimit, MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Router;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::app::App;
use crate::auth::Principal;
use crate::config::TlsConfig;
use crate::error::Error;
use crate::gate::Handlers;
use error::ApiError;

/// Longest a client may take to send a request's headers (slow-loris).
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(20);
/// Longest a TLS handshake may take.
const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(20);

/// What the HTTP handlers share.
#[derive(Clone)]
pub struct HttpState {
    pub app: Arc<App>,
    /// Console sessions and cookie settings.
    pub console: console::ConsoleState,
    /// How long a source past its rate waits for each refusal.
    tarpit: Duration,
    handlers: Handlers,
    /// Ingest bodies being decoded at once (see `api/ingest.rs`).
    pub ingest_bodies: Arc<tokio::sync::Semaphore>,
}

/// Ingest bodies decoded at once over HTTP.
const INGEST_BODIES_AT_ONCE: usize = 2;

/// The routes: the API, with authentication in front of every `/api/v1` route, and the
/// console (its own sessions) at `/`. `secure` marks the console's cookies Secure (TLS).
pub fn router(app: Arc<App>, tarpit: Duration, handlers: Handlers, secure: bool) -> Router {
    let exports = Arc::new(console::exports::ConsoleExports::new(
        app.data_dir.join("console-exports"),
    ));
    let state = HttpState {
        app,
        console: console::ConsoleState {
            sessions: Arc::new(console::sessions::Sessions::default()),
            secure,
            exports,
        },
        tarpit,
        handlers,
        ingest_bodies: Arc::new(tokio::sync::Semaphore::new(INGEST_BODIES_AT_ONCE)),
    };
    let console_routes = console::routes()
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            on_own_task,
        ))
        .layer(axum::middleware::from_fn(console::security_headers));
    let max_ingest_bytes = state.app.limits.max_request_bytes;
    let authenticated = api::routes(max_ingest_bytes)
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            authenticate,
        ))
        .layer(axum::middleware::from_fn(no_store));
    Router::new()
        .route(
            "/api/openapi.json",
            axum::routing::get(api::openapi_document),
        )
        .merge(authenticated)
        .merge(console_routes)
        .fallback(|| async { ApiError::not_found("no such endpoint") })
        .layer(DefaultBodyLimit::max(api::MAX_BODY_BYTES))
        .with_state(state)
}

/// API answers (tokens, interaction content) are never cached.
async fn no_store(request: Request, next: Next) -> Response {
    let mut response = next.run(request).await;
    response.headers_mut().insert(
        axum::http::header::CACHE_CONTROL,
        axum::http::HeaderValue::from_static("no-store"),
    );
    response
}

/// Runs a call to its end on a task of its own, counted in `Handlers`: a client that goes
/// away drops only the wait for the answer, never a handler between its action and the
/// action's audit entry.
async fn run_on_own_task(state: &HttpState, request: Request, next: Next) -> Response {
    let running = state.handlers.clone();
    let handler = tokio::spawn(async move {
        let _running = running;
        next.run(request).await
    });
    match handler.await {
        Ok(response) => response,
        Err(_) => ApiError::from(Error::Internal("a handler panicked".into())).into_response(),
    }
}

async fn on_own_task(State(state): State<HttpState>, request: Request, next: Next) -> Response {
    run_on_own_task(&state, request, next).await
}

/// Authenticates the caller from its `Authorization` header (the body is not read yet), puts
/// the `Principal` in the request's extensions, and runs the handler on a task of its own.
async fn authenticate(
    State(state): State<HttpState>,
    mut request: Request,
    next: Next,
) -> Response {
    let authorization = request
        .headers()
        .get(axum::http::header::AUTHORIZATION)
        .map(|value| value.as_bytes().to_vec());
    let source = request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|info| info.0.ip());
    // The route's template (ours, never the caller's text) names the refused action.
    let action = request
        .extensions()
        .get::<MatchedPath>()
        .map(|path| path.as_str().to_string())
        .unwrap_or_else(|| "unknown".to_string());
    match state
        .app
        .authenticate(authorization.as_deref(), source, &action)
    {
        Ok(principal) => {
            request.extensions_mut().insert::<Principal>(principal);
            run_on_own_task(&state, request, next).await
        }
        Err(error) => {
            drop(request);
            if matches!(error, Error::ResourceExhausted(_)) {
                tokio::time::sleep(state.tarpit).await;
            }
            ApiError::from(error).into_response()
        }
    }
}

/// Binds the HTTP listener (before the server reports itself started, so that a taken port is
/// a start-up error).
pub async fn bind(address: SocketAddr) -> anyhow::Result<TcpListener> {
    TcpListener::bind(address)
        .await
        .with_context(|| format!("cannot listen for HTTP on {address}"))
}

/// Reads the `[tls]` files into a rustls server configuration (HTTP/1.1 and HTTP/2).
pub fn tls_acceptor(tls: &TlsConfig) -> anyhow::Result<tokio_rustls::TlsAcceptor> {
    use tokio_rustls::rustls;
    use tokio_rustls::rustls::pki_types::pem::PemObject;
    use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let certs = CertificateDer::pem_file_iter(&tls.cert_file)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .with_context(|| format!("cannot read certificates from {}", tls.cert_file.display()))?;
    let key = PrivateKeyDer::from_pem_file(&tls.key_file)
        .with_context(|| format!("cannot read the private key {}", tls.key_file.display()))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ServerConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()
        .context("TLS protocol versions")?;
    let builder = match &tls.client_ca_file {
        Some(ca) => {
            let mut roots = rustls::RootCertStore::empty();
            for cert in CertificateDer::pem_file_iter(ca)
                .with_context(|| format!("cannot read {}", ca.display()))?
            {
                roots
                    .add(cert.with_context(|| format!("cannot read {}", ca.display()))?)
                    .context("invalid client CA certificate")?;
            }
            let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                Arc::new(roots),
                provider,
            )
            .build()
            .context("invalid client CA")?;
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    let mut config = builder
        .with_single_cert(certs, key)
        .context("invalid TLS certificate or key")?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(tokio_rustls::TlsAcceptor::from(Arc::new(config)))
}

/// Most HTTP connections open at once, and from one source address.
const MAX_CONNECTIONS: usize = 1024;
const MAX_CONNECTIONS_PER_SOURCE: usize = 64;
/// A connection must send its first bytes within this (the HTTP/1 header timeout starts only
/// once the protocol is known).
const FIRST_BYTES_TIMEOUT: Duration = Duration::from_secs(20);

/// Counts open connections per source address.
#[derive(Clone, Default)]
struct Sources(Arc<std::sync::Mutex<std::collections::HashMap<std::net::IpAddr, usize>>>);

/// A source's place, given back when its connection ends.
struct SourcePlace {
    sources: Sources,
    address: std::net::IpAddr,
}

impl Sources {
    fn admit(&self, address: std::net::IpAddr) -> Option<SourcePlace> {
        let mut open = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let count = open.entry(address).or_default();
        if *count >= MAX_CONNECTIONS_PER_SOURCE {
            return None;
        }
        *count += 1;
        Some(SourcePlace {
            sources: self.clone(),
            address,
        })
    }
}

impl Drop for SourcePlace {
    fn drop(&mut self) {
        let mut open = self.sources.0.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(count) = open.get_mut(&self.address) {
            *count -= 1;
            if *count == 0 {
                open.remove(&self.address);
            }
        }
    }
}

/// Serves `router` on `listener` until `shutdown`; then stops accepting, lets open
/// connections finish their calls (within `grace`), closes those still open, and returns.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    tls: Option<tokio_rustls::TlsAcceptor>,
    shutdown: CancellationToken,
    grace: Duration,
) {
    let mut connections = tokio::task::JoinSet::new();
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    let sources = Sources::default();
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = shutdown.cancelled() => break,
            // Reap finished connections as they end.
            Some(_) = connections.join_next(), if !connections.is_empty() => continue,
        };
        let (stream, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(error) => {
                // EMFILE and the like: wait a little instead of spinning.
                tracing::warn!(%error, "cannot accept an HTTP connection");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        // Past either cap the connection is closed at once.
        let Ok(slot) = Arc::clone(&slots).try_acquire_owned() else {
            metrics::counter!("holdfast_http_connections_refused_total").increment(1);
            continue;
        };
        let Some(place) = sources.admit(peer.ip()) else {
            metrics::counter!("holdfast_http_connections_refused_total").increment(1);
            continue;
        };
        let _ = stream.set_nodelay(true);
        let router = router.clone();
        let tls = tls.clone();
        let shutdown = shutdown.clone();
        connections.spawn(async move {
            let _held = (slot, place);
            let mut first = [0u8; 1];
            match tokio::time::timeout(FIRST_BYTES_TIMEOUT, stream.peek(&mut first)).await {
                Ok(Ok(n)) if n > 0 => {}
                _ => return,
            }
            let service = hyper::service::service_fn(
                move |mut request: hyper::Request<hyper::body::Incoming>| {
                    request.extensions_mut().insert(ConnectInfo(peer));
                    let mut router = router.clone();
                    async move {
                        use tower_service::Service as _;
                        router.call(request.map(axum::body::Body::new)).await
                    }
                },
            );
            match tls {
                Some(acceptor) => {
                    let stream =
                        match tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, acceptor.accept(stream))
                            .await
                        {
                            Ok(Ok(stream)) => stream,
                            _ => return,
                        };
                    serve_connection(TokioIo::new(stream), service, shutdown, grace).await;
                }
                None => serve_connection(TokioIo::new(stream), service, shutdown, grace).await,
            }
        });
    }
    drop(listener);
    // Open connections finish their calls within the grace period; the rest are closed.
    let drained = tokio::time::timeout(grace, async {
        while connections.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        tracing::warn!("HTTP connections still open after the shutdown grace period; closing them");
        connections.abort_all();
        while connections.join_next().await.is_some() {}
    }
}

async fn serve_connection<I, S>(io: I, service: S, shutdown: CancellationToken, grace: Duration)
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
    S: hyper::service::Service<
            hyper::Request<hyper::body::Incoming>,
            Response = Response,
            Error = std::convert::Infallible,
        > + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
{
    let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(crate::gate::MAX_STREAMS_PER_CONNECTION)
        .keep_alive_interval(Some(Duration::from_secs(60)))
        .keep_alive_timeout(Duration::from_secs(20));
    let connection = builder.serve_connection_with_upgrades(io, service);
    tokio::pin!(connection);
    tokio::select! {
        _ = connection.as_mut() => {}
        () = shutdown.cancelled() => {
            connection.as_mut().graceful_shutdown();
            let _ = tokio::time::timeout(grace, connection).await;
        }
    }
}
