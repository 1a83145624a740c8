//! FileStorage over a disk that fails on demand: fsync is called once per
//! commit (unless turned off), a failed commit leaves file and index as
//! they were, a failed fsync stops further writes.

mod common;

use std::io;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use common::{commit, new_oids, rec};
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

/// What the disk under a pack's file does wrong, counted from the file's
/// creation.
#[derive(Default, Clone, Copy)]
struct PackFaults {
    /// The k-th write (1-based) fails with EIO, writing nothing.
    fail_write: Option<usize>,
    /// The disk fills after this many bytes: the write that crosses it
    /// writes what fits, then fails with ENOSPC.
    space: Option<u64>,
    /// fsync fails with EIO.
    fail_sync: bool,
}

/// The faults armed and what the current pack file has seen.
#[derive(Default)]
struct PackDiskState {
    faults: PackFaults,
    writes: usize,
    bytes: u64,
    syncs: usize,
}

/// A real file whose writes and fsyncs fail as [`PackDiskState`] says.
struct FaultyFile {
    file: std::fs::File,
    state: Arc<Mutex<PackDiskState>>,
}

impl FileIo for FaultyFile {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        FileIo::read_at(&self.file, buf, offset)
    }
    fn write_all_at(&mut self, buf: &[u8], offset: u64) -> io::Result<()> {
        let mut state = self.state.lock().unwrap();
        state.writes += 1;
        if state.faults.fail_write == Some(state.writes) {
            return Err(io::Error::from_raw_os_error(5)); // EIO
        }
        if let Some(space) = state.faults.space {
            let room = space.saturating_sub(state.bytes);
            if (buf.len() as u64) > room {
                FileIo::write_all_at(&mut self.file, &buf[..room as usize], offset)?;
                state.bytes += room;
                return Err(io::Error::from_raw_os_error(28)); // ENOSPC
            }
        }
        FileIo::write_all_at(&mut self.file, buf, offset)?;
        state.bytes += buf.len() as u64;
        Ok(())
    }
    fn size(&self) -> io::Result<u64> {
        FileIo::size(&self.file)
    }
    fn set_len(&mut self, len: u64) -> io::Result<()> {
        FileIo::set_len(&mut self.file, len)
    }
    fn sync_data(&mut self) -> io::Result<()> {
        let mut state = self.state.lock().unwrap();
        state.syncs += 1;
        if state.faults.fail_sync {
            return Err(io::Error::from_raw_os_error(5)); // EIO
        }
        FileIo::sync_data(&mut self.file)
    }
    fn try_clone_file(&self) -> Option<io::Result<std::fs::File>> {
        self.file.try_clone_file()
    }
}

/// A disk that fails the writes of the pack files put on it (through
/// [`FileStorageOptions::wrap_files`]); the database file itself is
/// left alone.
#[derive(Default, Clone)]
struct PackDisk(Arc<Mutex<PackDiskState>>);

impl PackDisk {
    fn options(&self) -> FileStorageOptions {
        let state = Arc::clone(&self.0);
        FileStorageOptions::new().wrap_files(move |file, path| {
            if path.extension().is_some_and(|e| e == "pack") {
                let mut s = state.lock().unwrap();
                (s.writes, s.bytes, s.syncs) = (0, 0, 0);
                drop(s);
                Box::new(FaultyFile {
                    file,
                    state: Arc::clone(&state),
                })
            } else {
                Box::new(file)
            }
        })
    }

    fn arm(&self, faults: PackFaults) {
        self.0.lock().unwrap().faults = faults;
    }

    fn clear(&self) {
        self.arm(PackFaults::default());
    }

    /// Writes, bytes written and fsyncs of the latest pack file.
    fn counts(&self) -> (usize, u64, usize) {
        let s = self.0.lock().unwrap();
        (s.writes, s.bytes, s.syncs)
    }
}

/// Leaves of the database a faulty pack runs on: with 1000-byte bodies,
/// the packed base is several times the pack's 1 MiB write buffer.
const LEAVES: u64 = 5000;

/// Every tenth leaf: the root the fixture commits last leaves it out.
fn is_garbage(oid: u64) -> bool {
    oid != 0 && oid.is_multiple_of(10)
}

/// A leaf's record: oid `oid`, a 1000-byte body naming it.
fn leaf(oid: u64, version: &str) -> Vec<u8> {
    let mut body = format!("leaf {oid} {version} ").repeat(1000 / 12);
    body.truncate(1000);
    rec(oid, &body, &[])
}

