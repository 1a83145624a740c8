//! `PersistentSet<T>`.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

use crate::collections::Element;
use crate::error::Result;
use crate::object::{PRef, Persistent};

/// A persistent ordered set (Durus's `PersistentSet`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(bound(serialize = "T: Serialize", deserialize = "T: Element + Ord"))]
pub struct PersistentSet<T: Ord> {
    data: BTreeSet<T>,
}

impl<T: Ord> Default for PersistentSet<T> {
    fn default() -> Self {
        PersistentSet {
            data: BTreeSet::new(),
        }
    }
}

impl<T: Element + Ord> PersistentSet<T> {
    pub fn new() -> Self {
        Self::default()
    }
}

/// Borrowing views, for use inside [`PRef::read`] (the handle's methods
/// return clones).
impl<T: Ord> PersistentSet<T> {
    /// The elements in order.
    pub fn iter(&self) -> std::collections::btree_set::Iter<'_, T> {
        self.data.iter()
    }

    pub fn contains(&self, value: &T) -> bool {
        self.data.contains(value)
    }

    pub fn len(&self) -> usize {
        self.data.len()
    }

    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }
}

impl<T: Element + Ord> FromIterator<T> for PersistentSet<T> {
    fn from_iter<I: IntoIterator<Item = T>>(iter: I) -> Self {
        PersistentSet {
            data: iter.into_iter().collect(),
        }
    }
}

impl<T: Element + Ord> Persistent for PersistentSet<T> {
    const CLASS_NAME: &'static str = "durus.persistent_set.PersistentSet";
}

impl<T: Element + Ord> PRef<PersistentSet<T>> {
    /// Adds `value`; false if it was already there (nothing changes then).
    pub fn insert(&self, value: T) -> Result<bool> {
        if self.contains(&value)? {
            return Ok(false);
        }
        self.write(|s| s.data.insert(value))
    }

    /// Removes `value`; false if it was not there.
    pub fn remove(&self, value: &T) -> Result<bool> {
        if !self.contains(value)? {
            return Ok(false);
        }
        self.write(|s| s.data.remove(value))
    }

    pub fn contains(&self, value: &T) -> Result<bool> {
        self.read(|s| s.data.contains(value))
    }

    pub fn len(&self) -> Result<usize> {
        self.read(|s| s.data.len())
    }

    pub fn is_empty(&self) -> Result<bool> {
        self.read(|s| s.data.is_empty())
    }

    /// The elements in order (a snapshot).
    pub fn iter(&self) -> Result<std::vec::IntoIter<T>> {
        self.read(|s| s.data.iter().cloned().collect::<Vec<_>>().into_iter())
    }

    pub fn clear(&self) -> Result<()> {
        self.write(|s| s.data.clear())
    }

    /// Calls `f` on every element in order, in place (no snapshot: `f`
    /// must not change this set), stopping at the first error.
    pub fn for_each(&self, mut f: impl FnMut(&T) -> Result<()>) -> Result<()> {
        self.read(|s| s.data.iter().try_for_each(&mut f))?
    }
}
