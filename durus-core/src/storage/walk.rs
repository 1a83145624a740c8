//! The breadth-first reachability walk over refs.

use std::collections::{HashSet, VecDeque};

use crate::error::Result;
use crate::format::{Oid, Record};
use crate::storage::Storage;

/// Records are fetched through `bulk_load` this many at a time, so a walk
/// over a client storage is not one round trip per object.
const BATCH: usize = 100;

/// Iterator over `(oid, record)` for every record reachable from a start
/// oid, breadth first, each once. Built by [`crate::StorageExt::walk`].
pub struct Walk<'a, S: Storage + ?Sized> {
    storage: &'a mut S,
    queue: VecDeque<Oid>,
    seen: HashSet<Oid>,
    ready: VecDeque<(Oid, Vec<u8>)>,
    failed: bool,
}

impl<'a, S: Storage + ?Sized> Walk<'a, S> {
    /// A walk from `start` over `storage`.
    pub fn new(storage: &'a mut S, start: Oid) -> Self {
        Walk {
            storage,
            queue: VecDeque::from([start]),
            seen: HashSet::from([start]),
            ready: VecDeque::new(),
            failed: false,
        }
    }

    fn fill(&mut self) -> Result<()> {
        let n = self.queue.len().min(BATCH);
        let batch: Vec<Oid> = self.queue.drain(..n).collect();
        let records = self.storage.bulk_load(&batch)?;
        for (oid, record) in batch.into_iter().zip(records) {
            for r in Record::decode(&record)?.refs() {
                if self.seen.insert(r) {
                    self.queue.push_back(r);
                }
            }
            self.ready.push_back((oid, record));
        }
        Ok(())
    }
}

impl<S: Storage + ?Sized> Iterator for Walk<'_, S> {
    type Item = Result<(Oid, Vec<u8>)>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed {
            return None;
        }
        if self.ready.is_empty() && !self.queue.is_empty() {
            if let Err(e) = self.fill() {
                self.failed = true;
                return Some(Err(e));
            }
        }
        self.ready.pop_front().map(Ok)
    }
}

/// Every record reachable from the root (none on a storage without one):
/// `Storage::records` for storages that cannot list their garbage.
pub(crate) fn reachable_records<S: Storage>(
    storage: &mut S,
) -> Result<crate::storage::RecordIter<'_>> {
    let mut walk = Walk::new(storage, Oid::ROOT).peekable();
    if let Some(Err(crate::Error::KeyNotFound(Oid::ROOT))) = walk.peek() {
        return Ok(Box::new(std::iter::empty()));
    }
    Ok(Box::new(walk))
}
