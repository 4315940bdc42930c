//! systemd's readiness protocol (`sd_notify`): with `Type=notify`, systemd
//! waits for `READY=1` before it calls the service started, and shows
//! `STOPPING=1` while it drains. One datagram to the socket named by
//! `NOTIFY_SOCKET`; without that variable (not under systemd) nothing is
//! sent. Failures are logged, never fatal.

use std::os::unix::net::UnixDatagram;

fn send(state: &str) {
    let Some(path) = std::env::var_os("NOTIFY_SOCKET") else {
        return;
    };
    let sent = UnixDatagram::unbound().and_then(|sock| {
        let bytes = path.as_encoded_bytes();
        if let Some(name) = bytes.strip_prefix(b"@") {
            // An abstract socket: its name after a NUL byte.
            use std::os::linux::net::SocketAddrExt;
            let addr = std::os::unix::net::SocketAddr::from_abstract_name(name)?;
            sock.send_to_addr(state.as_bytes(), &addr)
        } else {
            sock.send_to(state.as_bytes(), &path)
        }
    });
    if let Err(e) = sent {
        tracing::warn!(error = %e, state, "sd_notify failed");
    }
}

/// Listeners bound and the store open: requests are served.
pub fn ready() {
    send("READY=1\nSTATUS=serving");
}

/// A shutdown began: in-flight requests are finishing.
pub fn stopping() {
    send("STOPPING=1\nSTATUS=draining");
}
