//! `Connection`: loads objects from a storage, tracks what changed, and
//! commits or aborts with Durus's conflict rules (spec 9.2–9.8).

use std::cell::{Cell, RefCell};
use std::collections::{BTreeSet, HashSet, VecDeque};
use std::path::Path;
use std::rc::Rc;

use crate::error::{Error, Result};
use crate::format::{class_name, Oid, Record};
use crate::object::cache::{Cache, OidSet, Prefetched};
use crate::object::cell::{Link, ObjectCell, Status};
use crate::object::slot::Slot;
use crate::object::{class, codec, registry, PObject, PRef, Persistent};
use crate::storage::{FileStorage, PackReport, Storage};

/// Durus's default cache size (objects).
pub const DEFAULT_CACHE_SIZE: usize = 100_000;

/// How many times [`Connection::transact`] runs its closure at most.
pub const TRANSACT_ATTEMPTS: usize = 10;

/// A session on a database: the objects loaded from one storage, the
/// changes not yet committed, and the transaction they belong to.
///
/// Nothing another client commits becomes visible until this connection's
/// next `commit()` or `abort()` (Durus's rule). A commit fails with
/// [`Error::Conflict`] or a load with [`Error::ReadConflict`] when another
/// client changed an object this transaction used; call [`abort`] and run
/// the transaction again ([`transact`] does both).
///
/// [`abort`]: Connection::abort
/// [`transact`]: Connection::transact
pub struct Connection {
    inner: Rc<ConnInner>,
}

pub(crate) struct ConnInner {
    storage: RefCell<Box<dyn Storage>>,
    cache: RefCell<Cache>,
    changed: RefCell<Vec<Rc<ObjectCell>>>,
    /// Oids in conflict: loads and commits refuse them until `abort()`.
    invalid: RefCell<BTreeSet<Oid>>,
    /// The transaction serial (and a way back here), shared with every cell.
    link: Rc<Link>,
    load_count: Cell<u64>,
    /// Calls of the storage's `load` and `bulk_load` made by this connection.
    storage_loads: Cell<u64>,
    /// Records fetched ahead of their loads (bounded by the cache size).
    prefetched: RefCell<Prefetched>,
    root: RefCell<Option<Rc<ObjectCell>>>,
}

impl Connection {
    /// A connection over a [`FileStorage`] at `path` (created if missing),
    /// whose root is a `R` (created on an empty database).
    pub fn open_with_root<R: Persistent + Default>(path: impl AsRef<Path>) -> Result<Connection> {
        Self::new_with_root::<R>(FileStorage::open(path)?)
    }

    /// A connection over `storage` whose root (oid 0) is a `R`, created and
    /// committed if the storage is empty.
    pub fn new_with_root<R: Persistent + Default>(
        storage: impl Storage + 'static,
    ) -> Result<Connection> {
        registry::register::<R>();
        let cache = Cache::new(DEFAULT_CACHE_SIZE);
        let live = cache.live_counter();
        let conn = Connection {
            inner: Rc::new_cyclic(|me| ConnInner {
                storage: RefCell::new(Box::new(storage)),
                cache: RefCell::new(cache),
                changed: RefCell::new(Vec::new()),
                invalid: RefCell::new(BTreeSet::new()),
                link: Rc::new(Link {
                    conn: me.clone(),
                    serial: Cell::new(1),
                    live,
                }),
                load_count: Cell::new(0),
                storage_loads: Cell::new(0),
                prefetched: RefCell::new(Prefetched::default()),
                root: RefCell::new(None),
            }),
        };
        let root = conn.root_or_create::<R>()?;
        *conn.inner.root.borrow_mut() = Some(root.downcast::<R>()?.cell().clone());
        Ok(conn)
    }

