//! Helpers shared by the object-layer conformance tests (`connection.rs`,
//! `conflicts.rs`, `containers.rs`, `state_codec.rs`).
//!
//! [`Server`] stands in for a storage server: one `MemoryStorage` shared
//! by any number of clients ([`TestClient`], a `Storage`). A commit by one
//! client queues its oids for every other client, so that the next `sync()`
//! of that client returns them and its next `end()` hands them to the
//! invalidations callback before writing (a callback error writes nothing),
//! exactly as Durus's server does. A load of a queued oid answers
//! `Error::ReadConflict`, like the server's `I` reply. The test can also
//! play "another client" directly with [`Server::inject`].
#![allow(dead_code)]

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::rc::Rc;

use durus_core::format::record;
use durus_core::storage::RecordIter;
use durus_core::{
    Connection, Error, MemoryStorage, Oid, PObject, PRef, PackReport, Persistent, Result, Storage,
};
use serde::{Deserialize, Serialize};

/// The object stored under `name` in the root, as a `T`.
pub fn root_get<T: Persistent>(conn: &Connection, name: &str) -> PRef<T> {
    conn.root()
        .get(&name.to_string())
        .unwrap()
        .unwrap()
        .downcast::<T>()
        .unwrap()
}

/// Stores `value` under `name` in the root and commits.
pub fn root_store<T: Persistent>(conn: &Connection, name: &str, value: T) -> PRef<T> {
    let handle = PRef::new(value);
    conn.root()
        .insert(name.to_string(), PObject::from(handle.clone()))
        .unwrap();
    conn.commit().unwrap();
    handle
}

/// A plain persistent struct.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Counter {
    pub n: i64,
    pub label: String,
}

impl Persistent for Counter {
    const CLASS_NAME: &'static str = "test.Counter";
}

impl Counter {
    pub fn new(n: i64) -> Self {
        Counter {
            n,
            label: format!("counter {n}"),
        }
    }
}

/// Another persistent struct, for type mismatches.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Label {
    pub text: String,
}

impl Persistent for Label {
    const CLASS_NAME: &'static str = "test.Label";
}

struct ServerState {
    storage: MemoryStorage,
    /// Client id → oids changed by others (or packed away) since its last
    /// sync or end.
    queues: BTreeMap<u64, BTreeSet<Oid>>,
    next_client: u64,
    /// Oids written by each successful commit, in order.
    commits: Vec<Vec<Oid>>,
}

impl ServerState {
    fn invalidate(&mut self, oids: &[Oid], except: Option<u64>) {
        for (id, queue) in &mut self.queues {
            if Some(*id) != except {
                queue.extend(oids.iter().copied());
            }
        }
    }
}

/// A shared in-memory "server" (see the module docs).
#[derive(Clone)]
pub struct Server(Rc<RefCell<ServerState>>);

impl Default for Server {
    fn default() -> Self {
        Self::new()
    }
}

impl Server {
    pub fn new() -> Self {
        Server(Rc::new(RefCell::new(ServerState {
            storage: MemoryStorage::new(),
            queues: BTreeMap::new(),
            next_client: 0,
            commits: Vec::new(),
        })))
    }

    /// A new client storage.
    pub fn client(&self) -> TestClient {
        let mut s = self.0.borrow_mut();
        let id = s.next_client;
        s.next_client += 1;
        s.queues.insert(id, BTreeSet::new());
        TestClient {
            server: self.0.clone(),
            id,
            pending: Vec::new(),
            read_conflicts: true,
        }
    }

    /// A connection over a new client.
    pub fn connect(&self) -> Connection {
        Connection::new(self.client()).unwrap()
    }

    /// "Another client committed these records": they are stored and
    /// every client is told.
    pub fn inject(&self, records: Vec<Vec<u8>>) {
        let mut s = self.0.borrow_mut();
        let oids: Vec<Oid> = records.iter().map(|r| record::oid_of(r).unwrap()).collect();
        s.storage.begin().unwrap();
        for (oid, r) in oids.iter().zip(records) {
            s.storage.store(*oid, r).unwrap();
        }
        s.storage.end(&mut |_| Ok(())).unwrap();
        s.commits.push(oids.clone());
        s.invalidate(&oids, None);
    }

    /// The stored record for `oid`.
    pub fn record(&self, oid: Oid) -> Option<Vec<u8>> {
        self.0.borrow_mut().storage.load(oid).ok()
    }

    /// Every stored record, by oid.
    pub fn records(&self) -> BTreeMap<Oid, Vec<u8>> {
        let mut s = self.0.borrow_mut();
        s.storage.records().unwrap().map(|r| r.unwrap()).collect()
    }

    /// The oids each successful commit wrote, oldest first.
    pub fn commits(&self) -> Vec<Vec<Oid>> {
        self.0.borrow().commits.clone()
    }

    /// How many commits succeeded so far.
    pub fn commit_count(&self) -> usize {
        self.0.borrow().commits.len()
    }
}

/// One client of a [`Server`].
pub struct TestClient {
    server: Rc<RefCell<ServerState>>,
    id: u64,
    pending: Vec<(Oid, Vec<u8>)>,
    /// Whether a load of a queued oid answers `ReadConflict` (the server's
    /// `I`), or just loads the new record.
    pub read_conflicts: bool,
}

impl Drop for TestClient {
    fn drop(&mut self) {
        self.server.borrow_mut().queues.remove(&self.id);
    }
}

