//! Versions, aliases and qualifiers (FC 3.0 §4.2).
//!
//! A **version** is an immutable snapshot of a function's LATEST config and code, numbered
//! 1, 2, ... per function; a number is never given twice, even after its version is deleted.
//! An **alias** names one version and may send a share of the calls to one more version (a
//! canary: `additionalVersionWeight = {"2": 0.3}` sends 30 % to version 2, the rest to the
//! alias's `versionId`). A **qualifier** says what a call runs: `LATEST` (the default), a
//! version id, or an alias, resolved per request.

use std::collections::BTreeMap;

use serde::Serialize;
use serde_json::{Map, Value};
use utoipa::ToSchema;

use super::ValidationError;
use super::function::is_valid_name;

pub const LATEST: &str = "LATEST";
const MAX_DESCRIPTION: usize = 256;

/// What a `qualifier` names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Qualifier {
    Latest,
    Version(u64),
    /// A well-formed alias name (it may not exist).
    Alias(String),
}

/// A qualifier that cannot name anything (a number with leading zeros, `a/b`, ...): answered
/// like a version that does not exist.
#[derive(Debug, Clone, thiserror::Error)]
#[error("'{0}' is not LATEST, a version id or an alias name")]
pub struct BadQualifier(pub String);

impl Qualifier {
    /// Absent or empty means LATEST. Only the canonical form of a number is a version id, so
    /// each version has one name (and `007` is no version rather than version 7).
    pub fn parse(q: Option<&str>) -> Result<Self, BadQualifier> {
        match q {
            None | Some("") | Some(LATEST) => Ok(Self::Latest),
            Some(s) if s.bytes().all(|b| b.is_ascii_digit()) => {
                parse_version_id(s).map(Self::Version).ok_or_else(|| BadQualifier(s.to_string()))
            }
            Some(s) if is_valid_name(s) => Ok(Self::Alias(s.to_string())),
            Some(s) => Err(BadQualifier(s.to_string())),
        }
    }
}

impl std::fmt::Display for Qualifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Latest => f.write_str(LATEST),
            Self::Version(v) => write!(f, "{v}"),
            Self::Alias(a) => f.write_str(a),
        }
    }
}

/// A version id in canonical form: `1` ..= `i64::MAX` (the databases store a BIGINT), no sign,
/// no leading zero.
pub fn parse_version_id(s: &str) -> Option<u64> {
    let canonical = !s.is_empty() && !s.starts_with('0') && s.bytes().all(|b| b.is_ascii_digit());
    s.parse::<u64>().ok().filter(|v| canonical && *v <= i64::MAX as u64)
}

/// A published version, as listed (its frozen config is read as a [`super::FunctionRecord`]).
#[derive(Debug, Clone, PartialEq)]
pub struct VersionRecord {
    pub function_name: String,
    pub version_id: u64,
    pub description: String,
    pub code_checksum: String,
    pub created_time: String,
    pub last_modified_time: String,
}

/// The FC `Version` document.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Version {
    pub version_id: String,
    pub description: String,
    pub created_time: String,
    pub last_modified_time: String,
}

impl VersionRecord {
    pub fn to_api(&self) -> Version {
        Version {
            version_id: self.version_id.to_string(),
            description: self.description.clone(),
            created_time: self.created_time.clone(),
            last_modified_time: self.last_modified_time.clone(),
        }
    }
}

/// Where an alias sends calls: `version_id`, except a `weight` share that goes to `additional`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Routing {
    pub version_id: u64,
    /// (version, weight in 0..=1); at most one, never the main version.
    pub additional: Option<(u64, f64)>,
}

impl Routing {
    /// The version one call runs, for `roll` drawn uniformly from `[0, 1)`: the additional
    /// version when `roll < weight` (so weight 0 never picks it, and weight 1 always does).
    pub fn pick(&self, roll: f64) -> u64 {
        match self.additional {
            Some((v, w)) if roll < w => v,
            _ => self.version_id,
        }
    }

