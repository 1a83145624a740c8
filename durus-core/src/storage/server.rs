//! The storage server: one storage shared by many clients over wire
//! protocol 1 (spec section 7), byte-compatible with Durus 4.3.
//!
//! Unlike Durus's single `select` loop, every client has its own thread
//! running a [`Service`] conversation, so a slow or stalled client stalls
//! nobody but itself. A client inside its commit exchange holds only the
//! commit lock, so loads, bulk loads and syncs of others go on; a client
//! that stalls inside any command longer than
//! [`ServerOptions::command_timeout`] is dropped, and nothing of an
//! unfinished transaction is written.

use std::collections::HashMap;
use std::io;
use std::net::TcpListener;
use std::os::unix::net::UnixListener;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread;
use std::time::Duration;

use crate::error::{Error, Result};
use crate::storage::address::{Address, Stream, DEFAULT_SPIN};
use crate::storage::session::Service;
use crate::storage::Storage;

/// How often the accept loop looks at the stop flag.
const POLL: Duration = Duration::from_millis(50);

/// How a [`Server`] runs.
#[derive(Debug, Clone)]
pub struct ServerOptions {
    /// Refuse every commit (the storage should be read-only too).
    pub readonly: bool,
    /// Pack automatically once this many bytes were committed (0: never).
    pub gcbytes: u64,
    /// How long a client may take to send the rest of a command once it
    /// has started one (Durus: 10 s per read).
    pub command_timeout: Duration,
    /// The largest transaction a client may send.
    pub max_transaction: usize,
    /// The most oids one bulk load may ask for.
    pub max_bulk_load: u32,
    /// How long a client's thread polls its socket for the next request
    /// before sleeping (see [`Stream`]; zero: never).
    pub spin: Duration,
    /// The most clients served at once; one more is disconnected at once
    /// (protocol 1 has no way to say why: the server logs it).
    pub max_clients: usize,
    /// Accept the stop command (`Q`) from any client. By default only
    /// unix-socket and loopback clients may stop the server (in Durus any
    /// client can, with one byte); others are disconnected and logged.
    pub remote_stop: bool,
}

impl Default for ServerOptions {
    fn default() -> Self {
        ServerOptions {
            readonly: false,
            gcbytes: 0,
            command_timeout: Duration::from_secs(10),
            max_transaction: 1 << 30,
            max_bulk_load: 1 << 20,
            spin: DEFAULT_SPIN,
            max_clients: 1024,
            remote_stop: false,
        }
    }
}

/// A storage server bound to its address, ready to [`Server::run`].
pub struct Server {
    listener: Listener,
    address: Address,
    shared: Arc<Shared>,
}

/// Stops a running server from another thread (or a signal handler's
/// flag: see [`Server::stop_flag`]).
#[derive(Clone)]
pub struct ServerHandle {
    stop: Arc<AtomicBool>,
    /// Weak: a handle must not keep a stopped server's storage open.
    shared: std::sync::Weak<Shared>,
}

impl ServerHandle {
    /// Asks the server to stop: it finishes the commit in progress, if any,
    /// closes the storage and returns from `run`.
    pub fn stop(&self) {
        self.stop.store(true, Ordering::SeqCst);
    }

    /// The fsyncs its commits have shared so far (group commit), or `None`
    /// when each commit syncs alone (or never: `--no-fsync`), or the
    /// server is gone.
    pub fn group_syncs(&self) -> Option<u64> {
        self.shared.upgrade()?.service.group_syncs()
    }
}

enum Listener {
    Tcp(TcpListener),
    Unix(UnixListener, std::path::PathBuf),
}

struct Shared {
    service: Service,
    /// A handle on each client's socket, to wake its thread at shutdown.
    sockets: Mutex<HashMap<u64, Stream>>,
    next_socket: AtomicU64,
}

impl Server {
    /// Binds `address` (a stale unix socket file nobody answers on is
    /// replaced) for serving `storage`.
    pub fn bind(
        storage: impl Storage + Send + 'static,
        address: &Address,
        opts: ServerOptions,
    ) -> Result<Server> {
        let failed = |e| Error::io(format!("cannot listen on {address}"), e);
        let listener = match address {
            Address::Tcp { host, port } => {
                Listener::Tcp(TcpListener::bind((host.as_str(), *port)).map_err(failed)?)
            }
            Address::Unix(path) => {
                if path.exists() && std::os::unix::net::UnixStream::connect(path).is_err() {
                    std::fs::remove_file(path).map_err(failed)?;
                }
                Listener::Unix(UnixListener::bind(path).map_err(failed)?, path.clone())
            }
        };
        // The address actually bound (port 0 picks a free one).
        let address = match &listener {
            Listener::Tcp(l) => {
                let local = l.local_addr().map_err(failed)?;
                Address::Tcp {
                    host: local.ip().to_string(),
                    port: local.port(),
                }
            }
            Listener::Unix(_, path) => Address::Unix(path.clone()),
        };
        Ok(Server {
            listener,
            address,
            shared: Arc::new(Shared {
                service: Service::new(storage, opts),
                sockets: Mutex::new(HashMap::new()),
                next_socket: AtomicU64::new(0),
            }),
        })
    }

