//! A million objects in bounded memory (issue 5): with the cache size at
//! 10,000, inserting 1,000,000 small objects into a `BTree` (a commit every
//! 10,000) and then reading all of them back in order in a fresh
//! connection keeps the process's peak resident memory under 200 MiB.
//!
//! This file holds one test so that the process's peak is this test's
//! alone (tests of one binary share a process). Run it optimised, as
//! `.ci/run` does: `cargo test --release -p durus-core --test scale`.

mod object_support;

use durus_core::{BTree, Connection, FileStorageOptions, PObject, PRef};
use object_support::Counter;

const N: i64 = 1_000_000;
const CACHE: usize = 10_000;
const BATCH: i64 = 10_000;
const LIMIT_MIB: u64 = 200;

/// The process's peak resident set (`VmHWM`), in KiB.
fn peak_rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmHWM in /proc/self/status")
}

fn open(path: &std::path::Path) -> Connection {
    let storage = FileStorageOptions::new().fsync(false).open(path).unwrap();
    let conn = Connection::new(storage).unwrap();
    conn.set_cache_size(CACHE);
    conn
}

#[test]
fn a_million_objects_in_a_btree_insert_and_scan_in_bounded_memory() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("scale.durus");
    {
        let conn = open(&path);
        let tree: PRef<BTree<i64, PRef<Counter>>> = PRef::new(BTree::new());
        conn.root()
            .insert("items".into(), PObject::from(tree.clone()))
            .unwrap();
        for k in 0..N {
            // Ids in order from one commit to the next, scrambled within
            // each commit: inserts split leaves in the middle, not only at
            // the end. (Keys scattered over the whole tree make every
            // commit change ~10,000 leaves, each holding a handle per
            // entry: memory then follows the transaction, see
            // docs/BENCHMARKS.md.)
            let key = k / BATCH * BATCH + (k % BATCH) * 7_919 % BATCH;
            tree.insert(key, PRef::new(Counter::new(key))).unwrap();
            if k % BATCH == BATCH - 1 {
                conn.commit().unwrap();
                assert!(
                    conn.cache_count() <= CACHE,
                    "{} objects cached after commit {k}",
                    conn.cache_count()
                );
            }
        }
        conn.commit().unwrap();
        assert_eq!(tree.len().unwrap(), N as usize);
    }
    let after_insert = peak_rss_kib();

    let conn = open(&path);
    let tree = conn.root().get(&"items".to_string()).unwrap().unwrap();
    let tree = tree.downcast::<BTree<i64, PRef<Counter>>>().unwrap();
    let mut expected = 0;
    let mut checksum = 0i64;
    for entry in tree.iter().unwrap() {
        let (key, item) = entry.unwrap();
        assert_eq!(key, expected);
        let (n, label_len) = item.read(|c| (c.n, c.label.len())).unwrap();
        assert_eq!(n, key);
        checksum += n + label_len as i64;
        expected += 1;
        if expected % 100_000 == 0 {
            assert!(
                conn.cache_count() <= 3 * CACHE,
                "{} objects cached after reading {expected}",
                conn.cache_count()
            );
        }
    }
    assert_eq!(expected, N);
    let labels: i64 = (0..N).map(|k| format!("counter {k}").len() as i64).sum();
    assert_eq!(checksum, N * (N - 1) / 2 + labels);
    let peak = peak_rss_kib();
    eprintln!(
        "peak RSS: {} MiB after inserting, {} MiB after the scan (limit {LIMIT_MIB} MiB)",
        after_insert / 1024,
        peak / 1024
    );
    assert!(
        peak < LIMIT_MIB * 1024,
        "peak RSS {} MiB, limit {LIMIT_MIB} MiB",
        peak / 1024
    );
}
