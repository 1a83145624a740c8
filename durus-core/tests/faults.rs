//! FileStorage over a disk that fails on demand: fsync is called once per
//! commit (unless turned off), a failed commit leaves file and index as
//! they were, a failed fsync stops further writes.

mod common;

use std::io;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

use common::{commit, rec};
use durus_core::format::shelf;
use durus_core::storage::file_io::FileIo;
use durus_core::{Error, FileStorage, FileStorageOptions, Oid, Storage};

/// An in-memory file with switches for failures and a sync counter.
#[derive(Default, Clone)]
struct FlakyDisk {
    bytes: Arc<std::sync::Mutex<Vec<u8>>>,
    syncs: Arc<AtomicUsize>,
    fail_writes: Arc<AtomicBool>,
    short_writes: Arc<AtomicBool>,
    fail_syncs: Arc<AtomicBool>,
}

impl FileIo for FlakyDisk {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        let bytes = self.bytes.lock().unwrap();
        let start = (offset as usize).min(bytes.len());
        let n = buf.len().min(bytes.len() - start);
        buf[..n].copy_from_slice(&bytes[start..start + n]);
        Ok(n)
    }
    fn write_all_at(&mut self, buf: &[u8], offset: u64) -> io::Result<()> {
        let mut bytes = self.bytes.lock().unwrap();
        let mut buf = buf;
        if self.short_writes.load(Ordering::SeqCst) {
            buf = &buf[..buf.len() / 2];
        }
        let end = offset as usize + buf.len();
        if bytes.len() < end {
            bytes.resize(end, 0);
        }
        bytes[offset as usize..end].copy_from_slice(buf);
        if self.fail_writes.load(Ordering::SeqCst) || self.short_writes.load(Ordering::SeqCst) {
            return Err(io::Error::from_raw_os_error(28)); // ENOSPC
        }
        Ok(())
    }
    fn size(&self) -> io::Result<u64> {
        Ok(self.bytes.lock().unwrap().len() as u64)
    }
    fn set_len(&mut self, len: u64) -> io::Result<()> {
        self.bytes.lock().unwrap().resize(len as usize, 0);
        Ok(())
    }
    fn sync_data(&mut self) -> io::Result<()> {
        self.syncs.fetch_add(1, Ordering::SeqCst);
        if self.fail_syncs.load(Ordering::SeqCst) {
            return Err(io::Error::from_raw_os_error(5)); // EIO
        }
        Ok(())
    }
}

fn open(disk: &FlakyDisk, opts: FileStorageOptions) -> FileStorage {
    if disk.bytes.lock().unwrap().is_empty() {
        *disk.bytes.lock().unwrap() = shelf::empty_file();
    }
    FileStorage::from_file(PathBuf::from("flaky.durus"), Box::new(disk.clone()), opts).unwrap()
}

#[test]
fn every_commit_is_fsynced_once_by_default() {
    let disk = FlakyDisk::default();
    let mut s = open(&disk, FileStorageOptions::new());
    s.new_oid().unwrap();
    commit(&mut s, vec![rec(0, "a", &[])]);
    commit(&mut s, vec![rec(0, "b", &[])]);
    assert_eq!(disk.syncs.load(Ordering::SeqCst), 2);
}

#[test]
fn fsync_can_be_turned_off_for_bulk_loads() {
    let disk = FlakyDisk::default();
    let mut s = open(&disk, FileStorageOptions::new().fsync(false));
    s.new_oid().unwrap();
    commit(&mut s, vec![rec(0, "a", &[])]);
    assert_eq!(disk.syncs.load(Ordering::SeqCst), 0);
}

#[test]
fn failed_write_leaves_file_and_index_unchanged_and_the_next_commit_works() {
    let disk = FlakyDisk::default();
    let mut s = open(&disk, FileStorageOptions::new());
    s.new_oid().unwrap();
    commit(&mut s, vec![rec(0, "root", &[])]);
    let len_before = disk.size().unwrap();
    for switch in [&disk.fail_writes, &disk.short_writes] {
        switch.store(true, Ordering::SeqCst);
        let oid = s.new_oid().unwrap();
        s.begin().unwrap();
        s.store(Oid(0), rec(0, "root v2", &[oid.0])).unwrap();
        s.store(oid, rec(oid.0, "new", &[])).unwrap();
        let err = s.end(&mut |_| Ok(())).unwrap_err();
        assert!(err.to_string().contains("No space left"), "{err}");
        assert_eq!(disk.size().unwrap(), len_before);
        assert_eq!(s.load(Oid(0)).unwrap(), rec(0, "root", &[]));
        assert!(matches!(s.load(oid), Err(Error::KeyNotFound(_))));
        switch.store(false, Ordering::SeqCst);
    }
    // Space is back: commits work and the file reopens cleanly.
    commit(&mut s, vec![rec(0, "root v3", &[])]);
    drop(s);
    let mut again = open(&disk, FileStorageOptions::new());
    assert_eq!(again.load(Oid(0)).unwrap(), rec(0, "root v3", &[]));
}

