//! `PersistentList<T>`.

use serde::{Deserialize, Serialize};

use crate::collections::Element;
use crate::error::{Error, Result};
use crate::object::{PRef, Persistent};

/// A persistent vector (Durus's `PersistentList`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(bound(serialize = "T: Serialize", deserialize = "T: Element"))]
pub struct PersistentList<T> {
    data: Vec<T>,
}

impl<T> Default for PersistentList<T> {
    fn default() -> Self {
        PersistentList { data: Vec::new() }
    }
}

impl<T: Element> PersistentList<T> {
    pub fn new() -> Self {
        Self::default()
    }
}

/// Borrowing views, for use inside [`PRef::read`] (the handle's methods
/// return clones).
impl<T> PersistentList<T> {
    /// The elements in order.
    pub fn iter(&self) -> std::slice::Iter<'_, T> {
        self.data.iter()
    }

    pub fn as_slice(&self) -> &[T] {
        &self.data
    }

    pub fn get(&self, index: usize) -> Option<&T> {
        self.data.get(index)
    }

    pub fn len(&self) -> usize {
        self.data.len()
    }

    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }
}

impl<T: Element> FromIterator<T> for PersistentList<T> {
    fn from_iter<I: IntoIterator<Item = T>>(iter: I) -> Self {
        PersistentList {
            data: iter.into_iter().collect(),
        }
    }
}

impl<T: Element> Persistent for PersistentList<T> {
    const CLASS_NAME: &'static str = "durus.persistent_list.PersistentList";
}

fn check(index: usize, len: usize) -> Result<()> {
    if index < len {
        Ok(())
    } else {
        Err(Error::OutOfRange { index, len })
    }
}

impl<T: Element> PRef<PersistentList<T>> {
    pub fn push(&self, value: T) -> Result<()> {
        self.write(|l| l.data.push(value))
    }

    pub fn pop(&self) -> Result<Option<T>> {
        if self.is_empty()? {
            return Ok(None);
        }
        self.write(|l| l.data.pop())
    }

    /// A clone of element `index`, or `None` past the end.
    pub fn get(&self, index: usize) -> Result<Option<T>> {
        self.read(|l| l.data.get(index).cloned())
    }

    /// Replaces element `index`, returning the old one.
    pub fn set(&self, index: usize, value: T) -> Result<T> {
        check(index, self.len()?)?;
        self.write(|l| std::mem::replace(&mut l.data[index], value))
    }

    /// Inserts at `index` (`index == len` appends).
    pub fn insert(&self, index: usize, value: T) -> Result<()> {
        let len = self.len()?;
        if index > len {
            return Err(Error::OutOfRange { index, len });
        }
        self.write(|l| l.data.insert(index, value))
    }

    /// Removes and returns element `index`.
    pub fn remove(&self, index: usize) -> Result<T> {
        check(index, self.len()?)?;
        self.write(|l| l.data.remove(index))
    }

    pub fn len(&self) -> Result<usize> {
        self.read(|l| l.data.len())
    }

    pub fn is_empty(&self) -> Result<bool> {
        self.read(|l| l.data.is_empty())
    }

    /// The elements in order (a snapshot).
    pub fn iter(&self) -> Result<std::vec::IntoIter<T>> {
        self.read(|l| l.data.clone().into_iter())
    }

    pub fn clear(&self) -> Result<()> {
        self.write(|l| l.data.clear())
    }

    /// Calls `f` on every element in order, in place (no snapshot: `f`
    /// must not change this list), stopping at the first error.
    pub fn for_each(&self, mut f: impl FnMut(&T) -> Result<()>) -> Result<()> {
        self.read(|l| l.data.iter().try_for_each(&mut f))?
    }
}