impl TestClient {
    fn take_queue(&self) -> Vec<Oid> {
        let mut s = self.server.borrow_mut();
        let queue = s.queues.entry(self.id).or_default();
        std::mem::take(queue).into_iter().collect()
    }
}

impl Storage for TestClient {
    fn load(&mut self, oid: Oid) -> Result<Vec<u8>> {
        let mut s = self.server.borrow_mut();
        if self.read_conflicts && s.queues.get(&self.id).is_some_and(|q| q.contains(&oid)) {
            return Err(Error::ReadConflict { oids: vec![oid] });
        }
        s.storage.load(oid)
    }

    fn begin(&mut self) -> Result<()> {
        self.pending.clear();
        Ok(())
    }

    fn store(&mut self, oid: Oid, record: Vec<u8>) -> Result<()> {
        record::check_stored_as(oid, &record)?;
        self.pending.push((oid, record));
        Ok(())
    }

    fn end(&mut self, invalidations: &mut dyn FnMut(&[Oid]) -> Result<()>) -> Result<()> {
        let queued = self.take_queue();
        if let Err(e) = invalidations(&queued) {
            self.pending.clear();
            return Err(e);
        }
        let pending = std::mem::take(&mut self.pending);
        if pending.is_empty() {
            return Ok(());
        }
        let mut s = self.server.borrow_mut();
        let oids: Vec<Oid> = pending.iter().map(|(oid, _)| *oid).collect();
        s.storage.begin()?;
        for (oid, r) in pending {
            s.storage.store(oid, r)?;
        }
        s.storage.end(&mut |_| Ok(()))?;
        s.commits.push(oids.clone());
        s.invalidate(&oids, Some(self.id));
        Ok(())
    }

    fn sync(&mut self) -> Result<Vec<Oid>> {
        Ok(self.take_queue())
    }

    fn new_oid(&mut self) -> Result<Oid> {
        self.server.borrow_mut().storage.new_oid()
    }

    fn records(&mut self) -> Result<RecordIter<'_>> {
        let mut s = self.server.borrow_mut();
        let all: Vec<Result<(Oid, Vec<u8>)>> = s.storage.records()?.collect();
        Ok(Box::new(all.into_iter()))
    }

    fn pack(&mut self) -> Result<PackReport> {
        let mut s = self.server.borrow_mut();
        let report = s.storage.pack()?;
        let removed = s.storage.sync()?;
        // Every client, this one included, must drop what the pack removed.
        s.invalidate(&removed, None);
        Ok(report)
    }

    fn close(&mut self) -> Result<()> {
        Ok(())
    }
}

/// Where a test database lives: a [`Server`] in memory, a real file, or
/// a real file behind our storage server (connections over
/// `ClientStorage` and a loopback socket).
pub enum Backend {
    Memory(Server),
    File {
        _dir: tempfile::TempDir,
        path: PathBuf,
    },
    Socket(SocketServer),
}

/// Our storage server on a thread, over a file.
pub struct SocketServer {
    _dir: tempfile::TempDir,
    path: PathBuf,
    address: durus_core::storage::address::Address,
    handle: durus_core::storage::ServerHandle,
    thread: Option<std::thread::JoinHandle<Result<()>>>,
}

impl Drop for SocketServer {
    fn drop(&mut self) {
        self.handle.stop();
        if let Some(t) = self.thread.take() {
            t.join().unwrap().unwrap();
        }
    }
}

impl Backend {
    pub fn memory() -> Self {
        Backend::Memory(Server::new())
    }

    pub fn file() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("test.durus");
        Backend::File { _dir: dir, path }
    }

    pub fn socket() -> Self {
        use durus_core::storage::{Server as StorageServer, ServerOptions};
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("served.durus");
        let storage = durus_core::FileStorage::open(&path).unwrap();
        let server = StorageServer::bind(
            storage,
            &"127.0.0.1:0".parse().unwrap(),
            ServerOptions::default(),
        )
        .unwrap();
        let address = server.address().clone();
        let handle = server.handle();
        let thread = Some(std::thread::spawn(move || server.run()));
        Backend::Socket(SocketServer {
            _dir: dir,
            path,
            address,
            handle,
            thread,
        })
    }

    /// Every backend: memory, file, and a file behind the server.
    pub fn all() -> [Backend; 3] {
        [Backend::memory(), Backend::file(), Backend::socket()]
    }

    pub fn name(&self) -> &'static str {
        match self {
            Backend::Memory(_) => "memory",
            Backend::File { .. } => "file",
            Backend::Socket(_) => "socket",
        }
    }

    /// A new connection (drop the previous one first for a file: it holds
    /// the write lock).
    pub fn connect(&self) -> Connection {
        match self {
            Backend::Memory(server) => server.connect(),
            Backend::File { path, .. } => Connection::open(path).unwrap(),
            Backend::Socket(server) => {
                Connection::new(durus_core::ClientStorage::connect_to(&server.address).unwrap())
                    .unwrap()
            }
        }
    }

    /// Everything stored, to check that nothing was written: the file's
    /// bytes, or the server's records and commit count.
    pub fn snapshot(&self) -> Vec<u8> {
        match self {
            Backend::Memory(server) => {
                let mut out = server.commit_count().to_be_bytes().to_vec();
                for (oid, r) in server.records() {
                    out.extend_from_slice(&oid.0.to_be_bytes());
                    out.extend_from_slice(&r);
                }
                out
            }
            Backend::File { path, .. } => std::fs::read(path).unwrap(),
            Backend::Socket(server) => std::fs::read(&server.path).unwrap(),
        }
    }
}
