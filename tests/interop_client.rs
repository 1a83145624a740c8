//! Our `ClientStorage` against the real Python Durus 4.3 storage server
//! (wire protocol 1, spec sections 7 and 8; conflicts, spec 9.6).
//!
//! Run with `PEER_VENV=$PWD/target/durus-peer-venv cargo test --features
//! interop --test interop_client`. Each test starts its own
//! `durus -s --file DB` (TCP on a free port, or a unix socket) on an empty
//! database and kills it at the end. A missing venv or a venv without
//! Durus 4.3 fails every test with a message saying how to create it:
//! these tests never skip.

mod peer_venv;

use std::collections::BTreeSet;
use std::fs::File;
use std::net::{TcpListener, TcpStream};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::thread;
use std::time::{Duration, Instant};

use durus_core::format::record;
use durus_core::storage::ClientStorage;
use durus_core::{Connection, Error, Oid, PObject, PRef, PackReport, Persistent, Storage};
use serde::{Deserialize, Serialize};
use tempfile::TempDir;

/// How long a server may take to start listening, and a pack to finish.
const DEADLINE: Duration = Duration::from_secs(60);

/// Every client socket gets this timeout, so a server that stops answering
/// fails the test instead of hanging it.
const SOCKET_TIMEOUT: Duration = Duration::from_secs(60);

// ------------------------------------------------------------ the server

/// The `durus` script of the Durus 4.3 venv, checked once.
fn durus_script() -> &'static Path {
    static SCRIPT: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    match SCRIPT.get_or_init(find_durus) {
        Ok(path) => path,
        Err(message) => panic!("{message}"),
    }
}

fn find_durus() -> Result<PathBuf, String> {
    let script = peer_venv::durus43_venv()?.join("bin/durus");
    if !script.exists() {
        return Err(format!(
            "the client interop tests run the Python Durus 4.3 server, but {} does not exist; {}",
            script.display(),
            peer_venv::HOW
        ));
    }
    Ok(script)
}

/// Where a test server listens.
enum Listen {
    Tcp(u16),
    Unix(PathBuf),
}

/// A Python `durus -s` on an empty database file; killed and reaped on
/// drop (its log is printed if the test is failing).
struct PythonServer {
    child: Child,
    listen: Listen,
    log: PathBuf,
    _dir: TempDir,
}

impl PythonServer {
    /// A server on a free TCP port of 127.0.0.1.
    fn tcp() -> PythonServer {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        Self::start(Listen::Tcp(port))
    }

    /// A server on a unix socket in its temp dir.
    fn unix() -> PythonServer {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("durus.sock");
        Self::start_in(dir, Listen::Unix(path))
    }

    fn start(listen: Listen) -> PythonServer {
        Self::start_in(tempfile::tempdir().expect("temp dir"), listen)
    }

    fn start_in(dir: TempDir, listen: Listen) -> PythonServer {
        let script = durus_script();
        let db = dir.path().join("test.durus");
        let log = dir.path().join("server.log");
        let log_file = File::create(&log).expect("server log file");
        let mut command = Command::new(script);
        command
            .arg("-s")
            .arg("--file")
            .arg(&db)
            .env("PYTHONDONTWRITEBYTECODE", "1")
            .stdin(Stdio::null())
            .stdout(log_file.try_clone().expect("log file handle"))
            .stderr(log_file);
        match &listen {
            Listen::Tcp(port) => command.arg("--port").arg(port.to_string()),
            Listen::Unix(path) => command.arg("--address").arg(path),
        };
        let child = command
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", script.display()));
        let mut server = PythonServer {
            child,
            listen,
            log,
            _dir: dir,
        };
        server.wait_until_listening();
        server
    }

    fn wait_until_listening(&mut self) {
        let start = Instant::now();
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!(
                    "the Python durus server exited ({status}) before listening:\n{}",
                    self.log_text()
                );
            }
            let up = match &self.listen {
                Listen::Tcp(port) => TcpStream::connect(("127.0.0.1", *port)).is_ok(),
                Listen::Unix(path) => UnixStream::connect(path).is_ok(),
            };
            if up {
                return;
            }
            if start.elapsed() > DEADLINE {
                panic!(
                    "the Python durus server did not listen on {} within {DEADLINE:?}:\n{}",
                    self.address(),
                    self.log_text()
                );
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_else(|e| format!("(no log: {e})"))
    }

