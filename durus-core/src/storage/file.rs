//! `FileStorage`: records in a SHELF-1 file, byte-compatible with Python
//! Durus 4.3 (spec section 4), with fsync'd commits, strict tail checks and
//! an exclusive write lock.

use std::fs::{File, OpenOptions};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};

use crate::error::{Error, Result};
use crate::format::shelf::{self, MapHeader, OffsetMap, MAP_HEADER_LEN, MIN_SHELF_RECORD_LEN};
use crate::format::{record, Oid, Record};
use crate::storage::base_map::BaseMap;
use crate::storage::file_io::FileIo;
use crate::storage::oid_map::{OidMap, OidSet};
use crate::storage::{PackJob, PackReport, RecordIter, Storage, Syncer};

/// The window loads read through when they go in file order (a cold
/// scan, a crawl): most records are small, so one `pread` serves several.
/// Larger windows made the random loads of updates slower.
const LOAD_WINDOW: usize = 8 << 10;

/// What a load away from the last window reads: enough for most records
/// (an item, a BTree node of 64 entries) without copying a whole window
/// no later load will use.
const RANDOM_READ: usize = 2 << 10;

/// Buffer size of the sequential scan at open.
const SCAN_BUFFER: usize = 1 << 20;

/// Puts a [`FileIo`] layer over a file the storage has just opened (see
/// [`FileStorageOptions::wrap_files`]).
type FileWrapper = Arc<dyn Fn(File, &Path) -> Box<dyn FileIo> + Send + Sync>;

/// How to open a [`FileStorage`]. The defaults are read-write, no repair,
/// fsync on every commit.
#[derive(Clone)]
pub struct FileStorageOptions {
    readonly: bool,
    repair: bool,
    fsync: bool,
    create: bool,
    wrap: Option<FileWrapper>,
}

impl Default for FileStorageOptions {
    fn default() -> Self {
        FileStorageOptions {
            readonly: false,
            repair: false,
            fsync: true,
            create: true,
            wrap: None,
        }
    }
}

impl std::fmt::Debug for FileStorageOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FileStorageOptions")
            .field("readonly", &self.readonly)
            .field("repair", &self.repair)
            .field("fsync", &self.fsync)
            .field("create", &self.create)
            .field("wrap_files", &self.wrap.is_some())
            .finish()
    }
}

impl FileStorageOptions {
    /// The defaults: read-write, no repair, fsync on.
    pub fn new() -> Self {
        Self::default()
    }

    /// Open without the write lock and never write. A read-only open sees
    /// the file up to its last complete transaction; a damaged tail is
    /// reported by [`FileStorage::tail_damage`] instead of failing the open
    /// (it may be a commit in progress by the writer).
    pub fn readonly(mut self, on: bool) -> Self {
        self.readonly = on;
        self
    }

    /// Truncate a damaged tail at open (read-write only), keeping every
    /// transaction before it.
    pub fn repair(mut self, on: bool) -> Self {
        self.repair = on;
        self
    }

    /// fsync each commit before `end` returns (default on). Turning it off
    /// trades durability after power loss for speed in bulk loads.
    pub fn fsync(mut self, on: bool) -> Self {
        self.fsync = on;
        self
    }

    /// Whether a read-write open may create a missing file or initialise an
    /// empty one as a new database (default on). Tools that must only touch
    /// existing databases turn it off.
    pub fn create(mut self, on: bool) -> Self {
        self.create = on;
        self
    }

    /// Reads and writes the files the storage opens through
    /// `wrap(file, path)`: the database file at open (after taking the
    /// write lock, which stays on the real file; read-only opens too), and
    /// each pack's new `<name>.pack` file once created, which becomes the
    /// database file when the pack succeeds. It exists so that tests can
    /// put a faulty disk under every write, a pack's included, and so that
    /// a file's I/O can be instrumented. A wrapper should forward
    /// [`FileIo::try_clone_file`]: without it a group committer cannot
    /// sync the file (commits then sync in `end`, and a storage that
    /// handed out a syncer refuses writes after a pack).
    ///
    /// ```
    /// use durus_core::storage::file_io::FileIo;
    /// use durus_core::FileStorageOptions;
    /// use std::sync::atomic::{AtomicUsize, Ordering};
    /// use std::sync::Arc;
    /// # let dir = tempfile::tempdir().unwrap();
    /// let opened = Arc::new(AtomicUsize::new(0));
    /// let count = Arc::clone(&opened);
    /// let storage = FileStorageOptions::new()
    ///     .wrap_files(move |file, _path| {
    ///         count.fetch_add(1, Ordering::SeqCst);
    ///         Box::new(file) as Box<dyn FileIo>
    ///     })
    ///     .open(dir.path().join("w.durus"))?;
    /// assert_eq!(opened.load(Ordering::SeqCst), 1);
    /// # Ok::<(), durus_core::Error>(())
    /// ```
    pub fn wrap_files(
        mut self,
        wrap: impl Fn(File, &Path) -> Box<dyn FileIo> + Send + Sync + 'static,
    ) -> Self {
        self.wrap = Some(Arc::new(wrap));
        self
    }

    /// Opens (or, read-write, creates) the file at `path`.
    pub fn open(self, path: impl AsRef<Path>) -> Result<FileStorage> {
        FileStorage::open_with(path.as_ref(), self)
    }
}

/// A damaged tail found at open: where the bad transaction starts and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TailDamage {
    /// Offset of the first byte that is not part of a complete transaction.
    pub offset: u64,
    /// The file length when it was opened.
    pub file_len: u64,
    /// What was wrong.
    pub detail: String,
}

impl TailDamage {
    /// Bytes from the damage to the end of the file.
    pub fn bytes(&self) -> u64 {
        self.file_len - self.offset
    }
}

