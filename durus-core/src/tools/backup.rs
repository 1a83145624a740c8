//! Incremental backup of a live SHELF-1 file (`durus backup SRC DEST`).
//!
//! Durus's FAQ: "it is safe to just copy the file" while it is served,
//! because a SHELF-1 file only grows until a pack rewrites it (spec 4.1).
//! So a backup that already holds the first bytes of the file needs only
//! the bytes appended since, like `rsync --append`:
//!
//! * DEST missing: SRC is copied whole into a temporary file beside DEST,
//!   fsync'd and renamed over DEST, so DEST is never half written.
//! * DEST present: its head (magic, base length T0, offset map header),
//!   its first and last 64 KiB of complete transactions are compared with
//!   the same bytes of SRC. Equal: only SRC's bytes beyond DEST are
//!   appended and fsync'd. Different, or SRC shorter than DEST's complete
//!   transactions: SRC was packed (rewritten) since, and is copied whole as
//!   above.
//!
//! SRC is opened read-only and never locked (a server holds its write
//! lock), so the copy may end inside a transaction being written at that
//! moment. DEST is then checked with the read-only open of
//! [`FileStorage`], and the report says where its last complete
//! transaction ends ([`BackupReport::valid_len`]) and how many bytes of a
//! torn transaction follow. They are kept: the next backup appends the
//! rest of that transaction. The bytes after the last complete transaction
//! are provisional (a Python Durus writer rewrites a transaction's length
//! after its records; a failed commit is taken back), so the next backup
//! compares them in full with SRC and copies them again from the
//! transaction boundary if SRC now holds other bytes there.
//!
//! A torn copy opens read-only as the file up to its last complete
//! transaction; `durus repair DEST` (or opening it with
//! [`FileStorageOptions::repair`](crate::FileStorageOptions::repair))
//! truncates the torn tail; the copy then ends on a transaction boundary
//! and is still a prefix of the source, so later backups still append to
//! it (unless something commits to the copy: then they copy whole).
//!
//! ```
//! use durus_core::tools::backup::{backup, BackupKind};
//! use durus_core::{FileStorage, Storage, StorageExt};
//! use durus_core::format::record;
//! # let dir = tempfile::tempdir().unwrap();
//! let (src, dest) = (dir.path().join("live.durus"), dir.path().join("copy.durus"));
//! let mut live = FileStorage::open(&src)?;
//! let root = live.new_oid()?;
//! live.commit_records([record::encode(root, b"one", &[])?])?;
//! let first = backup(&src, &dest, &mut |_| {})?;
//! assert_eq!(first.kind, BackupKind::New);
//!
//! live.commit_records([record::encode(root, b"two", &[])?])?;
//! let second = backup(&src, &dest, &mut |_| {})?;
//! assert!(matches!(second.kind, BackupKind::Incremental { .. }));
//! assert_eq!(second.dest_len, std::fs::metadata(&src).unwrap().len());
//! assert_eq!(second.torn_tail, None);
//! # Ok::<(), durus_core::Error>(())
//! ```

use std::fs::{self, File, OpenOptions};
use std::io;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::format::shelf::{self, MapHeader, MAP_HEADER_LEN};
use crate::storage::file_io::FileIo;
use crate::storage::{FileStorage, TailDamage};

/// How many bytes at the start and at the end of a backup's complete
/// transactions are compared with the source before appending.
pub const SAMPLE_LEN: u64 = 64 << 10;

/// Bytes copied per read and write.
const CHUNK: usize = 1 << 20;

/// How far a copy has got, for a progress bar.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BackupProgress {
    /// Bytes copied so far.
    pub done: u64,
    /// Bytes this backup copies in all.
    pub total: u64,
}

/// Whether a backup copied the whole source or appended to DEST, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BackupKind {
    /// DEST did not exist: the source was copied whole.
    New,
    /// DEST no longer matches the start of the source, which was packed
    /// (rewritten) since: the source was copied whole. `evidence` says
    /// which check differed.
    Packed {
        /// The check that failed, e.g. "the offset map header differs".
        evidence: String,
    },
    /// DEST held the source's first bytes: only the rest was copied,
    /// starting at `from`.
    Incremental {
        /// Where the appended bytes start (DEST's old length, or the end of
        /// its last complete transaction when its torn tail was replaced).
        from: u64,
        /// Bytes of an old torn tail of DEST that the source no longer
        /// holds (a transaction rewritten or taken back since) and that were
        /// copied again; 0 normally.
        replaced_tail: u64,
    },
}

