//! Packing a FileStorage (spec 6.1): keep what the root reaches through
//! refs, write it as the base of a new file beside the original, fsync it,
//! and rename it over the original in one atomic step.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::fs::{self, File, OpenOptions};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::error::{Error, Result};
use crate::format::shelf::{self, OffsetMap};
use crate::format::{Oid, Record};
use crate::storage::base_map::BaseMap;
use crate::storage::file::{lock, scan_transactions, FileStorage, RecordReader};
use crate::storage::file_io::FileIo;
use crate::storage::oid_map::OidMap;
use crate::storage::PackReport;

/// Which part of a pack is running.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PackPhase {
    /// Copying reachable records into the new file.
    Copying,
    /// Writing the offset map and syncing.
    Finishing,
}

/// Progress of a pack, for progress bars.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PackProgress {
    pub phase: PackPhase,
    /// Records copied so far.
    pub done: u64,
    /// Records stored before the pack (an upper bound on what is copied).
    pub total: u64,
}

/// A growable set of oids, one bit each: the live set of a pack.
#[derive(Default)]
struct OidBits(Vec<u64>);

impl OidBits {
    /// Adds `oid`; false if it was already there.
    fn insert(&mut self, oid: Oid) -> bool {
        let (word, bit) = ((oid.0 / 64) as usize, oid.0 % 64);
        if word >= self.0.len() {
            self.0.resize(word + 1, 0);
        }
        let was = self.0[word] & (1 << bit) != 0;
        self.0[word] |= 1 << bit;
        !was
    }

    fn contains(&self, oid: Oid) -> bool {
        self.0
            .get((oid.0 / 64) as usize)
            .is_some_and(|w| w & (1 << (oid.0 % 64)) != 0)
    }
}

/// Bytes a pack gathers before each write: one system call per MiB.
const PACK_BUFFER: usize = 1 << 20;

/// Buffered writes to the pack's file at a tracked offset. [`FileIo`] has
/// no cursor; writing through it (not a `BufWriter<File>`) lets the file
/// be wrapped, so that tests can fail the pack's writes anywhere.
struct PackWriter {
    file: Box<dyn FileIo>,
    path: PathBuf,
    buf: Vec<u8>,
    /// File offset of `buf[0]`.
    at: u64,
}

impl PackWriter {
    fn new(file: Box<dyn FileIo>, path: PathBuf) -> Self {
        PackWriter {
            file,
            path,
            buf: Vec::with_capacity(PACK_BUFFER),
            at: 0,
        }
    }

    /// Where the next byte goes.
    fn position(&self) -> u64 {
        self.at + self.buf.len() as u64
    }

    /// Appends `bytes` (written at once if they would not fit the buffer).
    /// Called twice per record copied: the common case is inlined.
    #[inline]
    fn write(&mut self, bytes: &[u8]) -> Result<()> {
        if bytes.len() <= PACK_BUFFER - self.buf.len() {
            self.buf.extend_from_slice(bytes);
            Ok(())
        } else {
            self.flush_and_write(bytes)
        }
    }

    /// [`write`](Self::write) once the buffer is full.
    #[cold]
    fn flush_and_write(&mut self, bytes: &[u8]) -> Result<()> {
        self.flush()?;
        if bytes.len() >= PACK_BUFFER {
            write_at(&mut *self.file, &self.path, bytes, self.at)?;
            self.at += bytes.len() as u64;
        } else {
            self.buf.extend_from_slice(bytes);
        }
        Ok(())
    }

    /// Writes out the buffer.
    fn flush(&mut self) -> Result<()> {
        if !self.buf.is_empty() {
            write_at(&mut *self.file, &self.path, &self.buf, self.at)?;
            self.at += self.buf.len() as u64;
            self.buf.clear();
        }
        Ok(())
    }

    /// Overwrites bytes already written (flushing first, so they are).
    fn patch(&mut self, bytes: &[u8], offset: u64) -> Result<()> {
        self.flush()?;
        write_at(&mut *self.file, &self.path, bytes, offset)
    }

