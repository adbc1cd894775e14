//! `qualifier` on the API: `LATEST` (or absent), a version id, or an alias. Resolved to the
//! record that runs, through the [`super::FunctionCache`], so a warm call through a version or
//! an alias does no database round trip either. An alias with an additional version picks
//! per call.

use std::sync::Arc;

use super::AppState;
use super::error::ApiError;
use super::functions::{cached, load};
use crate::model::FunctionRecord;
use crate::model::version::Qualifier;

/// What a qualifier resolved to.
pub struct Resolved {
    /// LATEST or the version that runs.
    pub f: Arc<FunctionRecord>,
    /// What the caller named, in canonical form (`LATEST` when absent).
    pub qualifier: String,
}

/// Which version of an alias to take.
#[derive(Debug, Clone, Copy)]
pub enum Pick {
    /// Per call, by the alias's weights (invocations).
    Weighted,
    /// The alias's own `versionId` (reads such as GetFunction, which show one version).
    Main,
}

/// Resolve `q` for function `name`. A missing function is FunctionNotFound whatever the
/// qualifier; then VersionNotFound or AliasNotFound.
pub async fn resolve(st: &AppState, name: &str, q: Option<&str>, pick: Pick) -> Result<Resolved, ApiError> {
    let parsed = match Qualifier::parse(q) {
        Ok(p) => p,
        Err(bad) => {
            load(st, name).await?;
            return Err(ApiError::version_not_found(name, &bad.0));
        }
    };
    let qualifier = parsed.to_string();
    let version = match &parsed {
        Qualifier::Latest => return Ok(Resolved { f: cached(st, name).await?, qualifier }),
        Qualifier::Version(v) => *v,
        Qualifier::Alias(a) => {
            let alias = match st.functions.get_alias(name, a) {
                Some(alias) => alias,
                None => match st.store.get_alias(name, a).await? {
                    Some(alias) => {
                        let alias = Arc::new(alias);
                        st.functions.put_alias(alias.clone());
                        alias
                    }
                    None => {
                        load(st, name).await?;
                        return Err(ApiError::alias_not_found(name, a));
                    }
                },
            };
            match pick {
                Pick::Weighted => alias.routing.pick(rand::random::<f64>()),
                Pick::Main => alias.routing.version_id,
            }
        }
    };
    Ok(Resolved { f: version_record(st, name, version).await?, qualifier })
}

/// For reads and configs (GetFunction, GetFunctionCode, async invoke configs): LATEST straight
/// from the store, so a read shows what is stored now even where the cache may lag (cluster
/// mode); a version is immutable; an alias stands for its own `versionId`.
pub async fn resolve_for_read(st: &AppState, name: &str, q: Option<&str>) -> Result<Resolved, ApiError> {
    match q {
        None | Some("") | Some(crate::model::version::LATEST) => {
            Ok(Resolved { f: Arc::new(load(st, name).await?), qualifier: crate::model::version::LATEST.to_string() })
        }
        q => resolve(st, name, q, Pick::Main).await,
    }
}

/// A version's record, from the cache or the store.
async fn version_record(st: &AppState, name: &str, version: u64) -> Result<Arc<FunctionRecord>, ApiError> {
    if let Some(f) = st.functions.get_at(name, Some(version)) {
        return Ok(f);
    }
    match st.store.get_function_at(name, version).await? {
        Some(f) => {
            let f = Arc::new(f);
            st.functions.put(f.clone());
            Ok(f)
        }
        None => {
            load(st, name).await?;
            Err(ApiError::version_not_found(name, version))
        }
    }
}