impl BackupKind {
    /// True when the source was copied whole.
    pub fn is_full(&self) -> bool {
        !matches!(self, BackupKind::Incremental { .. })
    }
}

/// What a backup did and what DEST holds now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackupReport {
    /// The source file.
    pub src: PathBuf,
    /// The backup file.
    pub dest: PathBuf,
    /// Full or incremental, and why.
    pub kind: BackupKind,
    /// Bytes read from the source and written to DEST.
    pub bytes_copied: u64,
    /// DEST's length now (the source's length when the copy started, or
    /// less if the source was cut back meanwhile).
    pub dest_len: u64,
    /// Where DEST's last complete transaction ends: a read-only open sees
    /// DEST up to here. Equal to `dest_len` unless the copy caught a
    /// transaction being written.
    pub valid_len: u64,
    /// The torn transaction after `valid_len`, if the copy caught one.
    pub torn_tail: Option<TailDamage>,
}

impl BackupReport {
    /// True when DEST ends on a transaction boundary.
    pub fn ends_on_boundary(&self) -> bool {
        self.torn_tail.is_none()
    }

    /// Bytes after the last complete transaction (0 on a boundary).
    pub fn torn_bytes(&self) -> u64 {
        self.dest_len - self.valid_len
    }
}

/// Backs up the SHELF-1 file `src` into `dest`: a whole copy the first time
/// and after a pack of `src`, otherwise only the bytes `src` has beyond
/// `dest` (see the [module](self) documentation). `progress` hears of every
/// chunk copied. `src` is only read, and never locked.
///
/// Errors: `src` missing or unreadable, not a SHELF-1 file
/// ([`Error::NotAShelf`]) or with a damaged head ([`Error::Corrupt`]);
/// `dest`'s directory missing; `dest` existing but not a SHELF-1 file (it is
/// not replaced); `dest` open read-write by a program ([`Error::Locked`]).
pub fn backup(
    src: &Path,
    dest: &Path,
    progress: &mut dyn FnMut(BackupProgress),
) -> Result<BackupReport> {
    let source = File::open(src).map_err(|e| {
        Error::io(
            format!("cannot open the backup source {}", src.display()),
            e,
        )
    })?;
    let src_len = FileIo::size(&source).map_err(|e| io_at("cannot stat", src, None, e))?;
    let src_head = Head::read(&source, src, src_len)?;
    check_dest_dir(dest)?;

    let (kind, bytes_copied) = match fs::metadata(dest) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            let copied = copy_whole(&source, src, src_len, dest, progress)?;
            (BackupKind::New, copied)
        }
        Err(e) => return Err(io_at("cannot stat", dest, None, e)),
        Ok(meta) if meta.is_dir() => {
            return Err(Error::io(
                format!(
                    "the backup destination {} is a directory: name the backup file",
                    dest.display()
                ),
                io::ErrorKind::IsADirectory.into(),
            ))
        }
        Ok(_) => {
            let mut target = OpenOptions::new()
                .read(true)
                .write(true)
                .open(dest)
                .map_err(|e| io_at("cannot open", dest, None, e))?;
            lock(&target, dest)?;
            match plan(&source, src, src_len, &src_head, &target, dest)? {
                Plan::Append {
                    from,
                    replaced_tail,
                    dest_len,
                } => {
                    let copied = append(
                        &source,
                        src,
                        src_len,
                        &mut target,
                        dest,
                        from,
                        dest_len,
                        progress,
                    )?;
                    (
                        BackupKind::Incremental {
                            from,
                            replaced_tail,
                        },
                        copied,
                    )
                }
                Plan::Full(evidence) => {
                    // Keep the lock on the old backup until the new one
                    // has replaced it.
                    let copied = copy_whole(&source, src, src_len, dest, progress)?;
                    drop(target);
                    (BackupKind::Packed { evidence }, copied)
                }
            }
        }
    };

    let (valid_len, torn_tail) = complete_part(dest)?;
    let dest_len = fs::metadata(dest)
        .map_err(|e| io_at("cannot stat", dest, None, e))?
        .len();
    Ok(BackupReport {
        src: src.into(),
        dest: dest.into(),
        kind,
        bytes_copied,
        dest_len,
        valid_len,
        torn_tail,
    })
}

