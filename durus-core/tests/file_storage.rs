//! FileStorage behaviours, ported from Durus's test/utest_file_storage.py,
//! utest_shelf.py and utest_file.py (spec section 14) plus ours.

mod common;

use std::fs;

use common::{commit, new_oids, rec};
use durus_core::{Error, FileStorage, Oid, Storage, StorageExt};

fn tmp() -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("test.durus");
    (dir, path)
}

/// spec 14 `check_file_storage`.
#[test]
fn new_file_hands_out_0_1_2_and_commits_load_walk_pack_close() {
    let (_dir, path) = tmp();
    let mut s = FileStorage::open(&path).unwrap();
    assert_eq!(new_oids(&mut s, 3), vec![0, 1, 2]);
    assert!(matches!(s.load(Oid(0)), Err(Error::KeyNotFound(Oid(0)))));
    commit(&mut s, vec![rec(0, "root", &[]), rec(1, "loose", &[])]);
    assert_eq!(s.walk(Oid::ROOT).count(), 1);
    assert_eq!(s.records().unwrap().count(), 2);
    let report = s.pack().unwrap();
    assert_eq!(report.kept, 1);
    assert_eq!(report.removed, vec![Oid(1)]);
    s.close().unwrap();
    assert!(path.with_extension("durus.prepack").exists());
    assert!(matches!(s.pack(), Err(Error::Closed)));
    assert!(matches!(s.load(Oid(0)), Err(Error::Closed)));
}

/// spec 14 `check_reopen`: a writer's file opens read-only elsewhere but
/// not read-write (the lock holds within one process too).
#[test]
fn second_read_write_open_is_locked_out_but_read_only_works() {
    let (_dir, path) = tmp();
    let mut w = FileStorage::open(&path).unwrap();
    new_oids(&mut w, 1);
    commit(&mut w, vec![rec(0, "root", &[])]);
    let err = FileStorage::open(&path).unwrap_err();
    assert!(matches!(err, Error::Locked { .. }), "{err}");
    assert!(err.to_string().contains("locked by another writer"));
    let mut r = FileStorage::options().readonly(true).open(&path).unwrap();
    assert_eq!(r.load(Oid(0)).unwrap(), rec(0, "root", &[]));
    assert!(matches!(
        r.begin().and_then(|()| r.store(Oid(0), rec(0, "x", &[]))),
        Err(Error::ReadOnly)
    ));
    drop(w);
    FileStorage::open(&path).unwrap();
}

/// spec 14 `check_open_empty`: an existing empty file becomes a new shelf.
#[test]
fn existing_empty_file_becomes_a_new_database() {
    let (_dir, path) = tmp();
    fs::write(&path, b"").unwrap();
    let mut s = FileStorage::open(&path).unwrap();
    assert_eq!(fs::metadata(&path).unwrap().len(), 40);
    assert_eq!(s.new_oid().unwrap(), Oid::ROOT);
}

#[test]
fn read_only_open_of_an_empty_file_fails_without_writing() {
    let (_dir, path) = tmp();
    fs::write(&path, b"").unwrap();
    let err = FileStorage::options()
        .readonly(true)
        .open(&path)
        .unwrap_err();
    assert!(matches!(err, Error::NotAShelf { .. }), "{err}");
    assert_eq!(fs::metadata(&path).unwrap().len(), 0);
}

#[test]
fn read_only_open_of_a_missing_file_fails() {
    let (_dir, path) = tmp();
    let err = FileStorage::options()
        .readonly(true)
        .open(&path)
        .unwrap_err();
    assert!(matches!(err, Error::Io { .. }), "{err}");
    assert!(!path.exists());
}

/// spec 14 `check_short_magic` / `check_wrong_magic` / utest_shelf `d`.
#[test]
fn wrong_or_short_magic_is_not_a_shelf_and_the_file_is_untouched() {
    let (_dir, path) = tmp();
    for content in [&b"b"[..], b"bogusbogus", b"PK\x03\x04 a zip file, say"] {
        fs::write(&path, content).unwrap();
        let err = FileStorage::open(&path).unwrap_err();
        assert!(matches!(err, Error::NotAShelf { .. }), "{err}");
        assert!(
            err.to_string().contains("not a Durus SHELF-1 file"),
            "{err}"
        );
        assert_eq!(fs::read(&path).unwrap(), content);
    }
}