/// Facts about a FileStorage for `durus info`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileStats {
    /// Bytes in use: the file length, less a damaged tail that a read-only
    /// open ignored (see [`FileStorage::tail_damage`]).
    pub file_size: u64,
    /// Distinct oids with a record (garbage included).
    pub records: u64,
    /// Records in the base transaction (written by the last pack).
    pub base_records: u64,
    /// Transactions appended since the base.
    pub transactions: u64,
    /// Smallest and largest stored oid.
    pub oid_range: Option<(Oid, Oid)>,
}

/// Hands out oids as Durus's `Shelf.next_name`: the holes of the offset map
/// (highest first, then N-1), then N, N+1, ... Callers skip oids in use.
#[derive(Debug, Default)]
struct OidAllocator {
    holes: Option<Vec<Oid>>,
    next_hole: usize,
    next_fresh: u64,
}

impl OidAllocator {
    /// An allocator for a base whose offset map has `count` words.
    fn new(count: u64) -> Self {
        OidAllocator {
            holes: None,
            next_hole: 0,
            next_fresh: count,
        }
    }

    /// The next candidate; `holes` reads the map's hole chain (once).
    fn next(&mut self, holes: impl FnOnce() -> Result<Vec<Oid>>) -> Result<Oid> {
        let holes = match &mut self.holes {
            Some(h) => h,
            none => none.insert(holes()?),
        };
        if let Some(&oid) = holes.get(self.next_hole) {
            self.next_hole += 1;
            return Ok(oid);
        }
        let oid = Oid(self.next_fresh);
        self.next_fresh += 1;
        Ok(oid)
    }
}

/// Records in a SHELF-1 file.
///
/// ```
/// use durus_core::{FileStorage, Oid, Storage, StorageExt};
/// use durus_core::format::record;
/// # let dir = tempfile::tempdir().unwrap();
/// # let path = dir.path().join("doc.durus");
/// let mut storage = FileStorage::open(&path)?;
/// let root = storage.new_oid()?;
/// assert_eq!(root, Oid::ROOT);
/// storage.commit_records([record::encode(root, b"state", &[])?])?;
/// assert_eq!(record::oid_of(&storage.load(root)?)?, root);
/// # Ok::<(), durus_core::Error>(())
/// ```
pub struct FileStorage {
    pub(super) path: PathBuf,
    pub(super) file: Box<dyn FileIo>,
    readonly: bool,
    fsync: bool,
    /// Wraps the files a pack creates (see [`FileStorageOptions::wrap_files`]).
    wrap: Option<FileWrapper>,
    /// The base's offset map, read from `file` as lookups need it (shared
    /// with a pack in progress, which reads the same bytes).
    pub(super) map: Arc<BaseMap>,
    /// Shelf-record offsets of records appended after the base.
    pub(super) index: OidMap,
    /// Where the next transaction goes.
    pub(super) end: u64,
    pub(super) transactions: u64,
    tail_damage: Option<TailDamage>,
    repaired: Option<TailDamage>,
    pending: Vec<(Oid, Vec<u8>)>,
    pending_slot: OidMap,
    /// Handed out by `new_oid`, not yet committed.
    pub(super) allocated: OidSet,
    /// Removed by a pack, not yet reported by `sync`.
    pub(super) invalid: OidSet,
    alloc: OidAllocator,
    poisoned: Option<String>,
    /// Set by [`Storage::defer_sync`]: commits are synced by a group
    /// committer through this, not in `end`.
    deferred: Option<Arc<FileSyncer>>,
    closed: bool,
    /// Serves `load`; holds only bytes before `end` (immutable until a
    /// pack replaces the file, which resets it).
    loader: RecordReader,
}

impl std::fmt::Debug for FileStorage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FileStorage")
            .field("path", &self.path)
            .field("readonly", &self.readonly)
            .field("end", &self.end)
            .finish_non_exhaustive()
    }
}

impl FileStorage {
    /// Opens `path` read-write with fsync on, creating a new database if the
    /// file is missing or empty.
    pub fn open(path: impl AsRef<Path>) -> Result<FileStorage> {
        FileStorageOptions::new().open(path)
    }

    /// Options for a read-only, repairing or non-fsyncing open.
    pub fn options() -> FileStorageOptions {
        FileStorageOptions::new()
    }

    fn open_with(path: &Path, opts: FileStorageOptions) -> Result<FileStorage> {
        let io_err = |what: &str, e: io::Error| Error::io(format!("{what} {}", path.display()), e);
        let file = if opts.readonly {
            File::open(path).map_err(|e| io_err("cannot open", e))?
        } else {
            let file = OpenOptions::new()
                .read(true)
                .write(true)
                .create(opts.create)
                .truncate(false)
                .open(path)
                .map_err(|e| io_err("cannot open", e))?;
            lock(&file, path)?;
            file
        };
        let mut file = wrap_file(opts.wrap.as_ref(), file, path);
        let mut len = file.size().map_err(|e| io_err("cannot stat", e))?;
        if len == 0 {
            if opts.readonly || !opts.create {
                return Err(Error::NotAShelf {
                    path: path.into(),
                    detail: "the file is empty (a read-write open initialises it)".into(),
                });
            }
            let empty = shelf::empty_file();
            file.write_all_at(&empty, 0)
                .and_then(|()| file.sync_data())
                .map_err(|e| io_err("cannot initialise", e))?;
            len = empty.len() as u64;
        }
        Self::from_file_of_len(path.into(), file, opts, len)
    }

    /// Opens a storage over any [`FileIo`] (a test's faulty disk, say); the
    /// caller holds whatever lock it needs. `path` is used in messages and
    /// for the pack's sibling files. `file` is used as it is: a
    /// [`wrap_files`](FileStorageOptions::wrap_files) wrapper applies only
    /// to the files a pack creates.
    pub fn from_file(
        path: PathBuf,
        file: Box<dyn FileIo>,
        opts: FileStorageOptions,
    ) -> Result<FileStorage> {
        let len = file
            .size()
            .map_err(|e| Error::io(format!("cannot stat {}", path.display()), e))?;
        Self::from_file_of_len(path, file, opts, len)
    }

