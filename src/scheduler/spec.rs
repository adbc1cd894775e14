//! From a function record to the instance spec a node runs: image, command, environment and
//! the headers every call into the instance carries (docs/contract.md).

use std::collections::BTreeMap;
use std::time::Duration;

use axum::http::{HeaderMap, HeaderName, HeaderValue};

use crate::agent::InstanceSpec;
use crate::model::{FunctionRecord, RuntimeKind};

/// What the platform adds to every instance, from server config.
#[derive(Debug, Clone)]
pub struct Platform {
    pub region: String,
    pub account_id: String,
    pub images: BTreeMap<String, String>,
}

#[derive(Debug, thiserror::Error, serde::Serialize, serde::Deserialize)]
#[error("no image configured for runtime family '{0}' (agent.images)")]
pub struct NoImage(pub String);

const DEFAULT_INIT_TIMEOUT_SECS: u32 = 3;

fn header(map: &mut HeaderMap, name: &'static str, value: &str) {
    // Values come from validated config; a value that is not a legal header is left out
    // rather than failing the start.
    if let Ok(v) = HeaderValue::from_str(value) {
        map.insert(HeaderName::from_static(name), v);
    }
}

pub fn instance_spec(f: &FunctionRecord, instance_id: &str, p: &Platform) -> Result<InstanceSpec, NoImage> {
    let c = &f.config;
    let (image, entrypoint, cmd) = match c.runtime.kind() {
        RuntimeKind::CustomContainer => {
            let cc = c.custom_container_config.as_ref().expect("validated: custom-container has its config");
            let non_empty = |v: &Vec<String>| (!v.is_empty()).then(|| v.clone());
            (cc.image.clone(), non_empty(&cc.entrypoint), non_empty(&cc.command))
        }
        _ => {
            let family = c.runtime.image_family().expect("non-container runtimes have a family");
            let image = p.images.get(family).cloned().ok_or_else(|| NoImage(family.to_string()))?;
            let cmd = (c.runtime.kind() == RuntimeKind::CustomDebian12).then(|| {
                let rc = c.custom_runtime_config.as_ref();
                let mut cmd = rc.map(|r| r.command.clone()).filter(|v| !v.is_empty()).unwrap_or_else(|| vec!["/code/bootstrap".into()]);
                cmd.extend(rc.map(|r| r.args.clone()).unwrap_or_default());
                cmd
            });
            (image, None, cmd)
        }
    };
    let port = c.port().to_string();
    // An instance runs one version (or LATEST); the alias a call came through, if any, is
    // sent per request by the invoker (x-fc-qualifier).
    let version = f.version_name();
    let init = c.initializer();
    let init_timeout = init.map(|h| h.timeout.unwrap_or(DEFAULT_INIT_TIMEOUT_SECS));
    let mut env: Vec<(String, String)> = c.environment_variables.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
    let platform_env = [
        ("FC_SERVER_PORT", port.clone()),
        ("FC_CUSTOM_LISTEN_PORT", port.clone()),
        ("FC_FUNCTION_NAME", f.name.to_string()),
        ("FC_FUNCTION_HANDLER", c.handler.clone()),
        ("FC_FUNCTION_MEMORY_SIZE", c.memory_size.to_string()),
        ("FC_TIMEOUT", c.timeout.to_string()),
        ("FC_RUNTIME", c.runtime.name().to_string()),
        ("FC_REGION", p.region.clone()),
        ("FC_ACCOUNT_ID", p.account_id.clone()),
        ("FC_INSTANCE_ID", instance_id.to_string()),
        ("FC_FUNC_CODE_PATH", "/code/".to_string()),
        ("FC_QUALIFIER", version.clone()),
        ("PYTHONUNBUFFERED", "1".to_string()),
    ];
    // Platform variables win over user ones of the same name: the contract depends on them.
    env.retain(|(k, _)| !platform_env.iter().any(|(p, _)| p == k));
    env.extend(platform_env.into_iter().map(|(k, v)| (k.to_string(), v)));
    if let (Some(h), Some(t)) = (init, init_timeout) {
        env.push(("FC_INITIALIZER_HANDLER".into(), h.handler.clone().unwrap_or_default()));
        env.push(("FC_INITIALIZATION_TIMEOUT".into(), t.to_string()));
    }
    let mut headers = HeaderMap::new();
    header(&mut headers, "x-fc-function-name", f.name.as_str());
    header(&mut headers, "x-fc-function-handler", &c.handler);
    header(&mut headers, "x-fc-function-memory", &c.memory_size.to_string());
    header(&mut headers, "x-fc-function-timeout", &c.timeout.to_string());
    header(&mut headers, "x-fc-region", &p.region);
    header(&mut headers, "x-fc-account-id", &p.account_id);
    header(&mut headers, "x-fc-qualifier", &version);
    header(&mut headers, "x-fc-version-id", &version);
    if let (Some(h), Some(t)) = (init, init_timeout) {
        header(&mut headers, "x-fc-function-initializer", h.handler.as_deref().unwrap_or(""));
        header(&mut headers, "x-fc-initialization-timeout", &t.to_string());
    }
    Ok(InstanceSpec {
        instance_id: instance_id.to_string(),
        function_name: f.name.to_string(),
        version: f.version,
        revision: f.revision,
        image,
        entrypoint,
        cmd,
        code_checksum: (c.runtime.kind() != RuntimeKind::CustomContainer && !f.code_checksum.is_empty())
            .then(|| f.code_checksum.clone()),
        env,
        memory_mb: c.memory_size,
        cpu: c.cpu,
        port: c.port(),
        health_path: c.health_check().and_then(|h| h.http_get_url.clone()),
        concurrency: c.instance_concurrency,
        prints_log_markers: c.runtime.prints_log_markers(),
        initializer_timeout: init_timeout.map(|t| Duration::from_secs(t.into())),
        base_headers: headers,
    })
}