/// spec 14 utest_shelf `d`: `SHELF-1\nbogus` fails (ShortRead in Durus).
#[test]
fn magic_followed_by_garbage_is_corrupt() {
    let (_dir, path) = tmp();
    fs::write(&path, b"SHELF-1\nbogus").unwrap();
    let err = FileStorage::open(&path).unwrap_err();
    assert!(matches!(err, Error::Corrupt { offset: 8, .. }), "{err}");
    fs::write(&path, b"SHELF-1\n\xff\xff\xff\xff\xff\xff\xff\xffmore").unwrap();
    let err = FileStorage::open(&path).unwrap_err();
    assert!(matches!(err, Error::Corrupt { .. }), "{err}");
}

/// spec 14 `check_bad_record_size`: 6 trailing garbage bytes fail the open.
#[test]
fn trailing_garbage_is_reported_with_its_offset() {
    let (_dir, path) = tmp();
    {
        let mut s = FileStorage::open(&path).unwrap();
        new_oids(&mut s, 1);
        commit(&mut s, vec![rec(0, "root", &[])]);
    }
    let good_len = fs::metadata(&path).unwrap().len();
    let mut bytes = fs::read(&path).unwrap();
    bytes.extend_from_slice(b"\x00\x00\x00\x01\x02\x03");
    fs::write(&path, &bytes).unwrap();
    match FileStorage::open(&path).unwrap_err() {
        Error::TornTail {
            offset, file_len, ..
        } => {
            assert_eq!(offset, good_len);
            assert_eq!(file_len, good_len + 6);
        }
        other => panic!("expected TornTail, got {other}"),
    }
}

/// spec 14 `check_repair`: one trailing byte; repair truncates it.
#[test]
fn repair_truncates_a_one_byte_tail_back_to_the_previous_length() {
    let (_dir, path) = tmp();
    {
        let mut s = FileStorage::open(&path).unwrap();
        new_oids(&mut s, 1);
        commit(&mut s, vec![rec(0, "root", &[])]);
    }
    let good_len = fs::metadata(&path).unwrap().len();
    let mut bytes = fs::read(&path).unwrap();
    bytes.push(b'x');
    fs::write(&path, &bytes).unwrap();
    let r = FileStorage::options().readonly(true).open(&path).unwrap();
    assert_eq!(r.tail_damage().unwrap().offset, good_len);
    drop(r);
    assert_eq!(fs::metadata(&path).unwrap().len(), good_len + 1);
    let mut s = FileStorage::options().repair(true).open(&path).unwrap();
    assert_eq!(s.repaired().unwrap().bytes(), 1);
    assert_eq!(fs::metadata(&path).unwrap().len(), good_len);
    assert_eq!(s.load(Oid(0)).unwrap(), rec(0, "root", &[]));
}

/// The placeholder-then-length commit of Durus can crash with a zero
/// length followed by orphan records; we detect the orphans.
#[test]
fn durus_zero_length_placeholder_with_orphans_is_detected() {
    let (_dir, path) = tmp();
    {
        let mut s = FileStorage::open(&path).unwrap();
        new_oids(&mut s, 2);
        commit(&mut s, vec![rec(0, "root", &[1]), rec(1, "one", &[])]);
    }
    let mut bytes = fs::read(&path).unwrap();
    let placeholder_end = bytes.len() as u64 + 8;
    bytes.extend_from_slice(&0u64.to_be_bytes());
    let orphan = rec(1, "orphan", &[]);
    bytes.extend_from_slice(&(8 + orphan.len() as u64).to_be_bytes());
    bytes.extend_from_slice(&1u64.to_be_bytes());
    bytes.extend_from_slice(&orphan);
    fs::write(&path, &bytes).unwrap();
    let err = FileStorage::open(&path).unwrap_err();
    assert!(
        matches!(err, Error::TornTail { offset, .. } if offset == placeholder_end),
        "{err}"
    );
    let mut s = FileStorage::options().repair(true).open(&path).unwrap();
    assert_eq!(s.load(Oid(1)).unwrap(), rec(1, "one", &[]));
    assert_eq!(fs::metadata(&path).unwrap().len(), placeholder_end);
}

/// Builds root + objects 1..=10 referenced from the root.
fn ten_objects(s: &mut FileStorage) {
    assert_eq!(new_oids(s, 11), (0..=10).collect::<Vec<_>>());
    let mut records = vec![rec(0, "root", &(1..=10).collect::<Vec<_>>())];
    records.extend((1..=10).map(|i| rec(i, &format!("obj{i}"), &[])));
    commit(s, records);
}

