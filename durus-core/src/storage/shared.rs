//! One storage shared by several connections in one process, with
//! Durus's invalidations between them and no server (Durus silently loses
//! updates when two connections share a `FileStorage`, spec 9.6).

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use crate::error::{Error, Result};
use crate::format::Oid;
use crate::storage::hub::{ClientId, Hub};
use crate::storage::walk::reachable_records;
use crate::storage::{FileStorage, PackReport, RecordIter, Storage};

/// A storage shared by the threads of a process: each takes a
/// [`SharedStorage::client`] (one per connection) and sees the others'
/// commits as invalidations, exactly as clients of a server do.
///
/// `Clone` is a cheap handle copy; it is `Send` and `Sync`.
#[derive(Clone)]
pub struct SharedStorage {
    hub: Arc<Hub>,
}

impl SharedStorage {
    /// Shares `storage`.
    pub fn new(storage: impl Storage + Send + 'static) -> SharedStorage {
        SharedStorage {
            hub: Arc::new(Hub::new(Box::new(storage), false, Duration::ZERO)),
        }
    }

    /// Shares a [`FileStorage`] at `path` (created if missing).
    pub fn open(path: impl AsRef<Path>) -> Result<SharedStorage> {
        Ok(Self::new(FileStorage::open(path)?))
    }

    /// A new client of the shared storage, for one connection.
    pub fn client(&self) -> LocalClient {
        LocalClient {
            hub: self.hub.clone(),
            id: self.hub.join(),
            pending: Vec::new(),
            closed: false,
        }
    }
}

/// One connection's view of a [`SharedStorage`].
pub struct LocalClient {
    hub: Arc<Hub>,
    id: ClientId,
    pending: Vec<(Oid, Vec<u8>)>,
    closed: bool,
}

impl LocalClient {
    fn check_open(&self) -> Result<()> {
        if self.closed {
            Err(Error::Closed)
        } else {
            Ok(())
        }
    }
}

impl Storage for LocalClient {
    fn load(&mut self, oid: Oid) -> Result<Vec<u8>> {
        self.check_open()?;
        self.hub.load(self.id, oid)
    }

    fn begin(&mut self) -> Result<()> {
        self.check_open()?;
        self.pending.clear();
        Ok(())
    }

    fn store(&mut self, oid: Oid, record: Vec<u8>) -> Result<()> {
        self.check_open()?;
        crate::format::record::check_stored_as(oid, &record)?;
        match self.pending.iter_mut().find(|(o, _)| *o == oid) {
            Some(slot) => slot.1 = record,
            None => self.pending.push((oid, record)),
        }
        Ok(())
    }

    fn end(&mut self, invalidations: &mut dyn FnMut(&[Oid]) -> Result<()>) -> Result<()> {
        self.check_open()?;
        let pending = std::mem::take(&mut self.pending);
        if pending.is_empty() {
            return Ok(());
        }
        let commit = self.hub.begin_commit(self.id)?;
        if !commit.invalidations().is_empty() {
            invalidations(commit.invalidations())?;
        }
        let entries: Vec<(Oid, &[u8])> = pending.iter().map(|(o, r)| (*o, r.as_slice())).collect();
        let written = commit.write(&entries)?;
        self.hub.wait_durable(written)
    }

    fn sync(&mut self) -> Result<Vec<Oid>> {
        self.check_open()?;
        self.hub.sync(self.id)
    }

    fn new_oid(&mut self) -> Result<Oid> {
        self.check_open()?;
        let oids = self.hub.new_oids(self.id, 1)?;
        oids.first()
            .copied()
            .ok_or_else(|| Error::InvalidState("the shared storage handed out no oid".into()))
    }

    fn records(&mut self) -> Result<RecordIter<'_>> {
        self.check_open()?;
        reachable_records(self)
    }

    /// Packs the shared storage (every client sees the removals as
    /// invalidations). With a pack already running, returns an empty report.
    fn pack(&mut self) -> Result<PackReport> {
        self.check_open()?;
        Ok(self.hub.pack()?.unwrap_or_default())
    }

    /// Leaves the shared storage (the storage itself stays open for the
    /// other clients).
    fn close(&mut self) -> Result<()> {
        if !self.closed {
            self.closed = true;
            self.hub.leave(self.id);
        }
        Ok(())
    }
}

impl Drop for LocalClient {
    fn drop(&mut self) {
        let _ = self.close();
    }
}
