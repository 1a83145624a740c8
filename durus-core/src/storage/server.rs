//! The storage server: one storage shared by many clients over wire
//! protocol 1 (spec section 7), byte-compatible with Durus 4.3.
//!
//! Unlike Durus's single `select` loop, every client has its own thread,
//! so a slow or stalled client stalls nobody but itself. The per-client
//! bookkeeping and the commit serialisation live in [`Hub`]: a client
//! inside its commit exchange holds only the commit lock, so loads, bulk
//! loads and syncs of others go on; a client that stalls inside any
//! command longer than [`ServerOptions::command_timeout`] is dropped, and
//! nothing of an unfinished transaction is written.
//!
//! Bad input never reaches the storage: transaction data is parsed and
//! checked (lengths, embedded oids, refs, oids the client may write) before
//! anything is stored; lengths from the wire are bounded and buffers grow
//! only as bytes arrive; the offending client is dropped with a logged
//! reason and everyone else is served on.

use std::collections::HashMap;
use std::io::{self, BufReader, Write};
use std::net::TcpListener;
use std::os::unix::net::UnixListener;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread;
use std::time::Duration;

use crate::error::{Error, Result};
use crate::format::protocol::{self as wire, *};
use crate::format::Oid;
use crate::storage::address::{Address, Stream, DEFAULT_SPIN};
use crate::storage::hub::{ClientId, Hub};
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
        self.shared.upgrade()?.hub.group_syncs()
    }
}

enum Listener {
    Tcp(TcpListener),
    Unix(UnixListener, std::path::PathBuf),
}

struct Shared {
    opts: ServerOptions,
    stop: Arc<AtomicBool>,
    hub: Hub,
    /// A handle on each client's socket, to wake its thread at shutdown.
    sockets: Mutex<HashMap<ClientId, Stream>>,
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
                // A committer waits for the few commits ahead of it, each about
                // one client round trip.
                hub: Hub::new(Box::new(storage), opts.readonly, opts.spin * 4),
                opts,
                stop: Arc::new(AtomicBool::new(false)),
                sockets: Mutex::new(HashMap::new()),
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
            stop: self.shared.stop.clone(),
            shared: Arc::downgrade(&self.shared),
        }
    }

    /// The flag that stops the server when set (for signal handlers).
    pub fn stop_flag(&self) -> Arc<AtomicBool> {
        self.shared.stop.clone()
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
        while !self.shared.stop.load(Ordering::SeqCst) {
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
        let closed = self.shared.hub.close();
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
        let served = lock(&shared.sockets).len();
        if served >= shared.opts.max_clients {
            tracing::warn!(
                "refusing a client from {peer}: {served} clients connected, the most allowed (--max-clients)"
            );
            return;
        }
        if let Err(e) = stream.set_spin(shared.opts.spin) {
            tracing::warn!("cannot make the socket of {peer} non-blocking: {e}");
        }
        let (writer, waker) = match (stream.try_clone(), stream.try_clone()) {
            (Ok(w), Ok(k)) => (w, k),
            (Err(e), _) | (_, Err(e)) => {
                tracing::error!("cannot serve a client from {peer}: {e}");
                return;
            }
        };
        let id = shared.hub.join();
        lock(&shared.sockets).insert(id, waker);
        tracing::debug!("client {id} connected from {peer}");
        let spawned = thread::Builder::new()
            .name(format!("durus-client-{id}"))
            .spawn(move || {
                let may_stop = local || shared.opts.remote_stop;
                let mut session = Session {
                    shared: shared.clone(),
                    id,
                    may_stop,
                    reader: BufReader::with_capacity(64 << 10, stream),
                    writer,
                };
                match session.serve() {
                    Ok(()) => tracing::debug!("client {id} ({peer}) disconnected"),
                    Err(e) => tracing::warn!("client {id} ({peer}) dropped: {e}"),
                }
                lock(&shared.sockets).remove(&id);
                shared.hub.leave(id);
            });
        if let Err(e) = spawned {
            tracing::error!("cannot start a thread for client {id}: {e}");
            lock(&self.shared.sockets).remove(&id);
            self.shared.hub.leave(id);
        }
    }
}