    /// The versions this routing needs to exist.
    pub fn versions(&self) -> impl Iterator<Item = u64> {
        std::iter::once(self.version_id).chain(self.additional.map(|(v, _)| v))
    }

    fn validate(&self) -> Result<(), ValidationError> {
        if let Some((v, w)) = self.additional {
            if v == self.version_id {
                return Err(ValidationError::new(
                    "additionalVersionWeight",
                    format!("may not contain the alias's own version {v}"),
                ));
            }
            if !(0.0..=1.0).contains(&w) {
                return Err(ValidationError::new("additionalVersionWeight", format!("weight of version {v} must be between 0 and 1")));
            }
        }
        Ok(())
    }
}

/// A stored alias.
#[derive(Debug, Clone, PartialEq)]
pub struct AliasRecord {
    pub function_name: String,
    pub alias_name: String,
    pub routing: Routing,
    pub description: String,
    pub created_time: String,
    pub last_modified_time: String,
}

/// The FC `Alias` document.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Alias {
    pub alias_name: String,
    pub version_id: String,
    pub description: String,
    /// `{versionId: weight}`; empty when all calls go to `versionId`.
    pub additional_version_weight: BTreeMap<String, f64>,
    pub created_time: String,
    pub last_modified_time: String,
}

impl AliasRecord {
    pub fn to_api(&self) -> Alias {
        Alias {
            alias_name: self.alias_name.clone(),
            version_id: self.routing.version_id.to_string(),
            description: self.description.clone(),
            additional_version_weight: self.routing.additional.iter().map(|(v, w)| (v.to_string(), *w)).collect(),
            created_time: self.created_time.clone(),
            last_modified_time: self.last_modified_time.clone(),
        }
    }
}

/// The fields of a CreateAlias/UpdateAlias body; `None` = not given (UpdateAlias keeps the
/// stored value). Typed here, field by field, so a wrong JSON type is an InvalidArgument
/// naming the field.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AliasInput {
    pub alias_name: Option<String>,
    pub version_id: Option<u64>,
    pub description: Option<String>,
    /// `Some(None)`: an empty map, which removes the additional version.
    pub additional: Option<Option<(u64, f64)>>,
}

impl AliasInput {
    pub fn parse(mut body: Map<String, Value>) -> Result<Self, ValidationError> {
        // The SDKs send unset fields as null or leave them out; both mean "not given".
        body.retain(|_, v| !v.is_null());
        let alias_name = string_field(&body, "aliasName")?;
        if let Some(a) = &alias_name
            && (!is_valid_name(a) || a == LATEST)
        {
            return Err(ValidationError::new("aliasName", "must match ^[A-Za-z_][A-Za-z0-9_-]{0,127}$ and not be LATEST"));
        }
        let version_id = string_field(&body, "versionId")?
            .map(|v| {
                parse_version_id(&v).ok_or_else(|| {
                    ValidationError::new("versionId", format!("'{v}' is not a version id: aliases point at published versions"))
                })
            })
            .transpose()?;
        let description = string_field(&body, "description")?;
        check_description(description.as_deref())?;
        let additional = match body.get("additionalVersionWeight") {
            None => None,
            Some(Value::Object(m)) => Some(parse_weights(m)?),
            Some(_) => return Err(ValidationError::new("additionalVersionWeight", "must be an object {versionId: weight}")),
        };
        Ok(Self { alias_name, version_id, description, additional })
    }

    /// A new alias from a CreateAlias body.
    pub fn into_new(self, function_name: &str, now: &str) -> Result<AliasRecord, ValidationError> {
        let alias_name = self.alias_name.ok_or_else(|| ValidationError::missing("aliasName"))?;
        let version_id = self.version_id.ok_or_else(|| ValidationError::missing("versionId"))?;
        let routing = Routing { version_id, additional: self.additional.flatten() };
        routing.validate()?;
        Ok(AliasRecord {
            function_name: function_name.to_string(),
            alias_name,
            routing,
            description: self.description.unwrap_or_default(),
            created_time: now.to_string(),
            last_modified_time: now.to_string(),
        })
    }

