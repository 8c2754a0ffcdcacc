//! systemd's readiness protocol (`sd_notify`): with `Type=notify`, systemd counts the service
//! started, and sends a reload, only once it says `READY=1`, that is once its listeners are
//! bound and SIGHUP is handled, so an early reload cannot end the process. Without
//! `NOTIFY_SOCKET` (not under systemd, or another `Type=`) it does nothing.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::net::UnixDatagram;

/// Tells systemd `state` (`READY=1`, `STOPPING=1` ...), if it listens. Best effort: a lost
/// message only delays what systemd would do anyway.
pub fn notify(state: &str) {
    let Some(path) = std::env::var_os("NOTIFY_SOCKET") else {
        return;
    };
    let Ok(socket) = UnixDatagram::unbound() else {
        return;
    };
    let sent = match path.as_bytes().strip_prefix(b"@") {
        // An abstract socket: the name after '@'.
        Some(name) => {
            abstract_address(name).and_then(|a| socket.send_to_addr(state.as_bytes(), &a))
        }
        None => socket.send_to(state.as_bytes(), OsStr::new(&path)),
    };
    if let Err(e) = sent {
        tracing::debug!(error = %e, "cannot tell systemd the service state");
    }
}

#[cfg(target_os = "linux")]
fn abstract_address(name: &[u8]) -> std::io::Result<std::os::unix::net::SocketAddr> {
    use std::os::linux::net::SocketAddrExt;
    std::os::unix::net::SocketAddr::from_abstract_name(name)
}

#[cfg(not(target_os = "linux"))]
fn abstract_address(_: &[u8]) -> std::io::Result<std::os::unix::net::SocketAddr> {
    Err(std::io::Error::from(std::io::ErrorKind::Unsupported))
}
