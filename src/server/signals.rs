//! The signals the binary acts on: SIGTERM and SIGINT end it (after a drain), SIGHUP
//! reloads its configuration.

use std::future::Future;

use tokio::sync::mpsc;

use super::Reload;
use crate::config::{Config, ConfigError};

/// Listens for SIGHUP at once (its default action would end the process), and returns the
/// task that, on every one, loads the configuration again from the process's own command
/// line, environment and file and sends it (or why it did not load) to `reloads`. The task
/// ends when the receiver is gone.
#[cfg(unix)]
pub fn reload_signal(
    reloads: mpsc::Sender<Reload>,
) -> std::io::Result<impl Future<Output = ()> + Send + 'static> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut hangups = signal(SignalKind::hangup())?;
    Ok(async move {
        while hangups.recv().await.is_some() {
            tracing::info!("SIGHUP: loading the configuration again");
            // Reading the file blocks; it is small, but not worth a runtime thread.
            let loaded = tokio::task::spawn_blocking(|| Config::load(std::env::args_os())).await;
            let loaded = loaded.unwrap_or_else(|e| {
                Err(ConfigError::Invalid(format!(
                    "the configuration could not be loaded: {e}"
                )))
            });
            if reloads.send(loaded).await.is_err() {
                return;
            }
        }
    })
}

/// Resolves on SIGTERM or SIGINT.
pub async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = tokio::signal::ctrl_c() => {}
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for SIGTERM; only SIGINT stops the proxy");
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
