//! The gRPC front door. Each handler authenticates the caller from its metadata, decodes the
//! request into the application layer's types (`app/`), calls it, and encodes the answer;
//! authorisation, auditing and the domain logic live in `app/`. Errors map to `Status`
//! through `Error`'s one mapping.

mod admin;
mod audit;
mod discovery;
mod interactions;
mod leaf;
mod otlp;
mod retention;

use std::net::IpAddr;

use tonic::{Request, Status};

pub use admin::AdminApi;
pub use audit::AuditApi;
pub use discovery::DiscoveryApi;
pub use interactions::InteractionApi;
pub use leaf::LeafApi;
pub use otlp::OtlpTraceApi;
pub use retention::RetentionApi;

use crate::app::App;
use crate::auth::{Principal, Role};

/// The caller of a gRPC request, from its `authorization` metadata (see `App::authenticate`).
pub fn authenticate<T>(
    app: &App,
    request: &Request<T>,
    action: &'static str,
) -> Result<Principal, Status> {
    let authorization = request
        .metadata()
        .get("authorization")
        .map(|value| value.as_encoded_bytes());
    let source: Option<IpAddr> = request.remote_addr().map(|address| address.ip());
    Ok(app.authenticate(authorization, source, action)?)
}

/// `authenticate`, then the role check of `App::authorize`, for handlers whose operation has
/// not moved into the application layer yet.
pub async fn authorize<T>(
    app: &App,
    request: &Request<T>,
    action: &'static str,
    allowed: &[Role],
) -> Result<Principal, Status> {
    let principal = authenticate(app, request, action)?;
    app.authorize(&principal, action, allowed).await?;
    Ok(principal)
}

/// A request field that cannot be decoded is refused only after the caller's roles are
/// checked: a caller without the role is refused (and audited) as such, whatever it sent.
pub async fn decoded<T>(
    app: &App,
    principal: &Principal,
    action: &'static str,
    allowed: &[Role],
    value: Result<T, crate::error::Error>,
) -> Result<T, Status> {
    match value {
        Ok(value) => Ok(value),
        Err(error) => {
            app.authorize(principal, action, allowed).await?;
            Err(error.into())
        }
    }
}
