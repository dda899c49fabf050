//! OTLP/HTTP `POST /v1/traces` on the HTTP port: an OTLP trace export as protobuf
//! (`application/x-protobuf`) or JSON (`application/json`), optionally gzipped, answered in
//! the same encoding (`App::ingest_otlp`). Errors are a `google.rpc.Status` in that encoding
//! with the HTTP status OTLP clients act on: 400 (malformed, not retried), 401/403, 413,
//! 415, 503 (storage unavailable: retried).

use std::io::Read;

use axum::body::Bytes;
use axum::extract::{FromRequest, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Extension;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use prost::Message;

use super::ingest::INGEST_BODY_TIMEOUT;
use crate::app::ingest::INGESTERS;
use crate::app::otlp::{otlp_error, otlp_response};
use crate::auth::Principal;
use crate::error::Error;
use crate::http::error::ApiError;
use crate::http::HttpState;

/// `google.rpc.Status`, the body of an OTLP/HTTP error.
#[derive(Clone, PartialEq, Message, serde::Serialize)]
struct RpcStatus {
    #[prost(int32, tag = "1")]
    code: i32,
    #[prost(string, tag = "2")]
    message: String,
}

#[derive(Clone, Copy, PartialEq)]
enum Encoding {
    Protobuf,
    Json,
}

fn answer(encoding: Encoding, status: StatusCode, body: Vec<u8>) -> Response {
    let content_type = match encoding {
        Encoding::Protobuf => "application/x-protobuf",
        Encoding::Json => "application/json",
    };
    (status, [(header::CONTENT_TYPE, content_type)], body).into_response()
}

fn error(encoding: Encoding, error: Error) -> Response {
    let grpc = tonic::Status::from(otlp_error(error));
    let code = grpc.code() as i32;
    let api = ApiError::from(grpc);
    let status = RpcStatus {
        code,
        message: api.message,
    };
    let body = match encoding {
        Encoding::Protobuf => status.encode_to_vec(),
        Encoding::Json => serde_json::to_vec(&status).unwrap_or_default(),
    };
    let mut response = answer(encoding, api.status, body);
    if api.status == StatusCode::SERVICE_UNAVAILABLE {
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, header::HeaderValue::from_static("5"));
    }
    response
}

fn encoding_of(headers: &HeaderMap) -> Option<Encoding> {
    let value = headers.get(header::CONTENT_TYPE)?.to_str().ok()?;
    let media = value.split(';').next()?.trim().to_ascii_lowercase();
    match media.as_str() {
        "application/x-protobuf" | "application/protobuf" => Some(Encoding::Protobuf),
        "application/json" => Some(Encoding::Json),
        _ => None,
    }
}

/// Stores the GenAI inference spans of an OTLP trace export.
pub(super) async fn export_traces(
    State(state): State<HttpState>,
    Extension(principal): Extension<Principal>,
    request: axum::extract::Request,
) -> Response {
    // The role first: a caller without it is refused (and audited) before its body is read.
    let encoding = encoding_of(request.headers());
    if let Err(refused) = state
        .app
        .authorize(&principal, "OtlpExport", INGESTERS)
        .await
    {
        return error(encoding.unwrap_or(Encoding::Json), refused);
    }
    let Some(encoding) = encoding else {
        let mut response = error(
            Encoding::Json,
            Error::invalid(
                "content-type",
                "OTLP/HTTP takes application/x-protobuf or application/json",
            ),
        );
        *response.status_mut() = StatusCode::UNSUPPORTED_MEDIA_TYPE;
        return response;
    };
    let gzipped = match request.headers().get(header::CONTENT_ENCODING) {
        None => false,
        Some(value) if value.as_bytes().eq_ignore_ascii_case(b"gzip") => true,
        Some(value) if value.as_bytes().eq_ignore_ascii_case(b"identity") => false,
        Some(_) => {
            return error(
                encoding,
                Error::invalid("content-encoding", "only gzip or no encoding is accepted"),
            )
        }
    };
    let limit = state.app.limits.max_request_bytes;
    let body =
        tokio::time::timeout(INGEST_BODY_TIMEOUT, Bytes::from_request(request, &state)).await;
    let bytes = match body {
        Err(_) => {
            return error(
                encoding,
                Error::DeadlineExceeded(format!(
                    "the request body did not arrive within {} seconds",
                    INGEST_BODY_TIMEOUT.as_secs()
                )),
            )
        }
        Ok(Err(rejection)) => {
            let status = rejection.status();
            let mut response = error(
                encoding,
                Error::invalid(
                    "body",
                    format!("the body could not be read (at most {limit} bytes)"),
                ),
            );
            *response.status_mut() = status;
            return response;
        }
        Ok(Ok(bytes)) => bytes,
    };
    // A decoded export takes several times its size: only a few are decoded at once, off
    // the runtime's threads, and the slot is given back before storing.
    let Ok(decoding) = state.ingest_bodies.clone().acquire_owned().await else {
        return error(encoding, Error::Unavailable("shutting down".into()));
    };
    let decoded = tokio::task::spawn_blocking(move || {
        let _decoding = decoding;
        decode(&bytes, gzipped, encoding, limit)
    })
    .await
    .unwrap_or_else(|_| Err(Error::Internal("decoding an export panicked".into())));
    let decoded = match decoded {
        Ok(decoded) => decoded,
        Err(refused) => return error(encoding, refused),
    };
    match state.app.ingest_otlp(&principal, decoded).await {
        Ok(outcome) => {
            let response = otlp_response(outcome);
            let body = match encoding {
                Encoding::Protobuf => response.encode_to_vec(),
                Encoding::Json => serde_json::to_vec(&response).unwrap_or_default(),
            };
            answer(encoding, StatusCode::OK, body)
        }
        Err(failed) => error(encoding, failed),
    }
}

/// The export request in a body: gunzipped within `limit` bytes, then decoded.
fn decode(
    bytes: &[u8],
    gzipped: bool,
    encoding: Encoding,
    limit: usize,
) -> Result<ExportTraceServiceRequest, Error> {
    let mut inflated = Vec::new();
    let body = if gzipped {
        flate2::read::MultiGzDecoder::new(bytes)
            .take(limit as u64 + 1)
            .read_to_end(&mut inflated)
            .map_err(|_| Error::invalid("body", "not valid gzip"))?;
        if inflated.len() > limit {
            return Err(Error::invalid(
                "body",
                format!("more than {limit} bytes once decompressed"),
            ));
        }
        &inflated[..]
    } else {
        bytes
    };
    match encoding {
        Encoding::Protobuf => ExportTraceServiceRequest::decode(body).map_err(|_| {
            Error::invalid("body", "not an OTLP ExportTraceServiceRequest (protobuf)")
        }),
        Encoding::Json => serde_json::from_slice(body).map_err(|error| {
            Error::invalid(
                "body",
                format!(
                    "not an OTLP ExportTraceServiceRequest (JSON): {} at line {} column {}",
                    json_error_kind(&error),
                    error.line(),
                    error.column()
                ),
            )
        }),
    }
}

/// What kind of JSON error, in words (never the text it was reading).
fn json_error_kind(error: &serde_json::Error) -> &'static str {
    match error.classify() {
        serde_json::error::Category::Io => "unreadable",
        serde_json::error::Category::Syntax => "malformed JSON",
        serde_json::error::Category::Data => "a field of the wrong type",
        serde_json::error::Category::Eof => "truncated JSON",
    }
}
