//! The engine of durus for Rust: formats, storages and (in later layers)
//! the server, the object layer and the containers.
//!
//! Layers depend downward only: [`format`] (pure bytes) ← [`storage`]
//! (keeping bytes safe) ← [`tools`] (census, verification).

pub mod error;
pub mod format;
pub mod storage;
pub mod tools;

pub use error::{Error, Result};
pub use format::Oid;
pub use storage::{
    FileStorage, FileStorageOptions, MemoryStorage, PackReport, Storage, StorageExt,
};