#[test]
fn failed_fsync_refuses_further_writes_until_reopened() {
    let disk = FlakyDisk::default();
    let mut s = open(&disk, FileStorageOptions::new());
    s.new_oid().unwrap();
    commit(&mut s, vec![rec(0, "root", &[])]);
    disk.fail_syncs.store(true, Ordering::SeqCst);
    s.begin().unwrap();
    s.store(Oid(0), rec(0, "root v2", &[])).unwrap();
    assert!(s.end(&mut |_| Ok(())).is_err());
    disk.fail_syncs.store(false, Ordering::SeqCst);
    s.begin().unwrap();
    let err = s.store(Oid(0), rec(0, "root v3", &[])).unwrap_err();
    assert!(matches!(err, Error::Poisoned(_)), "{err}");
    assert!(matches!(s.pack(), Err(Error::Poisoned(_))));
    // Loads still work, and the committed record is intact.
    assert_eq!(s.load(Oid(0)).unwrap(), rec(0, "root", &[]));
    drop(s);
    let mut again = open(&disk, FileStorageOptions::new());
    assert_eq!(again.load(Oid(0)).unwrap(), rec(0, "root", &[]));
    commit(&mut again, vec![rec(0, "root v4", &[])]);
}

#[test]
fn loads_never_serve_stale_bytes_from_past_the_end_of_the_valid_data() {
    // Bytes past the last transaction (a torn tail another writer left, or
    // garbage) are overwritten by the next commit; a load that read around
    // them before must not keep them.
    let disk = FlakyDisk::default();
    let mut s = open(&disk, FileStorageOptions::new());
    s.new_oid().unwrap();
    commit(&mut s, vec![rec(0, "root", &[])]);
    disk.bytes.lock().unwrap().extend_from_slice(&[0xEE; 300]);
    assert_eq!(s.load(Oid(0)).unwrap(), rec(0, "root", &[]));
    let oid = s.new_oid().unwrap();
    commit(&mut s, vec![rec(oid.0, "after the garbage", &[])]);
    assert_eq!(s.load(oid).unwrap(), rec(oid.0, "after the garbage", &[]));
    assert_eq!(s.load(Oid(0)).unwrap(), rec(0, "root", &[]));
}

#[test]
fn a_pack_that_cannot_write_its_file_leaves_the_original_untouched_and_the_storage_usable() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("p.durus");
    let mut s = FileStorage::open(&path).unwrap();
    for _ in 0..3 {
        s.new_oid().unwrap();
    }
    // Oid 2 is garbage: the root reaches only oid 1.
    commit(
        &mut s,
        vec![rec(0, "root", &[1]), rec(1, "one", &[]), rec(2, "two", &[])],
    );
    let before = std::fs::read(&path).unwrap();
    // A directory where the packer writes its file: the pack cannot start.
    let obstacle = dir.path().join("p.durus.pack");
    std::fs::create_dir(&obstacle).unwrap();
    let err = s.pack().unwrap_err();
    assert!(err.to_string().contains("p.durus.pack"), "{err}");
    assert_eq!(
        std::fs::read(&path).unwrap(),
        before,
        "the original changed"
    );
    assert!(obstacle.is_dir(), "the obstacle was removed");
    // The storage goes on: loads, commits, and a pack once the way is clear.
    assert_eq!(s.load(Oid(2)).unwrap(), rec(2, "two", &[]));
    commit(&mut s, vec![rec(1, "one v2", &[])]);
    std::fs::remove_dir(&obstacle).unwrap();
    s.pack().unwrap();
    assert!(matches!(s.load(Oid(2)), Err(Error::KeyNotFound(_))));
    drop(s);
    let mut again = FileStorage::open(&path).unwrap();
    assert_eq!(again.load(Oid(1)).unwrap(), rec(1, "one v2", &[]));
}