    /// [`from_file`](Self::from_file) for a file known to be `file_len`
    /// bytes long.
    fn from_file_of_len(
        path: PathBuf,
        mut file: Box<dyn FileIo>,
        opts: FileStorageOptions,
        file_len: u64,
    ) -> Result<FileStorage> {
        let layout = Layout::read(&*file, &path, file_len)?;
        let (index, transactions, damage) =
            scan_transactions(&*file, &path, layout.tail_start, layout.file_len)?;
        let mut end = layout.file_len;
        let mut repaired = None;
        let mut tail_damage = None;
        if let Some(damage) = damage {
            if opts.readonly {
                tracing::warn!(path = %path.display(), offset = damage.offset, "damaged tail ignored by a read-only open: {}", damage.detail);
                end = damage.offset;
                tail_damage = Some(damage);
            } else if opts.repair {
                file.set_len(damage.offset)
                    .and_then(|()| file.sync_data())
                    .map_err(|e| {
                        Error::io(
                            format!("cannot truncate {} to {}", path.display(), damage.offset),
                            e,
                        )
                    })?;
                tracing::warn!(path = %path.display(), offset = damage.offset, bytes = damage.bytes(), "repaired: truncated damaged tail: {}", damage.detail);
                end = damage.offset;
                repaired = Some(damage);
            } else {
                return Err(Error::TornTail {
                    path,
                    offset: damage.offset,
                    file_len: damage.file_len,
                    detail: damage.detail,
                });
            }
        }
        Ok(FileStorage {
            alloc: OidAllocator::new(layout.map.count()),
            path,
            file,
            readonly: opts.readonly,
            fsync: opts.fsync,
            wrap: opts.wrap,
            map: Arc::new(BaseMap::on_disk(layout.map)),
            index,
            end,
            transactions,
            tail_damage,
            repaired,
            pending: Vec::new(),
            pending_slot: OidMap::new(),
            allocated: OidSet::new(),
            invalid: OidSet::new(),
            poisoned: None,
            deferred: None,
            closed: false,
            loader: RecordReader::new(LOAD_WINDOW).random_reads(RANDOM_READ),
        })
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Whether the storage was opened read-only.
    pub fn is_readonly(&self) -> bool {
        self.readonly
    }

    /// A damaged tail that a read-only open left in place.
    pub fn tail_damage(&self) -> Option<&TailDamage> {
        self.tail_damage.as_ref()
    }

    /// The damaged tail that a repairing open truncated away.
    pub fn repaired(&self) -> Option<&TailDamage> {
        self.repaired.as_ref()
    }

    /// Turns the per-commit fsync on or off.
    pub fn set_fsync(&mut self, on: bool) {
        self.fsync = on;
    }

    /// Bytes in use: the file length, less a damaged tail that a read-only
    /// open ignored. (Cheap, unlike [`stats`](Self::stats).)
    pub fn file_size(&self) -> u64 {
        self.end
    }

    /// Size, record count, transactions since the last pack, oid range.
    /// Reads the whole offset map of the base (once), so it fails if the
    /// map cannot be read.
    pub fn stats(&self) -> Result<FileStats> {
        let mut records = 0;
        let mut base_records = 0;
        let mut range: Option<(Oid, Oid)> = None;
        let mut note = |oid: Oid| {
            records += 1;
            range = Some(range.map_or((oid, oid), |(lo, hi)| (lo.min(oid), hi.max(oid))));
        };
        for (oid, _) in self.map.entries(&*self.file, &self.path)? {
            base_records += 1;
            if !self.index.contains(oid) {
                note(oid);
            }
        }
        for (oid, _) in self.index.iter() {
            note(oid);
        }
        Ok(FileStats {
            file_size: self.end,
            records,
            base_records,
            transactions: self.transactions,
            oid_range: range,
        })
    }

    /// Every stored oid (garbage included): the base's in oid order, then
    /// those appended since, in file order.
    pub fn oids(&self) -> Result<Vec<Oid>> {
        Ok(self.positions()?.into_iter().map(|(oid, _)| oid).collect())
    }

    /// Offset of the current shelf record of `oid`: appended since the
    /// base, or in the base (whose map page may have to be read).
    pub(super) fn position(&self, oid: Oid) -> Result<Option<u64>> {
        match self.index.get(oid) {
            Some(pos) => Ok(Some(pos)),
            None => self.map.get(&*self.file, &self.path, oid),
        }
    }

    /// Every stored oid with its shelf-record offset, base first (in oid
    /// order) then appended records in file order.
    pub(super) fn positions(&self) -> Result<Vec<(Oid, u64)>> {
        let mut out: Vec<(Oid, u64)> = self
            .map
            .entries(&*self.file, &self.path)?
            .filter(|&(oid, _)| !self.index.contains(oid))
            .collect();
        let mut appended: Vec<(Oid, u64)> = self.index.iter().collect();
        appended.sort_unstable_by_key(|&(_, pos)| pos);
        out.extend(appended);
        Ok(out)
    }

    pub(super) fn check_open(&self) -> Result<()> {
        if self.closed {
            Err(Error::Closed)
        } else {
            Ok(())
        }
    }

    pub(super) fn check_writable(&self) -> Result<()> {
        self.check_open()?;
        if self.readonly {
            return Err(Error::ReadOnly);
        }
        if let Some(why) = &self.poisoned {
            return Err(Error::Poisoned(why.clone()));
        }
        if let Some(why) = self.deferred.as_ref().and_then(|d| d.failed.get()) {
            return Err(Error::Poisoned(why.clone()));
        }
        Ok(())
    }

    /// Drops the pending records (clearing only their slots, not the
    /// whole slot map: commits are small, the map may be large).
    fn clear_pending(&mut self) {
        for (oid, _) in self.pending.drain(..) {
            self.pending_slot.remove(oid);
        }
    }

    pub(super) fn has_pending(&self) -> bool {
        !self.pending.is_empty()
    }

    /// Takes the transactions a pack copied after its base (their index).
    pub(super) fn adopt_tail(&mut self, index: OidMap, transactions: u64) {
        self.index = index;
        self.transactions = transactions;
    }

    /// Swaps in a freshly packed file (called by the packer).
    pub(super) fn replace_base(&mut self, file: Box<dyn FileIo>, map: OffsetMap, end: u64) {
        if let Some(deferred) = &self.deferred {
            // Later commits go to the new file: so must their fsyncs.
            match file.try_clone_file() {
                Some(Ok(f)) => *deferred.lock() = Some(f),
                Some(Err(e)) => self.poison(format!("cannot sync the packed file: {e}")),
                None => self.poison("the packed file cannot be synced apart".into()),
            }
        }
        self.alloc = OidAllocator::new(map.count());
        self.file = file;
        self.loader = RecordReader::new(LOAD_WINDOW).random_reads(RANDOM_READ);
        self.map = Arc::new(BaseMap::in_memory(map));
        self.index.clear();
        self.end = end;
        self.transactions = 0;
    }

    /// `file`, opened at `path`, as the storage reads and writes it
    /// (through the [`wrap_files`](FileStorageOptions::wrap_files) layer).
    pub(super) fn wrap_file(&self, file: File, path: &Path) -> Box<dyn FileIo> {
        wrap_file(self.wrap.as_ref(), file, path)
    }

    pub(super) fn poison(&mut self, why: String) {
        tracing::error!(path = %self.path.display(), "refusing further writes: {why}");
        self.poisoned = Some(why);
    }

    /// Writes one transaction at the end of the file and fsyncs it.
    fn append_transaction(&mut self, body: &[u8]) -> Result<()> {
        let start = self.end;
        let result = self
            .file
            .write_all_at(body, start)
            .map_err(|e| ("write", e))
            .and_then(|()| {
                if self.fsync && self.deferred.is_none() {
                    self.file.sync_data().map_err(|e| ("fsync", e))
                } else {
                    Ok(())
                }
            });
        if let Err((what, e)) = result {
            let context = format!(
                "{what} of a {} byte transaction at offset {start} of {}",
                body.len(),
                self.path.display()
            );
            // Take the partial transaction back off; if even that fails, or
            // the fsync failed (the page cache state is unknown), stop writing.
            let truncated = self
                .file
                .set_len(start)
                .and_then(|()| self.file.sync_data());
            if what == "fsync" || truncated.is_err() {
                self.poison(context.clone());
            }
            return Err(Error::io(context, e));
        }
        Ok(())
    }
}

/// `file` through `wrap`, or as it is.
fn wrap_file(wrap: Option<&FileWrapper>, file: File, path: &Path) -> Box<dyn FileIo> {
    match wrap {
        Some(wrap) => wrap(file, path),
        None => Box::new(file),
    }
}

/// How long a contended write lock is retried before `Error::Locked`.
const LOCK_PATIENCE: std::time::Duration = std::time::Duration::from_millis(50);

/// Takes the exclusive write lock (flock, per open file description, so a
/// second writer in this process fails as well as one in another).
///
/// A closed storage can hold its lock a moment longer: a child process
/// forked by another thread shares the descriptor until it execs. So a
/// contended lock is retried for [`LOCK_PATIENCE`] before giving up.
pub(super) fn lock(file: &File, path: &Path) -> Result<()> {
    let deadline = std::time::Instant::now() + LOCK_PATIENCE;
    loop {
        match file.try_lock() {
            Ok(()) => return Ok(()),
            Err(std::fs::TryLockError::WouldBlock) if std::time::Instant::now() < deadline => {
                std::thread::sleep(std::time::Duration::from_millis(2));
            }
            Err(std::fs::TryLockError::WouldBlock) => {
                return Err(Error::Locked { path: path.into() })
            }
            Err(std::fs::TryLockError::Error(e)) => {
                return Err(Error::io(format!("cannot lock {}", path.display()), e))
            }
        }
    }
}

/// The fixed part of a shelf: magic, base transaction, offset map header.
struct Layout {
    map: MapHeader,
    tail_start: u64,
    file_len: u64,
}

impl Layout {
    /// Reads the magic, T0 and the offset map's header of a file of
    /// `file_len` bytes: two small reads, whatever the size of the map.
    fn read(file: &dyn FileIo, path: &Path, file_len: u64) -> Result<Layout> {
        let io_err = |e: io::Error| Error::io(format!("cannot read {}", path.display()), e);
        let not_shelf = |detail: String| Error::NotAShelf {
            path: path.into(),
            detail,
        };
        let corrupt = |offset: u64, detail: String| Error::Corrupt {
            path: path.into(),
            offset,
            detail,
        };
        let mut head = [0u8; 16];
        let n = file.read_up_to(&mut head, 0).map_err(io_err)?;
        if n < 8 || &head[..8] != shelf::MAGIC {
            return Err(not_shelf(format!(
                "it starts with {:?}, not {:?}",
                String::from_utf8_lossy(&head[..n.min(8)]),
                String::from_utf8_lossy(shelf::MAGIC)
            )));
        }
        if n < 16 {
            return Err(corrupt(
                8,
                format!("the file ends ({file_len} bytes) inside the base transaction length"),
            ));
        }
        let t0 = shelf::read_u64(&head[8..16]);
        let start = t0
            .checked_add(shelf::BASE_BODY_OFFSET)
            .filter(|&s| s.saturating_add(MAP_HEADER_LEN) <= file_len)
            .ok_or_else(|| {
                corrupt(8, format!("base transaction of {t0} bytes and its offset map do not fit in the file ({file_len} bytes)"))
            })?;
        let mut header = [0u8; 24];
        file.read_exact_at(&mut header, start).map_err(io_err)?;
        // Only the header: the words are read by lookups (BaseMap).
        let map = MapHeader::parse(start, &header, file_len).map_err(|e| e.in_file(path))?;
        Ok(Layout {
            map,
            tail_start: map.end(),
            file_len,
        })
    }
}

/// A forward reader over a [`FileIo`] with a large buffer, for the scan.
struct ScanReader<'a> {
    file: &'a dyn FileIo,
    buf: Vec<u8>,
    buf_start: u64,
    buf_len: usize,
}

