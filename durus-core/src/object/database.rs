//! `Database`: several connections over one storage in one process, one
//! per thread, with invalidations between them (no server needed).

use std::path::Path;

use crate::error::Result;
use crate::object::Connection;
use crate::storage::{SharedStorage, Storage};

/// A database shared by the threads of a process.
///
/// `Connection` is `!Send` (one per thread), so a multi-threaded program
/// opens the database once and each thread calls [`Database::connect`].
/// The connections see each other's commits exactly as clients of a
/// server do: after their own `commit()` or `abort()`, with Durus's
/// conflicts. (Sharing a plain `FileStorage` between Durus connections
/// loses updates silently, spec 9.6.)
///
/// ```
/// use durus_core::object::Database;
/// # let dir = tempfile::tempdir().unwrap();
/// let db = Database::open(dir.path().join("shared.durus"))?;
/// let worker = {
///     let db = db.clone();
///     std::thread::spawn(move || -> durus_core::Result<()> {
///         let conn = db.connect()?;
///         conn.root().insert("from".into(), durus_core::PObject::from(durus_core::PRef::new(
///             durus_core::PersistentList::<u32>::from_iter([1, 2]))))?;
///         conn.commit()
///     })
/// };
/// worker.join().unwrap()?;
/// let conn = db.connect()?;
/// assert!(conn.root().contains_key(&"from".to_string())?);
/// # Ok::<(), durus_core::Error>(())
/// ```
#[derive(Clone)]
pub struct Database {
    shared: SharedStorage,
}

impl Database {
    /// Opens (or creates) the database file at `path`.
    pub fn open(path: impl AsRef<Path>) -> Result<Database> {
        Ok(Database {
            shared: SharedStorage::open(path)?,
        })
    }

    /// Shares any storage.
    pub fn new(storage: impl Storage + Send + 'static) -> Database {
        Database {
            shared: SharedStorage::new(storage),
        }
    }

    /// A new connection (its root created if the database is empty).
    pub fn connect(&self) -> Result<Connection> {
        Connection::new(self.shared.client())
    }
}
