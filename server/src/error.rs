//! The server's error type and its one mapping to `tonic::Status`. Messages never contain
//! prompt or response text.

use crate::store::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("invalid {field}: {reason}")]
    InvalidArgument { field: String, reason: String },
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    AlreadyExists(String),
    #[error("{0}")]
    FailedPrecondition(String),
    #[error("{0}")]
    Unauthenticated(String),
    #[error("{0}")]
    PermissionDenied(String),
    #[error("{0}")]
    ResourceExhausted(String),
    #[error("{0}")]
    Unavailable(String),
    #[error("{0}")]
    DeadlineExceeded(String),
    #[error("internal error: {0}")]
    Internal(String),
    #[error(transparent)]
    Store(StoreError),
}

impl Error {
    pub fn invalid(field: impl Into<String>, reason: impl Into<String>) -> Error {
        Error::InvalidArgument {
            field: field.into(),
            reason: reason.into(),
        }
    }
}

impl From<StoreError> for Error {
    fn from(error: StoreError) -> Self {
        Error::Store(error)
    }
}

impl From<Error> for tonic::Status {
    fn from(error: Error) -> Self {
        let message = error.to_string();
        match error {
            Error::InvalidArgument { .. } => tonic::Status::invalid_argument(message),
            Error::NotFound(_) => tonic::Status::not_found(message),
            Error::AlreadyExists(_) => tonic::Status::already_exists(message),
            Error::FailedPrecondition(_) => tonic::Status::failed_precondition(message),
            Error::Unauthenticated(_) => tonic::Status::unauthenticated(message),
            Error::PermissionDenied(_) => tonic::Status::permission_denied(message),
            Error::ResourceExhausted(_) => tonic::Status::resource_exhausted(message),
            Error::Unavailable(_) => tonic::Status::unavailable(message),
            Error::DeadlineExceeded(_) => tonic::Status::deadline_exceeded(message),
            Error::Internal(_) => tonic::Status::internal(message),
            Error::Store(store_error) => match store_error {
                StoreError::Engine(_) | StoreError::AuditHeadMoved { .. } => {
                    tonic::Status::unavailable(message)
                }
                StoreError::NoSpace(_) => tonic::Status::resource_exhausted(message),
                StoreError::Corrupt { .. } => tonic::Status::data_loss(message),
                StoreError::UnsupportedFormat { .. }
                | StoreError::Locked(_)
                | StoreError::Fenced(_) => tonic::Status::failed_precondition(message),
            },
        }
    }
}
