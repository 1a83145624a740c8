//! One storage shared by many clients: what Durus's server keeps per
//! client (spec 7.5), for the socket server and for in-process
//! connections alike.
//!
//! Each client has an invalidation set (oids others committed, or a pack
//! removed, since the client last synced) and the oids handed to it but
//! not yet committed. A commit runs under `commit` from the moment its
//! invalidations are taken until its records are written, so the list a
//! client decides on stays exact; `state` is held only for each storage
//! call, so loads and syncs go on meanwhile. Lock order: `commit`, then
//! `state`.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::error::{Error, Result};
use crate::format::Oid;
use crate::storage::group_commit::GroupCommit;
use crate::storage::{PackReport, Storage};

/// A client of a [`Hub`].
pub(crate) type ClientId = u64;

pub(crate) struct Hub {
    commit: Mutex<()>,
    state: Mutex<State>,
    readonly: bool,
    /// Held while a pack runs.
    packing: Mutex<()>,
    bytes_since_pack: AtomicU64,
    /// How long a committer polls for the commit lock before sleeping.
    commit_spin: Duration,
    /// Shares fsyncs between concurrent commits (`None`: `end` syncs).
    group: Option<GroupCommit>,
}

struct State {
    storage: Box<dyn Storage + Send>,
    clients: HashMap<ClientId, Client>,
    next_client: ClientId,
    /// Known once seen; a pack never removes the root.
    root_exists: bool,
}

#[derive(Default)]
struct Client {
    invalid: HashSet<Oid>,
    unused: HashSet<Oid>,
}

