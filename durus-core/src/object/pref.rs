//! `PRef<T>`: the handle to a persistent object.

use std::fmt;
use std::marker::PhantomData;
use std::rc::Rc;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::error::{Error, Result};
use crate::format::Oid;
use crate::object::cell::{ObjectCell, Status};
use crate::object::connection::ConnInner;
use crate::object::slot::Slot;
use crate::object::{codec, registry, Persistent};

/// A handle to a persistent object of type `T`.
///
/// Cloning copies the handle: every clone (and every handle the connection
/// hands out for the same oid) is the same object. The state loads on
/// first access; [`PRef::write`] (and the generated setters) mark the
/// object changed so the next commit writes it. Handles are `!Send`: an
/// object belongs to its connection's thread.
///
/// ```
/// use durus_core::object::{Persistent, PRef};
/// #[derive(serde::Serialize, serde::Deserialize)]
/// struct Note { text: String }
/// impl Persistent for Note { const CLASS_NAME: &'static str = "doc.Note"; }
///
/// let note = PRef::new(Note { text: "hi".into() });
/// note.write(|n| n.text.push('!'))?;
/// assert_eq!(note.read(|n| n.text.clone())?, "hi!");
/// assert_eq!(note.oid(), None); // not stored until a commit reaches it
/// # Ok::<(), durus_core::Error>(())
/// ```
pub struct PRef<T: Persistent> {
    cell: Rc<ObjectCell>,
    _type: PhantomData<T>,
}

impl<T: Persistent> PRef<T> {
    /// A new object, stored by the first commit that reaches it from a
    /// stored object.
    pub fn new(value: T) -> Self {
        registry::register::<T>();
        Self::from_cell(ObjectCell::new_unsaved(Slot::new(value)))
    }

    pub(crate) fn from_cell(cell: Rc<ObjectCell>) -> Self {
        PRef {
            cell,
            _type: PhantomData,
        }
    }

    pub(crate) fn cell(&self) -> &Rc<ObjectCell> {
        &self.cell
    }

    /// The oid, once a commit has stored the object.
    pub fn oid(&self) -> Option<Oid> {
        self.cell.oid.get()
    }

    /// True while the state is not loaded.
    pub fn is_ghost(&self) -> bool {
        self.cell.status.get() == Status::Ghost
    }

    /// True if both handles are the same object.
    pub fn same_object(&self, other: &PRef<T>) -> bool {
        Rc::ptr_eq(&self.cell, &other.cell)
    }

