//! Log output: tracing events as text or JSON lines on stderr, filtered by `--log-filter`,
//! else `RUST_LOG`, else `info`. The filter can be changed by a reload; the format cannot.
//! Nothing that carries a credential is ever put in an event.

use std::io::IsTerminal;
use std::sync::OnceLock;

use tracing::level_filters::LevelFilter;
use tracing_log::AsLog;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{reload, EnvFilter, Registry};

use crate::config::LogFormat;

/// What changes the installed filter, once [`init`] has installed one.
static FILTER: OnceLock<reload::Handle<EnvFilter, Registry>> = OnceLock::new();

/// Installs the global subscriber; a second call (tests) is a no-op.
pub fn init(format: LogFormat, filter: Option<&str>) {
    let (filter, handle) = reload::Layer::new(filter_of(filter));
    let output = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        // Colour codes only for a person at a terminal, not in files or journald.
        .with_ansi(std::io::stderr().is_terminal());
    let registry = tracing_subscriber::registry().with(filter);
    let installed = match format {
        LogFormat::Text => registry.with(output).try_init(),
        LogFormat::Json => registry.with(output.json().flatten_event(true)).try_init(),
    };
    if installed.is_ok() {
        let _ = FILTER.set(handle);
    }
}

/// Replaces the filter (a reload): `filter`, else `RUST_LOG`, else `info`.
pub fn set_filter(filter: Option<&str>) -> Result<(), String> {
    // Not installed by `init` (a test's own subscriber): nothing to change.
    let Some(handle) = FILTER.get() else {
        return Ok(());
    };
    let filter = filter_of(filter);
    let most = filter.max_level_hint().unwrap_or(LevelFilter::TRACE);
    handle
        .reload(filter)
        .map_err(|e| format!("cannot change the log filter: {e}"))?;
    // `log` records (rustls, hyper-rustls) are cut by `log`'s own level before tracing sees
    // them; `init` set it from the first filter.
    tracing_log::log::set_max_level(most.as_log());
    Ok(())
}

/// The filter `--log-filter` gives (checked when the configuration was loaded), else
/// `RUST_LOG`'s, else `info`.
fn filter_of(filter: Option<&str>) -> EnvFilter {
    filter
        .and_then(|text| EnvFilter::builder().parse(text).ok())
        .or_else(|| EnvFilter::try_from_default_env().ok())
        .unwrap_or_else(|| EnvFilter::new("info"))
}
