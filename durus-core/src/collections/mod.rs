//! Persistent containers, written only against the object layer's public
//! API: each is a plain serde type implementing `Persistent`, with its
//! operations on the handle (`PRef<PersistentDict<K, V>>::insert`, ...).
//! Each container is one object: a change rewrites the whole container
//! (use `BTree`, whose nodes are separate objects, for large collections).

mod btree;
mod dict;
mod list;
mod set;

pub use btree::{BTree, Iter as BTreeIter, DEFAULT_NODE_SIZE};
pub use dict::PersistentDict;
pub use list::PersistentList;
pub use set::PersistentSet;

use serde::de::DeserializeOwned;
use serde::Serialize;

/// What a container element needs: stored with serde, read back as clones.
pub trait Element: Clone + Serialize + DeserializeOwned + 'static {}

impl<T: Clone + Serialize + DeserializeOwned + 'static> Element for T {}
