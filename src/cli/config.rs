//! Where the CLI finds its endpoint and access key, and `nubis configure`, which writes them.
//!
//! Order, first found wins: `--endpoint` / env `NUBIS_ENDPOINT`, then the profile's `endpoint`,
//! then `http://127.0.0.1:9000` (the server's default listener). The access key comes as a pair,
//! never mixed: env `NUBIS_ACCESS_KEY_ID` + `NUBIS_ACCESS_KEY_SECRET`, else the profile's
//! `access_key_id` + `access_key_secret`. There is no flag for the secret: command lines show
//! in `ps` to every user of the machine.
//!
//! The file (`$NUBIS_CLI_CONFIG`, else `$XDG_CONFIG_HOME/nubis/cli.toml`, else
//! `~/.config/nubis/cli.toml`) has one table per profile; `--profile` / `NUBIS_PROFILE` picks one,
//! `default` otherwise.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::error::CliError;

pub const DEFAULT_ENDPOINT: &str = "http://127.0.0.1:9000";
pub const DEFAULT_PROFILE: &str = "default";

/// One profile of the config file; every key optional (env can supply the rest).
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Profile {
    pub endpoint: Option<String>,
    pub access_key_id: Option<String>,
    pub access_key_secret: Option<String>,
}

/// A secret that never shows in `Debug` output or error messages.
#[derive(Clone)]
pub struct Secret(String);

impl Secret {
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(..)")
    }
}

/// What a command needs to call the API.
#[derive(Debug, Clone)]
pub struct Credentials {
    pub endpoint: String,
    pub access_key_id: String,
    pub access_key_secret: Secret,
}

/// The config file's path; None when neither `NUBIS_CLI_CONFIG`, `XDG_CONFIG_HOME` nor `HOME`
/// is set.
pub fn config_path(env: &dyn Fn(&str) -> Option<String>) -> Option<PathBuf> {
    let nonempty = |k: &str| env(k).filter(|v| !v.is_empty());
    if let Some(p) = nonempty("NUBIS_CLI_CONFIG") {
        return Some(PathBuf::from(p));
    }
    let base = nonempty("XDG_CONFIG_HOME")
        .map(PathBuf::from)
        .or_else(|| nonempty("HOME").map(|h| Path::new(&h).join(".config")))?;
    Some(base.join("nubis").join("cli.toml"))
}

/// The profiles of the file; an absent file has none.
pub fn read_profiles(path: &Path) -> Result<BTreeMap<String, Profile>, CliError> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(BTreeMap::new()),
        Err(e) => return Err(CliError::io(path, e)),
    };
    use figment::providers::{Format as _, Toml};
    figment::Figment::from(Toml::string(&text))
        .extract()
        .map_err(|e| CliError::Config(format!("{}: {e}", path.display())))
}

/// Picks endpoint and key from the flag, the environment and the profile (see the module doc).
/// `profile_named` says whether the user chose the profile: a chosen profile must exist.
pub fn resolve(
    endpoint_flag: Option<&str>,
    env: &dyn Fn(&str) -> Option<String>,
    profiles: &BTreeMap<String, Profile>,
    profile: &str,
    profile_named: bool,
) -> Result<Credentials, CliError> {
    let empty = Profile::default();
    let p = match profiles.get(profile) {
        Some(p) => p,
        None if profile_named => {
            return Err(CliError::Config(format!(
                "profile '{profile}' is not in the CLI config file (create it with `nubis configure --profile {profile}`)"
            )));
        }
        None => &empty,
    };
    let nonempty = |v: Option<String>| v.filter(|s| !s.is_empty());
    let endpoint = endpoint_flag
        .map(str::to_string)
        .or_else(|| nonempty(env("NUBIS_ENDPOINT")))
        .or_else(|| p.endpoint.clone())
        .unwrap_or_else(|| DEFAULT_ENDPOINT.to_string());
    let (id, secret) = match (nonempty(env("NUBIS_ACCESS_KEY_ID")), nonempty(env("NUBIS_ACCESS_KEY_SECRET"))) {
        (Some(id), Some(secret)) => (id, secret),
        (Some(_), None) | (None, Some(_)) => {
            return Err(CliError::Config(
                "set both NUBIS_ACCESS_KEY_ID and NUBIS_ACCESS_KEY_SECRET, or neither".into(),
            ));
        }
        (None, None) => match (p.access_key_id.clone(), p.access_key_secret.clone()) {
            (Some(id), Some(secret)) => (id, secret),
            _ => {
                return Err(CliError::Config(format!(
                    "no access key: set NUBIS_ACCESS_KEY_ID and NUBIS_ACCESS_KEY_SECRET, or run `nubis configure` (profile '{profile}')"
                )));
            }
        },
    };
    // The id goes into the Authorization header as is.
    if !id.bytes().all(|b| b.is_ascii_graphic() && b != b',') {
        return Err(CliError::Config("the access key id may only hold printable ASCII characters".into()));
    }
    Ok(Credentials { endpoint: normalize_endpoint(&endpoint)?, access_key_id: id, access_key_secret: Secret(secret) })
}