impl<'a> ScanReader<'a> {
    /// A reader for `len` bytes (its buffer is no larger: a packed file
    /// has nothing after its map, and opening it allocates nothing here).
    fn new(file: &'a dyn FileIo, len: u64) -> Self {
        ScanReader {
            file,
            buf: vec![0; (SCAN_BUFFER as u64).min(len) as usize],
            buf_start: 0,
            buf_len: 0,
        }
    }

    /// The `n` bytes at `pos` (n ≤ a few dozen); the caller has checked
    /// they lie inside the file.
    fn bytes_at(&mut self, pos: u64, n: usize) -> io::Result<&[u8]> {
        let in_buf =
            pos >= self.buf_start && pos + n as u64 <= self.buf_start + self.buf_len as u64;
        if !in_buf {
            self.buf_start = pos;
            self.buf_len = self.file.read_up_to(&mut self.buf, pos)?;
            if self.buf_len < n {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
        }
        let at = (pos - self.buf_start) as usize;
        Ok(&self.buf[at..at + n])
    }
}

/// Scans the transactions after the offset map, checking each one's
/// structure completely: a transaction must lie inside the file, its shelf
/// records must tile it exactly, and every record's name, oid and lengths
/// must agree. Returns the index of the complete transactions, their count
/// and the first damage found (everything from there on is the tail).
#[allow(clippy::type_complexity)]
pub(super) fn scan_transactions(
    file: &dyn FileIo,
    path: &Path,
    mut pos: u64,
    file_len: u64,
) -> Result<(OidMap, u64, Option<TailDamage>)> {
    let mut reader = ScanReader::new(file, file_len.saturating_sub(pos));
    let mut index = OidMap::new();
    let mut count = 0;
    let mut txn = Vec::new();
    let io_err = |e: io::Error| Error::io(format!("cannot read {}", path.display()), e);
    while pos < file_len {
        let damage = |detail: String| TailDamage {
            offset: pos,
            file_len,
            detail,
        };
        if file_len - pos < 8 {
            return Ok((
                index,
                count,
                Some(damage(format!(
                    "the file ends {} bytes into a transaction length",
                    file_len - pos
                ))),
            ));
        }
        let body_len = shelf::read_u64(reader.bytes_at(pos, 8).map_err(io_err)?);
        let body_start = pos + 8;
        let Some(txn_end) = body_start.checked_add(body_len).filter(|&e| e <= file_len) else {
            return Ok((
                index,
                count,
                Some(damage(format!(
                    "the transaction declares {body_len} bytes but only {} remain",
                    file_len - body_start
                ))),
            ));
        };
        txn.clear();
        let mut at = body_start;
        while at < txn_end {
            match check_shelf_record(&mut reader, at, txn_end).map_err(io_err)? {
                Ok((oid, next)) => {
                    txn.push((oid, at));
                    at = next;
                }
                Err(detail) => {
                    return Ok((
                        index,
                        count,
                        Some(damage(format!("shelf record at offset {at}: {detail}"))),
                    ));
                }
            }
        }
        for &(oid, at) in &txn {
            index.insert(oid, at);
        }
        count += 1;
        pos = txn_end;
    }
    Ok((index, count, None))
}

/// Checks the shelf record at `at` (which must end by `limit`): returns its
/// oid and the offset after it, or what is wrong with it.
fn check_shelf_record(
    reader: &mut ScanReader<'_>,
    at: u64,
    limit: u64,
) -> io::Result<std::result::Result<(Oid, u64), String>> {
    if limit - at < MIN_SHELF_RECORD_LEN {
        return Ok(Err(format!(
            "{} bytes left in the transaction, too few for a record",
            limit - at
        )));
    }
    let head = reader.bytes_at(at, MIN_SHELF_RECORD_LEN as usize)?;
    let rest_len = shelf::read_u64(&head[0..8]);
    let name = Oid::from_bytes(head[8..16].try_into().expect("8 bytes"));
    let oid = Oid::from_bytes(head[16..24].try_into().expect("8 bytes"));
    let data_len = u32::from_be_bytes(head[24..28].try_into().expect("4 bytes")) as u64;
    let Some(next) = (at + 8).checked_add(rest_len).filter(|&n| n <= limit) else {
        return Ok(Err(format!(
            "record length {rest_len} runs past the transaction end {limit}"
        )));
    };
    if rest_len < MIN_SHELF_RECORD_LEN - 8 {
        return Ok(Err(format!("record length {rest_len} is too small")));
    }
    if name != oid {
        return Ok(Err(format!(
            "shelf name {name} differs from the record's oid {oid}"
        )));
    }
    let refs_len = (rest_len - 8 - 12).checked_sub(data_len);
    match refs_len {
        Some(r) if r % 8 == 0 => Ok(Ok((oid, next))),
        Some(r) => Ok(Err(format!(
            "oid {oid}: {r} bytes of refs is not a multiple of 8"
        ))),
        None => Ok(Err(format!(
            "oid {oid}: data length {data_len} overruns the record"
        ))),
    }
}

/// Reads shelf records through window buffers, so that reads in file
/// order (a scan, a pack) cost one system call per window, not per record.
/// Several windows serve readers that alternate between regions (a pack
/// reads the base in oid order and the records appended since in between).
pub(super) struct RecordReader {
    windows: Vec<Window>,
    /// How much one read asks for (more only for a larger record).
    capacity: usize,
    /// How much a read that does not continue a window asks for.
    random: usize,
    /// Ticks of use, for replacing the least recently used window.
    clock: u64,
}

/// One buffered stretch of the file.
#[derive(Default)]
struct Window {
    bytes: Vec<u8>,
    start: u64,
    len: usize,
    used: u64,
}

impl Window {
    fn holds(&self, pos: u64, n: usize) -> bool {
        pos >= self.start && pos + n as u64 <= self.start + self.len as u64
    }
}

impl RecordReader {
    /// A reader with one window of `capacity` bytes (grown for larger records).
    pub(super) fn new(capacity: usize) -> Self {
        Self::with_windows(1, capacity)
    }

