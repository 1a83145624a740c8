//! Opening a packed file reads only the offset map's header; lookups read
//! the map's words from the file by pages as they need them (spec 4.4:
//! Durus keeps the map on disk too), and a map that cannot be read is an
//! error naming the file and offset, never a panic.

mod common;

use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use common::{commit, new_oids, rec};
use durus_core::storage::file_io::FileIo;
use durus_core::{Error, FileStorage, FileStorageOptions, Oid, Storage};

/// A file in memory that records every read (offset, bytes asked) and
/// fails reads on demand.
#[derive(Default, Clone)]
struct RecordingDisk {
    bytes: Arc<Vec<u8>>,
    reads: Arc<Mutex<Vec<(u64, usize)>>>,
    fail_reads: Arc<AtomicBool>,
}

impl RecordingDisk {
    fn of(path: &Path) -> RecordingDisk {
        RecordingDisk {
            bytes: Arc::new(std::fs::read(path).unwrap()),
            ..Default::default()
        }
    }

    fn take_reads(&self) -> Vec<(u64, usize)> {
        std::mem::take(&mut *self.reads.lock().unwrap())
    }
}

impl FileIo for RecordingDisk {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        self.reads.lock().unwrap().push((offset, buf.len()));
        if self.fail_reads.load(Ordering::SeqCst) {
            return Err(io::Error::from_raw_os_error(5)); // EIO
        }
        let from = (offset as usize).min(self.bytes.len());
        let n = buf.len().min(self.bytes.len() - from);
        buf[..n].copy_from_slice(&self.bytes[from..from + n]);
        Ok(n)
    }
    fn write_all_at(&mut self, _: &[u8], _: u64) -> io::Result<()> {
        Err(io::Error::other("read-only test disk"))
    }
    fn size(&self) -> io::Result<u64> {
        Ok(self.bytes.len() as u64)
    }
    fn set_len(&mut self, _: u64) -> io::Result<()> {
        Err(io::Error::other("read-only test disk"))
    }
    fn sync_data(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// A packed file of `n` records (a chain from the root: 0 -> 1 -> ...).
fn packed_file(dir: &Path, n: usize) -> PathBuf {
    let path = dir.join(format!("packed-{n}.durus"));
    let mut s = FileStorageOptions::new().fsync(false).open(&path).unwrap();
    let oids = new_oids(&mut s, n);
    let records = oids
        .iter()
        .map(|&o| {
            let next: Vec<u64> = (o + 1 < n as u64).then_some(o + 1).into_iter().collect();
            rec(o, &format!("record {o}"), &next)
        })
        .collect();
    commit(&mut s, records);
    assert_eq!(s.pack().unwrap().kept, n as u64);
    path
}

fn open_on(disk: &RecordingDisk, path: &Path) -> FileStorage {
    FileStorage::from_file(
        path.into(),
        Box::new(disk.clone()),
        FileStorageOptions::new().readonly(true),
    )
    .unwrap()
}

/// The offset map's start S, from the base transaction's length T0.
fn map_start(path: &Path) -> u64 {
    let bytes = std::fs::read(path).unwrap();
    16 + u64::from_be_bytes(bytes[8..16].try_into().unwrap())
}

#[test]
fn opening_a_packed_file_reads_only_the_map_header_whatever_its_size() {
    let dir = tempfile::tempdir().unwrap();
    for n in [3, 20_000, 200_000] {
        let path = packed_file(dir.path(), n);
        let disk = RecordingDisk::of(&path);
        let mut s = open_on(&disk, &path);
        let start = map_start(&path);
        // The magic and T0, then the 24-byte map header; the map's words
        // (3 bytes each for the larger files) are not read.
        assert_eq!(disk.take_reads(), [(0, 16), (start, 24)], "n = {n}");

        // A load reads the page of words holding its oid, then the record.
        let last = Oid(n as u64 - 1);
        s.load(last).unwrap();
        let reads = disk.take_reads();
        assert_eq!(reads.len(), 2, "n = {n}: {reads:?}");
        let (page_at, page_len) = reads[0];
        assert!(page_at > start && page_len <= 16 << 10, "{reads:?}");
        // Its neighbour's word is on the same page: only the record is read
        // (unless the record reader's window holds it already).
        s.load(Oid(n as u64 - 2)).unwrap();
        assert!(disk.take_reads().len() <= 1);
    }
}

#[test]
fn every_use_of_a_lazily_read_map_agrees_with_a_fully_read_one() {
    let dir = tempfile::tempdir().unwrap();
    let path = packed_file(dir.path(), 20_000);
    // Garbage and holes: drop every third record from the chain, pack.
    let mut s = FileStorage::open(&path).unwrap();
    let mut records = Vec::new();
    for o in (0..20_000u64).step_by(3) {
        let next = o + 3;
        let refs: Vec<u64> = (next < 20_000).then_some(next).into_iter().collect();
        records.push(rec(o, &format!("kept {o}"), &refs));
    }
    commit(&mut s, records);
    s.pack().unwrap();
    s.sync().unwrap(); // new_oid skips the removed oids until synced
                       // This storage's map is the one the pack built, in memory.
    let eager_stats = s.stats().unwrap();
    let eager_oids = s.oids().unwrap();
    let eager_new: Vec<Oid> = (0..5).map(|_| s.new_oid().unwrap()).collect();
    drop(s);

    let mut s = FileStorage::open(&path).unwrap();
    assert_eq!(s.stats().unwrap(), eager_stats);
    assert_eq!(s.oids().unwrap(), eager_oids);
    assert_eq!(eager_stats.base_records, 6667);
    let lazy_new: Vec<Oid> = (0..5).map(|_| s.new_oid().unwrap()).collect();
    assert_eq!(lazy_new, eager_new);
    // The holes, highest first below N-1 = 19,999 (spec 4.7).
    assert_eq!(
        lazy_new,
        [
            Oid(19_997),
            Oid(19_996),
            Oid(19_994),
            Oid(19_993),
            Oid(19_991)
        ]
    );
    assert!(!s.contains(Oid(19_997)).unwrap());
    assert!(s.contains(Oid(19_998)).unwrap());

    // A pack of a lazily opened file keeps the same records.
    let report = s.pack().unwrap();
    assert_eq!(report.kept, 6667);
    assert_eq!(s.oids().unwrap(), eager_oids);
}

#[test]
fn a_failing_read_under_the_map_is_an_io_error_with_file_and_offset() {
    let dir = tempfile::tempdir().unwrap();
    let path = packed_file(dir.path(), 20_000);
    let disk = RecordingDisk::of(&path);
    let mut s = open_on(&disk, &path);
    disk.take_reads();
    disk.fail_reads.store(true, Ordering::SeqCst);
    let err = s.load(Oid(12_345)).unwrap_err();
    let (page_at, _) = disk.take_reads()[0];
    match &err {
        Error::Io { context, .. } => {
            assert!(context.contains(&format!("offset {page_at}")), "{context}");
            assert!(context.contains("packed-20000.durus"), "{context}");
        }
        other => panic!("expected an I/O error, got {other:?}"),
    }
    assert!(matches!(s.stats(), Err(Error::Io { .. })));
    assert!(matches!(s.oids(), Err(Error::Io { .. })));
    assert!(matches!(s.contains(Oid(7)), Err(Error::Io { .. })));
    // Nothing was kept from the failed reads: once the disk reads again,
    // so do lookups.
    disk.fail_reads.store(false, Ordering::SeqCst);
    assert_eq!(s.oids().unwrap().len(), 20_000);
    assert!(s.load(Oid(12_345)).is_ok());
}

#[test]
fn a_map_truncated_after_the_open_fails_lookups_as_corrupt_at_its_offset() {
    let dir = tempfile::tempdir().unwrap();
    let path = packed_file(dir.path(), 20_000);
    let start = map_start(&path);
    let mut s = FileStorage::options().readonly(true).open(&path).unwrap();
    assert_eq!(
        s.load(Oid(0)).unwrap().len(),
        rec(0, "record 0", &[1]).len()
    );
    // Someone cuts the file in the middle of the map (3-byte words).
    let cut = start + 24 + 3 * 10_000;
    std::fs::OpenOptions::new()
        .write(true)
        .open(&path)
        .unwrap()
        .set_len(cut)
        .unwrap();
    match s.load(Oid(19_000)).unwrap_err() {
        Error::Corrupt {
            path: p,
            offset,
            detail,
        } => {
            assert_eq!(p, path);
            // The offset of the page of words holding oid 19,000's, all of
            // it past the cut.
            let word = start + 24 + 3 * 19_000;
            assert!(
                offset <= word && word - offset < 16 << 10,
                "{offset} vs {word}"
            );
            assert!(offset >= cut, "{offset} vs {cut}");
            assert!(detail.contains("the file ends 0 bytes into"), "{detail}");
            assert!(detail.contains("offset map"), "{detail}");
        }
        other => panic!("expected corruption, got {other:?}"),
    }
    assert!(matches!(s.stats(), Err(Error::Corrupt { .. })));
    assert!(matches!(s.records(), Err(Error::Corrupt { .. })));
    // The first page was read before the cut and is kept.
    assert!(s.load(Oid(1)).is_ok());
    drop(s);
    // Reopening checks the header's claim against the file at once.
    assert!(matches!(
        FileStorage::options().readonly(true).open(&path),
        Err(Error::Corrupt { offset, .. }) if offset == start
    ));
}