/// `host:port` or an http(s) URL → the URL without a trailing `/`.
pub fn normalize_endpoint(raw: &str) -> Result<String, CliError> {
    let raw = raw.trim();
    // Without a scheme, `localhost:9000` would parse as scheme "localhost".
    let with_scheme = if raw.contains("://") { raw.to_string() } else { format!("http://{raw}") };
    let url = url::Url::parse(&with_scheme)
        .map_err(|e| CliError::Config(format!("endpoint '{raw}' is not a URL: {e}")))?;
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
        return Err(CliError::Config(format!("endpoint '{raw}' must be an http:// or https:// URL with a host")));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(CliError::Config(format!("endpoint '{raw}' must not carry a query or fragment")));
    }
    Ok(url.as_str().trim_end_matches('/').to_string())
}

/// Profile names are TOML bare keys, so the file can be written without quoting them.
pub fn check_profile_name(name: &str) -> Result<(), CliError> {
    if !name.is_empty() && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_') {
        Ok(())
    } else {
        Err(CliError::Usage(format!("profile name '{name}' may only hold letters, digits, '-' and '_'")))
    }
}

/// The file's text for these profiles.
pub fn render_profiles(profiles: &BTreeMap<String, Profile>) -> String {
    // A JSON string literal is a valid TOML basic string (same escapes, \uXXXX included).
    let q = |s: &str| serde_json::Value::String(s.to_string()).to_string();
    let mut out = String::from("# Nubis CLI profiles (nubis configure). Keep this file private: it holds secrets.\n");
    for (name, p) in profiles {
        out.push_str(&format!("\n[{name}]\n"));
        for (key, v) in [
            ("endpoint", &p.endpoint),
            ("access_key_id", &p.access_key_id),
            ("access_key_secret", &p.access_key_secret),
        ] {
            if let Some(v) = v {
                out.push_str(&format!("{key} = {}\n", q(v)));
            }
        }
    }
    out
}