    /// A reader with `count` windows of `capacity` bytes each (allocated
    /// on first use).
    pub(super) fn with_windows(count: usize, capacity: usize) -> Self {
        RecordReader {
            windows: (0..count.max(1)).map(|_| Window::default()).collect(),
            capacity,
            random: capacity,
            clock: 0,
        }
    }

    /// Reads that do not continue a window (start within `capacity` bytes
    /// after one) ask for only `random` bytes: random loads should not pay
    /// for copying a window they will not use.
    pub(super) fn random_reads(mut self, random: usize) -> Self {
        self.random = random.min(self.capacity);
        self
    }

    /// The Durus record of the shelf record at `pos`, checked to be
    /// `oid`'s (when given) and well formed. `end` is where the file's
    /// valid data ends: no length field is trusted beyond it.
    pub(super) fn read(
        &mut self,
        file: &dyn FileIo,
        path: &Path,
        pos: u64,
        end: u64,
        oid: Option<Oid>,
    ) -> Result<&[u8]> {
        let corrupt = |detail: String| Error::Corrupt {
            path: path.into(),
            offset: pos,
            detail,
        };
        let available = end.saturating_sub(pos);
        if available < MIN_SHELF_RECORD_LEN {
            return Err(corrupt(format!(
                "the data ends {available} bytes into the shelf record"
            )));
        }
        let head = self.fill(file, path, pos, end, MIN_SHELF_RECORD_LEN as usize)?;
        let total = shelf::read_u64(&head[..8]).saturating_add(8);
        if total < MIN_SHELF_RECORD_LEN || total > available {
            return Err(corrupt(format!(
                "shelf record length {total} does not fit the {available} bytes that remain"
            )));
        }
        let shelf_record = self.fill(file, path, pos, end, total as usize)?;
        let name = Oid::from_bytes(shelf_record[8..16].try_into().expect("8 bytes"));
        let record = &shelf_record[16..];
        let rec = Record::decode(record).map_err(|e| corrupt(e.to_string()))?;
        if rec.oid != name || oid.is_some_and(|o| o != name) {
            let wanted = oid.unwrap_or(name);
            return Err(corrupt(format!(
                "record for oid {} (shelf name {name}) found where oid {wanted} was expected",
                rec.oid
            )));
        }
        Ok(record)
    }