/// A database over a [`PackDisk`], and what every oid holds.
struct PackFixture {
    _dir: tempfile::TempDir,
    path: PathBuf,
    disk: PackDisk,
    storage: FileStorage,
    expected: std::collections::BTreeMap<u64, Vec<u8>>,
}

impl PackFixture {
    /// Root -> leaves 1..=LEAVES, then a root that drops every tenth leaf
    /// (garbage a pack removes).
    fn new() -> PackFixture {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db.durus");
        let disk = PackDisk::default();
        let mut storage = disk.options().fsync(false).open(&path).unwrap();
        new_oids(&mut storage, LEAVES as usize + 1);
        let mut fx = PackFixture {
            _dir: dir,
            path,
            disk,
            storage,
            expected: Default::default(),
        };
        let all: Vec<u64> = (1..=LEAVES).collect();
        fx.commit(vec![rec(0, "root", &all)]);
        for chunk in all.chunks(1000) {
            fx.commit(chunk.iter().map(|&oid| leaf(oid, "v1")).collect());
        }
        let live: Vec<u64> = all
            .iter()
            .copied()
            .filter(|&oid| !is_garbage(oid))
            .collect();
        fx.commit(vec![rec(0, "root v2", &live)]);
        fx.storage.set_fsync(true);
        fx
    }

    fn commit(&mut self, records: Vec<Vec<u8>>) {
        for r in &records {
            let oid = durus_core::format::record::oid_of(r).unwrap();
            self.expected.insert(oid.0, r.clone());
        }
        commit(&mut self.storage, records);
    }

    fn pack_path(&self) -> PathBuf {
        self.dir().join("db.durus.pack")
    }

    fn dir(&self) -> &std::path::Path {
        self.path.parent().unwrap()
    }

    /// Writes, bytes and fsyncs of a clean pack of this database (run on
    /// a copy, which packs to the same bytes).
    fn probe(&self) -> (usize, u64, usize) {
        let dir = tempfile::tempdir().unwrap();
        let copy = dir.path().join("db.durus");
        std::fs::copy(&self.path, &copy).unwrap();
        let disk = PackDisk::default();
        let mut s = disk.options().open(&copy).unwrap();
        let report = s.pack().unwrap();
        assert_eq!(report.removed.len() as u64, LEAVES / 10);
        disk.counts()
    }

    /// Packs with `faults` armed, expecting failure, and checks what the
    /// failure left ([`Self::assert_untouched_after_failure`]). Returns
    /// the error.
    fn failed_pack(&mut self, faults: PackFaults) -> Error {
        let before = std::fs::read(&self.path).unwrap();
        self.disk.arm(faults);
        let err = self.storage.pack().unwrap_err();
        self.disk.clear();
        self.assert_untouched_after_failure(&before);
        err
    }

    /// After a failed pack: the original's bytes are `before`, no
    /// `.pack` (or `.prepack`) file is left, every oid loads what it held,
    /// and a commit works.
    fn assert_untouched_after_failure(&mut self, before: &[u8]) {
        // Not assert_eq: a failure would print megabytes.
        assert!(
            std::fs::read(&self.path).unwrap() == before,
            "the original changed"
        );
        assert!(!self.pack_path().exists(), "the .pack file was left behind");
        assert!(!self.dir().join("db.durus.prepack").exists());
        for (&oid, bytes) in &self.expected {
            assert_eq!(&self.storage.load(Oid(oid)).unwrap(), bytes, "oid {oid}");
        }
        let n = self.expected.len();
        self.commit(vec![leaf(1, &format!("after failure {n}"))]);
        assert_eq!(self.storage.load(Oid(1)).unwrap(), self.expected[&1]);
    }

    /// With the faults gone, a pack succeeds, removes the garbage, and the
    /// packed file loads (also reopened).
    fn assert_a_clean_pack_succeeds(mut self) {
        self.disk.clear();
        let report = self.storage.pack().unwrap();
        let garbage: Vec<Oid> = (1..=LEAVES).filter(|&o| is_garbage(o)).map(Oid).collect();
        assert_eq!(report.removed, garbage);
        assert!(!self.pack_path().exists());
        for (&oid, bytes) in &self.expected {
            if is_garbage(oid) {
                assert!(matches!(
                    self.storage.load(Oid(oid)),
                    Err(Error::KeyNotFound(_))
                ));
            } else {
                assert_eq!(&self.storage.load(Oid(oid)).unwrap(), bytes, "oid {oid}");
            }
        }
        self.commit(vec![leaf(1, "after the pack")]);
        drop(self.storage);
        let mut again = FileStorage::open(&self.path).unwrap();
        for (&oid, bytes) in self.expected.iter().filter(|(&oid, _)| !is_garbage(oid)) {
            assert_eq!(&again.load(Oid(oid)).unwrap(), bytes, "oid {oid}");
        }
    }
}

