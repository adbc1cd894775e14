//! The config of an `http` trigger (fc-triggers.md §1.1):
//! `{"authType", "methods", "disableURLInternet", "authConfig", "corsConfig"}`.
//!
//! How Nubis serves it is in `crate::triggers::http`.

use serde::Deserialize;
use serde_json::Value;

use super::from_config_str;
use crate::model::ValidationError;

/// The methods FC lets an HTTP trigger accept (the fc3 tool's enum).
pub const METHODS: [&str; 7] = ["GET", "POST", "PUT", "DELETE", "HEAD", "PATCH", "OPTIONS"];

/// Who may call the trigger's URL.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AuthType {
    /// No check.
    Anonymous,
    /// Signed with an access key of this server (ACS3-HMAC-SHA256, fc-triggers.md §1.3). FC's
    /// default.
    #[default]
    Function,
    /// A JWT checked against a JWKS. Refused at create: not supported by Nubis yet.
    Jwt,
}

/// `corsConfig`. Absent: Nubis adds no CORS headers and relays OPTIONS like any method.
#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct CorsConfig {
    /// Origins allowed, or `*`. Empty: none.
    pub allow_origins: Vec<String>,
    /// For preflight answers; empty: the trigger's methods.
    pub allow_methods: Vec<String>,
    /// For preflight answers; empty: the headers the preflight asked for.
    pub allow_headers: Vec<String>,
    pub expose_headers: Vec<String>,
    pub allow_credentials: bool,
    /// Seconds a preflight answer may be cached; 0: not said.
    pub max_age: u32,
}

impl CorsConfig {
    /// The value of `Access-Control-Allow-Origin` for a request from `origin`, if allowed.
    /// `*` allows any origin; with credentials the origin itself is echoed (browsers refuse a
    /// credentialed answer with `*`).
    pub fn allowed_origin(&self, origin: &str) -> Option<String> {
        if self.allow_origins.iter().any(|o| o == "*") {
            return Some(if self.allow_credentials { origin.to_string() } else { "*".to_string() });
        }
        self.allow_origins.iter().any(|o| o.eq_ignore_ascii_case(origin)).then(|| origin.to_string())
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Raw {
    #[serde(default)]
    auth_type: AuthType,
    #[serde(default)]
    methods: Vec<String>,
    #[serde(default, rename = "disableURLInternet")]
    disable_url_internet: bool,
    /// A string (the SDK's type) or an object (what the fc3 tool sends): jwt only.
    #[serde(default)]
    auth_config: Option<Value>,
    #[serde(default)]
    cors_config: Option<CorsConfig>,
}

/// A validated http trigger config.
#[derive(Debug, Clone, PartialEq)]
pub struct HttpTriggerConfig {
    pub auth_type: AuthType,
    /// Upper-case, from [`METHODS`], at least one, no repeats.
    pub methods: Vec<String>,
    /// Requests through the public URL are refused (403); the intranet URL still serves.
    pub disable_url_internet: bool,
    pub cors: Option<CorsConfig>,
}

impl HttpTriggerConfig {
    pub fn parse(config: &str) -> Result<Self, ValidationError> {
        let raw: Raw = from_config_str(config)?;
        if raw.auth_type == AuthType::Jwt {
            return Err(ValidationError::new(
                "triggerConfig.authType",
                "jwt is not supported by Nubis yet; use anonymous, or function (requests signed with an access key)",
            ));
        }
        // authConfig only configures jwt (refused above); it stays in the stored string.
        let _ = raw.auth_config;
        if raw.methods.is_empty() {
            return Err(ValidationError::new("triggerConfig.methods", format!("must name at least one of {}", METHODS.join(", "))));
        }
        let mut methods: Vec<String> = Vec::with_capacity(raw.methods.len());
        for m in &raw.methods {
            let upper = m.to_ascii_uppercase();
            if !METHODS.contains(&upper.as_str()) {
                return Err(ValidationError::new("triggerConfig.methods", format!("'{m}' is not one of {}", METHODS.join(", "))));
            }
            if !methods.contains(&upper) {
                methods.push(upper);
            }
        }
        if let Some(cors) = &raw.cors_config {
            for m in &cors.allow_methods {
                if m != "*" && !METHODS.contains(&m.to_ascii_uppercase().as_str()) {
                    return Err(ValidationError::new(
                        "triggerConfig.corsConfig.allowMethods",
                        format!("'{m}' is not one of {} or *", METHODS.join(", ")),
                    ));
                }
            }
            for (field, values) in [
                ("allowOrigins", &cors.allow_origins),
                ("allowHeaders", &cors.allow_headers),
                ("exposeHeaders", &cors.expose_headers),
            ] {
                // They become header values.
                if values.iter().any(|v| v.is_empty() || v.bytes().any(|b| b.is_ascii_control() || b == b',')) {
                    return Err(ValidationError::new(
                        &format!("triggerConfig.corsConfig.{field}"),
                        "entries must be non-empty, without commas or control characters",
                    ));
                }
            }
        }
        Ok(Self { auth_type: raw.auth_type, methods, disable_url_internet: raw.disable_url_internet, cors: raw.cors_config })
    }

    /// Whether the trigger accepts `method` (upper-case).
    pub fn allows(&self, method: &str) -> bool {
        self.methods.iter().any(|m| m == method)
    }
}