    /// The `n` bytes at `pos`, from a window that holds them or from the
    /// least recently used one, refilled (the caller has checked that they
    /// lie inside the file's valid data, which ends at `end`). Bytes past
    /// `end` are never kept: a later commit may overwrite them.
    fn fill(
        &mut self,
        file: &dyn FileIo,
        path: &Path,
        pos: u64,
        end: u64,
        n: usize,
    ) -> Result<&[u8]> {
        self.clock += 1;
        let i = match self.windows.iter().position(|w| w.holds(pos, n)) {
            Some(i) => i,
            None => {
                let i = (0..self.windows.len())
                    .min_by_key(|&i| self.windows[i].used)
                    .unwrap_or(0);
                let onward = self.windows.iter().any(|w| {
                    w.len > 0 && pos >= w.start && pos <= w.start + (w.len + self.capacity) as u64
                });
                let size = if onward { self.capacity } else { self.random };
                let w = &mut self.windows[i];
                let want = (n.max(size) as u64).min(end.saturating_sub(pos)) as usize;
                if w.bytes.len() < want {
                    w.bytes.resize(want, 0);
                }
                w.start = pos;
                w.len = 0;
                w.len = file.read_up_to(&mut w.bytes[..want], pos).map_err(|e| {
                    Error::io(
                        format!(
                            "cannot read the record at offset {pos} of {}",
                            path.display()
                        ),
                        e,
                    )
                })?;
                if w.len < n {
                    return Err(Error::Corrupt {
                        path: path.into(),
                        offset: pos,
                        detail: format!("the file ends {} bytes into the shelf record", w.len),
                    });
                }
                i
            }
        };
        let w = &mut self.windows[i];
        w.used = self.clock;
        let at = (pos - w.start) as usize;
        Ok(&w.bytes[at..at + n])
    }
}

/// Syncs a [`FileStorage`]'s file from outside it (group commit): a
/// second handle to the open file, replaced when a pack swaps the file.
struct FileSyncer {
    /// `None` once the storage is closed: a second descriptor would keep
    /// the file's lock (flock is per open file description).
    file: Mutex<Option<File>>,
    path: PathBuf,
    /// Set by a failed fsync: the storage refuses writes from then on.
    failed: OnceLock<String>,
}

impl FileSyncer {
    fn lock(&self) -> MutexGuard<'_, Option<File>> {
        self.file.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Syncer for FileSyncer {
    fn sync(&self) -> Result<()> {
        if let Some(why) = self.failed.get() {
            return Err(Error::Poisoned(why.clone()));
        }
        let file = self.lock();
        let Some(file) = file.as_ref() else {
            return Err(Error::Closed);
        };
        file.sync_data().map_err(|e| {
            let why = format!("fsync of {}: {e}", self.path.display());
            tracing::error!("refusing further writes: {why}");
            let _ = self.failed.set(why.clone());
            Error::io(why, e)
        })
    }
}

impl Storage for FileStorage {
    fn load(&mut self, oid: Oid) -> Result<Vec<u8>> {
        self.check_open()?;
        let pos = self.position(oid)?.ok_or(Error::KeyNotFound(oid))?;
        self.loader
            .read(&*self.file, &self.path, pos, self.end, Some(oid))
            .map(<[u8]>::to_vec)
    }