#[test]
fn a_pack_failing_at_any_one_of_its_writes_leaves_the_original_untouched_and_the_storage_usable() {
    let mut fx = PackFixture::new();
    let (writes, _, _) = fx.probe();
    assert!(
        writes >= 5,
        "the pack wrote {writes} times: too few buffers"
    );
    for k in 1..=writes {
        let err = fx.failed_pack(PackFaults {
            fail_write: Some(k),
            ..Default::default()
        });
        let msg = err.to_string();
        assert!(
            msg.contains("db.durus.pack") && msg.contains("at offset"),
            "write {k}: {msg}"
        );
        assert_eq!(
            fx.disk.counts().0,
            k,
            "the pack went on after write {k} failed"
        );
    }
    fx.assert_a_clean_pack_succeeds();
}

#[test]
fn a_pack_running_out_of_space_anywhere_leaves_the_original_untouched_and_the_storage_usable() {
    let mut fx = PackFixture::new();
    let (_, bytes, _) = fx.probe();
    assert!(bytes > 4 << 20, "the pack wrote only {bytes} bytes");
    // At the start, inside the header, in the middle of buffers, just
    // before the base length is patched in (its 8 bytes are written last),
    // and inside that patch.
    for space in [0, 5, bytes / 3, bytes / 2 + 7, bytes - 8, bytes - 1] {
        let err = fx.failed_pack(PackFaults {
            space: Some(space),
            ..Default::default()
        });
        let msg = err.to_string();
        assert!(
            msg.contains("db.durus.pack") && msg.contains("No space left"),
            "{space} bytes of space: {msg}"
        );
        assert_eq!(fx.disk.counts().1, space);
    }
    fx.assert_a_clean_pack_succeeds();
}

#[test]
fn a_pack_whose_fsync_fails_leaves_the_original_untouched_and_the_storage_writable() {
    let mut fx = PackFixture::new();
    let (_, _, syncs) = fx.probe();
    assert_eq!(syncs, 1, "a pack fsyncs its file once");
    let err = fx.failed_pack(PackFaults {
        fail_sync: true,
        ..Default::default()
    });
    let msg = err.to_string();
    assert!(
        msg.contains("cannot sync") && msg.contains("db.durus.pack"),
        "{msg}"
    );
    // The original's page cache is not in doubt, so the storage is not
    // poisoned: failed_pack committed after the failure, and a pack works.
    fx.assert_a_clean_pack_succeeds();
}

#[test]
fn a_background_pack_failing_to_copy_the_commits_made_meanwhile_leaves_the_original_untouched() {
    let mut fx = PackFixture::new();
    for faults in [
        |writes, _| PackFaults {
            fail_write: Some(writes + 1),
            ..Default::default()
        },
        |_, bytes| PackFaults {
            space: Some(bytes + 100),
            ..Default::default()
        },
    ] {
        let mut job = fx.storage.begin_pack().unwrap();
        job.copy(&mut |_| {}).unwrap();
        let (writes, bytes, _) = fx.disk.counts();
        // Where the copied base ends: the commits below go there.
        let base_end = std::fs::metadata(fx.pack_path()).unwrap().len();
        // Committed while the pack copied: finish_pack appends it.
        fx.commit(vec![leaf(2, "meanwhile"), rec(0, "root v3", &[1, 2])]);
        let before = std::fs::read(&fx.path).unwrap();
        fx.disk.arm(faults(writes, bytes));
        let err = fx.storage.finish_pack(job).unwrap_err();
        fx.disk.clear();
        let msg = err.to_string();
        assert!(
            msg.contains("db.durus.pack") && msg.contains(&format!("at offset {base_end}")),
            "{msg}"
        );
        fx.assert_untouched_after_failure(&before);
    }
    // Restore the root that keeps every tenth leaf out, then pack.
    let live: Vec<u64> = (1..=LEAVES).filter(|&oid| !is_garbage(oid)).collect();
    fx.commit(vec![rec(0, "root v4", &live)]);
    fx.assert_a_clean_pack_succeeds();
}