    /// An UpdateAlias body laid over the stored alias, validated as a whole (changing only
    /// `versionId` to the canary's version is refused like a create would be).
    pub fn merged_into(&self, old: &AliasRecord, now: &str) -> Result<AliasRecord, ValidationError> {
        if let Some(a) = &self.alias_name
            && a != &old.alias_name
        {
            return Err(ValidationError::new("aliasName", "cannot be changed"));
        }
        let routing = Routing {
            version_id: self.version_id.unwrap_or(old.routing.version_id),
            additional: self.additional.unwrap_or(old.routing.additional),
        };
        routing.validate()?;
        Ok(AliasRecord {
            routing,
            description: self.description.clone().unwrap_or_else(|| old.description.clone()),
            last_modified_time: now.to_string(),
            ..old.clone()
        })
    }
}

/// PublishFunctionVersion's `description`.
pub fn check_description(d: Option<&str>) -> Result<(), ValidationError> {
    match d {
        Some(d) if d.chars().count() > MAX_DESCRIPTION => {
            Err(ValidationError::new("description", format!("must be at most {MAX_DESCRIPTION} characters")))
        }
        _ => Ok(()),
    }
}

fn string_field(body: &Map<String, Value>, field: &str) -> Result<Option<String>, ValidationError> {
    match body.get(field) {
        None => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(ValidationError::new(field, "must be a string")),
    }
}

