//! Tracing setup of the `starling` binary and the runtime log-level control the admin API uses.
//!
//! The level filter sits behind a `tracing_subscriber::reload` layer, so `PUT /api/v1/log-level`
//! (and `starling ctl log-level`) changes it without a restart.

use std::sync::{Arc, Mutex};

use tracing_subscriber::{
    layer::SubscriberExt, reload, util::SubscriberInitExt, EnvFilter, Registry,
};

use crate::config::{LogFormat, NodeConfig};

/// The reloadable level filter layer, to put first on a [`Registry`].
pub type ReloadableFilter = reload::Layer<EnvFilter, Registry>;

/// Changes the log filter of a running node.
#[derive(Clone)]
pub struct LogControl {
    handle: reload::Handle<EnvFilter, Registry>,
    /// The directives in force, as last set (an `EnvFilter` does not print them back reliably).
    current: Arc<Mutex<String>>,
}

/// Why a log level change was refused.
#[derive(Debug, thiserror::Error)]
pub enum LogLevelError {
    /// The directives do not parse.
    #[error("invalid log filter {directives:?}: {reason}")]
    Invalid {
        /// What was asked for.
        directives: String,
        /// Why it does not parse.
        reason: String,
    },
    /// The subscriber holding the filter is gone.
    #[error("the log subscriber is gone: {0}")]
    Unavailable(String),
}

impl LogControl {
    /// Creates a reloadable filter with `directives` (e.g. `info,starling_core=debug`) and its
    /// control. The layer must be installed (or at least kept alive) for changes to apply.
    ///
    /// # Errors
    /// Returns [`LogLevelError::Invalid`] if the directives do not parse.
    pub fn new(directives: &str) -> Result<(ReloadableFilter, LogControl), LogLevelError> {
        let filter = parse_filter(directives)?;
        let (layer, handle) = reload::Layer::new(filter);
        let control = LogControl {
            handle,
            current: Arc::new(Mutex::new(directives.to_string())),
        };
        Ok((layer, control))
    }

    /// Returns the directives in force.
    pub fn level(&self) -> String {
        self.current
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    /// Replaces the filter with `directives`.
    ///
    /// # Errors
    /// Returns [`LogLevelError`] if the directives do not parse or the subscriber is gone.
    pub fn set_level(&self, directives: &str) -> Result<(), LogLevelError> {
        let filter = parse_filter(directives)?;
        self.handle
            .reload(filter)
            .map_err(|error| LogLevelError::Unavailable(error.to_string()))?;
        *self
            .current
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = directives.to_string();
        tracing::info!(directives, "log filter changed");
        Ok(())
    }
}

fn parse_filter(directives: &str) -> Result<EnvFilter, LogLevelError> {
    let invalid = |reason: String| LogLevelError::Invalid {
        directives: directives.to_string(),
        reason,
    };
    if directives.trim().is_empty() {
        return Err(invalid("the filter is empty".to_string()));
    }
    EnvFilter::builder()
        .parse(directives)
        .map_err(|error| invalid(error.to_string()))
}

/// Installs the global tracing subscriber: `RUST_LOG` if set, otherwise `log.level`; human or
/// JSON lines on stderr. Returns the control of its level filter.
///
/// # Errors
/// Returns an error if the filter does not parse or a global subscriber is already installed.
pub fn init(config: &NodeConfig) -> anyhow::Result<LogControl> {
    let directives = std::env::var("RUST_LOG")
        .ok()
        .filter(|value| !value.trim().is_empty())
        .unwrap_or_else(|| config.log_level.clone());
    let (filter, control) = LogControl::new(&directives)?;
    let registry = tracing_subscriber::registry().with(filter);
    let fmt = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    match config.log_format {
        LogFormat::Text => registry.with(fmt).try_init()?,
        LogFormat::Json => registry.with(fmt.json()).try_init()?,
    }
    Ok(control)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn level_changes_apply_and_bad_filters_are_refused() {
        let (layer, control) = LogControl::new("info").unwrap();
        let _subscriber = tracing_subscriber::registry().with(layer);
        assert_eq!(control.level(), "info");
        control.set_level("debug,starling_core=trace").unwrap();
        assert_eq!(control.level(), "debug,starling_core=trace");
        let error = control.set_level("info,starling_core=loud").unwrap_err();
        assert!(matches!(error, LogLevelError::Invalid { .. }), "{error}");
        assert!(matches!(
            control.set_level("  "),
            Err(LogLevelError::Invalid { .. })
        ));
        assert_eq!(control.level(), "debug,starling_core=trace");
    }
}