    /// The file, everything written (flushed) to it.
    fn into_file(mut self) -> Result<Box<dyn FileIo>> {
        self.flush()?;
        Ok(self.file)
    }
}

/// Writes all of `bytes` at `offset` of `file` (at `path`, for messages).
fn write_at(file: &mut dyn FileIo, path: &Path, bytes: &[u8], offset: u64) -> Result<()> {
    file.write_all_at(bytes, offset).map_err(|e| {
        Error::io(
            format!(
                "cannot write {} bytes at offset {offset} of {}",
                bytes.len(),
                path.display()
            ),
            e,
        )
    })
}

/// `<path><suffix>`, e.g. `db.durus.pack`.
fn sibling(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(suffix);
    PathBuf::from(name)
}

/// A pack in progress, detached from its [`FileStorage`]: started by
/// [`FileStorage::begin_pack`], copied by [`PackJob::copy`] (the long
/// part, which needs no access to the storage, so a server keeps loading
/// and committing meanwhile) and finished by [`FileStorage::finish_pack`],
/// which appends the transactions committed since the start verbatim and
/// swaps the files. Dropping an unfinished job removes its `.pack` file.
pub struct PackJob {
    path: PathBuf,
    pack_path: PathBuf,
    /// The original file as it was at the start (read below `snapshot_end`).
    source: File,
    snapshot_end: u64,
    /// The storage's base map, shared: the pages this pack reads (through
    /// `source`, the same bytes) serve the storage's lookups too.
    map: Arc<BaseMap>,
    index: OidMap,
    /// The new file, taken by `copy` and given back when it is done.
    out: Option<PackWriter>,
    live: OidBits,
    /// Where the packed base (records and offset map) ends.
    base_end: u64,
    new_map: Option<OffsetMap>,
    kept: u64,
    total: u64,
    size_before: u64,
}

impl PackJob {
    fn position(&self, oid: Oid) -> Result<Option<u64>> {
        match self.index.get(oid) {
            Some(pos) => Ok(Some(pos)),
            None => self.map.get(&self.source, &self.path, oid),
        }
    }

    fn io_err(&self, what: &str, e: std::io::Error) -> Error {
        Error::io(format!("{what} {}", self.pack_path.display()), e)
    }

    /// Copies every record the root reaches (as of the start) into the
    /// new file, calling `progress` now and then.
    pub fn copy(&mut self, progress: &mut dyn FnMut(PackProgress)) -> Result<()> {
        let mut out = self
            .out
            .take()
            .ok_or_else(|| Error::InvalidState("this pack was already copied".into()))?;
        // Smallest discovered oid first, as Durus packs (roughly ascending).
        let mut heap = BinaryHeap::new();
        let mut offsets: Vec<Option<u64>> = Vec::new();
        let mut written = shelf::BASE_BODY_OFFSET;
        // The base in oid order, and between its records those appended
        // since the last pack: a window for each region, and spares.
        let mut reader = RecordReader::with_windows(4, 1 << 20);
        let mut dangling = 0u64;
        if self.position(Oid::ROOT)?.is_some() {
            self.live.insert(Oid::ROOT);
            heap.push(Reverse(Oid::ROOT));
        }
        while let Some(Reverse(oid)) = heap.pop() {
            // Only stored oids are queued.
            let pos = self.position(oid)?.ok_or(Error::KeyNotFound(oid))?;
            let record =
                reader.read(&self.source, &self.path, pos, self.snapshot_end, Some(oid))?;
            for r in Record::decode(record)?.refs() {
                if self.position(r)?.is_none() {
                    dangling += 1;
                    tracing::warn!(path = %self.path.display(), "oid {oid} refers to oid {r}, which has no record");
                } else if self.live.insert(r) {
                    heap.push(Reverse(r));
                }
            }
            if offsets.len() <= oid.0 as usize {
                offsets.resize(oid.0 as usize + 1, None);
            }
            offsets[oid.0 as usize] = Some(written);
            let frame_len = 16 + record.len() as u64;
            let mut head = [0u8; 16];
            head[..8].copy_from_slice(&(frame_len - 8).to_be_bytes());
            head[8..].copy_from_slice(&oid.to_bytes());
            out.write(&head)?;
            out.write(record)?;
            written += frame_len;
            self.kept += 1;
            if self.kept.is_multiple_of(4096) {
                progress(PackProgress {
                    phase: PackPhase::Copying,
                    done: self.kept,
                    total: self.total,
                });
            }
        }
        progress(PackProgress {
            phase: PackPhase::Finishing,
            done: self.kept,
            total: self.total,
        });
        if dangling > 0 {
            tracing::warn!(path = %self.path.display(), dangling, "pack kept records that refer to missing oids");
        }
        let map = OffsetMap::build(written, &offsets);
        let mut tail = Vec::with_capacity(map.encoded_len() as usize);
        map.encode_into(&mut tail);
        out.write(&tail)?;
        out.patch(
            &(written - shelf::BASE_BODY_OFFSET).to_be_bytes(),
            shelf::BASE_LEN_OFFSET,
        )?;
        self.base_end = written + map.encoded_len();
        debug_assert_eq!(out.position(), self.base_end);
        self.new_map = Some(map);
        self.out = Some(out);
        Ok(())
    }
}