    /// The address as users write it.
    fn address(&self) -> String {
        match &self.listen {
            Listen::Tcp(port) => format!("127.0.0.1:{port}"),
            Listen::Unix(path) => format!("unix:{}", path.display()),
        }
    }

    /// A new client storage (with a socket timeout).
    fn storage(&self) -> ClientStorage {
        storage_at(&self.address())
    }

    /// A new connection over a new client storage.
    fn connection(&self) -> Connection {
        Connection::new(self.storage()).expect("a connection to the Python server")
    }
}

impl Drop for PythonServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if thread::panicking() {
            eprintln!(
                "--- log of the Python durus server at {}\n{}",
                self.address(),
                self.log_text()
            );
        }
    }
}

fn storage_at(address: &str) -> ClientStorage {
    let storage = ClientStorage::connect(address)
        .unwrap_or_else(|e| panic!("cannot connect to the Python server at {address}: {e}"));
    storage
        .set_timeout(Some(SOCKET_TIMEOUT))
        .expect("a socket timeout");
    storage
}

// ------------------------------------------------------------ objects

/// A persistent counter.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
struct Counter {
    n: i64,
}

impl Persistent for Counter {
    const CLASS_NAME: &'static str = "test.Counter";
}

fn counter(n: i64) -> PObject {
    PObject::from(PRef::new(Counter { n }))
}

fn counter_at(conn: &Connection, name: &str) -> PRef<Counter> {
    conn.root()
        .get(&name.to_string())
        .unwrap()
        .unwrap_or_else(|| panic!("no {name:?} in the root"))
        .downcast::<Counter>()
        .unwrap()
}

fn value(c: &PRef<Counter>) -> i64 {
    c.read(|c| c.n).unwrap()
}

fn rec(oid: u64, data: &[u8], refs: &[u64]) -> Vec<u8> {
    let refs: Vec<Oid> = refs.iter().map(|&r| Oid(r)).collect();
    record::encode(Oid(oid), data, &refs).unwrap()
}

fn commit(storage: &mut ClientStorage, records: &[&Vec<u8>]) {
    storage.begin().unwrap();
    for r in records {
        storage
            .store(record::oid_of(r).unwrap(), r.to_vec())
            .unwrap();
    }
    storage.end(&mut |_| Ok(())).unwrap();
}

fn oid_set(oids: &[Oid]) -> BTreeSet<u64> {
    oids.iter().map(|o| o.get()).collect()
}

// ------------------------------------------------------------ storage level

/// spec 14, utest_client_storage.py `check_client_storage` (run over TCP
/// and a unix socket): oids 0, 1, 2 in order from a new server; a missing
/// oid is `KeyNotFound`; commits load back byte-identical; the committer's
/// sync is empty; the walk from the root skips the unreachable oid 1;
/// another client's loads of oids committed since its last sync are read
/// conflicts (twice: loads do not clear them) until its sync returns
/// exactly those oids.
fn check_client_storage(server: &PythonServer, other_address: &str) {
    let mut s1 = server.storage();
    let mut s2 = storage_at(other_address);
    assert!(matches!(
        s1.load(Oid::ROOT),
        Err(Error::KeyNotFound(Oid::ROOT))
    ));
    s1.begin().unwrap();
    let oids: Vec<Oid> = (0..3).map(|_| s1.new_oid().unwrap()).collect();
    assert_eq!(oids, vec![Oid(0), Oid(1), Oid(2)]);
    let root = rec(0, b"the root", &[]);
    commit(&mut s1, &[&root]);
    assert_eq!(s1.load(Oid(0)).unwrap(), root);
    assert_eq!(s1.sync().unwrap(), vec![]);

    let one = rec(1, b"unreachable", &[]);
    commit(&mut s1, &[&one]);
    let walked: Vec<(Oid, Vec<u8>)> = s1.records().unwrap().map(|r| r.unwrap()).collect();
    assert_eq!(walked, vec![(Oid(0), root.clone())]);
    assert_eq!(
        s1.bulk_load(&[Oid(0), Oid(1)]).unwrap(),
        vec![root.clone(), one.clone()]
    );
    assert!(matches!(
        s1.bulk_load(&[Oid(0), Oid(1), Oid(2)]),
        Err(Error::KeyNotFound(Oid(2)))
    ));

    for _ in 0..2 {
        match s2.load(Oid(0)) {
            Err(Error::ReadConflict { oids }) => assert_eq!(oids, vec![Oid(0)]),
            other => panic!("expected a read conflict, got {other:?}"),
        }
    }
    assert_eq!(oid_set(&s2.sync().unwrap()), BTreeSet::from([0, 1]));
    assert_eq!(s2.load(Oid(0)).unwrap(), root);
    assert_eq!(s2.sync().unwrap(), vec![]);

    // spec 14 `close`: the server drops us and keeps serving the others.
    s2.close().unwrap();
    assert!(matches!(s2.load(Oid(0)), Err(Error::Closed)));
    assert!(matches!(s2.sync(), Err(Error::Closed)));
    assert_eq!(s1.load(Oid(1)).unwrap(), one);
}

