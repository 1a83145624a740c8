//! The server's side of wire protocol 1 (storage/session.rs) on arbitrary
//! client bytes: a sequence of frames from one client, then a second
//! client reading the root, against a real database file. Never a panic or
//! a hang, and afterwards the file opens without repair (no commit is half
//! written), its root and every other stored oid load.
#![no_main]

use std::path::PathBuf;
use std::sync::LazyLock;

use durus_core::format::protocol::{CMD_LOAD, STATUS_OKAY};
use durus_core::format::{record, Oid};
use durus_core::storage::{ServerOptions, Service, StorageExt};
use durus_core::{FileStorage, Storage};
use durus_fuzz::scratch_dir;
use libfuzzer_sys::fuzz_target;

/// The file every input starts from: a root referring to one child.
static BASE: LazyLock<(PathBuf, Vec<u8>)> = LazyLock::new(|| {
    let path = scratch_dir().join("server.durus");
    let _ = std::fs::remove_file(&path);
    let mut storage = FileStorage::options().fsync(false).open(&path).unwrap();
    let root = record::encode(Oid(0), b"root state", &[Oid(1)]).unwrap();
    let child = record::encode(Oid(1), b"child state", &[]).unwrap();
    storage.new_oid().unwrap();
    storage.new_oid().unwrap();
    storage.commit_records([root, child]).unwrap();
    storage.close().unwrap();
    let bytes = std::fs::read(&path).unwrap();
    (path, bytes)
});

fuzz_target!(|data: &[u8]| {
    let (path, base) = &*BASE;
    std::fs::write(path, base).unwrap();
    let storage = FileStorage::options().fsync(false).open(path).unwrap();
    let opts = ServerOptions {
        max_transaction: 1 << 20,
        max_bulk_load: 1 << 12,
        ..ServerOptions::default()
    };
    let service = Service::new(storage, opts);
    // Refusals are the point; what matters is what they leave behind.
    let _ = service.serve(data, std::io::sink(), "fuzzer", true);
    let mut answer = Vec::new();
    let load_root = [&[CMD_LOAD][..], &Oid(0).to_bytes()].concat();
    service
        .serve(&load_root[..], &mut answer, "checker", true)
        .expect("a well-formed load after any other client's input");
    assert_eq!(answer.first(), Some(&STATUS_OKAY), "the root is gone");
    service.close().expect("the storage closes");

    let mut reopened = FileStorage::options()
        .readonly(true)
        .open(path)
        .expect("the file opens after any client input");
    assert!(
        reopened.tail_damage().is_none(),
        "a commit was half written: {:?}",
        reopened.tail_damage()
    );
    for oid in reopened.oids().expect("the oids of a sound file") {
        reopened.load(oid).expect("every stored oid loads");
    }
});
