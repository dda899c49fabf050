//! Errors over HTTP: one JSON shape, `{"code", "message", "field"}`, whose `code` is the
//! gRPC status code's name (one-to-one with `Error`'s gRPC mapping) and whose HTTP status
//! follows the usual gRPC-to-HTTP mapping (as grpc-gateway and Google APIs use).

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Serialize;
use utoipa::ToSchema;

use crate::error::Error;

/// An error answer.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ApiError {
    /// The gRPC status code's name: INVALID_ARGUMENT, NOT_FOUND, ALREADY_EXISTS,
    /// FAILED_PRECONDITION, UNAUTHENTICATED, PERMISSION_DENIED, RESOURCE_EXHAUSTED,
    /// UNAVAILABLE, DEADLINE_EXCEEDED, DATA_LOSS or INTERNAL.
    pub code: &'static str,
    /// What went wrong, in words; never contains prompt or response text.
    pub message: String,
    /// For INVALID_ARGUMENT: the request field at fault.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
    #[serde(skip)]
    pub status: StatusCode,
}

impl ApiError {
    pub fn invalid(field: &str, reason: impl Into<String>) -> ApiError {
        ApiError::from(Error::invalid(field, reason))
    }

    pub fn not_found(message: impl Into<String>) -> ApiError {
        ApiError::from(Error::NotFound(message.into()))
    }
}

impl From<Error> for ApiError {
    fn from(error: Error) -> ApiError {
        ApiError::from(tonic::Status::from(error))
    }
}

impl From<tonic::Status> for ApiError {
    fn from(status: tonic::Status) -> ApiError {
        let field = match &status.code() {
            tonic::Code::InvalidArgument => status
                .message()
                .strip_prefix("invalid ")
                .and_then(|rest| rest.split_once(':'))
                .map(|(field, _)| field.to_string()),
            _ => None,
        };
        let (code, http) = code_names(status.code());
        ApiError {
            code,
            message: status.message().to_string(),
            field,
            status: http,
        }
    }
}

/// The name and HTTP status of a gRPC code.
fn code_names(code: tonic::Code) -> (&'static str, StatusCode) {
    use tonic::Code;
    match code {
        Code::Ok => ("OK", StatusCode::OK),
        Code::Cancelled => (
            "CANCELLED",
            StatusCode::from_u16(499).unwrap_or(StatusCode::BAD_REQUEST),
        ),
        Code::Unknown => ("UNKNOWN", StatusCode::INTERNAL_SERVER_ERROR),
        Code::InvalidArgument => ("INVALID_ARGUMENT", StatusCode::BAD_REQUEST),
        Code::DeadlineExceeded => ("DEADLINE_EXCEEDED", StatusCode::GATEWAY_TIMEOUT),
        Code::NotFound => ("NOT_FOUND", StatusCode::NOT_FOUND),
        Code::AlreadyExists => ("ALREADY_EXISTS", StatusCode::CONFLICT),
        Code::PermissionDenied => ("PERMISSION_DENIED", StatusCode::FORBIDDEN),
        Code::ResourceExhausted => ("RESOURCE_EXHAUSTED", StatusCode::TOO_MANY_REQUESTS),
        Code::FailedPrecondition => ("FAILED_PRECONDITION", StatusCode::BAD_REQUEST),
        Code::Aborted => ("ABORTED", StatusCode::CONFLICT),
        Code::OutOfRange => ("OUT_OF_RANGE", StatusCode::BAD_REQUEST),
        Code::Unimplemented => ("UNIMPLEMENTED", StatusCode::NOT_IMPLEMENTED),
        Code::Internal => ("INTERNAL", StatusCode::INTERNAL_SERVER_ERROR),
        Code::Unavailable => ("UNAVAILABLE", StatusCode::SERVICE_UNAVAILABLE),
        Code::DataLoss => ("DATA_LOSS", StatusCode::INTERNAL_SERVER_ERROR),
        Code::Unauthenticated => ("UNAUTHENTICATED", StatusCode::UNAUTHORIZED),
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status;
        let mut response = (status, Json(self)).into_response();
        if status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(
                axum::http::header::WWW_AUTHENTICATE,
                axum::http::HeaderValue::from_static("Bearer"),
            );
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_invalid_argument_names_its_field() {
        let error = ApiError::from(Error::invalid("page_size", "must be at most 1000"));
        assert_eq!(error.code, "INVALID_ARGUMENT");
        assert_eq!(error.status, StatusCode::BAD_REQUEST);
        assert_eq!(error.field.as_deref(), Some("page_size"));
        assert_eq!(error.message, "invalid page_size: must be at most 1000");
        let error = ApiError::from(Error::NotFound("no case with id X".into()));
        assert_eq!(
            (error.code, error.status),
            ("NOT_FOUND", StatusCode::NOT_FOUND)
        );
        assert_eq!(error.field, None);
    }

    #[test]
    fn every_error_kind_has_its_own_code() {
        let errors = [
            Error::invalid("f", "r"),
            Error::NotFound(String::new()),
            Error::AlreadyExists(String::new()),
            Error::FailedPrecondition(String::new()),
            Error::Unauthenticated(String::new()),
            Error::PermissionDenied(String::new()),
            Error::ResourceExhausted(String::new()),
            Error::Unavailable(String::new()),
            Error::DeadlineExceeded(String::new()),
            Error::Internal(String::new()),
        ];
        let codes: std::collections::BTreeSet<&str> =
            errors.into_iter().map(|e| ApiError::from(e).code).collect();
        assert_eq!(codes.len(), 10, "{codes:?}");
    }
}
