//! The engine of durus for Rust: formats, storages and (in later layers)
//! the server, the object layer and the containers.
//!
//! Layers depend downward only: [`format`] (pure bytes) ← [`storage`]
//! (keeping bytes safe) ← [`tools`] (census, verification).

#![deny(unsafe_code)] // except object::slot, which says why

pub mod collections;
pub mod error;
pub mod format;
pub mod object;
pub mod storage;
pub mod tools;

pub use collections::{BTree, PersistentDict, PersistentList, PersistentSet};
pub use error::{Error, Result};
pub use format::Oid;
pub use object::{Connection, Database, PObject, PRef, Persistent};
pub use storage::{
    ClientStorage, FileStorage, FileStorageOptions, MemoryStorage, PackReport, Storage, StorageExt,
};
