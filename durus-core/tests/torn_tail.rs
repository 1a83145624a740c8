//! Crash test: a file cut at every byte offset inside its last transaction
//! is detected at open, and repair restores exactly the transactions
//! before it (Durus 4.3 misses cuts inside the last record, spec 15).

mod common;

use std::fs;

use common::{commit, new_oids, rec};
use durus_core::{Error, FileStorage, Oid, Storage};

#[test]
fn every_cut_inside_the_last_transaction_is_detected_and_repaired() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cut.durus");
    let mut s = FileStorage::open(&path).unwrap();
    new_oids(&mut s, 4);
    commit(
        &mut s,
        vec![
            rec(0, "root v1", &[1, 2]),
            rec(1, "one", &[]),
            rec(2, "two", &[3]),
        ],
    );
    commit(&mut s, vec![rec(3, "three", &[])]);
    s.pack().unwrap();
    commit(&mut s, vec![rec(1, "one v2", &[2])]);
    let before_last = fs::metadata(&path).unwrap().len();
    let expected_before: Vec<Vec<u8>> = (0..4).map(|i| s.load(Oid(i)).unwrap()).collect();
    // The last transaction: two records, one with refs, one replacing the root.
    commit(
        &mut s,
        vec![
            rec(2, &"x".repeat(300), &[3, 1]),
            rec(0, "root v3", &[1, 2]),
        ],
    );
    drop(s);
    let full = fs::read(&path).unwrap();
    let cut_path = dir.path().join("cut-copy.durus");

    for cut in before_last + 1..full.len() as u64 {
        fs::write(&cut_path, &full[..cut as usize]).unwrap();
        match FileStorage::open(&cut_path) {
            Err(Error::TornTail {
                offset, file_len, ..
            }) => {
                assert_eq!(offset, before_last, "cut at {cut}");
                assert_eq!(file_len, cut);
            }
            Err(other) => panic!("cut at {cut}: expected TornTail, got {other}"),
            Ok(_) => panic!("cut at {cut}: a torn file opened read-write"),
        }
        let ro = FileStorage::options()
            .readonly(true)
            .open(&cut_path)
            .unwrap();
        assert_eq!(
            ro.tail_damage().map(|d| d.offset),
            Some(before_last),
            "cut at {cut}"
        );
        drop(ro);
        let mut repaired = FileStorage::options().repair(true).open(&cut_path).unwrap();
        assert_eq!(
            repaired.repaired().map(|d| d.bytes()),
            Some(cut - before_last)
        );
        assert_eq!(
            fs::metadata(&cut_path).unwrap().len(),
            before_last,
            "cut at {cut}"
        );
        for (i, expected) in expected_before.iter().enumerate() {
            assert_eq!(
                &repaired.load(Oid(i as u64)).unwrap(),
                expected,
                "cut at {cut}, oid {i}"
            );
        }
    }
    // The whole file is intact.
    fs::write(&cut_path, &full).unwrap();
    let mut whole = FileStorage::open(&cut_path).unwrap();
    assert_eq!(whole.load(Oid(0)).unwrap(), rec(0, "root v3", &[1, 2]));
}

#[test]
fn garbage_lengths_after_the_last_transaction_never_allocate_or_panic() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("junk.durus");
    {
        let mut s = FileStorage::open(&path).unwrap();
        new_oids(&mut s, 1);
        commit(&mut s, vec![rec(0, "root", &[])]);
    }
    let good = fs::read(&path).unwrap();
    for junk in [
        vec![0xFF; 8],
        vec![0x7F, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 1, 2, 3],
        [&40u64.to_be_bytes()[..], &[0xFF; 40]].concat(),
        [
            &28u64.to_be_bytes()[..],
            &20u64.to_be_bytes(),
            &1u64.to_be_bytes(),
            &[0; 12],
        ]
        .concat(),
    ] {
        let mut bytes = good.clone();
        bytes.extend_from_slice(&junk);
        fs::write(&path, &bytes).unwrap();
        let err = FileStorage::open(&path).unwrap_err();
        assert!(
            matches!(err, Error::TornTail { offset, .. } if offset == good.len() as u64),
            "{err}"
        );
    }
}
