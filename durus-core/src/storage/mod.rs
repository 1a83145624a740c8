//! Storages keep records safe: the [`Storage`] trait (Durus spec 1.1) and
//! its implementations.

pub mod address;
mod base_map;
mod client;
mod file;
pub mod file_io;
mod group_commit;
mod hub;
mod memory;
mod oid_map;
mod pack;
pub mod server;
mod session;
mod shared;
mod walk;

pub use address::Address;
pub use client::ClientStorage;
pub use file::{FileStats, FileStorage, FileStorageOptions, TailDamage};
pub use group_commit::Syncer;
pub use memory::MemoryStorage;
pub use pack::{PackJob, PackPhase, PackProgress};
pub use server::{Server, ServerHandle, ServerOptions};
pub use session::Service;
pub use shared::{LocalClient, SharedStorage};
pub use walk::Walk;

use crate::error::Result;

use crate::format::Oid;

/// An iterator over `(oid, record bytes)` pairs.
pub type RecordIter<'a> = Box<dyn Iterator<Item = Result<(Oid, Vec<u8>)>> + 'a>;

/// What a pack did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PackReport {
    /// Records kept (reachable from the root).
    pub kept: u64,
    /// Oids whose records were dropped, ascending; a server invalidates them.
    pub removed: Vec<Oid>,
    /// Storage size before and after, in bytes (0 for memory storages).
    pub size_before: u64,
    pub size_after: u64,
    /// Where the original file was kept (`<name>.prepack`), if it was.
    pub prepack: Option<std::path::PathBuf>,
}

/// Where records live: a file, memory, or a server.
///
/// A commit is `begin`, any number of `store`s, then `end`. Records are
/// whole Durus records ([`crate::format::record`]) whose oid matches the
/// one they are stored under. The trait is object safe: a connection holds
/// a `Box<dyn Storage>`.
pub trait Storage {
    /// The current record for `oid`, or [`crate::Error::KeyNotFound`].
    fn load(&mut self, oid: Oid) -> Result<Vec<u8>>;

    /// Whether a record is stored under `oid`. Storages that can answer
    /// without reading the record override this.
    fn contains(&mut self, oid: Oid) -> Result<bool> {
        match self.load(oid) {
            Ok(_) => Ok(true),
            Err(crate::Error::KeyNotFound(_)) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Several records at once, in the order asked. Storages with a cost
    /// per request (the client storage) override this.
    fn bulk_load(&mut self, oids: &[Oid]) -> Result<Vec<Vec<u8>>> {
        oids.iter().map(|&oid| self.load(oid)).collect()
    }

    /// Starts collecting records for a commit (drops any earlier pending ones).
    fn begin(&mut self) -> Result<()>;

    /// Adds a record to the commit being built. Storing an oid twice in
    /// one commit keeps the last record.
    fn store(&mut self, oid: Oid, record: Vec<u8>) -> Result<()>;

    /// Makes the pending records durable and visible as one transaction.
    /// A client storage first reports the oids other clients changed
    /// through `invalidations`; if that returns an error (a conflict), the
    /// transaction is abandoned, nothing is written, and `end` returns it.
    fn end(&mut self, invalidations: &mut dyn FnMut(&[Oid]) -> Result<()>) -> Result<()>;

    /// Hands the fsync of commits to the caller, for group commit: from
    /// now on `end` writes without syncing, and the returned [`Syncer`]
    /// makes everything written so far durable, while others go on using
    /// the storage. `None` (the default): the storage keeps syncing in
    /// `end`, or never syncs.
    fn defer_sync(&mut self) -> Result<Option<std::sync::Arc<dyn Syncer>>> {
        Ok(None)
    }

    /// Oids whose cached state must be dropped since the last call
    /// (changed by others, removed by a pack).
    fn sync(&mut self) -> Result<Vec<Oid>>;

    /// An oid never handed out before by this storage and not in use. The
    /// first on an empty storage is [`Oid::ROOT`].
    fn new_oid(&mut self) -> Result<Oid>;

    /// Every stored record (garbage included, where the storage can tell);
    /// a client storage walks what is reachable from the root instead.
    fn records(&mut self) -> Result<RecordIter<'_>>;

    /// Drops every record not reachable from the root through refs.
    fn pack(&mut self) -> Result<PackReport>;

    /// Starts a pack whose copying ([`PackJob::copy`]) runs without the
    /// storage, so a server keeps serving meanwhile; `None` when this
    /// storage packs only in one go ([`Storage::pack`]).
    fn start_background_pack(&mut self) -> Result<Option<PackJob>> {
        Ok(None)
    }

    /// Finishes a pack started by [`Storage::start_background_pack`] and
    /// copied: what was committed meanwhile is kept.
    fn finish_background_pack(&mut self, job: PackJob) -> Result<PackReport> {
        drop(job);
        Err(crate::Error::InvalidState(
            "this storage does not pack in the background".into(),
        ))
    }

    /// Releases the storage's resources; later calls fail with
    /// [`crate::Error::Closed`].
    fn close(&mut self) -> Result<()>;
}

/// Conveniences for every storage, `dyn Storage` included.
pub trait StorageExt: Storage {
    /// Breadth-first walk over the records reachable from `start` by refs.
    fn walk(&mut self, start: Oid) -> Walk<'_, Self> {
        Walk::new(self, start)
    }

    /// Commits `records` as one transaction (begin, store each, end),
    /// ignoring invalidations.
    fn commit_records(&mut self, records: impl IntoIterator<Item = Vec<u8>>) -> Result<()>
    where
        Self: Sized,
    {
        commit_records(self, records)
    }
}

impl<S: Storage + ?Sized> StorageExt for S {}

/// Commits `records` (whole Durus records) as one transaction.
pub fn commit_records<S: Storage + ?Sized>(
    storage: &mut S,
    records: impl IntoIterator<Item = Vec<u8>>,
) -> Result<()> {
    storage.begin()?;
    for record in records {
        let oid = crate::format::record::oid_of(&record)?;
        storage.store(oid, record)?;
    }
    storage.end(&mut |_| Ok(()))
}
