//! `durus backup SRC DEST`, run as a real process against a file that a
//! server is serving (it holds the write lock) and a client commits to.

use std::fs;
use std::path::Path;

use durus::format::record;
use durus::{ClientStorage, Oid, Storage, StorageExt};

mod common;
use common::{durus, Serving};

fn path(p: &Path) -> &str {
    p.to_str().expect("UTF-8 temp path")
}

#[test]
fn backup_of_a_served_file_is_full_then_incremental_and_prints_both() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("served.durus");
    let dest = dir.path().join("copy.durus");
    let server = Serving::start(&["--file", path(&src), "--address", "127.0.0.1:0"]);
    let mut client = ClientStorage::connect(&server.address).unwrap();
    let root = client.new_oid().unwrap();
    assert_eq!(root, Oid(0));
    client
        .commit_records([record::encode(root, b"first", &[]).unwrap()])
        .unwrap();

    let first = durus(&["backup", path(&src), path(&dest)]);
    assert_eq!(first.code, 0, "{}", first.stderr);
    assert!(
        first.stdout.contains("full copy: new backup"),
        "{}",
        first.stdout
    );
    assert!(
        first.stdout.contains("ends on a transaction boundary"),
        "{}",
        first.stdout
    );
    assert_eq!(first.stdout.lines().count(), 2, "{}", first.stdout);

    let before = fs::metadata(&src).unwrap().len();
    client
        .commit_records([record::encode(root, &[7u8; 3000], &[]).unwrap()])
        .unwrap();
    let growth = fs::metadata(&src).unwrap().len() - before;

    let second = durus(&["backup", "--json", path(&src), path(&dest)]);
    assert_eq!(second.code, 0, "{}", second.stderr);
    let report = second.json();
    assert_eq!(report["kind"], "incremental");
    assert_eq!(report["from"], before);
    assert_eq!(report["bytes_copied"], growth);
    assert_eq!(report["ends_on_boundary"], true);
    assert_eq!(report["torn_tail_bytes"], 0);
    assert_eq!(fs::read(&dest).unwrap(), fs::read(&src).unwrap());

    drop(client);
    drop(server);
}

#[test]
fn backup_of_a_file_that_is_not_a_database_fails_with_status_2() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("notes.txt");
    fs::write(&src, b"not a database").unwrap();
    let run = durus(&["backup", path(&src), path(&dir.path().join("copy.durus"))]);
    assert_eq!(run.code, 2);
    assert!(
        run.stderr.contains("not a Durus SHELF-1 file"),
        "{}",
        run.stderr
    );
    assert!(run.stderr.contains("notes.txt"), "{}", run.stderr);
}