#[test]
fn tcp_handshake_new_oids_loads_commits_and_invalidations_match_durus() {
    let server = PythonServer::tcp();
    let other = server.address();
    check_client_storage(&server, &other);
}

#[test]
fn unix_socket_handshake_new_oids_loads_commits_and_invalidations_match_durus() {
    let server = PythonServer::unix();
    let Listen::Unix(path) = &server.listen else {
        unreachable!("a unix server")
    };
    // The second client uses the bare path form of the address.
    let other = path.display().to_string();
    assert!(other.contains('/'));
    check_client_storage(&server, &other);
}

/// spec 8 and 15: Durus 4.3's `bulk_load` raises on the first `K`/`I` and
/// leaves the other replies in the socket; ours reads them all, returns
/// the first error, and the connection stays in step.
#[test]
fn bulk_load_of_existing_and_missing_oids_fails_and_the_connection_stays_usable() {
    let server = PythonServer::tcp();
    let mut s = server.storage();
    let mut other = server.storage();
    s.begin().unwrap();
    assert_eq!(
        (s.new_oid().unwrap(), s.new_oid().unwrap()),
        (Oid(0), Oid(1))
    );
    let root = rec(0, b"root", &[1]);
    let one = rec(1, b"one", &[]);
    commit(&mut s, &[&root, &one]);

    assert_eq!(
        s.bulk_load(&[Oid(0), Oid(1)]).unwrap(),
        vec![root.clone(), one.clone()]
    );
    assert!(matches!(
        s.bulk_load(&[Oid(0), Oid(7777), Oid(1), Oid(8888)]),
        Err(Error::KeyNotFound(Oid(7777)))
    ));
    assert_eq!(s.sync().unwrap(), vec![]);
    assert_eq!(s.load(Oid(1)).unwrap(), one);
    assert_eq!(
        s.bulk_load(&[Oid(1), Oid(0)]).unwrap(),
        vec![one.clone(), root.clone()]
    );
    let walked: Vec<Oid> = s.records().unwrap().map(|r| r.unwrap().0).collect();
    assert_eq!(walked, vec![Oid(0), Oid(1)]);

    // The other client has not synced since the commit: `I` for both.
    match other.bulk_load(&[Oid(1), Oid(0)]) {
        Err(Error::ReadConflict { oids }) => assert_eq!(oids, vec![Oid(1)]),
        result => panic!("expected a read conflict, got {result:?}"),
    }
    assert_eq!(oid_set(&other.sync().unwrap()), BTreeSet::from([0, 1]));
    assert_eq!(other.bulk_load(&[Oid(0), Oid(1)]).unwrap(), vec![root, one]);
}

