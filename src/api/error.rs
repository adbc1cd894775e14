//! The one place errors become HTTP: every failure leaves as an FC error body
//! `{"Code", "Message", "RequestId"}` with the right status. The caller gets a short message;
//! the log gets the cause chain (platform faults only: a caller's mistake is not our error).

use axum::Json;
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::ToSchema;

use super::auth::AuthError;
use crate::codestore::CodeStoreError;
use crate::console::ConsoleError;
use crate::codestore::package::PackageError;
use crate::logstore::LogStoreError;
use crate::model::ValidationError;
use crate::scheduler::AcquireError;
use crate::store::StoreError;
use crate::triggers::http::HttpTriggerError;
use crate::triggers::http::auth::TriggerAuthError;

tokio::task_local! {
    /// The request id of the request being served; set by the request-id layer.
    pub static REQUEST_ID: String;
}

pub fn current_request_id() -> String {
    REQUEST_ID.try_with(|id| id.clone()).unwrap_or_default()
}

#[derive(Debug, Clone)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    /// Seconds; only on throttling (the SDKs turn it into a ThrottlingException).
    pub retry_after: Option<u64>,
    /// The `Allow` header of a 405 (an HTTP trigger's methods).
    pub allow: Option<String>,
}

/// The FC error document.
#[derive(Serialize, ToSchema)]
pub struct ErrorBody {
    #[serde(rename = "Code")]
    pub code: String,
    #[serde(rename = "Message")]
    pub message: String,
    #[serde(rename = "RequestId")]
    pub request_id: String,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self { status, code, message: message.into(), retry_after: None, allow: None }
    }
    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "InvalidArgument", message)
    }
    pub fn function_not_found(name: &str) -> Self {
        Self::new(StatusCode::NOT_FOUND, "FunctionNotFound", format!("function '{name}' does not exist"))
    }
    pub fn version_not_found(name: &str, version: impl std::fmt::Display) -> Self {
        Self::new(StatusCode::NOT_FOUND, "VersionNotFound", format!("version '{version}' of function '{name}' does not exist"))
    }
    pub fn alias_not_found(name: &str, alias: &str) -> Self {
        Self::new(StatusCode::NOT_FOUND, "AliasNotFound", format!("alias '{alias}' of function '{name}' does not exist"))
    }
    /// A call of a function whose invocation is disabled (DisableFunctionInvocation).
    pub fn invocation_disabled(name: &str, reason: &str) -> Self {
        let why = if reason.is_empty() { String::new() } else { format!(": {reason}") };
        Self::new(
            StatusCode::PRECONDITION_FAILED,
            "FunctionInvocationDisabled",
            format!("invocation of function '{name}' is disabled{why}; EnableFunctionInvocation allows it again"),
        )
    }
    pub fn too_large(what: &str, limit: usize) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "EntityTooLarge", format!("{what} exceeds the limit of {limit} bytes"))
    }
    pub fn path_not_supported(method: &str, path: &str) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "PathNotSupported", format!("'{method}' against '{path}' is not supported"))
    }
    pub fn internal(e: impl std::fmt::Display) -> Self {
        tracing::error!("internal error: {e:#}");
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "InternalServerError", "internal error; see the server log")
    }
    pub fn unavailable(what: &str, e: impl std::fmt::Display) -> Self {
        tracing::error!("{what} unavailable: {e:#}");
        Self::new(StatusCode::SERVICE_UNAVAILABLE, "ServiceUnavailable", format!("{what} is unavailable, retry later"))
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = ErrorBody { code: self.code.to_string(), message: self.message, request_id: current_request_id() };
        let mut resp = (self.status, Json(body)).into_response();
        if let Some(s) = self.retry_after {
            resp.headers_mut().insert("x-acs-retry-after", HeaderValue::from(s));
        }
        if let Some(v) = self.allow.and_then(|a| HeaderValue::from_str(&a).ok()) {
            resp.headers_mut().insert("allow", v);
        }
        resp
    }
}

/// A query string that does not parse (a number that is not one, ...): the caller's mistake.
impl From<axum::extract::rejection::QueryRejection> for ApiError {
    fn from(e: axum::extract::rejection::QueryRejection) -> Self {
        Self::invalid(e.body_text())
    }
}

impl From<ValidationError> for ApiError {
    fn from(e: ValidationError) -> Self {
        Self::invalid(e.to_string())
    }
}

impl From<AuthError> for ApiError {
    fn from(e: AuthError) -> Self {
        let status = StatusCode::from_u16(e.status()).unwrap_or(StatusCode::FORBIDDEN);
        Self::new(status, e.code(), e.message())
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::AlreadyExists => Self::new(StatusCode::CONFLICT, "AlreadyExists", "resource already exists"),
            StoreError::Conflict => Self::new(
                StatusCode::CONFLICT,
                "ConcurrentUpdateError",
                "the resource was changed by another request; retry",
            ),
            e @ (StoreError::Unavailable(_) | StoreError::TimedOut(_)) => Self::unavailable("metadata store", e),
            StoreError::Rejected(m) => Self::invalid(format!("a value was refused by the database: {m}")),
            e @ (StoreError::Corrupt(_)
            | StoreError::Query(_)
            | StoreError::Migrate(_)
            | StoreError::BadUrl(_)
            | StoreError::MigrationLock(_)) => {
                Self::internal(e)
            }
        }
    }
}

