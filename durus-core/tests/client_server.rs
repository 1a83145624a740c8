//! Connections over `ClientStorage` to our own server: Durus's semantics
//! across clients (spec 9.2, 9.6), with threads standing in for processes
//! (each has its own socket and connection).

use std::thread::JoinHandle;

use durus_core::storage::address::Address;
use durus_core::storage::{Server, ServerHandle, ServerOptions};
use durus_core::{ClientStorage, Connection, FileStorage, PObject, PRef, Persistent};
use serde::{Deserialize, Serialize};

#[derive(Debug, Serialize, Deserialize)]
struct Counter {
    n: u64,
}

impl Persistent for Counter {
    const CLASS_NAME: &'static str = "test.Counter";
}

struct Running {
    address: Address,
    handle: ServerHandle,
    thread: Option<JoinHandle<durus_core::Result<()>>>,
    _dir: tempfile::TempDir,
}

impl Running {
    fn start() -> Running {
        let dir = tempfile::tempdir().unwrap();
        let storage = FileStorage::open(dir.path().join("db.durus")).unwrap();
        let server = Server::bind(
            storage,
            &"127.0.0.1:0".parse().unwrap(),
            ServerOptions::default(),
        )
        .unwrap();
        let address = server.address().clone();
        let handle = server.handle();
        let thread = Some(std::thread::spawn(move || server.run()));
        Running {
            address,
            handle,
            thread,
            _dir: dir,
        }
    }

    fn connect(&self) -> Connection {
        Connection::new(ClientStorage::connect_to(&self.address).unwrap()).unwrap()
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.handle.stop();
        if let Some(t) = self.thread.take() {
            t.join().unwrap().unwrap();
        }
    }
}

fn counter(conn: &Connection) -> PRef<Counter> {
    conn.root()
        .get(&"counter".to_string())
        .unwrap()
        .unwrap()
        .downcast()
        .unwrap()
}

#[test]
fn clients_opening_an_empty_database_at_once_share_one_root() {
    // Durus: the second client fails an assertion (spec 9.2).
    let server = Running::start();
    let threads: Vec<_> = (0..4)
        .map(|i| {
            let address = server.address.clone();
            std::thread::spawn(move || {
                let conn = Connection::new(ClientStorage::connect_to(&address).unwrap()).unwrap();
                conn.transact(|c| {
                    c.root().insert(
                        format!("client {i}"),
                        PObject::from(PRef::new(Counter { n: i })),
                    )?;
                    Ok(())
                })
                .unwrap();
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let conn = server.connect();
    let keys = conn.root().keys().unwrap();
    assert_eq!(keys, ["client 0", "client 1", "client 2", "client 3"]);
}

#[test]
fn concurrent_increments_with_transact_retries_end_exact() {
    const CLIENTS: u64 = 4;
    const EACH: u64 = 50;
    let server = Running::start();
    {
        let conn = server.connect();
        conn.root()
            .insert("counter".into(), PObject::from(PRef::new(Counter { n: 0 })))
            .unwrap();
        conn.commit().unwrap();
    }
    let threads: Vec<_> = (0..CLIENTS)
        .map(|_| {
            let address = server.address.clone();
            std::thread::spawn(move || {
                let conn = Connection::new(ClientStorage::connect_to(&address).unwrap()).unwrap();
                let mut conflicts = 0;
                for _ in 0..EACH {
                    // transact retries up to 10 times; under heavy contention
                    // a few more rounds may be needed.
                    loop {
                        match conn.transact(|c| counter(c).write(|k| k.n += 1)) {
                            Ok(()) => break,
                            Err(e) if e.is_conflict() => conflicts += 1,
                            Err(e) => panic!("{e}"),
                        }
                    }
                }
                conflicts
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let conn = server.connect();
    assert_eq!(counter(&conn).read(|k| k.n).unwrap(), CLIENTS * EACH);
}

#[test]
fn a_change_is_visible_to_another_client_after_its_commit_or_abort_and_conflicts_are_durus_s() {
    let server = Running::start();
    let a = server.connect();
    a.root()
        .insert("counter".into(), PObject::from(PRef::new(Counter { n: 1 })))
        .unwrap();
    a.commit().unwrap();
    let b = server.connect();
    let (ca, cb) = (counter(&a), counter(&b));
    assert_eq!(cb.read(|k| k.n).unwrap(), 1);
    ca.write(|k| k.n = 2).unwrap();
    a.commit().unwrap();
    assert_eq!(
        cb.read(|k| k.n).unwrap(),
        1,
        "not before b's commit or abort (FAQ)"
    );
    b.abort();
    assert_eq!(cb.read(|k| k.n).unwrap(), 2);
    // Both write: the second committer gets a write conflict.
    ca.write(|k| k.n = 3).unwrap();
    cb.write(|k| k.n = 30).unwrap();
    a.commit().unwrap();
    let err = b.commit().unwrap_err();
    assert!(matches!(err, durus_core::Error::Conflict { .. }), "{err}");
    b.abort();
    assert_eq!(cb.read(|k| k.n).unwrap(), 3);
}
