//! Packing a FileStorage (spec 6.1): keep what the root reaches through
//! refs, write it as the base of a new file beside the original, fsync it,
//! and rename it over the original in one atomic step.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::fs::{self, File, OpenOptions};
use std::io::{BufWriter, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::format::shelf::{self, OffsetMap};
use crate::format::{Oid, Record};
use crate::storage::file::{lock, FileStorage, RecordReader};
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

/// `<path><suffix>`, e.g. `db.durus.pack`.
fn sibling(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(suffix);
    PathBuf::from(name)
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
        self.check_writable()?;
        if self.has_pending() {
            return Err(Error::InvalidState(
                "cannot pack while a transaction is being stored (call end or begin first)".into(),
            ));
        }
        let size_before = self.end;
        let total = self.stats().records;
        let pack_path = sibling(&self.path, ".pack");
        let io_err =
            |what: &str, e: std::io::Error| Error::io(format!("{what} {}", pack_path.display()), e);
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

        let mut out = BufWriter::with_capacity(1 << 20, pack_file);
        let mut header = shelf::MAGIC.to_vec();
        header.extend_from_slice(&0u64.to_be_bytes());
        out.write_all(&header)
            .map_err(|e| io_err("cannot write", e))?;

        // Smallest discovered oid first, as Durus packs (roughly ascending).
        let mut live = OidBits::default();
        let mut heap = BinaryHeap::new();
        let mut offsets: Vec<Option<u64>> = Vec::new();
        let mut written = shelf::BASE_BODY_OFFSET;
        let mut reader = RecordReader::new(1 << 20);
        let mut dangling = 0u64;
        let mut kept = 0u64;
        if self.position(Oid::ROOT).is_some() {
            live.insert(Oid::ROOT);
            heap.push(Reverse(Oid::ROOT));
        }
        while let Some(Reverse(oid)) = heap.pop() {
            let pos = self.position(oid).expect("only stored oids are queued");
            let record = reader.read(&*self.file, &self.path, pos, self.end, Some(oid))?;
            for r in Record::decode(record)?.refs() {
                if self.position(r).is_none() {
                    dangling += 1;
                    tracing::warn!(path = %self.path.display(), "oid {oid} refers to oid {r}, which has no record");
                } else if live.insert(r) {
                    heap.push(Reverse(r));
                }
            }
            if offsets.len() <= oid.0 as usize {
                offsets.resize(oid.0 as usize + 1, None);
            }
            offsets[oid.0 as usize] = Some(written);
            let frame_len = 16 + record.len() as u64;
            out.write_all(&(frame_len - 8).to_be_bytes())
                .and_then(|()| out.write_all(&oid.to_bytes()))
                .and_then(|()| out.write_all(record))
                .map_err(|e| io_err("cannot write", e))?;
            written += frame_len;
            kept += 1;
            if kept.is_multiple_of(4096) {
                progress(PackProgress {
                    phase: PackPhase::Copying,
                    done: kept,
                    total,
                });
            }
        }
        progress(PackProgress {
            phase: PackPhase::Finishing,
            done: kept,
            total,
        });

        let map = OffsetMap::build(written, &offsets);
        let mut tail = Vec::with_capacity(map.encoded_len() as usize);
        map.encode_into(&mut tail);
        out.write_all(&tail)
            .map_err(|e| io_err("cannot write", e))?;
        let mut pack_file = out
            .into_inner()
            .map_err(|e| io_err("cannot write", e.into_error()))?;
        pack_file
            .seek(SeekFrom::Start(shelf::BASE_LEN_OFFSET))
            .and_then(|_| pack_file.write_all(&(written - shelf::BASE_BODY_OFFSET).to_be_bytes()))
            .and_then(|()| pack_file.sync_all())
            .map_err(|e| io_err("cannot finish", e))?;
        let size_after = written + map.encoded_len();

        let mut removed: Vec<Oid> = self
            .map
            .entries()
            .map(|(oid, _)| oid)
            .chain(self.index.iter().map(|(oid, _)| oid))
            .filter(|&oid| !live.contains(oid))
            .collect();
        removed.sort_unstable();
        removed.dedup();

        let prepack = self.swap_in(&pack_path, pack_file, map, size_after)?;
        self.invalid.extend(removed.iter().copied());
        if dangling > 0 {
            tracing::warn!(path = %self.path.display(), dangling, "pack kept records that refer to missing oids");
        }
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
        pack_file: File,
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
        self.replace_base(Box::new(pack_file), map, end);
        Ok(prepack)
    }
}
