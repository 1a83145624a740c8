//! `PersistentDict<K, V>` and the connection's root.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::collections::Element;
use crate::error::Result;
use crate::object::{Connection, PObject, PRef, Persistent};
use crate::storage::Storage;

/// A persistent map, ordered by key (Durus's `PersistentDict`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(bound(
    serialize = "K: Serialize, V: Serialize",
    deserialize = "K: Element + Ord, V: Element"
))]
pub struct PersistentDict<K: Ord, V> {
    data: BTreeMap<K, V>,
}

impl<K: Ord, V> Default for PersistentDict<K, V> {
    fn default() -> Self {
        PersistentDict {
            data: BTreeMap::new(),
        }
    }
}

impl<K: Element + Ord, V: Element> PersistentDict<K, V> {
    /// An empty dict.
    pub fn new() -> Self {
        Self::default()
    }
}

/// Borrowing views, for use inside [`PRef::read`]: they visit the entries
/// in place, where the handle's methods return clones.
///
/// ```
/// # use durus_core::{PRef, PersistentDict};
/// let d: PRef<PersistentDict<u32, String>> = PRef::new([(1, "a".to_string())].into_iter().collect());
/// let total = d.read(|d| d.iter().map(|(k, v)| *k as usize + v.len()).sum::<usize>())?;
/// assert_eq!(total, 2);
/// # Ok::<(), durus_core::Error>(())
/// ```
impl<K: Ord, V> PersistentDict<K, V> {
    /// The entries in key order.
    pub fn iter(&self) -> std::collections::btree_map::Iter<'_, K, V> {
        self.data.iter()
    }

    /// The value for `key`.
    pub fn get(&self, key: &K) -> Option<&V> {
        self.data.get(key)
    }

    pub fn contains_key(&self, key: &K) -> bool {
        self.data.contains_key(key)
    }

    pub fn len(&self) -> usize {
        self.data.len()
    }

    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }
}

impl<K: Element + Ord, V: Element> FromIterator<(K, V)> for PersistentDict<K, V> {
    fn from_iter<I: IntoIterator<Item = (K, V)>>(iter: I) -> Self {
        PersistentDict {
            data: iter.into_iter().collect(),
        }
    }
}

impl<K: Element + Ord, V: Element> Persistent for PersistentDict<K, V> {
    const CLASS_NAME: &'static str = "durus.persistent_dict.PersistentDict";
}

impl<K: Element + Ord, V: Element> PRef<PersistentDict<K, V>> {
    /// Inserts, returning the previous value.
    pub fn insert(&self, key: K, value: V) -> Result<Option<V>> {
        self.write(|d| d.data.insert(key, value))
    }

    /// A clone of the value for `key`.
    pub fn get(&self, key: &K) -> Result<Option<V>> {
        self.read(|d| d.data.get(key).cloned())
    }

    /// Removes and returns the value for `key`.
    pub fn remove(&self, key: &K) -> Result<Option<V>> {
        if !self.contains_key(key)? {
            return Ok(None); // no change to record
        }
        self.write(|d| d.data.remove(key))
    }

    pub fn contains_key(&self, key: &K) -> Result<bool> {
        self.read(|d| d.data.contains_key(key))
    }

    pub fn len(&self) -> Result<usize> {
        self.read(|d| d.data.len())
    }

    pub fn is_empty(&self) -> Result<bool> {
        self.read(|d| d.data.is_empty())
    }

    /// The keys, in order.
    pub fn keys(&self) -> Result<Vec<K>> {
        self.read(|d| d.data.keys().cloned().collect())
    }

    /// The values, in key order.
    pub fn values(&self) -> Result<Vec<V>> {
        self.read(|d| d.data.values().cloned().collect())
    }

    /// The entries in key order (a snapshot: changing the dict while
    /// iterating is safe).
    pub fn iter(&self) -> Result<std::vec::IntoIter<(K, V)>> {
        self.read(|d| {
            d.data
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect::<Vec<_>>()
                .into_iter()
        })
    }

    /// Removes every entry.
    pub fn clear(&self) -> Result<()> {
        self.write(|d| d.data.clear())
    }

    /// Calls `f` on every entry in key order, in place (no snapshot: `f`
    /// must not change this dict), stopping at the first error.
    pub fn for_each(&self, mut f: impl FnMut(&K, &V) -> Result<()>) -> Result<()> {
        self.read(|d| d.data.iter().try_for_each(|(k, v)| f(k, v)))?
    }
}

/// The root of a database made by [`Connection::open`] or [`Connection::new`].
pub type Root = PersistentDict<String, PObject>;

impl Connection {
    /// Opens the database file at `path` (created if missing) through a
    /// [`crate::FileStorage`]; its root is a `PersistentDict<String, PObject>`.
    pub fn open(path: impl AsRef<Path>) -> Result<Connection> {
        Connection::open_with_root::<Root>(path)
    }

    /// A connection over any storage; the root is created if it is empty.
    pub fn new(storage: impl Storage + 'static) -> Result<Connection> {
        Connection::new_with_root::<Root>(storage)
    }

    /// The root object (oid 0).
    pub fn root(&self) -> PRef<Root> {
        self.root_as::<Root>()
            .expect("new() and open() check that the root is a PersistentDict<String, PObject>")
    }
}