/// spec 14 ShelfStorageTest `a`: deleted oids are reused highest first
/// after a pack, then N-1 (11), then fresh ones.
#[test]
fn packed_holes_are_reused_highest_first() {
    let (_dir, path) = tmp();
    let mut s = FileStorage::open(&path).unwrap();
    ten_objects(&mut s);
    commit(&mut s, vec![rec(0, "root", &[2, 4, 5, 6, 7, 10])]);
    let report = s.pack().unwrap();
    assert_eq!(report.kept, 7);
    assert_eq!(report.removed, vec![Oid(1), Oid(3), Oid(8), Oid(9)]);
    assert_eq!(s.sync().unwrap(), vec![Oid(1), Oid(3), Oid(8), Oid(9)]);
    assert_eq!(s.sync().unwrap(), vec![]);
    assert!(matches!(s.load(Oid(3)), Err(Error::KeyNotFound(Oid(3)))));
    assert_eq!(s.records().unwrap().count(), 7);
    commit(&mut s, vec![rec(0, "root2", &[2, 4, 5, 6, 7, 10])]);
    s.pack().unwrap();
    assert_eq!(new_oids(&mut s, 6), vec![9, 8, 3, 1, 11, 12]);
    drop(s);
    // The allocation order is a property of the file, so it survives reopening.
    let mut s = FileStorage::open(&path).unwrap();
    assert_eq!(new_oids(&mut s, 6), vec![9, 8, 3, 1, 11, 12]);
}

/// spec 14 ShelfStorageTest `b`: dropping the highest oid.
#[test]
fn packing_away_the_highest_oid_reuses_it_first() {
    let (_dir, path) = tmp();
    let mut s = FileStorage::open(&path).unwrap();
    ten_objects(&mut s);
    commit(&mut s, vec![rec(0, "root", &(1..=9).collect::<Vec<_>>())]);
    assert_eq!(s.pack().unwrap().kept, 10);
    assert_eq!(s.sync().unwrap(), vec![Oid(10)]);
    assert_eq!(new_oids(&mut s, 2), vec![10, 11]);
}

/// spec 14 ShelfStorageTest `c`: a cleared root leaves only the root.
#[test]
fn packing_a_cleared_root_leaves_only_the_root() {
    let (_dir, path) = tmp();
    let mut s = FileStorage::open(&path).unwrap();
    ten_objects(&mut s);
    commit(&mut s, vec![rec(0, "root", &[])]);
    let report = s.pack().unwrap();
    assert_eq!(report.kept, 1);
    assert_eq!(report.removed.len(), 10);
    s.sync().unwrap();
    assert_eq!(new_oids(&mut s, 2), vec![1, 2]);
}

/// spec 6.4: an oid removed by a pack is not handed out again until the
/// removal has been reported by `sync` (a client may still hold it).
#[test]
fn removed_oids_are_not_reused_before_sync() {
    let (_dir, path) = tmp();
    let mut s = FileStorage::open(&path).unwrap();
    ten_objects(&mut s);
    commit(&mut s, vec![rec(0, "root", &[1, 2, 3, 4, 5, 6, 7, 8, 9])]);
    s.pack().unwrap();
    assert_eq!(new_oids(&mut s, 2), vec![11, 12]);
}

/// spec 4.7: reopening an unpacked file walks up from 0 over used oids and
/// fills gaps of oids allocated but never committed.
#[test]
fn reopened_unpacked_file_allocates_the_gaps_first() {
    let (_dir, path) = tmp();
    {
        let mut s = FileStorage::open(&path).unwrap();
        assert_eq!(new_oids(&mut s, 4), vec![0, 1, 2, 3]);
        commit(
            &mut s,
            vec![rec(0, "root", &[1, 3]), rec(1, "a", &[]), rec(3, "c", &[])],
        );
    }
    let mut s = FileStorage::open(&path).unwrap();
    assert_eq!(new_oids(&mut s, 3), vec![2, 4, 5]);
}

#[test]
fn storing_an_oid_never_handed_out_is_refused() {
    let (_dir, path) = tmp();
    let mut s = FileStorage::open(&path).unwrap();
    s.begin().unwrap();
    let err = s.store(Oid(5), rec(5, "x", &[])).unwrap_err();
    assert!(matches!(err, Error::SurpriseOid(Oid(5))), "{err}");
    // The root may always be stored (a new database creates it).
    s.store(Oid(0), rec(0, "root", &[])).unwrap();
    s.end(&mut |_| Ok(())).unwrap();
    assert_eq!(s.load(Oid(0)).unwrap(), rec(0, "root", &[]));
}

