//! List pagination shared by every List* route: `limit` bounds and opaque `nextToken`s (the
//! last row's sort key, base64url), so every list refuses bad input with the same words.

use base64::Engine;

use super::error::ApiError;

/// `limit` within `1..=max`, `default` when absent.
pub fn limit(v: Option<u32>, default: u32, max: u32) -> Result<u32, ApiError> {
    let v = v.unwrap_or(default);
    if (1..=max).contains(&v) { Ok(v) } else { Err(ApiError::invalid(format!("limit must be between 1 and {max}"))) }
}

pub fn encode(key: &str) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(key)
}

/// The sort key inside a token this server issued; None when there is no token.
pub fn decode(token: Option<&str>) -> Result<Option<String>, ApiError> {
    match token.filter(|t| !t.is_empty()) {
        None => Ok(None),
        Some(t) => base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(t)
            .ok()
            .and_then(|b| String::from_utf8(b).ok())
            .map(Some)
            .ok_or_else(bad_token),
    }
}

pub fn bad_token() -> ApiError {
    ApiError::invalid("nextToken is not a token this server issued")
}
