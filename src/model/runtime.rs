//! Runtime names users may ask for, and the image family each one runs on.

use std::fmt;
use std::str::FromStr;

/// What kind of server runs inside the instance. All obey the same HTTP contract
/// (docs/contract.md); they differ in who provides the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RuntimeKind {
    /// Nubis's Python bootstrap calls `handler(event, context)`.
    Python,
    /// Nubis's Node.js bootstrap calls `handler(event, context)`.
    Nodejs,
    /// The user's own server, started from the code package.
    CustomDebian12,
    /// The user's own image.
    CustomContainer,
}

/// A runtime name as given by the user (kept verbatim: `python3.10` stays `python3.10`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Runtime {
    name: &'static str,
    kind: RuntimeKind,
}

/// Every accepted name. The Python names all run on the one Python 3 image the project builds
/// (Debian 12's python3, 3.11), the Node.js names on Debian 12's nodejs (18.x).
const RUNTIMES: &[(&str, RuntimeKind)] = &[
    ("python3", RuntimeKind::Python),
    ("python3.9", RuntimeKind::Python),
    ("python3.10", RuntimeKind::Python),
    ("python3.12", RuntimeKind::Python),
    ("nodejs18", RuntimeKind::Nodejs),
    ("nodejs20", RuntimeKind::Nodejs),
    ("custom.debian12", RuntimeKind::CustomDebian12),
    ("custom-container", RuntimeKind::CustomContainer),
];

#[derive(Debug, thiserror::Error)]
#[error("runtime '{0}' is not supported; supported runtimes: {list}", list = supported_list())]
pub struct UnknownRuntime(pub String);

pub fn supported_list() -> String {
    RUNTIMES.iter().map(|(n, _)| *n).collect::<Vec<_>>().join(", ")
}

impl Runtime {
    pub fn name(&self) -> &'static str {
        self.name
    }
    pub fn kind(&self) -> RuntimeKind {
        self.kind
    }
    /// The `agent.images` key of the image this runtime runs on (None: the user's image).
    pub fn image_family(&self) -> Option<&'static str> {
        match self.kind {
            RuntimeKind::Python => Some("python3"),
            RuntimeKind::Nodejs => Some("nodejs"),
            RuntimeKind::CustomDebian12 => Some("custom.debian12"),
            RuntimeKind::CustomContainer => None,
        }
    }
    /// Built-in runtimes call a `module.function` handler, so its shape is checked.
    pub fn is_builtin(&self) -> bool {
        matches!(self.kind, RuntimeKind::Python | RuntimeKind::Nodejs)
    }
    /// Built-in bootstraps print their own `FC Invoke Start/End` lines; for the others the
    /// agent frames the logs itself.
    pub fn prints_log_markers(&self) -> bool {
        self.is_builtin()
    }
}

impl FromStr for Runtime {
    type Err = UnknownRuntime;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        RUNTIMES
            .iter()
            .find(|(n, _)| *n == s)
            .map(|&(name, kind)| Runtime { name, kind })
            .ok_or_else(|| UnknownRuntime(s.chars().take(64).collect()))
    }
}

impl fmt::Display for Runtime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name)
    }
}

impl serde::Serialize for Runtime {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.name)
    }
}

impl<'de> serde::Deserialize<'de> for Runtime {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_names_parse_and_keep_their_spelling() {
        let r: Runtime = "python3.10".parse().unwrap();
        assert_eq!(r.name(), "python3.10");
        assert_eq!(r.kind(), RuntimeKind::Python);
        assert_eq!("nodejs20".parse::<Runtime>().unwrap().image_family(), Some("nodejs"));
        assert_eq!("custom-container".parse::<Runtime>().unwrap().image_family(), None);
    }

    #[test]
    fn unknown_names_are_rejected_with_the_list() {
        let e = "java8".parse::<Runtime>().unwrap_err().to_string();
        assert!(e.contains("'java8'") && e.contains("python3.12"), "{e}");
        assert!("Python3".parse::<Runtime>().is_err());
        assert!("".parse::<Runtime>().is_err());
    }
}