/// One client's connection: requests are read through a buffer (a
/// command and its arguments usually arrive in one segment: one syscall).
struct Session {
    shared: Arc<Shared>,
    id: ClientId,
    /// Whether this client's `Q` stops the server (see
    /// [`ServerOptions::remote_stop`]).
    may_stop: bool,
    reader: BufReader<Stream>,
    writer: Stream,
}

/// Why a session ends.
type SessionResult = std::result::Result<(), SessionEnd>;

#[derive(Debug)]
enum SessionEnd {
    Io(io::Error),
    Refused(String),
}

impl std::fmt::Display for SessionEnd {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SessionEnd::Io(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                write!(f, "stalled inside a command past the timeout")
            }
            SessionEnd::Io(e) if e.kind() == io::ErrorKind::UnexpectedEof => {
                write!(f, "closed the connection in the middle of a command")
            }
            SessionEnd::Io(e) => write!(f, "{e}"),
            SessionEnd::Refused(why) => write!(f, "{why}"),
        }
    }
}

impl From<io::Error> for SessionEnd {
    fn from(e: io::Error) -> Self {
        SessionEnd::Io(e)
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

fn refused(e: Error) -> SessionEnd {
    SessionEnd::Refused(match e {
        Error::ReadOnly => "tried to write to a read-only server".to_string(),
        other => other.to_string(),
    })
}

impl Session {
    fn serve(&mut self) -> SessionResult {
        // Every read and write of a command must finish within the
        // timeout; between commands a client may idle as long as it likes
        // (a timeout there just reads again). Shutdown wakes it.
        let timeout = self.shared.opts.command_timeout;
        self.writer.set_write_timeout(Some(timeout))?;
        self.writer.set_read_timeout(Some(timeout))?;
        loop {
            let cmd = match wire::read_u8(&mut self.reader) {
                Ok(cmd) => cmd,
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    ) =>
                {
                    if self.shared.stop.load(Ordering::SeqCst) {
                        return Ok(());
                    }
                    continue;
                }
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(()),
                Err(e) => return Err(e.into()),
            };
            match cmd {
                CMD_GOODBYE => return Ok(()),
                CMD_QUIT if !self.may_stop => {
                    return Err(SessionEnd::Refused(
                        "asked the server to stop from another host: refused (durus serve --allow-remote-stop)".into(),
                    ));
                }
                CMD_QUIT => {
                    tracing::info!("client {} asked the server to stop", self.id);
                    self.shared.stop.store(true, Ordering::SeqCst);
                    return Ok(());
                }
                _ => self.command(cmd)?,
            }
        }
    }

    fn send(&mut self, bytes: &[u8]) -> SessionResult {
        self.writer.write_all(bytes)?;
        Ok(())
    }

    fn command(&mut self, cmd: u8) -> SessionResult {
        let hub = &self.shared.hub;
        match cmd {
            CMD_VERSION => {
                let version = wire::read_u32(&mut self.reader)?;
                self.send(&PROTOCOL_VERSION.to_be_bytes())?;
                if version != PROTOCOL_VERSION {
                    return Err(SessionEnd::Refused(format!(
                        "speaks protocol {version}, not {PROTOCOL_VERSION}"
                    )));
                }
                Ok(())
            }
            CMD_NEW_OID => {
                let oids = hub.new_oids(self.id, 1).map_err(refused)?;
                self.send(&oids[0].to_bytes())
            }
            CMD_NEW_OIDS => {
                let n = wire::read_u8(&mut self.reader)?;
                let oids = hub.new_oids(self.id, n as usize).map_err(refused)?;
                let bytes: Vec<u8> = oids.iter().flat_map(|o| o.to_bytes()).collect();
                self.send(&bytes)
            }
            CMD_LOAD => {
                let oid = wire::read_oid(&mut self.reader)?;
                let mut out = Vec::new();
                self.load_into(&mut out, oid)?;
                self.send(&out)
            }
            CMD_BULK_LOAD => {
                let n = wire::read_u32(&mut self.reader)?;
                if n > self.shared.opts.max_bulk_load {
                    return Err(SessionEnd::Refused(format!(
                        "asked to bulk load {n} oids (the limit is {})",
                        self.shared.opts.max_bulk_load
                    )));
                }
                let bytes = wire::read_frame(&mut self.reader, n as usize * 8, usize::MAX)?;
                let oids = wire::parse_oids(&bytes).map_err(refused)?;
                let mut out = Vec::new();
                for oid in oids {
                    self.load_into(&mut out, oid)?;
                    if out.len() >= 1 << 20 {
                        self.send(&out)?;
                        out.clear();
                    }
                }
                self.send(&out)
            }
            CMD_SYNC => {
                let oids = hub.sync(self.id).map_err(refused)?;
                self.send(&encode_oid_list(&oids))
            }
            CMD_COMMIT => self.commit(),
            CMD_PACK => {
                // Answered when the pack is done (Durus answers at once for
                // its incremental packer): the client's next sync then
                // brings the removals. Others are served meanwhile.
                match hub.pack() {
                    Err(e @ Error::ReadOnly) => return Err(refused(e)),
                    Err(e) => tracing::error!(
                        "pack asked by client {} failed (the file is unchanged): {e}",
                        self.id
                    ),
                    Ok(_) => {}
                }
                self.send(&[STATUS_OKAY])
            }
            other => Err(SessionEnd::Refused(format!(
                "sent an unknown command byte 0x{other:02x}"
            ))),
        }
    }

    /// Appends a load response for `oid` (spec 7.3).
    fn load_into(&self, out: &mut Vec<u8>, oid: Oid) -> SessionResult {
        match self.shared.hub.load(self.id, oid) {
            Ok(record) => wire::encode_load_ok(out, &record),
            Err(Error::KeyNotFound(_)) => out.push(STATUS_KEYERROR),
            Err(Error::ReadConflict { .. }) => out.push(STATUS_INVALID),
            Err(e) => return Err(refused(e)),
        }
        Ok(())
    }

    /// The commit exchange (spec 7.4).
    fn commit(&mut self) -> SessionResult {
        let shared = self.shared.clone();
        let commit = shared.hub.begin_commit(self.id).map_err(refused)?;
        self.send(&encode_oid_list(commit.invalidations()))?;
        let len = wire::read_u32(&mut self.reader)? as usize;
        if len == 0 {
            return Ok(()); // the client abandoned the transaction (a conflict)
        }
        let data = wire::read_frame(&mut self.reader, len, self.shared.opts.max_transaction)
            .map_err(|e| match e.kind() {
                io::ErrorKind::InvalidData => {
                    SessionEnd::Refused(format!("sent a transaction too large: {e}"))
                }
                _ => SessionEnd::Io(e),
            })?;
        let entries = wire::parse_transaction(&data)
            .map_err(|e| SessionEnd::Refused(format!("sent a malformed commit: {e}")))?;
        let written = commit.write(&entries).map_err(refused)?;
        // The commit lock is free again: the next commit goes on while
        // this one waits for its (shared) fsync.
        self.shared.hub.wait_durable(written).map_err(refused)?;
        tracing::debug!(
            "client {} committed {} records ({len} bytes)",
            self.id,
            entries.len()
        );
        self.send(&[STATUS_OKAY])?;
        let gcbytes = self.shared.opts.gcbytes;
        if gcbytes > 0 && self.shared.hub.bytes_since_pack() >= gcbytes {
            self.start_pack();
        }
        Ok(())
    }

    /// Packs on a background thread (the automatic pack of `gcbytes`).
    fn start_pack(&self) {
        let shared = self.shared.clone();
        let spawned = thread::Builder::new()
            .name("durus-pack".into())
            .spawn(move || match shared.hub.pack() {
                Ok(Some(_)) => {}
                Ok(None) => tracing::debug!("a pack is already running"),
                Err(e) => tracing::error!("pack failed (the file is unchanged): {e}"),
            });
        if let Err(e) = spawned {
            tracing::error!("cannot start the pack thread: {e}");
        }
    }
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
