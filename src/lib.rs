//! # durus for Rust
//!
//! A transparent persistent object database, the Rust successor of
//! [Durus](https://pypi.org/project/Durus/) 4.3, byte-compatible with its
//! record format, its SHELF-1 file and its wire protocol.
//!
//! This crate is the facade users depend on: it re-exports the engine from
//! `durus-core` and ships the `durus` command line tool. The storage layer
//! is in place; the object layer (`Connection`, `#[derive(Persistent)]`)
//! builds on it.
//!
//! ```
//! use durus::prelude::*;
//! use durus::format::record;
//! # let dir = tempfile::tempdir().unwrap();
//! # let path = dir.path().join("quick.durus");
//! let mut storage = FileStorage::open(&path)?;
//! let root = storage.new_oid()?;
//! storage.commit_records([record::encode(root, b"hello", &[])?])?;
//! drop(storage);
//! let mut again = FileStorage::open(&path)?;
//! assert_eq!(record::Record::decode(&again.load(Oid::ROOT)?)?.data, b"hello");
//! # Ok::<(), durus::Error>(())
//! ```

pub use durus_core::object::registry;
pub use durus_core::object::Persistent;
pub use durus_core::tools::instances::{gen_every_instance, touch_every_reference};
pub use durus_core::{collections, error, format, object, storage, tools};
pub use durus_core::{
    BTree, ClientStorage, Connection, Database, Error, FileStorage, FileStorageOptions,
    MemoryStorage, Oid, PObject, PRef, PackReport, PersistentDict, PersistentList, PersistentSet,
    Result, Storage, StorageExt,
};
pub use durus_derive::Persistent;

/// The names most programs need.
pub mod prelude {
    pub use durus_core::object::Persistent;
    pub use durus_core::{
        BTree, ClientStorage, Connection, Database, Error, FileStorage, FileStorageOptions,
        MemoryStorage, Oid, PObject, PRef, PersistentDict, PersistentList, PersistentSet, Result,
        Storage, StorageExt,
    };
    pub use durus_derive::Persistent;
}