    /// The root, created and committed if the storage has none. Several
    /// clients of one server may race to create it: the first commit wins
    /// and the others see a conflict, abort and load it (Durus fails
    /// there, spec 9.2).
    fn root_or_create<R: Persistent + Default>(&self) -> Result<PObject> {
        let mut attempt = 1;
        loop {
            // Loaded now, as Durus does (without counting as an access). A
            // root another client has just committed can arrive as a read
            // conflict (it is in this client's invalidations): catch up and
            // load again.
            match self.load_root::<R>() {
                Ok(Some(root)) => return Ok(root),
                Ok(None) => {}
                Err(e) if e.is_conflict() && attempt < TRANSACT_ATTEMPTS => {
                    self.abort();
                    attempt += 1;
                    continue;
                }
                Err(e) => return Err(e),
            }
            // A local storage hands out oid 0 first; a server may have
            // handed it to another client, which may never use it: the
            // root is everyone's, so it is created at oid 0 regardless.
            let first = self.inner.storage.borrow_mut().new_oid()?;
            tracing::debug!("creating the root (the storage's first new oid is {first})");
            let root = PRef::new(R::default());
            self.inner.adopt_as(root.cell(), Oid::ROOT);
            self.inner.note_change(root.cell());
            match self.commit() {
                Ok(()) => return Ok(PObject::from(root)),
                Err(e) if e.is_conflict() && attempt < TRANSACT_ATTEMPTS => {
                    self.abort();
                    attempt += 1;
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// The root, loaded, if the storage has one.
    fn load_root<R: Persistent>(&self) -> Result<Option<PObject>> {
        let Some(root) = self.get(Oid::ROOT)? else {
            return Ok(None);
        };
        let typed = root.downcast::<R>()?;
        if typed.is_ghost() {
            self.inner.load_state::<R>(typed.cell())?;
        }
        Ok(Some(root))
    }

    /// The root object as a `R`.
    pub fn root_as<R: Persistent>(&self) -> Result<PRef<R>> {
        let cell = self
            .inner
            .root
            .borrow()
            .clone()
            .ok_or_else(|| Error::InvalidState("no root".into()))?;
        PObject::from_cell(cell).downcast::<R>()
    }

    /// The object stored under `oid`, or `None` if there is none. Its
    /// state loads when the typed handle (`downcast`) is first used.
    pub fn get(&self, oid: Oid) -> Result<Option<PObject>> {
        if let Some(cell) = self.inner.cache.borrow().get(oid) {
            return Ok(Some(PObject::from_cell(cell)));
        }
        // A prefetched record stays buffered for the load that follows.
        let buffered = self.inner.prefetched.borrow().peek(oid).map(record_class);
        let class = match buffered {
            Some(class) => class?,
            None => match self.inner.fetch_record(oid) {
                Ok(record) => record_class(&record)?,
                Err(Error::KeyNotFound(_)) => return Ok(None),
                Err(e) => return Err(e),
            },
        };
        Ok(Some(PObject::from_cell(self.inner.cell_for(oid, class))))
    }

    /// Marks the object stored under `oid` as changed, so the next commit
    /// rewrites it (under its type's current class name: see
    /// `touch_every_reference`). Its type must be registered, which happens
    /// when a handle of it is first made or with [`registry::register`].
    pub fn touch(&self, oid: Oid) -> Result<()> {
        let obj = self.get(oid)?.ok_or(Error::KeyNotFound(oid))?;
        let cell = obj.cell();
        if cell.status.get() == Status::Ghost {
            let class = cell.class_name();
            let load = match registry::loader(class) {
                registry::Lookup::One(load) => load,
                registry::Lookup::Unknown => {
                    return Err(Error::UnknownClass {
                        name: class.to_string(),
                        oid,
                    })
                }
                registry::Lookup::Ambiguous(types) => {
                    return Err(Error::InvalidState(format!(
                        "cannot touch oid {oid}: its class {class:?} is shared by several Rust types ({}), \
                         so its record does not say which one to load it as; \
                         load it through a typed handle (PRef::read) before touching it",
                        types.join(", ")
                    )))
                }
            };
            load(&self.inner, cell)?;
        }
        self.inner.note_access(cell);
        if cell.status.get() == Status::Saved {
            cell.status.set(Status::Unsaved);
            self.inner.note_change(cell);
        }
        Ok(())
    }

    /// Writes every changed object (and the new objects they reach) as one
    /// transaction. With nothing changed it only catches up with other
    /// clients' commits, and never conflicts.
    pub fn commit(&self) -> Result<()> {
        self.inner.commit()
    }

    /// Drops every uncommitted change and catches up with other clients'
    /// commits. Always succeeds; a storage failure while catching up is
    /// logged and reported again by the next operation.
    pub fn abort(&self) {
        self.inner.abort();
    }

    /// Runs `f` and commits; after a conflict, aborts and runs `f` again, at
    /// most [`TRANSACT_ATTEMPTS`] times. Any other error aborts and is
    /// returned. **`f` may run more than once**: keep side effects outside
    /// the database idempotent.
    pub fn transact<R>(&self, mut f: impl FnMut(&Connection) -> Result<R>) -> Result<R> {
        let mut attempt = 1;
        loop {
            match f(self).and_then(|r| self.commit().map(|()| r)) {
                Ok(r) => return Ok(r),
                Err(e) => {
                    self.abort();
                    if !e.is_conflict() || attempt >= TRANSACT_ATTEMPTS {
                        return Err(e);
                    }
                    attempt += 1;
                }
            }
        }
    }

    /// Aborts, then packs the storage (drops what the root cannot reach).
    pub fn pack(&self) -> Result<PackReport> {
        self.abort();
        let report = self.inner.storage.borrow_mut().pack()?;
        self.inner.sync()?;
        Ok(report)
    }

    /// The number of objects the cache aims to keep loaded.
    pub fn cache_size(&self) -> usize {
        self.inner.cache.borrow().size()
    }

    /// Sets the cache size (at least 1); takes effect at the next
    /// commit, abort or [`Connection::shrink_cache`], or within a
    /// transaction once about that many states have loaded since the last
    /// shrink. The cache size also bounds the records buffered by
    /// [`PRef::prefetch`] and [`Connection::crawl`].
    ///
    /// Within a transaction, the cache ghosts least recently used objects
    /// even if this transaction read them (never changed ones), so that
    /// one transaction can read more objects than fit in memory. Conflicts
    /// are unaffected: such an object still counts as read by this
    /// transaction, and loading it again after another client changed it
    /// is an [`Error::ReadConflict`].
    pub fn set_cache_size(&self, size: usize) {
        self.inner.cache.borrow_mut().set_size(size);
    }

    /// Objects in the cache, ghosts included.
    pub fn cache_count(&self) -> usize {
        self.inner.cache.borrow_mut().count()
    }

    /// States loaded from the storage by this connection so far.
    pub fn load_count(&self) -> u64 {
        self.inner.load_count.get()
    }

    /// Round trips to the storage this connection made to read records so
    /// far: one per `load` and one per `bulk_load` call. A load served by
    /// records fetched ahead ([`PRef::prefetch`], [`Connection::crawl`])
    /// costs none, which is what this measures.
    pub fn storage_loads(&self) -> u64 {
        self.inner.storage_loads.get()
    }

    /// Starts at 1; every commit and abort increments it.
    pub fn transaction_serial(&self) -> u64 {
        self.inner.link.serial.get()
    }

    /// Ghosts least recently used objects down to the cache size.
    pub fn shrink_cache(&self) {
        self.inner
            .cache
            .borrow_mut()
            .shrink(self.inner.link.serial.get());
    }

    /// Runs `f` on the storage (for tools and tests).
    pub fn with_storage<R>(&self, f: impl FnOnce(&mut dyn Storage) -> R) -> R {
        f(&mut **self.inner.storage.borrow_mut())
    }

    pub(crate) fn inner(&self) -> &Rc<ConnInner> {
        &self.inner
    }
}

/// The interned class name a record's data starts with.
pub(crate) fn class_of(rec: &Record) -> &'static str {
    class::intern(&class_name::extract(rec.data).display())
}

fn record_class(record: &[u8]) -> Result<&'static str> {
    Ok(class_of(&Record::decode(record)?))
}

impl ConnInner {
    /// The cell for `oid`: the cached one, else a new ghost of `class`.
    pub(crate) fn cell_for(self: &Rc<Self>, oid: Oid, class: &'static str) -> Rc<ObjectCell> {
        self.cache
            .borrow_mut()
            .get_or_insert_with(oid, || ObjectCell::new_ghost(oid, self.link.clone(), class))
    }

    /// Gives a new object an oid in this connection (while a commit
    /// encodes a reference to it).
    pub(crate) fn adopt(self: &Rc<Self>, cell: &Rc<ObjectCell>) -> Result<Oid> {
        let oid = self.storage.borrow_mut().new_oid()?;
        self.adopt_as(cell, oid);
        Ok(oid)
    }

    fn adopt_as(self: &Rc<Self>, cell: &Rc<ObjectCell>, oid: Oid) {
        cell.oid.set(Some(oid));
        cell.displaced.set(false);
        cell.set_link(Some(self.link.clone()));
        let mut cache = self.cache.borrow_mut();
        // A cell still cached under this oid is what is left of an object
        // a pack removed (the storage reuses its oid): it stops being the
        // object for the oid, so it cannot load or overwrite the new one
        // (see `is_current`).
        if let Some(old) = cache.get(oid) {
            old.displaced.set(true);
        }
        cache.insert(oid, cell);
    }

    /// Whether `cell` is this connection's object for its oid: false for a
    /// leftover of a removed object whose oid was given to a new one.
    pub(crate) fn is_current(&self, cell: &ObjectCell) -> bool {
        !cell.displaced.get()
    }

    /// Undoes [`ConnInner::adopt`] for new objects of a failed commit.
    pub(crate) fn forget_new(&self, cells: &[Rc<ObjectCell>]) {
        let mut cache = self.cache.borrow_mut();
        for cell in cells {
            if let Some(oid) = cell.oid.get() {
                cache.remove(oid);
            }
            cell.unstore();
        }
    }

    pub(crate) fn note_access(&self, cell: &Rc<ObjectCell>) {
        let serial = self.link.serial.get();
        if cell.serial.get() != serial {
            cell.serial.set(serial);
            if cell.oid.get().is_some() {
                self.cache.borrow_mut().note_access(serial, cell);
            }
        }
    }

    pub(crate) fn note_change(&self, cell: &Rc<ObjectCell>) {
        self.changed.borrow_mut().push(cell.clone());
    }

    /// Loads the state of the ghost `cell` as a `T`.
    pub(crate) fn load_state<T: Persistent>(self: &Rc<Self>, cell: &Rc<ObjectCell>) -> Result<()> {
        let oid = cell
            .oid
            .get()
            .ok_or_else(|| Error::InvalidState("a ghost without an oid".into()))?;
        if self.invalid.borrow().contains(&oid) || !self.is_current(cell) {
            return Err(Error::ReadConflict { oids: vec![oid] });
        }
        // Before the load, so that the shrink cannot ghost `cell` between
        // its load and the access the caller is about to make.
        if self.cache.borrow_mut().note_load() {
            self.cache
                .borrow_mut()
                .shrink_within(self.link.serial.get());
        }
        let record = self.load_record(oid)?;
        let rec = Record::decode(&record)?;
        let (class, state) = match class_name::extract(rec.data) {
            class_name::ClassName::Cbor(_) => class_name::split_cbor(rec.data)?,
            other => {
                return Err(Error::UnknownClass {
                    name: format!("{} (a Python pickle)", other.display()),
                    oid,
                })
            }
        };
        if !registry::accepts::<T>(class) {
            return Err(match registry::current_name(class) {
                Some(_) => Error::TypeMismatch {
                    oid,
                    expected: T::CLASS_NAME,
                    found: class.to_string(),
                },
                None => Error::UnknownClass {
                    name: class.to_string(),
                    oid,
                },
            });
        }
        let value: T = codec::decode_state(self, state).map_err(|detail| Error::State {
            action: "decode",
            class: class.to_string(),
            oid: Some(oid),
            detail,
        })?;
        *cell.state.borrow_mut() = Some(Slot::new(value));
        cell.class.set(T::CLASS_NAME);
        cell.status.set(Status::Saved);
        self.load_count.set(self.load_count.get() + 1);
        Ok(())
    }

    /// The record of a ghost being loaded, turning "gone" into a read
    /// conflict (spec 9.3).
    fn load_record(&self, oid: Oid) -> Result<Vec<u8>> {
        match self.fetch_record(oid) {
            Err(Error::KeyNotFound(_)) => Err(Error::ReadConflict { oids: vec![oid] }),
            other => other,
        }
    }

    /// A record: the one prefetched for `oid`, else the storage's.
    fn fetch_record(&self, oid: Oid) -> Result<Vec<u8>> {
        if let Some(record) = self.prefetched.borrow_mut().take(oid) {
            return Ok(record);
        }
        self.retrying_read_conflict(oid, || self.round_trip(|s| s.load(oid)))
    }

    /// Runs `fetch`; when the storage reports a read conflict (an oid
    /// changed since the last sync), catches up and runs it once more,
    /// unless catching up reveals a conflict, reported as a read conflict
    /// on the oid the storage named, else `read_oid` (spec 9.3).
    fn retrying_read_conflict<R>(
        &self,
        read_oid: Oid,
        mut fetch: impl FnMut() -> Result<R>,
    ) -> Result<R> {
        match fetch() {
            Err(Error::ReadConflict { oids }) => {
                let read_oid = oids.first().copied().unwrap_or(read_oid);
                let invalidated = self.storage.borrow_mut().sync()?;
                self.handle_invalidations(&invalidated, Some(read_oid))?;
                fetch()
            }
            other => other,
        }
    }

    /// One call of the storage to read records, counted.
    fn round_trip<R>(&self, call: impl FnOnce(&mut dyn Storage) -> Result<R>) -> Result<R> {
        self.storage_loads.set(self.storage_loads.get() + 1);
        call(&mut **self.storage.borrow_mut())
    }

    /// The records of `oids` in one `bulk_load`, checked to be one per oid
    /// and each the record of its oid.
    fn bulk_load(&self, oids: &[Oid]) -> Result<Vec<Vec<u8>>> {
        let records = self.round_trip(|s| s.bulk_load(oids))?;
        if records.len() != oids.len() {
            return Err(Error::InvalidState(format!(
                "the storage answered a bulk load of {} oids with {} records",
                oids.len(),
                records.len()
            )));
        }
        for (&oid, record) in oids.iter().zip(&records) {
            crate::format::record::check_stored_as(oid, record)?;
        }
        Ok(records)
    }

    /// The records of `oids` in one bulk load (retried once after a read
    /// conflict, as a single load is), for [`Connection::crawl`].
    pub(crate) fn fetch_records(&self, oids: &[Oid]) -> Result<Vec<Vec<u8>>> {
        let Some(&first) = oids.first() else {
            return Ok(Vec::new());
        };
        self.retrying_read_conflict(first, || self.bulk_load(oids))
    }

    /// Buffers `record` for the next load of `oid` (see [`Prefetched`]).
    pub(crate) fn buffer_record(&self, oid: Oid, record: Vec<u8>) {
        let capacity = self.cache.borrow().size();
        self.prefetched.borrow_mut().insert(oid, record, capacity);
    }

    /// The most records a bulk load should fetch ahead: what the buffer
    /// keeps.
    pub(crate) fn prefetch_capacity(&self) -> usize {
        self.cache.borrow().size()
    }

    /// Fetches the records of the ghosts among `cells` that belong to the
    /// same connection as the first of them, with one bulk load, into the
    /// prefetch buffer; returns how many were fetched. Oids already
    /// buffered or in conflict are skipped; at most the buffer's capacity
    /// is fetched. A conflict or a missing record only means nothing is
    /// buffered: the single loads that follow report it as they should.
    pub(crate) fn prefetch<'a>(
        cells: impl IntoIterator<Item = &'a Rc<ObjectCell>>,
    ) -> Result<usize> {
        let mut conn: Option<Rc<ConnInner>> = None;
        let mut oids = Vec::new();
        let mut seen = OidSet::default();
        for cell in cells {
            if cell.status.get() != Status::Ghost || cell.displaced.get() {
                continue;
            }
            let (Some(oid), Some(link)) = (cell.oid.get(), cell.link.borrow().clone()) else {
                continue;
            };
            match &conn {
                Some(c) if !Rc::ptr_eq(&c.link, &link) => continue,
                Some(_) => {}
                None => match link.conn.upgrade() {
                    Some(c) => conn = Some(c),
                    None => continue,
                },
            }
            if seen.insert(oid) {
                oids.push(oid);
            }
        }
        let Some(conn) = conn else {
            return Ok(0);
        };
        {
            let buffered = conn.prefetched.borrow();
            let invalid = conn.invalid.borrow();
            oids.retain(|oid| !buffered.contains(*oid) && !invalid.contains(oid));
        }
        oids.truncate(conn.prefetch_capacity());
        if oids.is_empty() {
            return Ok(0);
        }
        let records = match conn.bulk_load(&oids) {
            Ok(records) => records,
            Err(e) if e.is_conflict() || matches!(e, Error::KeyNotFound(_)) => return Ok(0),
            Err(e) => return Err(e),
        };
        for (&oid, record) in oids.iter().zip(records) {
            conn.buffer_record(oid, record);
        }
        Ok(oids.len())
    }

    /// Other clients changed `oids`: ghost what this transaction has not
    /// touched; what it has touched is a conflict (spec 9.6).
    fn handle_invalidations(&self, oids: &[Oid], read_oid: Option<Oid>) -> Result<()> {
        self.prefetched.borrow_mut().forget(oids);
        let serial = self.link.serial.get();
        let mut conflicts = Vec::new();
        for &oid in oids {
            // An object this transaction read and the cache then evicted
            // is still read: a conflict, as if it were cached.
            let evicted_read = self.cache.borrow().read_and_evicted(oid);
            let cell = self.cache.borrow().get(oid);
            let accessed = evicted_read
                || cell.as_ref().is_some_and(|cell| {
                    cell.serial.get() == serial
                        || self.changed.borrow().iter().any(|c| Rc::ptr_eq(c, cell))
                });
            if accessed {
                conflicts.push(oid);
                self.invalid.borrow_mut().insert(oid);
            } else if let Some(cell) = cell {
                if cell.status.get() != Status::Ghost {
                    cell.ghostify();
                }
            }
        }
        match (conflicts.is_empty(), read_oid) {
            (true, _) => Ok(()),
            (false, Some(oid)) => Err(Error::ReadConflict { oids: vec![oid] }),
            (false, None) => Err(Error::Conflict { oids: conflicts }),
        }
    }

    /// Catches up: ghosts every cached object others changed or a pack
    /// removed, and clears the conflict marks.
    fn sync(&self) -> Result<()> {
        let oids = self.storage.borrow_mut().sync()?;
        self.prefetched.borrow_mut().forget(&oids);
        let mut invalid = self.invalid.borrow_mut();
        invalid.extend(oids);
        let cache = self.cache.borrow();
        for &oid in invalid.iter() {
            if let Some(cell) = cache.get(oid) {
                cell.ghostify();
            }
        }
        invalid.clear();
        Ok(())
    }

    /// Ends the transaction, then shrinks the cache. Durus shrinks first,
    /// keeping everything the transaction touched however much that is;
    /// here those objects are only the most recently used, so a
    /// transaction that touched more than the cache size leaves no more
    /// than the cache size behind (bounded memory, issue 5).
    fn end_transaction(&self) {
        self.link.serial.set(self.link.serial.get() + 1);
        let mut cache = self.cache.borrow_mut();
        cache.end_transaction();
        cache.shrink(self.link.serial.get());
        drop(cache);
        self.prefetched.borrow_mut().clear();
    }

    fn commit(self: &Rc<Self>) -> Result<()> {
        if self.changed.borrow().is_empty() {
            self.sync()?;
            self.end_transaction();
            return Ok(());
        }
        if !self.invalid.borrow().is_empty() {
            return Err(Error::InvalidState(format!(
                "still conflicted on oids {:?}: call abort() before committing again",
                self.invalid.borrow()
            )));
        }
        let changed: Vec<Rc<ObjectCell>> = self.changed.borrow().clone();
        let mut new_objects = Vec::new();
        let result = self.write_transaction(&changed, &mut new_objects);
        match result {
            Ok(()) => {
                for cell in changed.iter().chain(&new_objects) {
                    cell.status.set(Status::Saved);
                    self.note_access(cell);
                }
                self.changed.borrow_mut().clear();
                self.end_transaction();
                Ok(())
            }
            Err(e) => {
                // Nothing was written: drop the pending records, forget the
                // oids given to new objects. `changed` stays for abort().
                let _ = self.storage.borrow_mut().begin();
                self.forget_new(&new_objects);
                Err(e)
            }
        }
    }

    /// Stores `changed` and every new object they reach, then ends the
    /// storage transaction; `new_objects` collects the objects adopted.
    fn write_transaction(
        self: &Rc<Self>,
        changed: &[Rc<ObjectCell>],
        new_objects: &mut Vec<Rc<ObjectCell>>,
    ) -> Result<()> {
        self.storage.borrow_mut().begin()?;
        let mut queue: VecDeque<Rc<ObjectCell>> = changed.iter().cloned().collect();
        let mut written = HashSet::new();
        while let Some(cell) = queue.pop_front() {
            let Some(oid) = cell.oid.get() else { continue };
            if !written.insert(oid) {
                continue;
            }
            let (record, found) = codec::encode_object(self, &cell)?;
            new_objects.extend(found.iter().cloned());
            queue.extend(found);
            self.storage.borrow_mut().store(oid, record)?;
        }
        let me = self.clone();
        self.storage
            .borrow_mut()
            .end(&mut |oids| me.handle_invalidations(oids, None))
    }

    fn abort(&self) {
        let changed: Vec<Rc<ObjectCell>> = self.changed.borrow_mut().drain(..).collect();
        for cell in changed {
            if cell.oid.get().is_some() {
                cell.ghostify();
            }
        }
        if let Err(e) = self.sync() {
            tracing::warn!("abort could not catch up with the storage: {e}");
        }
        self.end_transaction();
    }
}