/// spec 7.3 `P` and 6.1: the server packs in the background and answers
/// at once (an empty report); the removed oids reach every client as
/// invalidations, after which they are gone.
#[test]
fn a_pack_through_the_server_removes_unreachable_records_and_invalidates_them() {
    let server = PythonServer::tcp();
    let mut s = server.storage();
    let mut other = server.storage();
    s.begin().unwrap();
    for expected in 0..3 {
        assert_eq!(s.new_oid().unwrap(), Oid(expected));
    }
    let (root, one, garbage) = (
        rec(0, b"root", &[1]),
        rec(1, b"one", &[]),
        rec(2, b"x", &[]),
    );
    commit(&mut s, &[&root, &one, &garbage]);
    assert_eq!(oid_set(&other.sync().unwrap()), BTreeSet::from([0, 1, 2]));

    assert_eq!(s.pack().unwrap(), PackReport::default());
    let start = Instant::now();
    let mut seen = BTreeSet::new();
    while !seen.contains(&2) {
        assert!(
            start.elapsed() < DEADLINE,
            "the pack did not invalidate oid 2 within {DEADLINE:?} (saw {seen:?})"
        );
        seen.extend(oid_set(&s.sync().unwrap()));
        thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(seen, BTreeSet::from([2]), "only the removed oid");
    assert!(matches!(s.load(Oid(2)), Err(Error::KeyNotFound(Oid(2)))));
    assert_eq!(s.load(Oid(1)).unwrap(), one);
    assert_eq!(oid_set(&other.sync().unwrap()), BTreeSet::from([2]));
    assert!(matches!(
        other.load(Oid(2)),
        Err(Error::KeyNotFound(Oid(2)))
    ));
}

// ------------------------------------------------------------ connections

/// spec 9.2: a connection over an empty server database creates the root
/// (oid 0); FAQ / spec 9.5: another client sees a commit only after its
/// own `commit()` or `abort()`.
#[test]
fn a_second_client_sees_a_commit_only_after_its_own_commit_or_abort() {
    let server = PythonServer::tcp();
    let c1 = server.connection();
    assert_eq!(c1.root().oid(), Some(Oid::ROOT));
    let c2 = server.connection();
    assert_eq!(c2.root().len().unwrap(), 0);

    c1.root().insert("a".to_string(), counter(1)).unwrap();
    c1.commit().unwrap();
    assert!(c2.root().get(&"a".to_string()).unwrap().is_none());
    c2.abort();
    let a2 = counter_at(&c2, "a");
    assert_eq!(value(&a2), 1);

    counter_at(&c1, "a").write(|c| c.n = 2).unwrap();
    c1.commit().unwrap();
    assert_eq!(value(&a2), 1, "still the state of c2's transaction");
    c2.commit().unwrap();
    assert_eq!(value(&a2), 2);

    // A third client, from scratch, sees the last commit.
    assert_eq!(value(&counter_at(&server.connection(), "a")), 2);
}

/// spec 9.6 WriteConflictError: both clients read A, one commits a
/// change, the other's commit conflicts on A and writes nothing; after
/// `abort()` it sees the change and its retry succeeds. spec 8: the new
/// oid of the abandoned commit goes back to the pool, so the retry's new
/// object gets it again.
#[test]
fn a_write_conflict_between_two_clients_then_abort_and_retry_succeeds() {
    let server = PythonServer::tcp();
    let c1 = server.connection(); // oid batch 0..=31: root 0, then a = 1
    c1.root().insert("a".to_string(), counter(1)).unwrap();
    c1.commit().unwrap();
    let a1 = counter_at(&c1, "a");
    assert_eq!(a1.oid(), Some(Oid(1)));

    let c2 = server.connection();
    let a2 = counter_at(&c2, "a");
    assert_eq!((value(&a1), value(&a2)), (1, 1));
    a1.write(|c| c.n = 10).unwrap();
    c1.commit().unwrap();

    a2.write(|c| c.n = 20).unwrap();
    c2.root().insert("new".to_string(), counter(99)).unwrap();
    let err = c2.commit().unwrap_err();
    assert!(err.is_conflict(), "{err}");
    match err {
        Error::Conflict { oids } => assert_eq!(oids, vec![Oid(1)]),
        other => panic!("expected a write conflict, got {other:?}"),
    }
    c2.abort();
    assert_eq!(value(&a2), 10, "the other client's commit");
    assert!(!c2.root().contains_key(&"new".to_string()).unwrap());

    a2.write(|c| c.n += 10).unwrap();
    let new = PRef::new(Counter { n: 99 });
    c2.root()
        .insert("new".to_string(), PObject::from(new.clone()))
        .unwrap();
    c2.commit().unwrap();
    // c2's first batch is 32..=63; 32 went to the abandoned new object
    // and came back.
    assert_eq!(new.oid(), Some(Oid(32)));

    c1.abort();
    assert_eq!(value(&a1), 20);
    assert_eq!(value(&counter_at(&c1, "new")), 99);
}

/// spec 9.6 ReadConflictError (a): loading a ghost that another client
/// changed after our last sync, when the catch-up shows that an object
/// this transaction read changed too, names the oid being loaded. After
/// `abort()` both show the other client's values.
/// Counters a = 1 and b = 2 committed by a first client; a second client
/// has read a and holds b as a ghost.
fn second_client_read_a_not_b(
    server: &PythonServer,
) -> (Connection, Connection, PRef<Counter>, PRef<Counter>) {
    let c1 = server.connection();
    c1.root().insert("a".to_string(), counter(1)).unwrap();
    c1.root().insert("b".to_string(), counter(2)).unwrap();
    c1.commit().unwrap();
    let c2 = server.connection();
    let (a2, b2) = (counter_at(&c2, "a"), counter_at(&c2, "b"));
    assert!(b2.is_ghost());
    assert_eq!(value(&a2), 1);
    (c1, c2, a2, b2)
}

#[test]
fn loading_a_ghost_changed_since_the_last_sync_is_a_read_conflict() {
    let server = PythonServer::tcp();
    let (c1, c2, a2, b2) = second_client_read_a_not_b(&server);
    let (a1, b1) = (counter_at(&c1, "a"), counter_at(&c1, "b"));
    a1.write(|c| c.n = 10).unwrap();
    b1.write(|c| c.n = 20).unwrap();
    c1.commit().unwrap();

    match b2.read(|c| c.n) {
        Err(Error::ReadConflict { oids }) => assert_eq!(oids, vec![b2.oid().unwrap()]),
        other => panic!("expected a read conflict, got {other:?}"),
    }
    c2.abort();
    assert_eq!((value(&a2), value(&b2)), (10, 20));
}

/// spec 9.6 (verified case): a ghost changed elsewhere whose catch-up
/// reveals no conflict loads transparently (the retry after sync).
#[test]
fn a_ghost_changed_elsewhere_loads_transparently_when_nothing_read_changed() {
    let server = PythonServer::tcp();
    let (c1, c2, _a2, b2) = second_client_read_a_not_b(&server);
    counter_at(&c1, "b").write(|c| c.n = 20).unwrap();
    c1.commit().unwrap();
    assert!(b2.is_ghost());
    assert_eq!(value(&b2), 20);
    c2.commit().unwrap();
}

/// FAQ / `transact`: N clients each incrementing one counter M times,
/// concurrently, lose no update.
#[test]
fn three_clients_incrementing_one_counter_twenty_times_each_reach_sixty() {
    const CLIENTS: usize = 3;
    const INCREMENTS: usize = 20;
    let server = PythonServer::tcp();
    let setup = server.connection();
    setup
        .root()
        .insert("counter".to_string(), counter(0))
        .unwrap();
    setup.commit().unwrap();
    let address = server.address();

    thread::scope(|scope| {
        for _ in 0..CLIENTS {
            scope.spawn(|| {
                let conn = Connection::new(storage_at(&address)).unwrap();
                let c = counter_at(&conn, "counter");
                for _ in 0..INCREMENTS {
                    // `transact` gives up after TRANSACT_ATTEMPTS conflicts;
                    // under contention that can happen, so try again
                    // (every round somebody's commit succeeds).
                    loop {
                        match conn.transact(|_| c.write(|c| c.n += 1)) {
                            Ok(()) => break,
                            Err(e) if e.is_conflict() => continue,
                            Err(e) => panic!("increment failed: {e}"),
                        }
                    }
                }
            });
        }
    });

    setup.abort();
    assert_eq!(
        value(&counter_at(&setup, "counter")),
        (CLIENTS * INCREMENTS) as i64
    );
    assert_eq!(
        value(&counter_at(&server.connection(), "counter")),
        (CLIENTS * INCREMENTS) as i64
    );
}

/// spec 8: oids come from the server 32 at a time (`M` 0x20), smallest
/// first. With another client's batch in between, 33 new objects in one
/// commit take the 31 left of the first batch and 2 from a third one.
#[test]
fn thirty_three_new_objects_in_one_commit_use_two_oid_batches() {
    let server = PythonServer::tcp();
    let c1 = server.connection(); // batch 0..=31, root 0
    let mut other = server.storage();
    assert_eq!(other.new_oid().unwrap(), Oid(32)); // batch 32..=63

    let names: Vec<String> = (0..33).map(|i| format!("c{i:02}")).collect();
    for (i, name) in names.iter().enumerate() {
        c1.root().insert(name.clone(), counter(i as i64)).unwrap();
    }
    c1.commit().unwrap();
    let assigned: BTreeSet<u64> = names
        .iter()
        .map(|name| counter_at(&c1, name).oid().unwrap().get())
        .collect();
    let expected: BTreeSet<u64> = (1..=31).chain([64, 65]).collect();
    assert_eq!(assigned, expected);

    let c3 = server.connection();
    for (i, name) in names.iter().enumerate() {
        assert_eq!(value(&counter_at(&c3, name)), i as i64);
    }
}
