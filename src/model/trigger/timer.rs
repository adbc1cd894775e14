//! The config of a `timer` trigger (fc-triggers.md §2):
//! `{"cronExpression": "...", "payload": "<string>", "enable": bool}`.
//!
//! Checked here: the fields and their types, a non-empty expression, the payload's size. The
//! expression's grammar (`@every 5m`, 6-field cron with seconds, `CRON_TZ=` prefix) belongs to
//! the timer engine.

use serde::Deserialize;

use super::from_config_str;
use crate::model::ValidationError;

/// A timer's payload is delivered like an async event: FC limits it to 128 KB.
pub const MAX_PAYLOAD_BYTES: usize = 128 << 10;

/// A validated timer trigger config.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TimerTriggerConfig {
    /// Required (the fc3 tool's schema), non-empty.
    pub cron_expression: String,
    /// Passed verbatim as the event's `payload`; absent: none.
    #[serde(default)]
    pub payload: Option<String>,
    /// Required (the fc3 tool's schema): false keeps the trigger but stops it firing.
    pub enable: bool,
}

impl TimerTriggerConfig {
    pub fn parse(config: &str) -> Result<Self, ValidationError> {
        let c: Self = from_config_str(config)?;
        if c.cron_expression.trim().is_empty() {
            return Err(ValidationError::new("triggerConfig.cronExpression", "must not be empty"));
        }
        if c.payload.as_ref().is_some_and(|p| p.len() > MAX_PAYLOAD_BYTES) {
            return Err(ValidationError::new("triggerConfig.payload", format!("must be at most {MAX_PAYLOAD_BYTES} bytes")));
        }
        Ok(c)
    }
}