fn parse_weights(m: &Map<String, Value>) -> Result<Option<(u64, f64)>, ValidationError> {
    let field = "additionalVersionWeight";
    if m.len() > 1 {
        return Err(ValidationError::new(field, "may name at most one additional version"));
    }
    let Some((k, w)) = m.iter().next() else { return Ok(None) };
    let v = parse_version_id(k).ok_or_else(|| ValidationError::new(field, format!("'{k}' is not a version id")))?;
    let w = w.as_f64().ok_or_else(|| ValidationError::new(field, format!("weight of version {v} must be a number")))?;
    Ok(Some((v, w)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn input(v: Value) -> Result<AliasInput, ValidationError> {
        AliasInput::parse(v.as_object().unwrap().clone())
    }

    #[test]
    fn qualifiers() {
        assert_eq!(Qualifier::parse(None).unwrap(), Qualifier::Latest);
        assert_eq!(Qualifier::parse(Some("")).unwrap(), Qualifier::Latest);
        assert_eq!(Qualifier::parse(Some("LATEST")).unwrap(), Qualifier::Latest);
        assert_eq!(Qualifier::parse(Some("12")).unwrap(), Qualifier::Version(12));
        assert_eq!(Qualifier::parse(Some("prod")).unwrap(), Qualifier::Alias("prod".into()));
        for bad in ["0", "007", "99999999999999999999", "9223372036854775808", "a/b", "-1", "a.b"] {
            assert!(Qualifier::parse(Some(bad)).is_err(), "{bad}");
        }
        assert_eq!(Qualifier::parse(Some("9223372036854775807")).unwrap(), Qualifier::Version(i64::MAX as u64));
        assert_eq!(Qualifier::Version(3).to_string(), "3");
    }

    #[test]
    fn pick_follows_the_weight() {
        let r = Routing { version_id: 1, additional: Some((2, 0.3)) };
        assert_eq!(r.pick(0.0), 2);
        assert_eq!(r.pick(0.2999), 2);
        assert_eq!(r.pick(0.3), 1);
        assert_eq!(r.pick(0.9999), 1);
        let never = Routing { version_id: 1, additional: Some((2, 0.0)) };
        let always = Routing { version_id: 1, additional: Some((2, 1.0)) };
        assert!((0..100).map(|i| i as f64 / 100.0).all(|x| never.pick(x) == 1 && always.pick(x) == 2));
        assert_eq!(Routing { version_id: 4, additional: None }.pick(0.0), 4);
    }

    #[test]
    fn create_alias_validation() {
        let ok = input(json!({"aliasName": "prod", "versionId": "1", "additionalVersionWeight": {"2": 0.25}, "description": "d"}))
            .unwrap()
            .into_new("f", "t")
            .unwrap();
        assert_eq!(ok.routing, Routing { version_id: 1, additional: Some((2, 0.25)) });
        assert_eq!(ok.to_api().additional_version_weight, BTreeMap::from([("2".to_string(), 0.25)]));
        let empty = input(json!({"aliasName": "a", "versionId": "1", "additionalVersionWeight": {}})).unwrap().into_new("f", "t").unwrap();
        assert_eq!(empty.routing.additional, None);
        let cases = [
            (json!({"versionId": "1"}), "aliasName"),
            (json!({"aliasName": "LATEST", "versionId": "1"}), "aliasName"),
            (json!({"aliasName": "1a", "versionId": "1"}), "aliasName"),
            (json!({"aliasName": 5, "versionId": "1"}), "aliasName"),
            (json!({"aliasName": "a"}), "versionId"),
            (json!({"aliasName": "a", "versionId": "LATEST"}), "versionId"),
            (json!({"aliasName": "a", "versionId": 1}), "versionId"),
            (json!({"aliasName": "a", "versionId": "01"}), "versionId"),
            (json!({"aliasName": "a", "versionId": "1", "description": "d".repeat(257)}), "description"),
            (json!({"aliasName": "a", "versionId": "1", "additionalVersionWeight": {"1": 0.5}}), "additionalVersionWeight"),
            (json!({"aliasName": "a", "versionId": "1", "additionalVersionWeight": {"2": 1.5}}), "additionalVersionWeight"),
            (json!({"aliasName": "a", "versionId": "1", "additionalVersionWeight": {"2": -0.1}}), "additionalVersionWeight"),
            (json!({"aliasName": "a", "versionId": "1", "additionalVersionWeight": {"2": "0.1"}}), "additionalVersionWeight"),
            (json!({"aliasName": "a", "versionId": "1", "additionalVersionWeight": {"x": 0.1}}), "additionalVersionWeight"),
            (json!({"aliasName": "a", "versionId": "1", "additionalVersionWeight": {"2": 0.1, "3": 0.1}}), "additionalVersionWeight"),
            (json!({"aliasName": "a", "versionId": "1", "additionalVersionWeight": [1]}), "additionalVersionWeight"),
        ];
        for (body, field) in cases {
            let err = input(body.clone()).and_then(|i| i.into_new("f", "t")).expect_err(&body.to_string());
            assert_eq!(err.field, field, "{body}: {err}");
        }
    }

    #[test]
    fn update_alias_is_partial_and_revalidated() {
        let old = input(json!({"aliasName": "prod", "versionId": "1", "additionalVersionWeight": {"2": 0.5}, "description": "d"}))
            .unwrap()
            .into_new("f", "t0")
            .unwrap();
        let u = input(json!({"description": "new"})).unwrap().merged_into(&old, "t1").unwrap();
        assert_eq!((u.routing, u.description.as_str(), u.created_time.as_str()), (old.routing, "new", "t0"));
        let cleared = input(json!({"additionalVersionWeight": {}})).unwrap().merged_into(&old, "t1").unwrap();
        assert_eq!(cleared.routing.additional, None);
        // Moving the main version onto the canary's version is refused.
        assert!(input(json!({"versionId": "2"})).unwrap().merged_into(&old, "t1").is_err());
        assert!(input(json!({"aliasName": "other"})).unwrap().merged_into(&old, "t1").is_err());
        let moved = input(json!({"versionId": "3"})).unwrap().merged_into(&old, "t1").unwrap();
        assert_eq!(moved.routing, Routing { version_id: 3, additional: Some((2, 0.5)) });
    }
}