#[test]
fn storing_an_oid_twice_in_one_commit_keeps_the_last_record() {
    let (_dir, path) = tmp();
    let mut s = FileStorage::open(&path).unwrap();
    new_oids(&mut s, 1);
    s.begin().unwrap();
    s.store(Oid(0), rec(0, "first", &[])).unwrap();
    s.store(Oid(0), rec(0, "second", &[])).unwrap();
    s.end(&mut |_| Ok(())).unwrap();
    drop(s);
    let mut s = FileStorage::open(&path).unwrap();
    assert_eq!(s.load(Oid(0)).unwrap(), rec(0, "second", &[]));
    assert_eq!(s.stats().unwrap().transactions, 1);
}

#[test]
fn later_transactions_win_and_survive_reopen() {
    let (_dir, path) = tmp();
    {
        let mut s = FileStorage::open(&path).unwrap();
        new_oids(&mut s, 2);
        commit(&mut s, vec![rec(0, "root v1", &[1]), rec(1, "one v1", &[])]);
        commit(&mut s, vec![rec(1, "one v2", &[])]);
        commit(&mut s, vec![rec(0, "root v3", &[1])]);
    }
    let mut s = FileStorage::open(&path).unwrap();
    assert_eq!(s.load(Oid(0)).unwrap(), rec(0, "root v3", &[1]));
    assert_eq!(s.load(Oid(1)).unwrap(), rec(1, "one v2", &[]));
    let stats = s.stats().unwrap();
    assert_eq!((stats.records, stats.transactions), (2, 3));
    assert_eq!(stats.oid_range, Some((Oid(0), Oid(1))));
    // After a pack the base holds both and no transactions follow.
    s.pack().unwrap();
    let stats = s.stats().unwrap();
    assert_eq!(
        (stats.records, stats.base_records, stats.transactions),
        (2, 2, 0)
    );
    drop(s);
    let mut s = FileStorage::open(&path).unwrap();
    assert_eq!(s.load(Oid(1)).unwrap(), rec(1, "one v2", &[]));
}

#[test]
fn pack_clobbers_a_stale_pack_file_and_keeps_later_commits() {
    let (_dir, path) = tmp();
    let pack_path = path.with_extension("durus.pack");
    fs::write(&pack_path, b"left over from a crashed pack").unwrap();
    let mut s = FileStorage::open(&path).unwrap();
    ten_objects(&mut s);
    s.pack().unwrap();
    assert!(!pack_path.exists());
    let oid = s.new_oid().unwrap();
    assert_eq!(oid, Oid(11));
    commit(&mut s, vec![rec(0, "root", &[1, 11]), rec(11, "new", &[])]);
    drop(s);
    let mut s = FileStorage::open(&path).unwrap();
    assert_eq!(s.load(Oid(11)).unwrap(), rec(11, "new", &[]));
    assert_eq!(s.load(Oid(5)).unwrap(), rec(5, "obj5", &[]));
    assert_eq!(s.walk(Oid::ROOT).count(), 3);
}

#[test]
fn pack_with_a_transaction_in_progress_is_refused() {
    let (_dir, path) = tmp();
    let mut s = FileStorage::open(&path).unwrap();
    new_oids(&mut s, 1);
    s.begin().unwrap();
    s.store(Oid(0), rec(0, "root", &[])).unwrap();
    assert!(matches!(s.pack(), Err(Error::InvalidState(_))));
}

#[test]
fn read_only_storage_refuses_pack_and_new_writes() {
    let (_dir, path) = tmp();
    {
        let mut s = FileStorage::open(&path).unwrap();
        ten_objects(&mut s);
    }
    let before = fs::read(&path).unwrap();
    let mut r = FileStorage::options().readonly(true).open(&path).unwrap();
    assert!(matches!(r.pack(), Err(Error::ReadOnly)));
    assert_eq!(r.walk(Oid::ROOT).count(), 11);
    drop(r);
    assert_eq!(fs::read(&path).unwrap(), before);
}

#[test]
fn create_false_never_creates_or_initialises_a_file() {
    let (_dir, path) = tmp();
    let err = FileStorage::options()
        .create(false)
        .open(&path)
        .unwrap_err();
    assert!(matches!(err, Error::Io { .. }), "{err}");
    assert!(!path.exists());
    fs::write(&path, b"").unwrap();
    let err = FileStorage::options()
        .create(false)
        .open(&path)
        .unwrap_err();
    assert!(matches!(err, Error::NotAShelf { .. }), "{err}");
    assert_eq!(fs::metadata(&path).unwrap().len(), 0);
}

