//! The storage server: one storage shared by many clients over wire
//! protocol 1 (spec section 7), byte-compatible with Durus 4.3.
//!
//! Unlike Durus's single `select` loop, every client has its own thread,
//! so a slow or stalled client stalls nobody but itself:
//!
//! * `commit` (a mutex) serialises commit exchanges from the `C` byte to
//!   the status byte, so the invalidation list a client receives at `C`
//!   stays exact until its data arrives; a client that stalls inside the
//!   exchange longer than [`ServerOptions::command_timeout`] is dropped and
//!   nothing of its transaction is written.
//! * `state` (a mutex held only for the storage call itself) guards the
//!   storage and the per-client bookkeeping, so loads, bulk loads and
//!   syncs of other clients go on while a client sends its commit data.
//!
//! Lock order: `commit`, then `state`.
//!
//! Bad input never reaches the storage: transaction data is parsed and
//! checked (lengths, embedded oids, refs, oids the client may write) before
//! `begin`; lengths from the wire are bounded and buffers grow only as
//! bytes arrive; the offending client is dropped with a logged reason and
//! everyone else is served on.

use std::collections::{HashMap, HashSet};
use std::io::{self, Write};
use std::net::TcpListener;
use std::os::unix::net::UnixListener;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread;
use std::time::Duration;

use crate::error::{Error, Result};
use crate::format::protocol::{self as wire, *};
use crate::format::Oid;
use crate::storage::address::{Address, Stream};
use crate::storage::Storage;

/// How often idle loops look at the stop flag.
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
}