    fn contains(&mut self, oid: Oid) -> Result<bool> {
        self.check_open()?;
        Ok(self.position(oid)?.is_some())
    }

    fn begin(&mut self) -> Result<()> {
        self.check_open()?;
        self.clear_pending();

        Ok(())
    }

    fn store(&mut self, oid: Oid, record: Vec<u8>) -> Result<()> {
        self.check_writable()?;
        record::check_stored_as(oid, &record)?;
        if oid != Oid::ROOT && !self.allocated.contains(oid) && self.position(oid)?.is_none() {
            self.clear_pending();

            return Err(Error::SurpriseOid(oid));
        }
        match self.pending_slot.get(oid) {
            Some(slot) => self.pending[slot as usize].1 = record,
            None => {
                self.pending_slot.insert(oid, self.pending.len() as u64);
                self.pending.push((oid, record));
            }
        }
        Ok(())
    }

    fn end(&mut self, _invalidations: &mut dyn FnMut(&[Oid]) -> Result<()>) -> Result<()> {
        self.check_writable()?;
        if self.pending.is_empty() {
            return Ok(());
        }
        let body_len: usize = self.pending.iter().map(|(_, r)| 16 + r.len()).sum();
        let mut body = Vec::with_capacity(8 + body_len);
        body.extend_from_slice(&(body_len as u64).to_be_bytes());
        let mut offsets = Vec::with_capacity(self.pending.len());
        for (oid, rec) in &self.pending {
            offsets.push((*oid, self.end + body.len() as u64));
            shelf::push_shelf_record(&mut body, *oid, rec);
        }
        self.append_transaction(&body)?;
        for (oid, pos) in offsets {
            self.index.insert(oid, pos);
            self.allocated.remove(oid);
        }
        self.end += body.len() as u64;
        self.transactions += 1;
        self.clear_pending();

        Ok(())
    }

    fn defer_sync(&mut self) -> Result<Option<Arc<dyn Syncer>>> {
        if !self.fsync || self.readonly {
            return Ok(None);
        }
        if let Some(d) = &self.deferred {
            return Ok(Some(d.clone()));
        }
        let Some(file) = self.file.try_clone_file() else {
            return Ok(None);
        };
        let file =
            file.map_err(|e| Error::io(format!("cannot reopen {}", self.path.display()), e))?;
        let syncer = Arc::new(FileSyncer {
            file: Mutex::new(Some(file)),
            path: self.path.clone(),
            failed: OnceLock::new(),
        });
        self.deferred = Some(syncer.clone());
        Ok(Some(syncer))
    }

    fn sync(&mut self) -> Result<Vec<Oid>> {
        self.check_open()?;
        Ok(self.invalid.take_sorted())
    }

    fn new_oid(&mut self) -> Result<Oid> {
        self.check_open()?;
        loop {
            let (map, file, path) = (&self.map, &*self.file, &self.path);
            let oid = self.alloc.next(|| map.holes(file, path))?;
            let in_use = self.index.contains(oid)
                || self.allocated.contains(oid)
                || self.invalid.contains(oid)
                || self.map.get(&*self.file, &self.path, oid)?.is_some();
            if !in_use {
                self.allocated.insert(oid);
                return Ok(oid);
            }
        }
    }

    fn records(&mut self) -> Result<RecordIter<'_>> {
        self.check_open()?;
        let positions = self.positions()?;
        let (file, path, end) = (&*self.file, &self.path, self.end);
        let mut reader = RecordReader::new(SCAN_BUFFER);
        Ok(Box::new(positions.into_iter().map(move |(oid, pos)| {
            let record = reader.read(file, path, pos, end, Some(oid))?;
            Ok((oid, record.to_vec()))
        })))
    }

    fn pack(&mut self) -> Result<PackReport> {
        self.pack_with_progress(&mut |_| {})
    }

    fn start_background_pack(&mut self) -> Result<Option<PackJob>> {
        self.begin_pack().map(Some)
    }

    fn finish_background_pack(&mut self, job: PackJob) -> Result<PackReport> {
        self.finish_pack(job)
    }

