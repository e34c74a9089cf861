//! TCP_NODELAY on the connections to PostgreSQL. sqlx 0.9.0 no longer sets it
//! (transact-rs/sqlx#4335; fixed upstream, not released as of 0.9.0), which leaves Nagle's
//! algorithm on. A `COPY` is two writes, the rows and then `CopyDone`; Nagle holds the second
//! until the server acknowledges the first, and the server, which has nothing to say during a
//! COPY, delays that ACK by 40 ms (Linux). Every COPY of the sink took ≥ 40 ms that way: at
//! 2,000 msg/s, 56 ms per batch over TCP against 5 ms over a Unix socket (`etl bench e2e`).
//!
//! sqlx gives no access to its sockets, so after each new connection we look through this
//! process's descriptors for TCP sockets connected to the database's port and set the option
//! on them. Each descriptor is reached through `pidfd_getfd`, a duplicate we own, which keeps
//! this free of unsafe code. Remove this module once sqlx sets TCP_NODELAY again.

/// Sets TCP_NODELAY on every TCP socket of this process whose peer listens on `port`; returns
/// how many it set. Sockets to other services on the same port only lose Nagle's delay too.
#[cfg(target_os = "linux")]
pub fn set_on_connections_to(port: u16) -> std::io::Result<usize> {
    use rustix::net::{getpeername, sockopt};
    use rustix::process::{PidfdFlags, PidfdGetfdFlags, getpid, pidfd_getfd, pidfd_open};

    let this_process = pidfd_open(getpid(), PidfdFlags::empty())?;
    let mut set = 0;
    for entry in std::fs::read_dir("/proc/self/fd")? {
        let Some(fd) = entry?.file_name().to_str().and_then(|n| n.parse().ok()) else {
            continue;
        };
        // Descriptors that closed meanwhile, or are no sockets, drop out at one of these steps.
        let Ok(socket) = pidfd_getfd(&this_process, fd, PidfdGetfdFlags::empty()) else {
            continue;
        };
        let Ok(Some(peer)) = getpeername(&socket) else {
            continue;
        };
        let is_database = std::net::SocketAddr::try_from(peer).is_ok_and(|a| a.port() == port);
        if is_database && sockopt::set_tcp_nodelay(&socket, true).is_ok() {
            set += 1;
        }
    }
    Ok(set)
}

/// Elsewhere the connections keep Nagle's algorithm (and COPY its 40 ms) until sqlx sets it.
#[cfg(not(target_os = "linux"))]
pub fn set_on_connections_to(_port: u16) -> std::io::Result<usize> {
    Ok(0)
}
