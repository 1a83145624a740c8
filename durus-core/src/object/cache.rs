//! The object cache (spec 9.7): oid → cell, weakly; recently accessed
//! objects strongly; least recently used saved objects ghosted when the
//! cache holds more than its size.

use std::collections::HashMap;
use std::rc::{Rc, Weak};

use crate::format::Oid;
use crate::object::cell::{ObjectCell, Status};

pub(crate) struct Cache {
    objects: HashMap<Oid, Weak<ObjectCell>>,
    /// Accessed objects, kept alive until the cache shrinks past them.
    recent: HashMap<Oid, Rc<ObjectCell>>,
    size: usize,
}

impl Cache {
    pub(crate) fn new(size: usize) -> Self {
        Cache {
            objects: HashMap::new(),
            recent: HashMap::new(),
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

    pub(crate) fn remove(&mut self, oid: Oid) {
        self.objects.remove(&oid);
        self.recent.remove(&oid);
    }

    pub(crate) fn note_access(&mut self, oid: Oid, cell: &Rc<ObjectCell>) {
        self.recent.entry(oid).or_insert_with(|| cell.clone());
    }

    /// Live cells (ghosts included), after dropping dead entries.
    pub(crate) fn count(&mut self) -> usize {
        self.objects.retain(|_, w| w.strong_count() > 0);
        self.objects.len()
    }

    /// Ghosts least recently used saved objects not accessed in the current
    /// transaction until about `size` cells are live.
    pub(crate) fn shrink(&mut self, current_serial: u64) {
        // Dead entries count here too, so this bound is cheap and safe:
        // most commits end with no walk over the cache at all.
        if self.objects.len() <= self.size {
            return;
        }
        let mut count = self.count();
        if count <= self.size {
            return;
        }
        let mut candidates: Vec<(u64, Oid)> = self
            .recent
            .iter()
            .filter(|(_, c)| c.serial.get() != current_serial)
            .map(|(&oid, c)| (c.serial.get(), oid))
            .collect();
        candidates.sort_unstable();
        for (_, oid) in candidates {
            if count <= self.size {
                break;
            }
            if let Some(cell) = self.recent.remove(&oid) {
                if cell.status.get() == Status::Saved {
                    cell.ghostify();
                }
                if Rc::strong_count(&cell) == 1 {
                    count -= 1;
                }
            }
        }
        self.count();
    }
}
