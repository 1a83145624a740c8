//! `durus serve` and `durus stop` as real processes: TCP (IPv4 and IPv6)
//! and unix sockets, the socket file's mode, stopping by the Q command and
//! by SIGTERM with the data kept.

mod common;

use std::process::Command;

use common::{durus, Serving};
use durus::{ClientStorage, Connection, PObject, PRef, PersistentList};

fn store_list(address: &str, values: &[u32]) {
    let conn = Connection::new(ClientStorage::connect(address).unwrap()).unwrap();
    let list: PersistentList<u32> = values.iter().copied().collect();
    conn.root()
        .insert("list".into(), PObject::from(PRef::new(list)))
        .unwrap();
    conn.commit().unwrap();
}

fn read_list(address: &str) -> Vec<u32> {
    let conn = Connection::new(ClientStorage::connect(address).unwrap()).unwrap();
    let list = conn.root().get(&"list".to_string()).unwrap().unwrap();
    list.downcast::<PersistentList<u32>>()
        .unwrap()
        .iter()
        .unwrap()
        .collect()
}

#[test]
fn serve_over_tcp_then_stop_keeps_the_data_in_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("served.durus");
    for host in ["127.0.0.1:0", "[::1]:0"] {
        let server = Serving::start(&["--file", file.to_str().unwrap(), "--address", host]);
        let address = server.address.clone();
        store_list(&address, &[1, 2, 3]);
        let stop = durus(&["stop", "--address", &address]);
        assert_eq!(stop.code, 0, "{}", stop.stderr);
        assert_eq!(server.wait(), 0);
    }
    // The file holds the last commit; the server reopens it.
    let server = Serving::start(&["--file", file.to_str().unwrap(), "--address", "127.0.0.1:0"]);
    assert_eq!(read_list(&server.address), [1, 2, 3]);
}

#[test]
fn serve_on_a_unix_socket_applies_the_umask_and_removes_the_socket_on_sigterm() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("durus.sock");
    let file = dir.path().join("db.durus");
    let server = Serving::start(&[
        "--file",
        file.to_str().unwrap(),
        "--unix",
        sock.to_str().unwrap(),
        "--umask",
        "077",
    ]);
    let mode = std::fs::metadata(&sock).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o700);
    store_list(&server.address, &[7]);
    let pid = server.child.id().to_string();
    assert!(Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap()
        .success());
    assert_eq!(server.wait(), 0, "SIGTERM is a graceful stop");
    assert!(!sock.exists(), "the socket file is removed on exit");
    let mut storage = durus::FileStorage::open(&file).unwrap();
    assert!(durus::Storage::load(&mut storage, durus::Oid::ROOT).is_ok());
}

#[test]
fn serve_without_a_file_uses_a_temporary_one_and_stop_reports_a_missing_server() {
    let server = Serving::start(&["--address", "127.0.0.1:0"]);
    store_list(&server.address, &[4]);
    assert_eq!(read_list(&server.address), [4]);
    let address = server.address.clone();
    assert_eq!(durus(&["stop", "--address", &address]).code, 0);
    assert_eq!(server.wait(), 0);
    let again = durus(&["stop", "--address", &address]);
    assert_eq!(again.code, 2);
    assert!(again.stderr.contains("cannot connect"), "{}", again.stderr);
}

#[test]
fn a_commit_over_max_commit_bytes_is_refused_and_logged_and_others_go_on() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("limited.durus");
    let mut server = Serving::start(&[
        "--file",
        file.to_str().unwrap(),
        "--address",
        "127.0.0.1:0",
        "--max-commit-bytes",
        "2000",
    ]);
    let address = server.address.clone();
    store_list(&address, &[1, 2, 3]);
    // A thousand numbers are over 2,000 bytes of CBOR and framing.
    let conn = Connection::new(ClientStorage::connect(&address).unwrap()).unwrap();
    let big: PersistentList<u32> = (0..1000).collect();
    conn.root()
        .insert("list".into(), PObject::from(PRef::new(big)))
        .unwrap();
    let err = conn.commit().unwrap_err();
    assert!(!err.is_conflict(), "{err}");
    drop(conn);
    assert_eq!(read_list(&address), [1, 2, 3], "nothing of it was stored");
    store_list(&address, &[4]);
    assert_eq!(read_list(&address), [4]);
    let stop = durus(&["stop", "--address", &address]);
    assert_eq!(stop.code, 0, "{}", stop.stderr);
    let mut log = String::new();
    std::io::Read::read_to_string(server.child.stderr.as_mut().unwrap(), &mut log).unwrap();
    assert!(
        log.contains("transaction too large") && log.contains("over the limit of 2000"),
        "{log}"
    );
    assert_eq!(server.wait(), 0);
}