#[test]
fn pack_reports_the_kept_original_and_it_still_opens() {
    let (_dir, path) = tmp();
    let mut s = FileStorage::open(&path).unwrap();
    ten_objects(&mut s);
    commit(&mut s, vec![rec(0, "root", &[1])]);
    let before = fs::read(&path).unwrap();
    let report = s.pack().unwrap();
    let prepack = report.prepack.expect("a .prepack copy");
    assert_eq!(prepack, path.with_extension("durus.prepack"));
    assert_eq!(fs::read(&prepack).unwrap(), before);
    assert_eq!(report.size_before, before.len() as u64);
    assert_eq!(report.size_after, fs::metadata(&path).unwrap().len());
    let mut old = FileStorage::options()
        .readonly(true)
        .open(&prepack)
        .unwrap();
    assert_eq!(old.load(Oid(9)).unwrap(), rec(9, "obj9", &[]));
}

#[test]
fn commits_made_while_a_pack_copies_are_kept_and_survive_reopen() {
    // The server packs in the background: begin_pack, copy without the
    // storage, finish_pack appends what was committed meanwhile.
    let (_dir, path) = tmp();
    let mut s = FileStorage::open(&path).unwrap();
    let oids = new_oids(&mut s, 4); // 0 root, 1 and 2 reachable, 3 garbage
    commit(
        &mut s,
        vec![
            rec(0, "root", &[1, 2]),
            rec(1, "one", &[]),
            rec(2, "two", &[]),
            rec(3, "garbage", &[]),
        ],
    );
    assert_eq!(oids, [0, 1, 2, 3]);
    let mut job = s.begin_pack().unwrap();
    // During the copy: an update, a new object, and a write of the garbage oid.
    let new = s.new_oid().unwrap();
    commit(
        &mut s,
        vec![
            rec(1, "one v2", &[]),
            rec(new.0, "new", &[]),
            rec(0, "root v2", &[1, 2, new.0]),
        ],
    );
    job.copy(&mut |_| {}).unwrap();
    commit(
        &mut s,
        vec![rec(3, "garbage rewritten", &[]), rec(2, "two v2", &[])],
    );
    let report = s.finish_pack(job).unwrap();
    assert_eq!(report.kept, 3, "root, 1 and 2 as of the start");
    assert_eq!(
        report.removed,
        Vec::<Oid>::new(),
        "oid 3 was written again during the pack"
    );
    let check = |s: &mut FileStorage| {
        assert_eq!(s.load(Oid(0)).unwrap(), rec(0, "root v2", &[1, 2, new.0]));
        assert_eq!(s.load(Oid(1)).unwrap(), rec(1, "one v2", &[]));
        assert_eq!(s.load(Oid(2)).unwrap(), rec(2, "two v2", &[]));
        assert_eq!(s.load(Oid(3)).unwrap(), rec(3, "garbage rewritten", &[]));
        assert_eq!(s.load(new).unwrap(), rec(new.0, "new", &[]));
    };
    check(&mut s);
    // The storage goes on committing, and the file reopens the same.
    commit(&mut s, vec![rec(2, "two v3", &[])]);
    drop(s);
    let mut again = FileStorage::open(&path).unwrap();
    assert_eq!(again.load(Oid(2)).unwrap(), rec(2, "two v3", &[]));
    assert_eq!(again.load(Oid(1)).unwrap(), rec(1, "one v2", &[]));
    assert_eq!(again.load(new).unwrap(), rec(new.0, "new", &[]));
    assert!(!std::path::Path::new(&format!("{}.pack", path.display())).exists());
}

#[test]
fn an_abandoned_pack_leaves_the_file_untouched_and_removes_its_pack_file() {
    let (_dir, path) = tmp();
    let mut s = FileStorage::open(&path).unwrap();
    ten_objects(&mut s);
    let before = fs::read(&path).unwrap();
    let mut job = s.begin_pack().unwrap();
    job.copy(&mut |_| {}).unwrap();
    drop(job);
    assert_eq!(fs::read(&path).unwrap(), before);
    assert!(!std::path::Path::new(&format!("{}.pack", path.display())).exists());
    assert!(s.pack().is_ok());
}
