//! Several connections to one database, each on its own thread: clients
//! of our server over `ClientStorage`, and in-process connections of a
//! `Database`. Durus's semantics across clients either way (spec 9.2,
//! 9.6): a change is visible after the other's commit or abort, conflicts,
//! exact totals under contention, one root however many create it.

use std::thread::JoinHandle;

use durus_core::storage::address::Address;
use durus_core::storage::{Server, ServerHandle, ServerOptions};
use durus_core::{ClientStorage, Connection, Database, FileStorage, PObject, PRef, Persistent};
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
}

/// How a test's threads reach the database.
#[derive(Clone)]
enum Shared {
    Server(Address),
    InProcess(Database),
}

impl Shared {
    fn connect(&self) -> Connection {
        match self {
            Shared::Server(address) => {
                Connection::new(ClientStorage::connect_to(address).unwrap()).unwrap()
            }
            Shared::InProcess(db) => db.connect().unwrap(),
        }
    }
}

/// Runs `test` over a fresh server database and a fresh in-process one.
fn both(test: impl Fn(Shared)) {
    let server = Running::start();
    test(Shared::Server(server.address.clone()));
    drop(server);
    let dir = tempfile::tempdir().unwrap();
    test(Shared::InProcess(
        Database::open(dir.path().join("db.durus")).unwrap(),
    ));
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
    both(|shared| {
        let threads: Vec<_> = (0..4)
            .map(|i| {
                let shared = shared.clone();
                std::thread::spawn(move || {
                    let conn = shared.connect();
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
        let conn = shared.connect();
        let keys = conn.root().keys().unwrap();
        assert_eq!(keys, ["client 0", "client 1", "client 2", "client 3"]);
    });
}

#[test]
fn concurrent_increments_with_transact_retries_end_exact() {
    const CLIENTS: u64 = 4;
    const EACH: u64 = 50;
    both(|shared| {
        {
            let conn = shared.connect();
            conn.root()
                .insert("counter".into(), PObject::from(PRef::new(Counter { n: 0 })))
                .unwrap();
            conn.commit().unwrap();
        }
        let threads: Vec<_> = (0..CLIENTS)
            .map(|_| {
                let shared = shared.clone();
                std::thread::spawn(move || {
                    let conn = shared.connect();
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
        let conn = shared.connect();
        assert_eq!(counter(&conn).read(|k| k.n).unwrap(), CLIENTS * EACH);
    });
}

#[test]
fn a_change_is_visible_to_another_client_after_its_commit_or_abort_and_conflicts_are_durus_s() {
    both(|shared| {
        let a = shared.connect();
        a.root()
            .insert("counter".into(), PObject::from(PRef::new(Counter { n: 1 })))
            .unwrap();
        a.commit().unwrap();
        let b = shared.connect();
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
    });
}