/// Takes the write lock of an existing backup, as a read-write
/// [`FileStorage`] would: a backup that is being served (or backed up into
/// by another run) is not touched.
fn lock(target: &File, dest: &Path) -> Result<()> {
    match target.try_lock() {
        Ok(()) => Ok(()),
        Err(fs::TryLockError::WouldBlock) => Err(Error::Locked { path: dest.into() }),
        Err(fs::TryLockError::Error(e)) => Err(io_at("cannot lock", dest, None, e)),
    }
}

/// An I/O error naming the file and, if known, the offset.
fn io_at(what: &str, path: &Path, offset: Option<u64>, e: io::Error) -> Error {
    match offset {
        Some(at) => Error::io(format!("{what} {} at offset {at}", path.display()), e),
        None => Error::io(format!("{what} {}", path.display()), e),
    }
}

/// Fails clearly when DEST's directory does not exist (rather than with
/// the temporary file's name).
fn check_dest_dir(dest: &Path) -> Result<()> {
    let dir = dest_dir(dest);
    match fs::metadata(dir) {
        Ok(meta) if meta.is_dir() => Ok(()),
        Ok(_) => Err(Error::io(
            format!("the backup directory {} is not a directory", dir.display()),
            io::ErrorKind::NotADirectory.into(),
        )),
        Err(e) => Err(Error::io(
            format!("the backup directory {} is not usable", dir.display()),
            e,
        )),
    }
}