    /// Fetches the records of the ghosts among `refs` with one bulk load
    /// (one round trip to a server), so that their states then load
    /// without a round trip each; returns how many records were fetched.
    ///
    /// Only ghosts with an oid count, and only those of the connection of
    /// the first of them. At most the connection's cache size of records
    /// are kept ahead (the oldest are dropped first), and only until the
    /// transaction ends or another client changes them. A fetched record
    /// is as good as a state loaded at the time: reading it later in the
    /// transaction conflicts at commit if another client changed it
    /// meanwhile, just as an object loaded then would. When the bulk load
    /// meets a conflict or a missing record, nothing is fetched and the
    /// loads that follow report it as they would have anyway.
    ///
    /// ```
    /// use durus_core::{Database, MemoryStorage, PObject, PRef, PersistentList};
    /// type Items = PersistentList<PRef<PersistentList<u32>>>;
    /// let db = Database::new(MemoryStorage::new());
    /// let writer = db.connect()?;
    /// let items: Items = (0..3).map(|n| PRef::new(PersistentList::from_iter([n]))).collect();
    /// writer.root().insert("items".into(), PObject::from(PRef::new(items)))?;
    /// writer.commit()?;
    ///
    /// let conn = db.connect()?; // a new connection: everything is a ghost
    /// let list = conn.root().get(&"items".to_string())?.unwrap().downcast::<Items>()?;
    /// let items: Vec<_> = list.iter()?.collect();
    /// assert_eq!(PRef::prefetch(&items)?, 3);
    /// let round_trips = conn.storage_loads();
    /// assert_eq!(items[2].get(0)?, Some(2)); // loaded without a round trip
    /// assert_eq!(conn.storage_loads(), round_trips);
    /// # Ok::<(), durus_core::Error>(())
    /// ```
    pub fn prefetch<'a>(refs: impl IntoIterator<Item = &'a PRef<T>>) -> Result<usize>
    where
        T: 'a,
    {
        ConnInner::prefetch(refs.into_iter().map(PRef::cell))
    }

    /// Runs `f` on the state (loading a ghost first) and returns its result.
    #[inline]
    pub fn read<R>(&self, f: impl FnOnce(&T) -> R) -> Result<R> {
        self.prepare()?;
        let state = self.cell.state.try_borrow().map_err(|_| self.busy())?;
        state
            .as_ref()
            .and_then(Slot::downcast_ref::<T>)
            .map(f)
            .ok_or_else(|| self.mismatch())
    }

    /// Runs `f` on the state mutably and marks the object changed.
    #[inline]
    pub fn write<R>(&self, f: impl FnOnce(&mut T) -> R) -> Result<R> {
        self.prepare()?;
        self.note_change();
        let mut state = self.cell.state.try_borrow_mut().map_err(|_| self.busy())?;
        state
            .as_mut()
            .and_then(Slot::downcast_mut::<T>)
            .map(f)
            .ok_or_else(|| self.mismatch())
    }

    /// Loads a ghost and notes the access; on a loaded object already
    /// accessed in this transaction (the common case) two comparisons.
    #[inline]
    fn prepare(&self) -> Result<()> {
        if self.cell.status.get() == Status::Ghost {
            self.load()?;
        }
        if !self.cell.accessed() {
            self.note_access();
        }
        Ok(())
    }

    #[cold]
    #[inline(never)]
    fn load(&self) -> Result<()> {
        let conn = self.cell.connection().ok_or_else(|| {
            Error::InvalidState(format!(
                "oid {:?} is a ghost of a closed connection",
                self.oid()
            ))
        })?;
        conn.load_state::<T>(&self.cell)
    }

    #[cold]
    #[inline(never)]
    fn note_access(&self) {
        if let Some(conn) = self.cell.connection() {
            conn.note_access(&self.cell);
        }
    }

    fn note_change(&self) {
        if self.cell.status.get() == Status::Saved {
            if let Some(conn) = self.cell.connection() {
                self.cell.status.set(Status::Unsaved);
                conn.note_change(&self.cell);
            }
        }
    }

    fn busy(&self) -> Error {
        Error::InvalidState(format!(
            "{} (oid {:?}) is already borrowed: a read or write closure touched its own object mutably",
            T::CLASS_NAME,
            self.oid()
        ))
    }

    fn mismatch(&self) -> Error {
        Error::TypeMismatch {
            oid: self.oid().unwrap_or_default(),
            expected: T::CLASS_NAME,
            found: self.cell.class_name().to_string(),
        }
    }
}

impl<T: Persistent> Clone for PRef<T> {
    fn clone(&self) -> Self {
        Self::from_cell(self.cell.clone())
    }
}

impl<T: Persistent> PartialEq for PRef<T> {
    /// Identity, as for Python objects: the same object, not equal states.
    fn eq(&self, other: &Self) -> bool {
        self.same_object(other)
    }
}

impl<T: Persistent> Eq for PRef<T> {}

impl<T: Persistent> fmt::Debug for PRef<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.oid() {
            Some(oid) => write!(f, "<{} {oid}>", T::CLASS_NAME),
            None => write!(f, "<{} new>", T::CLASS_NAME),
        }
    }
}

impl<T: Persistent> Serialize for PRef<T> {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        codec::serialize_ref(&self.cell, s)
    }
}

impl<'de, T: Persistent> Deserialize<'de> for PRef<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        registry::register::<T>();
        codec::deserialize_ref(d, T::CLASS_NAME).map(Self::from_cell)
    }
}