    fn close(&mut self) -> Result<()> {
        self.closed = true;
        if let Some(deferred) = &self.deferred {
            *deferred.lock() = None;
        }
        self.file = Box::new(ClosedFile);
        self.loader = RecordReader::new(0);
        self.map = Arc::new(BaseMap::empty());
        self.index.clear();
        Ok(())
    }
}

impl Drop for FileStorage {
    /// A syncer handed out by `defer_sync` may outlive the storage: its
    /// descriptor must not keep the lock.
    fn drop(&mut self) {
        if let Some(deferred) = &self.deferred {
            *deferred.lock() = None;
        }
    }
}

/// Stands in for the file after `close`, so the lock and descriptor are
/// released at once.
struct ClosedFile;

impl FileIo for ClosedFile {
    fn read_at(&self, _: &mut [u8], _: u64) -> io::Result<usize> {
        Err(io::Error::other("storage is closed"))
    }
    fn write_all_at(&mut self, _: &[u8], _: u64) -> io::Result<()> {
        Err(io::Error::other("storage is closed"))
    }
    fn size(&self) -> io::Result<u64> {
        Err(io::Error::other("storage is closed"))
    }
    fn set_len(&mut self, _: u64) -> io::Result<()> {
        Err(io::Error::other("storage is closed"))
    }
    fn sync_data(&mut self) -> io::Result<()> {
        Err(io::Error::other("storage is closed"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::StorageExt;
    use std::os::unix::fs::MetadataExt;

    /// A file that counts its reads (and keeps their sizes).
    struct CountingFile(
        Vec<u8>,
        std::cell::Cell<usize>,
        std::cell::RefCell<Vec<usize>>,
    );

    impl FileIo for CountingFile {
        fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
            self.1.set(self.1.get() + 1);
            self.2.borrow_mut().push(buf.len());
            let from = (offset as usize).min(self.0.len());
            let n = buf.len().min(self.0.len() - from);
            buf[..n].copy_from_slice(&self.0[from..from + n]);
            Ok(n)
        }
        fn write_all_at(&mut self, _: &[u8], _: u64) -> io::Result<()> {
            unreachable!("the reader only reads")
        }
        fn size(&self) -> io::Result<u64> {
            Ok(self.0.len() as u64)
        }
        fn set_len(&mut self, _: u64) -> io::Result<()> {
            unreachable!("the reader only reads")
        }
        fn sync_data(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn record_reader_alternating_between_two_regions_reads_each_window_once() {
        // 200 shelf records of 100 bytes; read records 0..100 (one region)
        // interleaved with 100..200 (another), as a pack interleaves the
        // base with records appended since.
        let mut bytes = Vec::new();
        let mut at = Vec::new();
        for i in 0..200u64 {
            at.push(bytes.len() as u64);
            let rec = record::encode(Oid(i), &[7u8; 64], &[]).unwrap();
            shelf::push_shelf_record(&mut bytes, Oid(i), &rec);
        }
        let len = bytes.len() as u64;
        let file = CountingFile(bytes, Default::default(), Default::default());
        let path = Path::new("two-regions");
        let window = (at[100] - at[0]) as usize;
        let mut two = RecordReader::with_windows(2, window);
        for i in 0..100 {
            for oid in [i, i + 100] {
                let rec = two
                    .read(&file, path, at[oid], len, Some(Oid(oid as u64)))
                    .unwrap();
                assert_eq!(Record::decode(rec).unwrap().oid, Oid(oid as u64));
            }
        }
        assert_eq!(file.1.get(), 2, "one read per region");

        file.1.set(0);
        let mut one = RecordReader::new(window);
        for i in 0..100 {
            for oid in [i, i + 100] {
                one.read(&file, path, at[oid], len, Some(Oid(oid as u64)))
                    .unwrap();
            }
        }
        assert_eq!(file.1.get(), 200, "a single window refills at every jump");
    }

    #[test]
    fn record_reader_reads_a_window_onward_and_little_elsewhere() {
        // 100 shelf records of 100 bytes.
        let mut bytes = Vec::new();
        let mut at = Vec::new();
        for i in 0..100u64 {
            at.push(bytes.len() as u64);
            let rec = record::encode(Oid(i), &[7u8; 64], &[]).unwrap();
            shelf::push_shelf_record(&mut bytes, Oid(i), &rec);
        }
        let len = bytes.len() as u64;
        let file = CountingFile(bytes, Default::default(), Default::default());
        let path = Path::new("onward");
        let mut reader = RecordReader::new(1000).random_reads(200);
        let mut read = |oid: usize| {
            let rec = reader.read(&file, path, at[oid], len, None).unwrap();
            assert_eq!(Record::decode(rec).unwrap().oid, Oid(oid as u64));
        };
        // A first read anywhere is random; then records in file order
        // continue it and get whole windows; a jump back is random again.
        for oid in [50, 51, 52, 53, 60, 70, 3] {
            read(oid);
        }
        assert_eq!(*file.2.borrow(), vec![200, 1000, 1000, 200]);
    }

    #[test]
    fn deferred_syncs_follow_the_file_a_pack_swaps_in() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("g.durus");
        let mut storage = FileStorage::open(&path).unwrap();
        let syncer = storage.defer_sync().unwrap().expect("fsync is on");
        let root = storage.new_oid().unwrap();
        storage
            .commit_records([record::encode(root, b"root", &[]).unwrap()])
            .unwrap();
        syncer.sync().unwrap();
        let inode = |f: &Option<File>| f.as_ref().unwrap().metadata().unwrap().ino();
        let deferred = storage.deferred.clone().unwrap();
        assert_eq!(
            inode(&deferred.lock()),
            std::fs::metadata(&path).unwrap().ino()
        );

        let mut job = storage.begin_pack().unwrap();
        job.copy(&mut |_| {}).unwrap();
        storage.finish_pack(job).unwrap();
        // The packed file is a new inode at the same path: fsyncs go there.
        assert_eq!(
            inode(&deferred.lock()),
            std::fs::metadata(&path).unwrap().ino()
        );
        storage
            .commit_records([record::encode(root, b"again", &[]).unwrap()])
            .unwrap();
        syncer.sync().unwrap();
        // And commits no longer sync in `end`: asking again hands back the
        // same syncer.
        let again = storage.defer_sync().unwrap().unwrap();
        assert!(Arc::ptr_eq(
            &(again as Arc<dyn Syncer>),
            &(syncer as Arc<dyn Syncer>)
        ));
    }

    #[test]
    fn closing_releases_the_lock_though_the_syncer_lives_on() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.durus");
        let mut storage = FileStorage::open(&path).unwrap();
        let syncer = storage.defer_sync().unwrap().unwrap();
        storage.close().unwrap();
        // Another writer can open it at once, and the old syncer says why
        // it cannot sync any more.
        FileStorage::open(&path).unwrap();
        assert!(matches!(syncer.sync(), Err(Error::Closed)));
    }

    #[test]
    fn a_storage_without_fsync_keeps_no_syncer() {
        let dir = tempfile::tempdir().unwrap();
        let mut storage = FileStorageOptions::new()
            .fsync(false)
            .open(dir.path().join("n.durus"))
            .unwrap();
        assert!(storage.defer_sync().unwrap().is_none());
    }
}