impl From<ConsoleError> for ApiError {
    fn from(e: ConsoleError) -> Self {
        let msg = e.to_string();
        match e {
            ConsoleError::NotSignedIn => Self::new(StatusCode::UNAUTHORIZED, "NotSignedIn", msg),
            ConsoleError::SessionExpired => Self::new(StatusCode::UNAUTHORIZED, "SessionExpired", msg),
            ConsoleError::BadCredentials => Self::new(StatusCode::UNAUTHORIZED, "InvalidCredentials", msg),
            ConsoleError::CsrfMissing | ConsoleError::CsrfMismatch => Self::new(StatusCode::FORBIDDEN, "InvalidCsrfToken", msg),
            ConsoleError::Invalid(m) => Self::invalid(m),
            ConsoleError::Store(e) => e.into(),
            ConsoleError::Keys(super::keys::KeyError::Store(e)) => e.into(),
            ConsoleError::Keys(e) => Self::internal(e),
        }
    }
}

impl From<PackageError> for ApiError {
    fn from(e: PackageError) -> Self {
        match e {
            PackageError::Io(e) => Self::internal(e),
            e => Self::invalid(e.to_string()),
        }
    }
}

impl From<CodeStoreError> for ApiError {
    fn from(e: CodeStoreError) -> Self {
        match e {
            CodeStoreError::NotFound(_) => Self::new(StatusCode::NOT_FOUND, "CodeNotFound", e.to_string()),
            e @ CodeStoreError::BadUrl(_) => Self::internal(e),
            e => Self::unavailable("code store", e),
        }
    }
}

impl From<LogStoreError> for ApiError {
    fn from(e: LogStoreError) -> Self {
        match e {
            LogStoreError::BadCursor => super::paging::bad_token(),
            e @ LogStoreError::Local(_) => Self::unavailable("log store", e),
            // Unreachable, refusing, or answering nonsense: to the caller all the same, retry later.
            e @ LogStoreError::Cluster(_) => Self::unavailable("log search cluster", e),
        }
    }
}

impl From<AcquireError> for ApiError {
    fn from(e: AcquireError) -> Self {
        use crate::agent::AgentError as A;
        match e {
            AcquireError::Throttled { .. } | AcquireError::ConcurrencyLimit { .. } => {
                let mut err = Self::new(StatusCode::TOO_MANY_REQUESTS, "ResourceExhausted", e.to_string());
                err.retry_after = Some(1);
                err
            }
            AcquireError::Placement(p) => {
                Self::new(StatusCode::SERVICE_UNAVAILABLE, "ResourcePoolInsufficientCapacity", p.to_string())
            }
            AcquireError::ShuttingDown => Self::new(StatusCode::SERVICE_UNAVAILABLE, "ServiceUnavailable", "server is shutting down"),
            AcquireError::NodeLost(_) => Self::unavailable("the node chosen for the instance", e),
            AcquireError::NoLeader(_) => Self::unavailable("the cluster's scheduler", e),
            AcquireError::NoSuchFunction(name) => Self::function_not_found(&name),
            AcquireError::NoSuchVersion { function, version } => Self::version_not_found(&function, version),
            AcquireError::NoImage(e) => Self::internal(e),
            AcquireError::Start(a) => match a {
                A::Exited { .. } => Self::new(StatusCode::PRECONDITION_FAILED, "CAExited", a.to_string()),
                A::NotReady { .. } => Self::new(StatusCode::PRECONDITION_FAILED, "FunctionNotStarted", a.to_string()),
                A::ImageNotFound(_) => Self::new(StatusCode::PRECONDITION_FAILED, "ImageNotFound", a.to_string()),
                A::Unavailable(e) => Self::unavailable("container runtime", e),
                A::NotDelivered(e) => Self::unavailable("node agent", e),
                a => Self::internal(a),
            },
        }
    }
}

impl From<HttpTriggerError> for ApiError {
    fn from(e: HttpTriggerError) -> Self {
        use HttpTriggerError as H;
        use TriggerAuthError as A;
        let msg = e.to_string();
        match e {
            H::NoTrigger { .. } => Self::new(StatusCode::NOT_FOUND, "TriggerNotFound", msg),
            H::InternetDisabled | H::OriginNotAllowed(_) => Self::new(StatusCode::FORBIDDEN, "AccessDenied", msg),
            H::MethodNotAllowed { allowed, .. } => {
                let mut err = Self::new(StatusCode::METHOD_NOT_ALLOWED, "MethodNotAllowed", msg);
                err.allow = Some(allowed.join(", "));
                err
            }
            H::ReservedHeader(_) | H::PathTooLong => Self::invalid(msg),
            H::BadResponse(_) => Self::new(StatusCode::BAD_GATEWAY, "BadResponse", msg),
            // The API's signing errors, in the words FC uses for triggers.
            H::Auth(A::Missing) => Self::new(StatusCode::BAD_REQUEST, "MissingRequiredHeader", msg),
            H::Auth(A::BadDate(_)) => Self::new(StatusCode::BAD_REQUEST, "InvalidTimeStamp.Format", msg),
            H::Auth(A::Skewed { .. }) => Self::new(StatusCode::FORBIDDEN, "RequestTimeTooSkewed", msg),
            H::Auth(A::UnknownKey(_)) => Self::new(StatusCode::FORBIDDEN, "InvalidAccessKeyID", msg),
            H::Auth(A::Malformed | A::DateNotSigned | A::SignedHeaderAbsent(_) | A::BodyHashMismatch | A::Mismatch) => {
                Self::new(StatusCode::FORBIDDEN, "SignatureNotMatch", msg)
            }
        }
    }
}
