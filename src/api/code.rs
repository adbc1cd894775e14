//! Code download links handed out by GetFunctionCode: unsigned GETs carrying an expiry and an
//! HMAC over (function, checksum, expiry), so a plain HTTP client can fetch the zip, as with
//! FC's pre-signed OSS URLs.

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use super::AppState;
use super::error::ApiError;
use super::functions::code_link_mac;
use hmac::Mac;

#[derive(Deserialize)]
pub struct LinkParams {
    checksum: String,
    expires: i64,
    signature: String,
}

pub async fn download(
    State(st): State<AppState>,
    Path(name): Path<String>,
    q: Result<Query<LinkParams>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let denied = || ApiError::new(StatusCode::FORBIDDEN, "AccessDenied", "the code link is invalid or has expired");
    let Query(q) = q.map_err(|_| denied())?;
    // verify_slice compares in constant time: the link is a bearer credential.
    let valid = hex::decode(&q.signature)
        .is_ok_and(|sig| code_link_mac(&st.code_url_key, &name, &q.checksum, q.expires).verify_slice(&sig).is_ok());
    if !valid || q.expires < chrono::Utc::now().timestamp() {
        return Err(denied());
    }
    let zip = st.code.get(&q.checksum).await?;
    Ok(([("content-type", "application/zip")], zip).into_response())
}