/// The directory DEST is in (`.` for a bare file name).
fn dest_dir(dest: &Path) -> &Path {
    match dest.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

/// The fixed head of a SHELF-1 file: magic and T0, and the offset map
/// header at S = 16 + T0. A pack changes it (almost always).
struct Head {
    bytes: [u8; 16 + MAP_HEADER_LEN as usize],
}

impl Head {
    /// Reads and checks the head of `file` (`len` bytes long).
    fn read(file: &File, path: &Path, len: u64) -> Result<Head> {
        let mut bytes = [0u8; 16 + MAP_HEADER_LEN as usize];
        let n = file
            .read_up_to(&mut bytes[..16], 0)
            .map_err(|e| io_at("cannot read", path, Some(0), e))?;
        if n < 8 || &bytes[..8] != shelf::MAGIC {
            return Err(Error::NotAShelf {
                path: path.into(),
                detail: format!(
                    "it starts with {:?}, not {:?}",
                    String::from_utf8_lossy(&bytes[..n.min(8)]),
                    String::from_utf8_lossy(shelf::MAGIC)
                ),
            });
        }
        let corrupt = |offset: u64, detail: String| Error::Corrupt {
            path: path.into(),
            offset,
            detail,
        };
        if n < 16 {
            return Err(corrupt(
                8,
                format!("the file ends ({len} bytes) inside the base transaction length"),
            ));
        }
        let t0 = shelf::read_u64(&bytes[8..16]);
        let start = t0
            .checked_add(shelf::BASE_BODY_OFFSET)
            .filter(|s| s.saturating_add(MAP_HEADER_LEN) <= len)
            .ok_or_else(|| {
                corrupt(
                    8,
                    format!(
                        "a base transaction of {t0} bytes and its offset map do not fit in the file ({len} bytes)"
                    ),
                )
            })?;
        let mut map = [0u8; MAP_HEADER_LEN as usize];
        file.read_exact_at(&mut map, start)
            .map_err(|e| io_at("cannot read", path, Some(start), e))?;
        MapHeader::parse(start, &map, len).map_err(|e| match e {
            Error::Corrupt { offset, detail, .. } => corrupt(offset, detail),
            other => other,
        })?;
        bytes[16..].copy_from_slice(&map);
        Ok(Head { bytes })
    }
}

/// What to do with an existing DEST.
enum Plan {
    /// Copy the source from `from` on (DEST is `dest_len` bytes now).
    Append {
        from: u64,
        replaced_tail: u64,
        dest_len: u64,
    },
    /// Copy the source whole; the string says why.
    Full(String),
}

/// Decides between appending and a whole copy by comparing DEST with the
/// source: the head, the first and last [`SAMPLE_LEN`] bytes of DEST's
/// complete transactions, and DEST's torn tail in full.
fn plan(
    source: &File,
    src: &Path,
    src_len: u64,
    src_head: &Head,
    target: &File,
    dest: &Path,
) -> Result<Plan> {
    let dest_len = FileIo::size(target).map_err(|e| io_at("cannot stat", dest, None, e))?;
    let dest_head = match Head::read(target, dest, dest_len) {
        Ok(head) => head,
        Err(Error::NotAShelf { detail, .. }) => {
            return Err(Error::NotAShelf {
                path: dest.into(),
                detail: format!("{detail}; the backup destination is not replaced"),
            })
        }
        Err(Error::Corrupt { offset, detail, .. }) => {
            return Ok(Plan::Full(format!(
                "the old backup's head is damaged at offset {offset} ({detail})"
            )))
        }
        Err(e) => return Err(e),
    };
    if dest_head.bytes[8..16] != src_head.bytes[8..16] {
        return Ok(Plan::Full("the base transaction length differs".into()));
    }
    if dest_head.bytes[16..] != src_head.bytes[16..] {
        return Ok(Plan::Full("the offset map header differs".into()));
    }
    let (valid_len, torn) = match complete_part(dest) {
        Ok(part) => part,
        Err(Error::Corrupt { offset, detail, .. }) => {
            return Ok(Plan::Full(format!(
                "the old backup is damaged at offset {offset} ({detail})"
            )))
        }
        Err(e) => return Err(e),
    };
    if src_len < valid_len {
        return Ok(Plan::Full(format!(
            "the source ({src_len} bytes) is shorter than the backup's {valid_len} bytes of complete transactions"
        )));
    }
    let first = 0..SAMPLE_LEN.min(valid_len);
    let last = valid_len.saturating_sub(SAMPLE_LEN).max(first.end)..valid_len;
    for range in [first, last] {
        if let Some(at) = first_difference(source, src, target, dest, range)? {
            return Ok(Plan::Full(format!("the bytes at offset {at} differ")));
        }
    }
    if torn.is_none() {
        return Ok(Plan::Append {
            from: dest_len,
            replaced_tail: 0,
            dest_len,
        });
    }
    // The torn tail is provisional: keep it only if the source still has it.
    let kept = src_len >= dest_len
        && first_difference(source, src, target, dest, valid_len..dest_len)?.is_none();
    Ok(if kept {
        Plan::Append {
            from: dest_len,
            replaced_tail: 0,
            dest_len,
        }
    } else {
        Plan::Append {
            from: valid_len,
            replaced_tail: dest_len - valid_len,
            dest_len,
        }
    })
}

/// Where DEST's complete transactions end, and its torn tail if any, as a
/// read-only open sees them.
fn complete_part(dest: &Path) -> Result<(u64, Option<TailDamage>)> {
    let storage = FileStorage::options().readonly(true).open(dest)?;
    Ok((storage.file_size(), storage.tail_damage().cloned()))
}

/// The first offset in `range` where the two files differ (a file ending
/// early differs), or `None`.
fn first_difference(
    source: &File,
    src: &Path,
    target: &File,
    dest: &Path,
    range: std::ops::Range<u64>,
) -> Result<Option<u64>> {
    let mut a = vec![0u8; CHUNK.min((range.end - range.start) as usize)];
    let mut b = a.clone();
    let mut at = range.start;
    while at < range.end {
        let want = CHUNK.min((range.end - at) as usize);
        let na = source
            .read_up_to(&mut a[..want], at)
            .map_err(|e| io_at("cannot read", src, Some(at), e))?;
        let nb = target
            .read_up_to(&mut b[..want], at)
            .map_err(|e| io_at("cannot read", dest, Some(at), e))?;
        let n = na.min(nb);
        if let Some(i) = (0..n).find(|&i| a[i] != b[i]) {
            return Ok(Some(at + i as u64));
        }
        if n < want {
            return Ok(Some(at + n as u64));
        }
        at += want as u64;
    }
    Ok(None)
}

/// Copies the source's bytes `from..src_len` into `target` at the same
/// offsets, drops whatever DEST held beyond them, and fsyncs. Returns the
/// bytes copied.
#[allow(clippy::too_many_arguments)]
fn append(
    source: &File,
    src: &Path,
    src_len: u64,
    target: &mut File,
    dest: &Path,
    from: u64,
    dest_len: u64,
    progress: &mut dyn FnMut(BackupProgress),
) -> Result<u64> {
    let end = copy_range(source, src, from, src_len, target, dest, progress)?;
    if end < dest_len {
        // Only an old torn tail lies beyond `end` (`from` is at most the
        // end of DEST's complete transactions whenever `end` < `dest_len`).
        FileIo::set_len(target, end).map_err(|e| io_at("cannot truncate", dest, Some(end), e))?;
    }
    FileIo::sync_data(target).map_err(|e| io_at("cannot fsync", dest, None, e))?;
    Ok(end - from)
}

/// Copies the source's bytes `from..to` to the same offsets of `target`,
/// stopping early if the source ends first (a writer took a failed commit
/// back). Returns where the copy ended.
fn copy_range(
    source: &File,
    src: &Path,
    from: u64,
    to: u64,
    target: &mut File,
    dest: &Path,
    progress: &mut dyn FnMut(BackupProgress),
) -> Result<u64> {
    let total = to.saturating_sub(from);
    let mut buf = vec![0u8; CHUNK.min(total as usize)];
    let mut at = from;
    progress(BackupProgress { done: 0, total });
    while at < to {
        let want = CHUNK.min((to - at) as usize);
        let n = source
            .read_up_to(&mut buf[..want], at)
            .map_err(|e| io_at("cannot read", src, Some(at), e))?;
        target
            .write_all_at(&buf[..n], at)
            .map_err(|e| io_at("cannot write", dest, Some(at), e))?;
        at += n as u64;
        progress(BackupProgress {
            done: at - from,
            total,
        });
        if n < want {
            tracing::warn!(src = %src.display(), offset = at, "the source ended before the copy did: a commit was taken back");
            break;
        }
    }
    Ok(at)
}

/// Copies the source whole into a temporary file beside `dest`, fsyncs it
/// and renames it over `dest`. Returns the bytes copied.
fn copy_whole(
    source: &File,
    src: &Path,
    src_len: u64,
    dest: &Path,
    progress: &mut dyn FnMut(BackupProgress),
) -> Result<u64> {
    let dir = dest_dir(dest);
    let name = dest
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "backup".into());
    let tmp = dir.join(format!(".{name}.backup-{}", std::process::id()));
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&tmp)
        .map_err(|e| io_at("cannot create", &tmp, None, e))?;
    let guard = RemoveOnDrop(Some(tmp.clone()));
    let end = copy_range(source, src, 0, src_len, &mut file, &tmp, progress)?;
    file.sync_all()
        .map_err(|e| io_at("cannot fsync", &tmp, None, e))?;
    drop(file);
    fs::rename(&tmp, dest).map_err(|e| {
        Error::io(
            format!("cannot rename {} to {}", tmp.display(), dest.display()),
            e,
        )
    })?;
    guard.disarm();
    // Make the rename itself durable.
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| io_at("cannot fsync the directory", dir, None, e))?;
    Ok(end)
}

/// Removes a half-written temporary file when a copy fails.
struct RemoveOnDrop(Option<PathBuf>);

impl RemoveOnDrop {
    fn disarm(mut self) {
        self.0 = None;
    }
}

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        if let Some(path) = self.0.take() {
            let _ = fs::remove_file(path);
        }
    }
}