/// Writes the file with mode 0600 (its directory 0700 when created), replacing it atomically
/// so a crash never leaves half a file of secrets.
pub fn write_profiles(path: &Path, profiles: &BTreeMap<String, Profile>) -> Result<(), CliError> {
    use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    std::fs::DirBuilder::new().recursive(true).mode(0o700).create(dir).map_err(|e| CliError::io(dir, e))?;
    let tmp = dir.join(format!(".cli.toml.{}.tmp", std::process::id()));
    let write = || -> std::io::Result<()> {
        let mut f = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(&tmp)?;
        f.write_all(render_profiles(profiles).as_bytes())?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    };
    write().map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        CliError::io(path, e)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env_of(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let m: BTreeMap<String, String> = pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        move |k| m.get(k).cloned()
    }

    fn profile(endpoint: &str, id: &str, secret: &str) -> Profile {
        Profile {
            endpoint: Some(endpoint.into()),
            access_key_id: Some(id.into()),
            access_key_secret: Some(secret.into()),
        }
    }

    #[test]
    fn flag_beats_env_beats_profile_and_keys_come_in_pairs() {
        let profiles = BTreeMap::from([("default".to_string(), profile("10.0.0.1:9000", "NBFILE", "file-secret"))]);
        let env = env_of(&[("NUBIS_ENDPOINT", "https://env.example:443/"), ("NUBIS_ACCESS_KEY_ID", "NBENV"), ("NUBIS_ACCESS_KEY_SECRET", "env-secret")]);
        let c = resolve(Some("127.0.0.1:1"), &env, &profiles, "default", false).unwrap();
        assert_eq!((c.endpoint.as_str(), c.access_key_id.as_str(), c.access_key_secret.expose()), ("http://127.0.0.1:1", "NBENV", "env-secret"));
        let c = resolve(None, &env, &profiles, "default", false).unwrap();
        assert_eq!(c.endpoint, "https://env.example");
        let c = resolve(None, &env_of(&[]), &profiles, "default", false).unwrap();
        assert_eq!((c.endpoint.as_str(), c.access_key_id.as_str(), c.access_key_secret.expose()), ("http://10.0.0.1:9000", "NBFILE", "file-secret"));
        // Half a pair in env never borrows the other half from the file.
        let half = env_of(&[("NUBIS_ACCESS_KEY_ID", "NBENV")]);
        assert!(matches!(resolve(None, &half, &profiles, "default", false), Err(CliError::Config(_))));
        assert!(format!("{c:?}").contains("Secret(..)") && !format!("{c:?}").contains("file-secret"));
    }

    #[test]
    fn missing_key_and_unknown_named_profile_are_errors() {
        let none = BTreeMap::new();
        assert!(matches!(resolve(None, &env_of(&[]), &none, "default", false), Err(CliError::Config(_))));
        let env = env_of(&[("NUBIS_ACCESS_KEY_ID", "NB1"), ("NUBIS_ACCESS_KEY_SECRET", "s")]);
        assert_eq!(resolve(None, &env, &none, "default", false).unwrap().endpoint, DEFAULT_ENDPOINT);
        assert!(matches!(resolve(None, &env, &none, "prod", true), Err(CliError::Config(_))));
    }

    #[test]
    fn endpoints_are_normalized_or_refused() {
        assert_eq!(normalize_endpoint("localhost:9000").unwrap(), "http://localhost:9000");
        assert_eq!(normalize_endpoint("https://fc.example/base/").unwrap(), "https://fc.example/base");
        for bad in ["ftp://x", "http://", "http://h:1/?a=b", "::"] {
            assert!(normalize_endpoint(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn config_path_order() {
        let p = |pairs: &[(&str, &str)]| config_path(&env_of(pairs));
        assert_eq!(p(&[("HOME", "/h")]), Some(PathBuf::from("/h/.config/nubis/cli.toml")));
        assert_eq!(p(&[("HOME", "/h"), ("XDG_CONFIG_HOME", "/x")]), Some(PathBuf::from("/x/nubis/cli.toml")));
        assert_eq!(p(&[("HOME", "/h"), ("NUBIS_CLI_CONFIG", "/c.toml")]), Some(PathBuf::from("/c.toml")));
        assert_eq!(p(&[]), None);
    }

    #[test]
    fn written_file_reads_back_with_mode_0600() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/cli.toml");
        let profiles = BTreeMap::from([
            ("default".to_string(), profile("http://127.0.0.1:9000", "NB1", "s\"ec\\ret\n")),
            ("other".to_string(), Profile { endpoint: Some("h:1".into()), ..Default::default() }),
        ]);
        write_profiles(&path, &profiles).unwrap();
        assert_eq!(read_profiles(&path).unwrap(), profiles);
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        assert!(read_profiles(&dir.path().join("absent.toml")).unwrap().is_empty());
        assert!(check_profile_name("prod-1").is_ok() && check_profile_name("a b").is_err() && check_profile_name("").is_err());
    }
}