/// Takes a lock held for about one client round trip, staying awake for
/// up to `spin` before sleeping (why: [`Stream`](crate::storage::address::Stream)).
fn spin_lock<T>(m: &Mutex<T>, spin: Duration) -> MutexGuard<'_, T> {
    let start = Instant::now();
    loop {
        match m.try_lock() {
            Ok(g) => return g,
            Err(std::sync::TryLockError::Poisoned(p)) => return p.into_inner(),
            Err(std::sync::TryLockError::WouldBlock) => {}
        }
        if start.elapsed() >= spin {
            return lock(m);
        }
        std::thread::yield_now();
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panicking client thread must not take everyone down with it.
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Hub {
    /// A hub over `storage`; its commits are group commits when the
    /// storage can hand over its fsyncs ([`Storage::defer_sync`]).
    pub(crate) fn new(
        mut storage: Box<dyn Storage + Send>,
        readonly: bool,
        commit_spin: Duration,
    ) -> Hub {
        let group = match storage.defer_sync() {
            Ok(syncer) => syncer.map(GroupCommit::new),
            Err(e) => {
                tracing::warn!("no group commit, each commit syncs alone: {e}");
                None
            }
        };
        Hub {
            group,
            commit: Mutex::new(()),
            state: Mutex::new(State {
                storage,
                clients: HashMap::new(),
                next_client: 1,
                root_exists: false,
            }),
            readonly,
            packing: Mutex::new(()),
            bytes_since_pack: AtomicU64::new(0),
            commit_spin,
        }
    }

    pub(crate) fn join(&self) -> ClientId {
        let mut state = lock(&self.state);
        let id = state.next_client;
        state.next_client += 1;
        state.clients.insert(id, Client::default());
        id
    }

    pub(crate) fn leave(&self, id: ClientId) {
        let mut state = lock(&self.state);
        // Its unused oids stay allocated in the storage (never handed out
        // again) and unwritable: nobody holds them and they are not stored.
        state.clients.remove(&id);
    }

    /// `n` new oids for client `id`, never one another client must not see
    /// yet (spec 7.5). Oid 0 is handed out again while the root is missing
    /// and nobody holds it (Durus never does: a client that took it and
    /// left breaks every later connection until a restart, spec 9.2).
    pub(crate) fn new_oids(&self, id: ClientId, n: usize) -> Result<Vec<Oid>> {
        if self.readonly {
            return Err(Error::ReadOnly);
        }
        let mut state = lock(&self.state);
        let mut oids = Vec::with_capacity(n);
        if n > 0 && state.root_is_free() {
            oids.push(Oid::ROOT);
        }
        while oids.len() < n {
            let oid = state.storage.new_oid()?;
            if oid == Oid::ROOT || state.clients.values().any(|c| c.invalid.contains(&oid)) {
                continue;
            }
            oids.push(oid);
        }
        state.client(id).unused.extend(oids.iter().copied());
        Ok(oids)
    }

    /// The record for `oid`; a read conflict while `oid` is in the
    /// client's invalidation set (it must not see a state newer than its
    /// cache's snapshot).
    pub(crate) fn load(&self, id: ClientId, oid: Oid) -> Result<Vec<u8>> {
        let mut state = lock(&self.state);
        if state
            .clients
            .get(&id)
            .is_some_and(|c| c.invalid.contains(&oid))
        {
            return Err(Error::ReadConflict { oids: vec![oid] });
        }
        state.storage.load(oid)
    }

    /// Returns and clears the client's invalidations.
    pub(crate) fn sync(&self, id: ClientId) -> Result<Vec<Oid>> {
        let mut state = lock(&self.state);
        state.fold_storage_sync()?;
        Ok(state.take_invalid(id))
    }

    /// Starts a commit: the caller decides on the invalidations (and
    /// abandons by dropping the result) or writes its records with
    /// [`Commit::write`]. Other commits wait until then.
    pub(crate) fn begin_commit(&self, id: ClientId) -> Result<Commit<'_>> {
        let guard = spin_lock(&self.commit, self.commit_spin);
        let invalid = self.sync(id)?;
        Ok(Commit {
            hub: self,
            id,
            invalid,
            _guard: guard,
        })
    }

    /// Packs, returning when the pack is done; if one is already running,
    /// waits for it instead (then `None`). Removed oids reach every client
    /// through its next sync or commit.
    pub(crate) fn pack(&self) -> Result<Option<PackReport>> {
        if self.readonly {
            return Err(Error::ReadOnly);
        }
        let _packing = match self.packing.try_lock() {
            Ok(guard) => guard,
            Err(std::sync::TryLockError::Poisoned(p)) => p.into_inner(),
            Err(std::sync::TryLockError::WouldBlock) => {
                drop(lock(&self.packing));
                return Ok(None);
            }
        };
        let report = self.pack_while_serving()?;
        self.bytes_since_pack.store(0, Ordering::SeqCst);
        tracing::info!(
            "pack done: {} records kept, {} removed, {} -> {} bytes",
            report.kept,
            report.removed.len(),
            report.size_before,
            report.size_after
        );
        Ok(Some(report))
    }

    /// Copies without holding the storage where it can, so loads and
    /// commits go on; commits made meanwhile are kept.
    fn pack_while_serving(&self) -> Result<PackReport> {
        let job = lock(&self.state).storage.start_background_pack()?;
        match job {
            Some(mut job) => {
                job.copy(&mut |_| {})?;
                let _commit = lock(&self.commit);
                lock(&self.state).storage.finish_background_pack(job)
            }
            None => {
                let _commit = lock(&self.commit);
                lock(&self.state).storage.pack()
            }
        }
    }

    /// Returns once the transaction is durable (at once without group
    /// commit: `end` synced it).
    pub(crate) fn wait_durable(&self, written: Written) -> Result<()> {
        match (&self.group, written.0) {
            (Some(group), Some(n)) => group.wait(n),
            _ => Ok(()),
        }
    }

    /// fsyncs shared by group commit so far (`None`: no group commit).
    pub(crate) fn group_syncs(&self) -> Option<u64> {
        self.group.as_ref().map(GroupCommit::syncs)
    }

    /// Bytes committed since the last pack.
    pub(crate) fn bytes_since_pack(&self) -> u64 {
        self.bytes_since_pack.load(Ordering::SeqCst)
    }

    /// Waits for a commit in progress, then closes the storage.
    pub(crate) fn close(&self) -> Result<()> {
        let _commit = lock(&self.commit);
        lock(&self.state).storage.close()
    }
}

