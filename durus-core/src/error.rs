//! The one error type of `durus-core`.

use std::io;
use std::path::PathBuf;

use crate::format::Oid;

/// Everything that can go wrong in durus, with enough context (which oid,
/// which file, which offset) to act on it.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// An operating-system I/O failure; `context` says what we were doing.
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: io::Error,
    },

    /// No record is stored under this oid (Durus's `DurusKeyError`).
    #[error("no record for oid {0}")]
    KeyNotFound(Oid),

    /// A byte string that should be a Durus record is not one.
    #[error("malformed record{}: {detail}", oid.map(|o| format!(" (oid {o})")).unwrap_or_default())]
    MalformedRecord { oid: Option<Oid>, detail: String },

    /// The file is not a SHELF-1 Durus file at all (wrong magic, too short).
    #[error("{}: not a Durus SHELF-1 file: {detail}", path.display())]
    NotAShelf { path: PathBuf, detail: String },

    /// The file's structure is damaged before its tail (offset map, base
    /// transaction): repair cannot fix this.
    #[error("{}: corrupt at offset {offset}: {detail}", path.display())]
    Corrupt {
        path: PathBuf,
        offset: u64,
        detail: String,
    },

    /// The file ends in a torn or garbled transaction starting at `offset`.
    /// Opening with repair truncates the file to `offset`, keeping every
    /// transaction before it.
    #[error(
        "{}: damaged tail at offset {offset} ({} bytes to the end): {detail}; open with repair (or run `durus repair`) to truncate it",
        path.display(), file_len - offset
    )]
    TornTail {
        path: PathBuf,
        offset: u64,
        file_len: u64,
        detail: String,
    },

    /// Another `FileStorage` (this process or another) holds the write lock.
    #[error("{}: locked by another writer (a read-write FileStorage is already open on it)", path.display())]
    Locked { path: PathBuf },

    /// `store` was given an oid that this storage never handed out.
    #[error("oid {0} is a surprise: it was never allocated by new_oid and is not stored")]
    SurpriseOid(Oid),

    /// A write was attempted on a storage opened read-only.
    #[error("storage is read-only")]
    ReadOnly,

    /// The storage has been closed.
    #[error("storage is closed")]
    Closed,

    /// A previous fsync or write failed: the file's durable state is
    /// unknown, so the storage refuses further writes until it is reopened.
    #[error("storage refuses writes after an earlier failed write or fsync ({0}); reopen it")]
    Poisoned(String),

    /// The operation is not valid in the storage's current state
    /// (e.g. packing with a transaction in progress).
    #[error("{0}")]
    InvalidState(String),

    /// Another client changed an object this transaction wrote or read.
    #[error("write conflict on oids {oids:?}")]
    Conflict { oids: Vec<Oid> },

    /// An object this transaction read was changed or removed by another
    /// client since this transaction began.
    #[error("read conflict on oids {oids:?}")]
    ReadConflict { oids: Vec<Oid> },

    /// A record names a class that no registered type claims.
    #[error(
        "unknown class {name:?} (oid {oid}): no #[derive(Persistent)] type has this name or alias"
    )]
    UnknownClass { name: String, oid: Oid },

    /// An object was asked for as one type but is stored as another.
    #[error("oid {oid} is a {found:?}, not a {expected:?}")]
    TypeMismatch {
        oid: Oid,
        expected: &'static str,
        found: String,
    },

    /// An index past the end of a persistent list.
    #[error("index {index} out of range for a list of {len}")]
    OutOfRange { index: usize, len: usize },

    /// A peer broke wire protocol 1: an unknown command, a malformed or
    /// oversized frame, a reply that makes no sense. `peer` says which
    /// client or server.
    #[error("protocol error with {peer}: {detail}")]
    Protocol { peer: String, detail: String },

    /// An object's state could not be encoded or decoded.
    #[error("cannot {action} the state of {class}{}: {detail}", oid.map(|o| format!(" (oid {o})")).unwrap_or_default())]
    State {
        action: &'static str,
        class: String,
        oid: Option<Oid>,
        detail: String,
    },
}

impl Error {
    /// True for the conflicts after which `abort()` and a retry may succeed.
    pub fn is_conflict(&self) -> bool {
        matches!(self, Error::Conflict { .. } | Error::ReadConflict { .. })
    }

    /// Wraps an I/O error with what we were doing when it happened.
    pub fn io(context: impl Into<String>, source: io::Error) -> Self {
        Error::Io {
            context: context.into(),
            source,
        }
    }

    /// Fills in the path of a [`Error::Corrupt`] raised by the format
    /// layer, which knows offsets but not files.
    pub(crate) fn in_file(self, path: &std::path::Path) -> Self {
        match self {
            Error::Corrupt { offset, detail, .. } => Error::Corrupt {
                path: path.into(),
                offset,
                detail,
            },
            other => other,
        }
    }

    pub(crate) fn malformed(oid: Option<Oid>, detail: impl Into<String>) -> Self {
        Error::MalformedRecord {
            oid,
            detail: detail.into(),
        }
    }
}

/// `Result` with durus's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
