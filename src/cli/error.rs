//! What can go wrong in a CLI command. Every variant is printed as one `error: …` line on stderr
//! and makes the process exit non-zero; none of them is a panic.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// The server answered with an FC error document.
    #[error("{code}: {message} (HTTP {status}, RequestId {request_id})")]
    Api { status: u16, code: String, message: String, request_id: String },
    /// The endpoint could not be reached (refused, DNS, TLS, timeout…): says which one.
    #[error("cannot reach {endpoint}: {reason}")]
    Connect { endpoint: String, reason: String },
    /// The server answered something that is not the FC API (a proxy's page, a cut body…).
    #[error("unexpected answer from {endpoint}: {reason}")]
    BadResponse { endpoint: String, reason: String },
    /// The function ran and failed (`x-fc-error-type`); its error body was already printed.
    #[error("the function failed: {error_type} (RequestId {request_id})")]
    Function { error_type: String, request_id: String },
    /// Flags or arguments that cannot be used together or do not parse.
    #[error("{0}")]
    Usage(String),
    /// Missing or unreadable endpoint, profile or credentials.
    #[error("{0}")]
    Config(String),
    #[error("{}: {source}", path.display())]
    Io { path: PathBuf, source: std::io::Error },
    #[error("building the code zip: {0}")]
    Zip(#[from] zip::result::ZipError),
}

impl CliError {
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Self::Io { path: path.into(), source }
    }

    /// The API's error code, when the server gave one.
    pub fn api_code(&self) -> Option<&str> {
        match self {
            Self::Api { code, .. } => Some(code),
            _ => None,
        }
    }
}

/// An error and its causes on one line: reqwest's own message ("error sending request") says
/// nothing about why; the cause ("Connection refused") is what the user needs.
pub fn chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut cur = e.source();
    while let Some(s) = cur {
        let s_text = s.to_string();
        if !out.contains(&s_text) {
            out.push_str(": ");
            out.push_str(&s_text);
        }
        cur = s.source();
    }
    out
}
