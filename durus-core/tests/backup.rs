//! `tools::backup`: incremental backups of a live SHELF-1 file (issue 7,
//! part 4; the file layout is spec section 4). Only complete transactions
//! are history; a copy may end inside one being written, and the next
//! backup completes it.

use std::collections::BTreeMap;
use std::fs::{self, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::time::Duration;

use durus_core::format::{record, shelf, Oid};
use durus_core::tools::backup::{backup, BackupKind, BackupReport};
use durus_core::{Error, FileStorage, Storage, StorageExt};

mod common;
use common::rec;

fn run(src: &Path, dest: &Path) -> BackupReport {
    backup(src, dest, &mut |_| {}).expect("backup")
}

fn len(path: &Path) -> u64 {
    fs::metadata(path).expect("file exists").len()
}

/// A transaction as FileStorage writes it: body length, shelf records.
fn transaction(records: &[Vec<u8>]) -> Vec<u8> {
    let mut body = Vec::new();
    for r in records {
        shelf::push_shelf_record(&mut body, record::oid_of(r).expect("oid"), r);
    }
    let mut out = (body.len() as u64).to_be_bytes().to_vec();
    out.extend(body);
    out
}

/// Writes `bytes` at `offset` of `path`, as another writer would.
fn write_at(path: &Path, bytes: &[u8], offset: u64) {
    let file = OpenOptions::new().write(true).open(path).expect("open");
    file.write_all_at(bytes, offset).expect("write");
}

/// A new database at `path` with oids 0 and 1 and one commit of both.
fn database(path: &Path) -> FileStorage {
    let mut storage = FileStorage::options()
        .fsync(false)
        .open(path)
        .expect("create");
    assert_eq!(storage.new_oid().unwrap(), Oid(0));
    assert_eq!(storage.new_oid().unwrap(), Oid(1));
    storage
        .commit_records([rec(0, "root", &[]), rec(1, "one", &[])])
        .unwrap();
    storage
}

#[test]
fn first_backup_copies_the_whole_file_and_the_next_only_the_growth() {
    let dir = tempfile::tempdir().unwrap();
    let (src, dest) = (dir.path().join("live.durus"), dir.path().join("copy.durus"));
    // The writer keeps the file open (and locked) throughout.
    let mut storage = database(&src);

    let first = run(&src, &dest);
    assert_eq!(first.kind, BackupKind::New);
    assert_eq!(first.bytes_copied, len(&src));
    assert_eq!(first.dest_len, len(&src));
    assert_eq!(first.valid_len, len(&src));
    assert!(first.ends_on_boundary());
    assert_eq!(fs::read(&dest).unwrap(), fs::read(&src).unwrap());

    let before = len(&src);
    storage
        .commit_records([rec(1, &"x".repeat(5000), &[])])
        .unwrap();
    storage.commit_records([rec(0, "root 2", &[1])]).unwrap();
    let growth = len(&src) - before;

    let second = run(&src, &dest);
    assert_eq!(
        second.kind,
        BackupKind::Incremental {
            from: before,
            replaced_tail: 0
        }
    );
    assert_eq!(second.bytes_copied, growth);
    assert_eq!(second.dest_len, len(&src));
    assert_eq!(second.torn_tail, None);
    assert_eq!(fs::read(&dest).unwrap(), fs::read(&src).unwrap());

    // Nothing new: nothing copied.
    let third = run(&src, &dest);
    assert_eq!(third.bytes_copied, 0);
    assert!(!third.kind.is_full());
    // The copy is a database with the source's records.
    let mut copy = FileStorage::options().readonly(true).open(&dest).unwrap();
    assert_eq!(copy.load(Oid(0)).unwrap(), rec(0, "root 2", &[1]));
}

#[test]
fn a_backup_after_a_pack_of_the_source_copies_it_whole() {
    let dir = tempfile::tempdir().unwrap();
    let (src, dest) = (dir.path().join("live.durus"), dir.path().join("copy.durus"));
    let mut storage = database(&src);
    storage.commit_records([rec(0, "root 2", &[])]).unwrap();
    run(&src, &dest);

    // Oid 1 is garbage: the pack drops it and rewrites the file.
    let packed = storage.pack().unwrap();
    assert_eq!(packed.removed, vec![Oid(1)]);
    let after = run(&src, &dest);
    match &after.kind {
        BackupKind::Packed { evidence } => assert!(!evidence.is_empty()),
        other => panic!("expected a full copy after the pack, got {other:?}"),
    }
    assert_eq!(after.bytes_copied, len(&src));
    assert_eq!(fs::read(&dest).unwrap(), fs::read(&src).unwrap());

    // And from there on, incremental again.
    let before = len(&src);
    storage.commit_records([rec(0, "root 3", &[])]).unwrap();
    let next = run(&src, &dest);
    assert_eq!(next.bytes_copied, len(&src) - before);
    assert_eq!(fs::read(&dest).unwrap(), fs::read(&src).unwrap());
}

#[test]
fn a_source_shorter_than_the_backup_is_copied_whole() {
    let dir = tempfile::tempdir().unwrap();
    let (src, dest) = (dir.path().join("live.durus"), dir.path().join("copy.durus"));
    let mut storage = database(&src);
    storage
        .commit_records([rec(1, &"y".repeat(3000), &[])])
        .unwrap();
    run(&src, &dest);
    drop(storage);
    // A fresh database under the same name: same head, fewer bytes.
    fs::remove_file(&src).unwrap();
    drop(database(&src));
    assert!(len(&src) < len(&dest));

    let after = run(&src, &dest);
    assert!(matches!(after.kind, BackupKind::Packed { .. }));
    assert_eq!(after.bytes_copied, len(&src));
    assert_eq!(fs::read(&dest).unwrap(), fs::read(&src).unwrap());
}

#[test]
fn a_copy_that_catches_a_transaction_mid_write_keeps_its_torn_tail_and_the_next_completes_it() {
    let dir = tempfile::tempdir().unwrap();
    let (src, dest) = (dir.path().join("live.durus"), dir.path().join("copy.durus"));
    drop(database(&src));
    let boundary = len(&src);
    let txn = transaction(&[rec(0, &"z".repeat(2000), &[1]), rec(1, "two", &[])]);
    let half = txn.len() / 2;
    write_at(&src, &txn[..half], boundary);

    let torn = run(&src, &dest);
    assert_eq!(torn.dest_len, boundary + half as u64);
    assert_eq!(torn.valid_len, boundary);
    assert!(!torn.ends_on_boundary());
    assert_eq!(torn.torn_bytes(), half as u64);
    assert_eq!(torn.torn_tail.as_ref().unwrap().offset, boundary);
    // Not truncated: DEST is still a prefix of the source.
    assert_eq!(fs::read(&dest).unwrap(), fs::read(&src).unwrap());

    write_at(&src, &txn[half..], boundary + half as u64);
    let done = run(&src, &dest);
    assert_eq!(
        done.kind,
        BackupKind::Incremental {
            from: boundary + half as u64,
            replaced_tail: 0
        }
    );
    assert_eq!(done.bytes_copied, (txn.len() - half) as u64);
    assert!(done.ends_on_boundary());
    assert_eq!(done.valid_len, boundary + txn.len() as u64);
    assert_eq!(fs::read(&dest).unwrap(), fs::read(&src).unwrap());
}

#[test]
fn a_repaired_torn_copy_is_still_extended_incrementally() {
    let dir = tempfile::tempdir().unwrap();
    let (src, dest) = (dir.path().join("live.durus"), dir.path().join("copy.durus"));
    drop(database(&src));
    let boundary = len(&src);
    let txn = transaction(&[rec(1, &"r".repeat(3000), &[])]);
    write_at(&src, &txn[..1000], boundary);
    assert_eq!(run(&src, &dest).torn_bytes(), 1000);

    // `durus repair` on the copy: the torn tail goes, the rest stays.
    let repaired = FileStorage::options().repair(true).open(&dest).unwrap();
    assert_eq!(repaired.repaired().map(|d| d.offset), Some(boundary));
    drop(repaired);
    assert_eq!(len(&dest), boundary);

    write_at(&src, &txn[1000..], boundary + 1000);
    let after = run(&src, &dest);
    assert_eq!(
        after.kind,
        BackupKind::Incremental {
            from: boundary,
            replaced_tail: 0
        }
    );
    assert_eq!(after.bytes_copied, txn.len() as u64);
    assert!(after.ends_on_boundary());
    assert_eq!(fs::read(&dest).unwrap(), fs::read(&src).unwrap());
}

#[test]
fn a_torn_tail_the_source_took_back_is_copied_again_from_the_boundary() {
    let dir = tempfile::tempdir().unwrap();
    let (src, dest) = (dir.path().join("live.durus"), dir.path().join("copy.durus"));
    drop(database(&src));
    let boundary = len(&src);
    let failed = transaction(&[rec(1, &"f".repeat(4000), &[])]);
    write_at(&src, &failed[..3000], boundary);
    assert_eq!(run(&src, &dest).torn_bytes(), 3000);

    // The failed commit is taken back and a smaller, different one written.
    OpenOptions::new()
        .write(true)
        .open(&src)
        .unwrap()
        .set_len(boundary)
        .unwrap();
    let mut storage = FileStorage::options().fsync(false).open(&src).unwrap();
    storage.commit_records([rec(1, "ok", &[])]).unwrap();
    assert!(len(&src) < boundary + 3000);

    let after = run(&src, &dest);
    assert_eq!(
        after.kind,
        BackupKind::Incremental {
            from: boundary,
            replaced_tail: 3000
        }
    );
    assert_eq!(after.bytes_copied, len(&src) - boundary);
    assert!(after.ends_on_boundary());
    assert_eq!(fs::read(&dest).unwrap(), fs::read(&src).unwrap());
}

/// Python Durus writes a placeholder length 0, the records, then the real
/// length (spec 4.6). A copy in between holds an empty transaction that
/// the source later rewrites: the shared-prefix check sees the change and
/// copies the source whole (safe, if not incremental).
#[test]
fn a_python_length_placeholder_rewritten_since_forces_a_full_copy() {
    let dir = tempfile::tempdir().unwrap();
    let (src, dest) = (dir.path().join("live.durus"), dir.path().join("copy.durus"));
    drop(database(&src));
    let boundary = len(&src);
    let txn = transaction(&[rec(1, "python", &[])]);
    write_at(&src, &0u64.to_be_bytes(), boundary);
    write_at(&src, &txn[8..], boundary + 8);
    let caught = run(&src, &dest);
    assert_eq!(caught.dest_len, boundary + txn.len() as u64);

    write_at(&src, &txn[..8], boundary);
    let after = run(&src, &dest);
    assert!(after.kind.is_full(), "{:?}", after.kind);
    assert!(after.ends_on_boundary());
    assert_eq!(fs::read(&dest).unwrap(), fs::read(&src).unwrap());
}

/// One commit of the writer: the file length after it and its records.
struct Committed {
    end: u64,
    records: Vec<(Oid, Vec<u8>)>,
}

/// What one backup taken during the commits held, once opened with repair.
struct Snapshot {
    valid_len: u64,
    records: BTreeMap<Oid, Vec<u8>>,
}

#[test]
fn backups_taken_while_a_writer_commits_are_prefixes_of_its_history() {
    const OIDS: u64 = 8;
    const BACKUPS: usize = 20;
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("live.durus");
    let dest = dir.path().join("copy.durus");
    let scratch = dir.path().join("scratch.durus");

    let stop = Arc::new(AtomicBool::new(false));
    let (started_tx, started) = mpsc::channel();
    let writer = {
        let (src, stop) = (src.clone(), stop.clone());
        std::thread::spawn(move || -> Vec<Committed> {
            let mut storage = FileStorage::options().fsync(false).open(&src).unwrap();
            for _ in 0..OIDS {
                storage.new_oid().unwrap();
            }
            let mut history = Vec::new();
            let mut i: u64 = 0;
            while !stop.load(Ordering::Relaxed) || history.is_empty() {
                // 1 to 4 records of 100 bytes to 16 KiB; every 16th a big one.
                let count = 1 + i % 4;
                let records: Vec<(Oid, Vec<u8>)> = (0..count)
                    .map(|k| {
                        let oid = (i + k * 3) % OIDS;
                        let size = if i.is_multiple_of(16) {
                            300_000
                        } else {
                            100 + ((i * 7919 + k * 104_729) % 16_000) as usize
                        };
                        let body = format!("{i}:{k}:").repeat(size / 8 + 1);
                        (Oid(oid), rec(oid, &body, &[]))
                    })
                    .collect::<BTreeMap<_, _>>()
                    .into_iter()
                    .collect();
                storage
                    .commit_records(records.iter().map(|(_, r)| r.clone()))
                    .unwrap();
                history.push(Committed {
                    end: storage.file_size(),
                    records,
                });
                if i == 0 {
                    started_tx.send(()).unwrap();
                }
                i += 1;
                std::thread::sleep(Duration::from_micros(300));
            }
            history
        })
    };
    started.recv().unwrap();

    let mut snapshots = Vec::new();
    let mut torn = 0;
    for n in 0..BACKUPS {
        let report = run(&src, &dest);
        if n == 0 {
            assert_eq!(report.kind, BackupKind::New);
        } else {
            assert!(!report.kind.is_full(), "backup {n}: {:?}", report.kind);
        }
        let copy = fs::read(&dest).unwrap();
        let now = fs::read(&src).unwrap();
        assert_eq!(copy.len() as u64, report.dest_len);
        assert!(
            now.starts_with(&copy),
            "backup {n} is not a prefix of the source"
        );
        assert!(report.valid_len <= report.dest_len);
        match &report.torn_tail {
            None => assert_eq!(report.valid_len, report.dest_len),
            Some(t) => {
                torn += 1;
                assert_eq!(t.offset, report.valid_len);
                assert_eq!(t.file_len, report.dest_len);
            }
        }

        // Opened with repair (on a scratch copy: DEST must stay a prefix),
        // the copy holds exactly its complete transactions.
        fs::copy(&dest, &scratch).unwrap();
        let mut opened = FileStorage::options().repair(true).open(&scratch).unwrap();
        assert_eq!(
            opened.repaired().map(|d| d.offset),
            report.torn_tail.as_ref().map(|t| t.offset)
        );
        assert_eq!(opened.file_size(), report.valid_len);
        let mut records = BTreeMap::new();
        for oid in opened.oids().unwrap() {
            records.insert(oid, opened.load(oid).unwrap());
        }
        drop(opened);
        snapshots.push(Snapshot {
            valid_len: report.valid_len,
            records,
        });
        std::thread::sleep(Duration::from_millis(3));
    }
    stop.store(true, Ordering::Relaxed);
    let history = writer.join().unwrap();

    // Each copy's complete transactions are the first k commits, exactly.
    for (n, snap) in snapshots.iter().enumerate() {
        let k = if snap.valid_len == shelf::empty_file().len() as u64 {
            0
        } else {
            1 + history
                .iter()
                .position(|c| c.end == snap.valid_len)
                .unwrap_or_else(|| {
                    panic!(
                        "backup {n} ends at {}, not on a commit boundary",
                        snap.valid_len
                    )
                })
        };
        let mut expected = BTreeMap::new();
        for c in &history[..k] {
            expected.extend(c.records.iter().cloned());
        }
        assert_eq!(
            snap.records.keys().collect::<Vec<_>>(),
            expected.keys().collect::<Vec<_>>(),
            "backup {n}: oids after {k} commits"
        );
        assert!(
            snap.records == expected,
            "backup {n}: records differ from the source's after {k} commits"
        );
    }
    eprintln!(
        "{BACKUPS} backups during {} commits, {torn} caught a transaction mid-write",
        history.len()
    );
}

#[test]
fn a_missing_source_is_an_error_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("nothing.durus");
    let err = backup(&src, &dir.path().join("copy.durus"), &mut |_| {}).unwrap_err();
    assert!(
        matches!(&err, Error::Io { source, .. } if source.kind() == std::io::ErrorKind::NotFound)
    );
    assert!(err.to_string().contains("nothing.durus"), "{err}");
    assert!(!dir.path().join("copy.durus").exists());
}