impl Drop for PackJob {
    fn drop(&mut self) {
        // Finished jobs have renamed it away; this removes a failed one.
        let _ = fs::remove_file(&self.pack_path);
    }
}

impl FileStorage {
    /// Packs, calling `progress` as records are copied. The original stays
    /// untouched until the packed file is complete and fsync'd; it is then
    /// kept as `<name>.prepack` (as Durus does) and the packed file renamed
    /// over `<name>`. Oids removed are reported by the next `sync()`.
    pub fn pack_with_progress(
        &mut self,
        progress: &mut dyn FnMut(PackProgress),
    ) -> Result<PackReport> {
        let mut job = self.begin_pack()?;
        job.copy(progress)?;
        self.finish_pack(job)
    }

    /// Starts a pack of what is stored now (see [`PackJob`]).
    pub fn begin_pack(&mut self) -> Result<PackJob> {
        self.check_writable()?;
        if self.has_pending() {
            return Err(Error::InvalidState(
                "cannot pack while a transaction is being stored (call end or begin first)".into(),
            ));
        }
        let pack_path = sibling(&self.path, ".pack");
        let io_err =
            |what: &str, e: std::io::Error| Error::io(format!("{what} {}", pack_path.display()), e);
        let source =
            File::open(&self.path).map_err(|e| io_err("cannot reopen the original of", e))?;
        let pack_file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&pack_path)
            .map_err(|e| io_err("cannot create", e))?;
        lock(&pack_file, &pack_path)?;
        pack_file
            .set_len(0)
            .map_err(|e| io_err("cannot truncate", e))?;
        let pack_file = self.wrap_file(pack_file, &pack_path);
        let mut out = PackWriter::new(pack_file, pack_path.clone());
        // The base's length is patched in once `copy` knows it.
        out.write(shelf::MAGIC)?;
        out.write(&0u64.to_be_bytes())?;
        Ok(PackJob {
            path: self.path.clone(),
            pack_path,
            source,
            snapshot_end: self.end,
            map: Arc::clone(&self.map),
            index: self.index.clone(),
            out: Some(out),
            live: OidBits::default(),
            base_end: 0,
            new_map: None,
            kept: 0,
            total: self.stats()?.records,
            size_before: self.end,
        })
    }

    /// Finishes a copied pack: appends the transactions committed since
    /// `begin_pack` as they are, fsyncs, and swaps the packed file in.
    /// Records those transactions wrote are kept whether reachable or not.
    pub fn finish_pack(&mut self, mut job: PackJob) -> Result<PackReport> {
        self.check_writable()?;
        if job.path != self.path {
            return Err(Error::InvalidState(format!(
                "a pack of {} cannot finish on {}",
                job.path.display(),
                self.path.display()
            )));
        }
        if self.has_pending() {
            return Err(Error::InvalidState(
                "cannot finish a pack while a transaction is being stored".into(),
            ));
        }
        let (Some(mut out), Some(map)) = (job.out.take(), job.new_map.take()) else {
            return Err(Error::InvalidState("the pack was not copied".into()));
        };
        // Committed meanwhile: whole transactions, copied byte for byte.
        let mut at = job.snapshot_end;
        let mut buf = vec![0u8; PACK_BUFFER];
        while at < self.end {
            let want = buf.len().min((self.end - at) as usize);
            let n = self.file.read_up_to(&mut buf[..want], at).map_err(|e| {
                Error::io(format!("cannot read {} at {at}", self.path.display()), e)
            })?;
            if n == 0 {
                return Err(Error::Corrupt {
                    path: self.path.clone(),
                    offset: at,
                    detail: "the file ends before its last transaction".into(),
                });
            }
            out.write(&buf[..n])?;
            at += n as u64;
        }
        let new_end = job.base_end + (self.end - job.snapshot_end);
        debug_assert_eq!(out.position(), new_end);
        let mut pack_file = out.into_file()?;
        // fdatasync makes the length durable too; the name is made durable
        // by the directory fsync after the rename.
        pack_file
            .sync_data()
            .map_err(|e| job.io_err("cannot sync", e))?;
        let (tail_index, tail_transactions, damage) =
            scan_transactions(&*pack_file, &job.pack_path, job.base_end, new_end)?;
        if let Some(damage) = damage {
            return Err(Error::Corrupt {
                path: job.pack_path.clone(),
                offset: damage.offset,
                detail: format!(
                    "the transactions copied into the pack do not scan: {}",
                    damage.detail
                ),
            });
        }
        let mut removed: Vec<Oid> = job
            .map
            .entries(&job.source, &job.path)?
            .map(|(oid, _)| oid)
            .chain(job.index.iter().map(|(oid, _)| oid))
            .filter(|&oid| !job.live.contains(oid) && !tail_index.contains(oid))
            .collect();
        removed.sort_unstable();
        removed.dedup();

        let pack_path = job.pack_path.clone();
        let prepack = self.swap_in(&pack_path, pack_file, map, new_end)?;
        self.adopt_tail(tail_index, tail_transactions);
        self.invalid.extend(removed.iter().copied());
        let (kept, size_before, size_after) = (job.kept, job.size_before, new_end);
        tracing::info!(path = %self.path.display(), kept, removed = removed.len(), size_before, size_after, "packed");
        Ok(PackReport {
            kept,
            removed,
            size_before,
            size_after,
            prepack,
        })
    }

    /// Keeps the original as `<name>.prepack` and renames the packed file
    /// over `<name>` (atomic: `<name>` is always the old or the new file).
    fn swap_in(
        &mut self,
        pack_path: &Path,
        pack_file: Box<dyn FileIo>,
        map: OffsetMap,
        end: u64,
    ) -> Result<Option<PathBuf>> {
        let mut prepack = Some(sibling(&self.path, ".prepack"));
        if let Some(p) = &prepack {
            let _ = fs::remove_file(p);
            if let Err(e) = fs::hard_link(&self.path, p) {
                tracing::warn!(path = %self.path.display(), "no .prepack copy of the original: {e}");
                prepack = None;
            }
        }
        fs::rename(pack_path, &self.path).map_err(|e| {
            Error::io(
                format!(
                    "cannot rename {} to {}",
                    pack_path.display(),
                    self.path.display()
                ),
                e,
            )
        })?;
        let dir = match self.path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p,
            _ => Path::new("."),
        };
        if let Err(e) = File::open(dir).and_then(|d| d.sync_all()) {
            tracing::warn!(dir = %dir.display(), "cannot fsync the directory after the pack rename: {e}");
        }
        self.replace_base(pack_file, map, end);
        Ok(prepack)
    }
}