impl Default for ServerOptions {
    fn default() -> Self {
        ServerOptions {
            readonly: false,
            gcbytes: 0,
            command_timeout: Duration::from_secs(10),
            max_transaction: 1 << 30,
            max_bulk_load: 1 << 20,
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
}

impl ServerHandle {
    /// Asks the server to stop: it finishes the commit in progress, if any,
    /// closes the storage and returns from `run`.
    pub fn stop(&self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

enum Listener {
    Tcp(TcpListener),
    Unix(UnixListener, std::path::PathBuf),
}

struct Shared {
    opts: ServerOptions,
    stop: Arc<AtomicBool>,
    commit: Mutex<()>,
    state: Mutex<State>,
    pack_running: AtomicBool,
    bytes_since_pack: AtomicU64,
}

struct State {
    storage: Box<dyn Storage + Send>,
    clients: HashMap<u64, ClientState>,
    /// Oids handed to clients that left without committing them: nobody
    /// may commit them (they were never handed to anyone still here).
    orphaned: HashSet<Oid>,
    next_client: u64,
    /// Known once seen; a pack never removes the root.
    root_exists: bool,
}

#[derive(Default)]
struct ClientState {
    /// Oids changed by others (or removed by a pack) since this client
    /// last heard of them.
    invalid: HashSet<Oid>,
    /// Oids handed to this client and not yet committed.
    unused: HashSet<Oid>,
}

impl State {
    /// Folds the storage's own invalidations (pack removals) into every
    /// client's set (spec 7.5).
    fn fold_storage_sync(&mut self) -> Result<()> {
        let oids = self.storage.sync()?;
        if !oids.is_empty() {
            for client in self.clients.values_mut() {
                client.invalid.extend(oids.iter().copied());
            }
        }
        Ok(())
    }

    fn take_invalid(&mut self, id: u64) -> Vec<Oid> {
        let client = self.clients.entry(id).or_default();
        let mut oids: Vec<Oid> = client.invalid.drain().collect();
        oids.sort_unstable();
        oids
    }

    /// Whether the root is missing and oid 0 is free to hand out again
    /// (its first taker left without creating the root).
    fn root_is_free(&mut self) -> bool {
        if self.root_exists || self.clients.values().any(|c| c.unused.contains(&Oid::ROOT)) {
            return false;
        }
        self.root_exists = !matches!(self.storage.load(Oid::ROOT), Err(Error::KeyNotFound(_)));
        !self.root_exists
    }

    /// `n` new oids for client `id`: never one another client must not
    /// see yet (spec 7.5).
    fn new_oids(&mut self, id: u64, n: usize) -> Result<Vec<Oid>> {
        let mut oids = Vec::with_capacity(n);
        if n > 0 && self.root_is_free() {
            oids.push(Oid::ROOT);
        }
        while oids.len() < n {
            let oid = self.storage.new_oid()?;
            if oid == Oid::ROOT || self.clients.values().any(|c| c.invalid.contains(&oid)) {
                continue;
            }
            oids.push(oid);
        }
        self.clients
            .entry(id)
            .or_default()
            .unused
            .extend(oids.iter().copied());
        Ok(oids)
    }

    /// Why client `id` may not write `oid`, if it may not. The root is
    /// everyone's (several clients may race to create it: the first
    /// commit wins and the others see a conflict).
    fn refuse_write(&self, id: u64, oid: Oid) -> Option<String> {
        if oid == Oid::ROOT
            || self
                .clients
                .get(&id)
                .is_some_and(|c| c.unused.contains(&oid))
        {
            return None;
        }
        if self.orphaned.contains(&oid) {
            return Some(format!(
                "oid {oid} was handed to a client that left, not to this one"
            ));
        }
        self.clients
            .iter()
            .find(|(other, c)| **other != id && c.unused.contains(&oid))
            .map(|(other, _)| format!("oid {oid} was handed to client {other}, not to this one"))
    }
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
                opts,
                stop: Arc::new(AtomicBool::new(false)),
                commit: Mutex::new(()),
                state: Mutex::new(State {
                    storage: Box::new(storage),
                    clients: HashMap::new(),
                    orphaned: HashSet::new(),
                    next_client: 1,
                    root_exists: false,
                }),
                pack_running: AtomicBool::new(false),
                bytes_since_pack: AtomicU64::new(0),
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
                    (Stream::Tcp(s), peer.to_string())
                }),
                Listener::Unix(l, _) => l
                    .accept()
                    .map(|(s, _)| (Stream::Unix(s), "unix socket".to_string())),
            };
            match accepted {
                Ok((stream, peer)) => self.spawn_client(stream, peer),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => thread::sleep(POLL),
                Err(e) => tracing::warn!("accept failed: {e}"),
            }
        }
        // No transaction is half written: wait for the commit in progress.
        let _commit = lock(&self.shared.commit);
        let closed = lock(&self.shared.state).storage.close();
        if let Listener::Unix(_, path) = &self.listener {
            let _ = std::fs::remove_file(path);
        }
        tracing::info!("durus server on {} stopped", self.address);
        closed
    }

    fn spawn_client(&self, stream: Stream, peer: String) {
        let shared = self.shared.clone();
        let id = {
            let mut state = lock(&shared.state);
            let id = state.next_client;
            state.next_client += 1;
            state.clients.insert(id, ClientState::default());
            id
        };
        tracing::debug!("client {id} connected from {peer}");
        let spawned = thread::Builder::new()
            .name(format!("durus-client-{id}"))
            .spawn(move || {
                let mut session = Session {
                    shared: shared.clone(),
                    id,
                    stream,
                };
                match session.serve() {
                    Ok(()) => tracing::debug!("client {id} ({peer}) disconnected"),
                    Err(e) => tracing::warn!("client {id} ({peer}) dropped: {e}"),
                }
                let mut state = lock(&shared.state);
                if let Some(client) = state.clients.remove(&id) {
                    state.orphaned.extend(client.unused);
                }
            });
        if let Err(e) = spawned {
            tracing::error!("cannot start a thread for client {id}: {e}");
            lock(&self.shared.state).clients.remove(&id);
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panicking client thread must not take the server down with it.
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// One client's connection.
struct Session {
    shared: Arc<Shared>,
    id: u64,
    stream: Stream,
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
                if e.kind() == io::ErrorKind::WouldBlock || e.kind() == io::ErrorKind::TimedOut =>
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

impl Session {
    fn serve(&mut self) -> SessionResult {
        let timeout = self.shared.opts.command_timeout;
        self.stream.set_write_timeout(Some(timeout))?;
        loop {
            // Between commands a client may idle as long as it likes.
            self.stream.set_read_timeout(Some(POLL))?;
            let cmd = match wire::read_u8(&mut self.stream) {
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
            self.stream.set_read_timeout(Some(timeout))?;
            match cmd {
                CMD_GOODBYE => return Ok(()),
                CMD_QUIT => {
                    tracing::info!("client {} asked the server to stop", self.id);
                    self.shared.stop.store(true, Ordering::SeqCst);
                    return Ok(());
                }
                _ => self.command(cmd)?,
            }
        }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        lock(&self.shared.state)
    }

    fn send(&mut self, bytes: &[u8]) -> SessionResult {
        self.stream.write_all(bytes)?;
        Ok(())
    }

    fn command(&mut self, cmd: u8) -> SessionResult {
        match cmd {
            CMD_VERSION => {
                let version = wire::read_u32(&mut self.stream)?;
                self.send(&PROTOCOL_VERSION.to_be_bytes())?;
                if version != PROTOCOL_VERSION {
                    return Err(SessionEnd::Refused(format!(
                        "speaks protocol {version}, not {PROTOCOL_VERSION}"
                    )));
                }
                Ok(())
            }
            CMD_NEW_OID => {
                let oids = self.new_oids(1)?;
                self.send(&oids[0].to_bytes())
            }
            CMD_NEW_OIDS => {
                let n = wire::read_u8(&mut self.stream)?;
                let oids = self.new_oids(n as usize)?;
                let bytes: Vec<u8> = oids.iter().flat_map(|o| o.to_bytes()).collect();
                self.send(&bytes)
            }
            CMD_LOAD => {
                let oid = wire::read_oid(&mut self.stream)?;
                let mut out = Vec::new();
                self.load_into(&mut out, oid)?;
                self.send(&out)
            }
            CMD_BULK_LOAD => {
                let n = wire::read_u32(&mut self.stream)?;
                if n > self.shared.opts.max_bulk_load {
                    return Err(SessionEnd::Refused(format!(
                        "asked to bulk load {n} oids (the limit is {})",
                        self.shared.opts.max_bulk_load
                    )));
                }
                let bytes = wire::read_frame(&mut self.stream, n as usize * 8, usize::MAX)?;
                let oids =
                    wire::parse_oids(&bytes).map_err(|e| SessionEnd::Refused(e.to_string()))?;
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
                let oids = {
                    let mut state = self.state();
                    state.fold_storage_sync().map_err(storage_failed)?;
                    state.take_invalid(self.id)
                };
                self.send(&encode_oid_list(&oids))
            }
            CMD_COMMIT => self.commit(),
            CMD_PACK => {
                self.start_pack();
                self.send(&[STATUS_OKAY])
            }
            other => Err(SessionEnd::Refused(format!(
                "sent an unknown command byte 0x{other:02x}"
            ))),
        }
    }

    fn new_oids(&mut self, n: usize) -> std::result::Result<Vec<Oid>, SessionEnd> {
        if self.shared.opts.readonly {
            return Err(SessionEnd::Refused(
                "asked for new oids from a read-only server".into(),
            ));
        }
        self.state().new_oids(self.id, n).map_err(storage_failed)
    }

    /// Appends a load response for `oid` (spec 7.3).
    fn load_into(&self, out: &mut Vec<u8>, oid: Oid) -> SessionResult {
        let mut state = self.state();
        if state
            .clients
            .get(&self.id)
            .is_some_and(|c| c.invalid.contains(&oid))
        {
            out.push(STATUS_INVALID);
            return Ok(());
        }
        match state.storage.load(oid) {
            Ok(record) => wire::encode_load_ok(out, &record),
            Err(Error::KeyNotFound(_)) => out.push(STATUS_KEYERROR),
            Err(Error::ReadConflict { .. }) => out.push(STATUS_INVALID),
            Err(e) => return Err(storage_failed(e)),
        }
        Ok(())
    }

    /// The commit exchange (spec 7.4).
    fn commit(&mut self) -> SessionResult {
        let shared = self.shared.clone();
        let _commit = lock(&shared.commit);
        let invalid = {
            let mut state = self.state();
            state.fold_storage_sync().map_err(storage_failed)?;
            state.take_invalid(self.id)
        };
        self.send(&encode_oid_list(&invalid))?;
        let len = wire::read_u32(&mut self.stream)? as usize;
        if len == 0 {
            return Ok(()); // the client abandoned the transaction (a conflict)
        }
        let data = wire::read_frame(&mut self.stream, len, self.shared.opts.max_transaction)
            .map_err(|e| match e.kind() {
                io::ErrorKind::InvalidData => {
                    SessionEnd::Refused(format!("sent a transaction too large: {e}"))
                }
                _ => SessionEnd::Io(e),
            })?;
        if self.shared.opts.readonly {
            return Err(SessionEnd::Refused(
                "tried to commit to a read-only server".into(),
            ));
        }
        let entries = wire::parse_transaction(&data)
            .map_err(|e| SessionEnd::Refused(format!("sent a malformed commit: {e}")))?;
        let oids: Vec<Oid> = {
            let mut state = self.state();
            if let Some(why) = entries
                .iter()
                .find_map(|(oid, _)| state.refuse_write(self.id, *oid))
            {
                return Err(SessionEnd::Refused(format!("tried to commit {why}")));
            }
            let written = write(&mut *state.storage, &entries);
            if let Err(e) = written {
                let _ = state.storage.begin(); // drop whatever was staged
                return Err(storage_failed(e));
            }
            let oids: Vec<Oid> = entries.iter().map(|(oid, _)| *oid).collect();
            state.root_exists |= oids.contains(&Oid::ROOT);
            for (id, client) in state.clients.iter_mut() {
                if *id == self.id {
                    for oid in &oids {
                        client.unused.remove(oid);
                    }
                } else {
                    client.invalid.extend(oids.iter().copied());
                }
            }
            oids
        };
        tracing::debug!(
            "client {} committed {} records ({len} bytes)",
            self.id,
            oids.len()
        );
        self.send(&[STATUS_OKAY])?;
        let total = self
            .shared
            .bytes_since_pack
            .fetch_add(len as u64 + 8, Ordering::SeqCst)
            + len as u64
            + 8;
        let gcbytes = self.shared.opts.gcbytes;
        if gcbytes > 0 && total >= gcbytes {
            self.start_pack();
        }
        Ok(())
    }

    /// Packs on a background thread unless a pack is running. The pack
    /// holds the storage while it copies; removed oids reach every client
    /// through their next sync or commit.
    fn start_pack(&self) {
        if self.shared.pack_running.swap(true, Ordering::SeqCst) {
            return;
        }
        let shared = self.shared.clone();
        let spawned = thread::Builder::new()
            .name("durus-pack".into())
            .spawn(move || {
                tracing::info!("pack started");
                let result = {
                    let _commit = lock(&shared.commit);
                    lock(&shared.state).storage.pack()
                };
                match result {
                    Ok(report) => {
                        shared.bytes_since_pack.store(0, Ordering::SeqCst);
                        tracing::info!(
                            "pack done: {} records kept, {} removed, {} -> {} bytes",
                            report.kept,
                            report.removed.len(),
                            report.size_before,
                            report.size_after
                        );
                    }
                    Err(e) => tracing::error!("pack failed (the file is unchanged): {e}"),
                }
                shared.pack_running.store(false, Ordering::SeqCst);
            });
        if let Err(e) = spawned {
            tracing::error!("cannot start the pack thread: {e}");
            self.shared.pack_running.store(false, Ordering::SeqCst);
        }
    }
}

/// Stores `entries` as one transaction.
fn write(storage: &mut dyn Storage, entries: &[(Oid, &[u8])]) -> Result<()> {
    storage.begin()?;
    for (oid, record) in entries {
        storage.store(*oid, record.to_vec())?;
    }
    storage.end(&mut |_| Ok(()))
}

fn storage_failed(e: Error) -> SessionEnd {
    SessionEnd::Refused(format!("the storage failed: {e}"))
}