/// A transaction written by [`Commit::write`], durable or not yet.
#[must_use = "a written transaction is acknowledged only once durable"]
pub(crate) struct Written(Option<u64>);

/// A commit in progress (holds the hub's commit lock).
pub(crate) struct Commit<'a> {
    hub: &'a Hub,
    id: ClientId,
    invalid: Vec<Oid>,
    _guard: MutexGuard<'a, ()>,
}

impl Commit<'_> {
    /// What others changed since the client's last sync (already cleared
    /// from its set).
    pub(crate) fn invalidations(&self) -> &[Oid] {
        &self.invalid
    }

    /// Writes `entries` as one transaction, after checking that the client
    /// may write every oid. Nothing is written on an error. With group
    /// commit the transaction is written but not yet durable: pass the
    /// result to [`Hub::wait_durable`] (after this commit is dropped, so
    /// that the next one can start) before acknowledging it.
    pub(crate) fn write(self, entries: &[(Oid, &[u8])]) -> Result<Written> {
        if self.hub.readonly {
            return Err(Error::ReadOnly);
        }
        let mut state = lock(&self.hub.state);
        for (oid, _) in entries {
            if let Some(why) = state.refuse_write(self.id, *oid)? {
                return Err(Error::InvalidState(format!(
                    "client {} cannot commit: {why}",
                    self.id
                )));
            }
        }
        if let Err(e) = write(&mut *state.storage, entries) {
            let _ = state.storage.begin(); // drop whatever was staged
            return Err(e);
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
        let bytes: u64 = entries.iter().map(|(_, r)| 12 + r.len() as u64).sum();
        self.hub.bytes_since_pack.fetch_add(bytes, Ordering::SeqCst);
        Ok(Written(self.hub.group.as_ref().map(GroupCommit::written)))
    }
}

impl State {
    fn client(&mut self, id: ClientId) -> &mut Client {
        self.clients.entry(id).or_default()
    }

    /// Folds the storage's own invalidations (pack removals) into every
    /// client's set.
    fn fold_storage_sync(&mut self) -> Result<()> {
        let oids = self.storage.sync()?;
        if !oids.is_empty() {
            for client in self.clients.values_mut() {
                client.invalid.extend(oids.iter().copied());
            }
        }
        Ok(())
    }

    fn take_invalid(&mut self, id: ClientId) -> Vec<Oid> {
        let mut oids: Vec<Oid> = self.client(id).invalid.drain().collect();
        oids.sort_unstable();
        oids
    }

    fn root_is_free(&mut self) -> bool {
        if self.root_exists || self.clients.values().any(|c| c.unused.contains(&Oid::ROOT)) {
            return false;
        }
        self.root_exists = !matches!(self.storage.load(Oid::ROOT), Err(Error::KeyNotFound(_)));
        !self.root_exists
    }

    /// Why client `id` may not write `oid`, if it may not: only the root
    /// (everyone's: clients may race to create it, the first commit wins
    /// and the others see a conflict), oids handed to this client, and
    /// stored objects may be written.
    fn refuse_write(&mut self, id: ClientId, oid: Oid) -> Result<Option<String>> {
        let own = self
            .clients
            .get(&id)
            .is_some_and(|c| c.unused.contains(&oid));
        if oid == Oid::ROOT || own || self.storage.contains(oid)? {
            return Ok(None);
        }
        Ok(Some(
            match self.clients.iter().find(|(_, c)| c.unused.contains(&oid)) {
                Some((other, _)) => {
                    format!("oid {oid} was handed to client {other}, not to this one")
                }
                None => format!("oid {oid} was never handed to this client and is not stored"),
            },
        ))
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
