//! The object cache (spec 9.7): oid → cell, weakly; recently accessed
//! objects strongly; least recently used saved objects ghosted when the
//! cache holds more than its size.

use std::rc::{Rc, Weak};

use crate::format::oid::OidHashMap;
use crate::format::Oid;
use crate::object::cell::{ObjectCell, Status};

pub(crate) struct Cache {
    objects: OidHashMap<Weak<ObjectCell>>,
    /// Accessed objects with the serial of the access, kept alive until
    /// the cache shrinks past them. A cell is pushed once per transaction
    /// that accesses it; entries whose serial is no longer the cell's are
    /// stale and dropped when the list is compacted.
    recent: Vec<(u64, Rc<ObjectCell>)>,
    size: usize,
}

impl Cache {
    pub(crate) fn new(size: usize) -> Self {
        Cache {
            objects: OidHashMap::default(),
            recent: Vec::new(),
            size: size.max(1),
        }
    }

    pub(crate) fn size(&self) -> usize {
        self.size
    }

    pub(crate) fn set_size(&mut self, size: usize) {
        self.size = size.max(1);
    }

    pub(crate) fn get(&self, oid: Oid) -> Option<Rc<ObjectCell>> {
        self.objects.get(&oid).and_then(Weak::upgrade)
    }

    pub(crate) fn insert(&mut self, oid: Oid, cell: &Rc<ObjectCell>) {
        self.objects.insert(oid, Rc::downgrade(cell));
    }

    /// Forgets the cell cached for `oid` (it stays alive in `recent` until
    /// the next shrink; nothing finds it by oid any more).
    pub(crate) fn remove(&mut self, oid: Oid) {
        self.objects.remove(&oid);
    }

    /// Notes the first access of `cell` in the transaction `serial`.
    pub(crate) fn note_access(&mut self, serial: u64, cell: &Rc<ObjectCell>) {
        self.recent.push((serial, cell.clone()));
    }

    /// Live cells (ghosts included), after dropping dead entries.
    pub(crate) fn count(&mut self) -> usize {
        self.objects.retain(|_, w| w.strong_count() > 0);
        self.objects.len()
    }

    /// Ghosts least recently used saved objects not accessed in the current
    /// transaction until about `size` cells are live.
    pub(crate) fn shrink(&mut self, current_serial: u64) {
        self.compact();
        // Dead entries count here too, so this bound is cheap and safe:
        // most commits end with no walk over the cache at all.
        if self.objects.len() <= self.size {
            return;
        }
        let mut count = self.count();
        if count <= self.size {
            return;
        }
        // Without stale entries, `recent` holds one entry per cell in the
        // order of their last access: the front is the least recently used.
        self.recent
            .retain(|(serial, cell)| cell.serial.get() == *serial);
        let mut evicted = 0;
        for (serial, cell) in &self.recent {
            if count <= self.size || *serial == current_serial {
                break;
            }
            if cell.status.get() == Status::Saved {
                cell.ghostify();
            }
            evicted += 1;
            // Dropping our reference below frees it unless a handle holds it.
            if Rc::strong_count(cell) == 1 {
                count -= 1;
            }
        }
        self.recent.drain(..evicted);
        self.count();
    }

    /// Drops stale entries of `recent` once they are as many as the live
    /// ones (amortised: each entry is looked at O(1) times).
    fn compact(&mut self) {
        if self.recent.len() < 1024 || self.recent.len() < 2 * self.objects.len() {
            return;
        }
        self.recent
            .retain(|(serial, cell)| cell.serial.get() == *serial);
    }
}