    /// The address clients connect to (with the real port if bound to 0).
    pub fn address(&self) -> &Address {
        &self.address
    }

    /// A handle that stops the server.
    pub fn handle(&self) -> ServerHandle {
        ServerHandle {
            stop: self.stop_flag(),
            shared: Arc::downgrade(&self.shared),
        }
    }

    /// The flag that stops the server when set (for signal handlers).
    pub fn stop_flag(&self) -> Arc<AtomicBool> {
        self.shared.service.stop_flag().clone()
    }

    /// Serves until stopped (a `Q` command, [`ServerHandle::stop`] or the
    /// stop flag), then waits for a commit in progress, closes the storage
    /// and removes a unix socket file.
    pub fn run(self) -> Result<()> {
        tracing::info!("durus server ready on {}", self.address);
        let nonblocking = match &self.listener {
            Listener::Tcp(l) => l.set_nonblocking(true),
            Listener::Unix(l, _) => l.set_nonblocking(true),
        };
        nonblocking.map_err(|e| Error::io("cannot poll the listening socket", e))?;
        while !self.shared.service.stop_requested() {
            let accepted = match &self.listener {
                Listener::Tcp(l) => l.accept().map(|(s, peer)| {
                    let _ = s.set_nodelay(true);
                    (Stream::from(s), peer.to_string(), is_local(Some(peer)))
                }),
                Listener::Unix(l, _) => l
                    .accept()
                    .map(|(s, _)| (Stream::from(s), "unix socket".to_string(), true)),
            };
            match accepted {
                Ok((stream, peer, local)) => self.spawn_client(stream, peer, local),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => thread::sleep(POLL),
                Err(e) => tracing::warn!("accept failed: {e}"),
            }
        }
        // No transaction is half written: wait for the commit in progress.
        let closed = self.shared.service.close();
        for socket in lock(&self.shared.sockets).values() {
            let _ = socket.shutdown();
        }
        if let Listener::Unix(_, path) = &self.listener {
            let _ = std::fs::remove_file(path);
        }
        tracing::info!("durus server on {} stopped", self.address);
        closed
    }

    fn spawn_client(&self, mut stream: Stream, peer: String, local: bool) {
        let shared = self.shared.clone();
        let opts = shared.service.options();
        let served = lock(&shared.sockets).len();
        if served >= opts.max_clients {
            tracing::warn!(
                "refusing a client from {peer}: {served} clients connected, the most allowed (--max-clients)"
            );
            return;
        }
        // Every read and write of a command must finish within the
        // timeout (the socket's clones share it).
        let timeout = Some(opts.command_timeout);
        let prepared = stream
            .set_spin(opts.spin)
            .and_then(|()| stream.set_read_timeout(timeout))
            .and_then(|()| stream.set_write_timeout(timeout));
        if let Err(e) = prepared {
            tracing::warn!("cannot set up the socket of {peer}: {e}");
        }
        let (writer, waker) = match (stream.try_clone(), stream.try_clone()) {
            (Ok(w), Ok(k)) => (w, k),
            (Err(e), _) | (_, Err(e)) => {
                tracing::error!("cannot serve a client from {peer}: {e}");
                return;
            }
        };
        let socket = shared.next_socket.fetch_add(1, Ordering::Relaxed);
        lock(&shared.sockets).insert(socket, waker);
        tracing::debug!("client connected from {peer}");
        let spawned = thread::Builder::new()
            .name(format!("durus-client-{socket}"))
            .spawn(move || {
                match shared.service.serve(stream, writer, &peer, local) {
                    Ok(()) => tracing::debug!("client {peer} disconnected"),
                    Err(e) => tracing::warn!("dropped: {e}"),
                }
                lock(&shared.sockets).remove(&socket);
            });
        if let Err(e) = spawned {
            tracing::error!("cannot start a thread for a client: {e}");
            lock(&self.shared.sockets).remove(&socket);
        }
    }
}

/// Whether a client at `peer` (`None`: a unix socket) is on this host: a
/// unix socket or a loopback address (IPv4-mapped ones included).
fn is_local(peer: Option<std::net::SocketAddr>) -> bool {
    match peer.map(|p| p.ip()) {
        None => true,
        Some(std::net::IpAddr::V4(ip)) => ip.is_loopback(),
        Some(std::net::IpAddr::V6(ip)) => {
            ip.is_loopback() || ip.to_ipv4_mapped().is_some_and(|v4| v4.is_loopback())
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

#[cfg(test)]
mod tests {
    use super::is_local;

    #[test]
    fn only_unix_socket_and_loopback_peers_count_as_local() {
        let local = |a: &str| is_local(Some(a.parse().unwrap()));
        assert!(is_local(None));
        assert!(local("127.0.0.1:5000"));
        assert!(local("127.8.9.10:5000"));
        assert!(local("[::1]:5000"));
        assert!(local("[::ffff:127.0.0.1]:5000"));
        assert!(!local("192.168.1.20:5000"));
        assert!(!local("10.0.0.1:5000"));
        assert!(!local("[2001:db8::1]:5000"));
        assert!(!local("[::ffff:10.0.0.1]:5000"));
        assert!(!local("0.0.0.0:5000"));
    }
}