#[test]
fn a_missing_destination_directory_is_an_error_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("live.durus");
    drop(database(&src));
    let dest = dir.path().join("no-such-dir").join("copy.durus");
    let err = backup(&src, &dest, &mut |_| {}).unwrap_err();
    assert!(err.to_string().contains("no-such-dir"), "{err}");
    assert!(
        matches!(&err, Error::Io { source, .. } if source.kind() == std::io::ErrorKind::NotFound)
    );
}

#[test]
fn a_source_that_is_not_a_shelf_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("notes.txt");
    fs::write(&src, b"hello, this is not a database").unwrap();
    let dest = dir.path().join("copy.durus");
    let err = backup(&src, &dest, &mut |_| {}).unwrap_err();
    match &err {
        Error::NotAShelf { path, .. } => assert_eq!(path, &src),
        other => panic!("expected NotAShelf, got {other:?}"),
    }
    assert!(!dest.exists());
}

#[test]
fn a_destination_that_is_not_a_shelf_is_not_replaced() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("live.durus");
    drop(database(&src));
    let dest = dir.path().join("important.txt");
    fs::write(&dest, b"do not overwrite me").unwrap();
    let err = backup(&src, &dest, &mut |_| {}).unwrap_err();
    assert!(
        matches!(&err, Error::NotAShelf { path, .. } if path == &dest),
        "{err:?}"
    );
    assert_eq!(fs::read(&dest).unwrap(), b"do not overwrite me");
}

#[test]
fn a_backup_open_read_write_elsewhere_is_not_touched() {
    let dir = tempfile::tempdir().unwrap();
    let (src, dest) = (dir.path().join("live.durus"), dir.path().join("copy.durus"));
    let mut storage = database(&src);
    run(&src, &dest);
    storage.commit_records([rec(0, "more", &[])]).unwrap();
    let before = fs::read(&dest).unwrap();
    let _served = FileStorage::open(&dest).unwrap();
    let err = backup(&src, &dest, &mut |_| {}).unwrap_err();
    assert!(
        matches!(&err, Error::Locked { path } if path == &dest),
        "{err:?}"
    );
    assert_eq!(fs::read(&dest).unwrap(), before);
}
