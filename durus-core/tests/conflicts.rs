//! Conflicts between clients (spec 9.6; spec 14 `utest_connection.py`
//! `TestConnectionClientStorage`): two connections over one shared
//! storage that tells each client what the others committed, the way
//! Durus's storage server does (see `object_support`).

mod object_support;

use std::cell::Cell;

use durus_core::object::TRANSACT_ATTEMPTS;
use durus_core::{Connection, Error, Oid, PObject, PRef, Persistent};
use object_support::{root_get, Counter, Server};
use serde::{Deserialize, Serialize};

fn key(s: &str) -> String {
    s.to_string()
}

fn counter(conn: &Connection, name: &str) -> PRef<Counter> {
    root_get(conn, name)
}

fn n(c: &PRef<Counter>) -> i64 {
    c.read(|c| c.n).unwrap()
}

fn set(c: &PRef<Counter>, value: i64) {
    c.write(|c| c.n = value).unwrap();
}

/// A server whose root holds counters "a" = 1, "b" = 2, "c" = 3, "d" = 4
/// (oids 1 to 4).
fn server_with_counters() -> Server {
    let server = Server::new();
    let conn = server.connect();
    for (i, name) in ["a", "b", "c", "d"].into_iter().enumerate() {
        conn.root()
            .insert(
                key(name),
                PObject::from(PRef::new(Counter::new(i as i64 + 1))),
            )
            .unwrap();
    }
    conn.commit().unwrap();
    assert_eq!(counter(&conn, "d").oid(), Some(Oid(4)));
    server
}

fn conflict_oids(result: durus_core::Result<()>) -> Vec<Oid> {
    match result {
        Err(Error::Conflict { oids }) => oids,
        other => panic!("expected a write conflict, got {other:?}"),
    }
}

/// spec 9.6 (WriteConflictError; `check_fine_conflict` second half): read
/// A, another client commits A, commit a change to B: a conflict naming
/// A, and nothing is written. Commit then refuses until `abort()`, after
/// which A shows the other client's value and the change to B is gone.
#[test]
fn reading_an_object_another_client_then_changed_is_a_write_conflict() {
    let server = server_with_counters();
    let c1 = server.connect();
    let c2 = server.connect();
    let (a1, b1) = (counter(&c1, "a"), counter(&c1, "b"));
    assert_eq!(n(&a1), 1);
    let a2 = counter(&c2, "a");
    set(&a2, 10);
    c2.commit().unwrap();

    set(&b1, 20);
    let commits = server.commit_count();
    let err = c1.commit().unwrap_err();
    assert!(err.is_conflict(), "{err}");
    assert_eq!(conflict_oids(Err(err)), vec![Oid(1)]);
    assert_eq!(
        server.commit_count(),
        commits,
        "a conflicting commit writes nothing"
    );

    // Still conflicted: commit refuses, with or without new changes.
    let err = c1.commit().unwrap_err();
    assert!(err.to_string().contains("abort"), "{err}");
    assert!(!err.is_conflict());
    set(&b1, 21);
    assert!(c1.commit().is_err());
    assert_eq!(server.commit_count(), commits);

    let serial = c1.transaction_serial();
    c1.abort();
    assert_eq!(c1.transaction_serial(), serial + 1);
    assert!(a1.is_ghost() && b1.is_ghost());
    assert_eq!(n(&a1), 10);
    assert_eq!(n(&b1), 2, "the conflicting change was dropped");
    set(&b1, a1.read(|a| a.n).unwrap() * 2);
    c1.commit().unwrap();
    let c3 = server.connect();
    assert_eq!(n(&counter(&c3, "b")), 20);
}

/// spec 9.6: both clients write B; the second to commit conflicts.
#[test]
fn both_writing_one_object_conflicts_for_the_second_committer() {
    let server = server_with_counters();
    let c1 = server.connect();
    let c2 = server.connect();
    let b1 = counter(&c1, "b");
    let b2 = counter(&c2, "b");
    set(&b1, 100);
    set(&b2, 200);
    c2.commit().unwrap();
    assert_eq!(conflict_oids(c1.commit()), vec![Oid(2)]);
    c1.abort();
    assert_eq!(n(&b1), 200);
}

/// spec 9.6: a write without a read in this transaction (the object was
/// loaded earlier) of an object another client changed conflicts too,
/// because writing counts as an access.
#[test]
fn a_blind_write_of_an_object_another_client_changed_conflicts() {
    let server = server_with_counters();
    let c1 = server.connect();
    let c2 = server.connect();
    let a1 = counter(&c1, "a");
    assert_eq!(n(&a1), 1);
    c1.commit().unwrap(); // a new transaction: A loaded, not accessed
    set(&counter(&c2, "a"), 5);
    c2.commit().unwrap();
    a1.write(|a| a.label = "mine".into()).unwrap();
    assert_eq!(conflict_oids(c1.commit()), vec![Oid(1)]);
    c1.abort();
    assert_eq!(n(&a1), 5);
    assert_eq!(a1.read(|a| a.label.clone()).unwrap(), "counter 1");
}

/// spec 14 `check_conflict`: b adds a key to its root, c commits a change
/// to the root: b's commit conflicts and b keeps its own (uncommitted)
/// view until abort, which ghosts the root; then b sees c's keys.
#[test]
fn concurrent_changes_to_the_root_conflict() {
    let server = Server::new();
    let b = server.connect();
    let c = server.connect();
    b.root()
        .insert(key("b"), PObject::from(PRef::new(Counter::new(1))))
        .unwrap();
    c.root()
        .insert(key("c"), PObject::from(PRef::new(Counter::new(2))))
        .unwrap();
    c.commit().unwrap();
    assert_eq!(conflict_oids(b.commit()), vec![Oid::ROOT]);
    assert_eq!(
        b.root().keys().unwrap(),
        vec![key("b")],
        "b's data until abort"
    );
    let serial = b.transaction_serial();
    b.abort();
    assert_eq!(b.transaction_serial(), serial + 1);
    assert!(b.root().is_ghost());
    c.root()
        .insert(key("c2"), PObject::from(PRef::new(Counter::new(3))))
        .unwrap();
    c.commit().unwrap();
    b.commit().unwrap(); // nothing changed: just catches up
    assert_eq!(b.root().keys().unwrap(), vec![key("c"), key("c2")]);
    assert_eq!(n(&counter(&b, "c2")), 3);
}

/// spec 9.6 (`check_fine_conflict`): another client changed A, but this
/// transaction never touched A: the commit succeeds, A is ghosted and
/// reloads the new value. Once A is read, the next change by the other
/// client does conflict.
#[test]
fn an_object_not_touched_in_this_transaction_does_not_conflict() {
    let server = server_with_counters();
    let c1 = server.connect();
    let c2 = server.connect();
    let (a1, b1) = (counter(&c1, "a"), counter(&c1, "b"));
    assert_eq!(n(&a1), 1);
    c1.commit().unwrap(); // A loaded, in an earlier transaction
    set(&counter(&c2, "a"), 11);
    c2.commit().unwrap();
    set(&b1, 22);
    c1.commit().unwrap();
    assert!(a1.is_ghost(), "A was invalidated and ghosted");
    assert_eq!(n(&a1), 11);

    set(&counter(&c2, "a"), 12);
    c2.commit().unwrap();
    set(&b1, 23);
    assert_eq!(conflict_oids(c1.commit()), vec![Oid(1)]);
    c1.abort();
    assert_eq!(n(&a1), 12);
    assert_eq!(n(&b1), 22);
}

/// A persistent holder, so that an object can be reachable without any
/// loaded state referring to it.
#[derive(Serialize, Deserialize)]
struct Holder {
    inner: PRef<Counter>,
}

impl Persistent for Holder {
    const CLASS_NAME: &'static str = "test.Holder";
}

/// A server with root = {"b": Counter 2 (oid 1), "h": Holder (oid 2) →
/// Counter 1 (oid 3)}.
fn server_with_held_counter() -> Server {
    let server = Server::new();
    let conn = server.connect();
    conn.root()
        .insert(key("b"), PObject::from(PRef::new(Counter::new(2))))
        .unwrap();
    let holder = PRef::new(Holder {
        inner: PRef::new(Counter::new(1)),
    });
    conn.root().insert(key("h"), PObject::from(holder)).unwrap();
    conn.commit().unwrap();
    assert!(server.record(Oid(3)).is_some());
    server
}

/// spec 14 `conflict_from_invalid_removable_previously_accessed`: an
/// object accessed in this transaction stays in the cache after the
/// application drops every handle to it, so a change by another client
/// is still detected.
#[test]
fn an_accessed_object_conflicts_even_after_its_handle_is_dropped() {
    let server = server_with_held_counter();
    let c1 = server.connect();
    let c2 = server.connect();
    let count = c1.cache_count(); // the root and its two ghosts
    {
        let a = c1
            .get(Oid(3))
            .unwrap()
            .unwrap()
            .downcast::<Counter>()
            .unwrap();
        assert_eq!(n(&a), 1);
    }
    assert_eq!(c1.cache_count(), count + 1, "kept by the cache alone");
    let a2 = c2
        .get(Oid(3))
        .unwrap()
        .unwrap()
        .downcast::<Counter>()
        .unwrap();
    set(&a2, 10);
    c2.commit().unwrap();
    set(&counter(&c1, "b"), 20);
    assert_eq!(conflict_oids(c1.commit()), vec![Oid(3)]);
}

/// spec 14 `no_conflict_from_invalid_removable_not_previously_accessed`:
/// an object evicted from the cache and not accessed since causes no
/// conflict.
#[test]
fn an_evicted_object_not_accessed_since_does_not_conflict() {
    let server = server_with_held_counter();
    let c1 = server.connect();
    let c2 = server.connect();
    c1.set_cache_size(1);
    {
        let a = c1
            .get(Oid(3))
            .unwrap()
            .unwrap()
            .downcast::<Counter>()
            .unwrap();
        assert_eq!(n(&a), 1);
    }
    let count = c1.cache_count();
    c1.commit().unwrap();
    c1.shrink_cache();
    assert_eq!(c1.cache_count(), count - 1, "the unheld object was evicted");
    let a2 = c2
        .get(Oid(3))
        .unwrap()
        .unwrap()
        .downcast::<Counter>()
        .unwrap();
    set(&a2, 10);
    c2.commit().unwrap();
    set(&counter(&c1, "b"), 20);
    c1.commit().unwrap();
    let a = c1
        .get(Oid(3))
        .unwrap()
        .unwrap()
        .downcast::<Counter>()
        .unwrap();
    assert_eq!(n(&a), 10);
}

/// spec 9.4: a commit with nothing changed never conflicts, even if an
/// object read in the transaction was changed by another client; it
/// catches up, so the new value is visible afterwards.
#[test]
fn a_commit_without_changes_never_conflicts_and_catches_up() {
    let server = server_with_counters();
    let c1 = server.connect();
    let c2 = server.connect();
    let a1 = counter(&c1, "a");
    assert_eq!(n(&a1), 1);
    set(&counter(&c2, "a"), 7);
    c2.commit().unwrap();
    assert_eq!(n(&a1), 1, "nothing changes until commit or abort");
    c1.commit().unwrap();
    assert!(a1.is_ghost());
    assert_eq!(n(&a1), 7);
    // abort catches up the same way.
    set(&counter(&c2, "a"), 8);
    c2.commit().unwrap();
    c1.abort();
    assert_eq!(n(&a1), 8);
}

/// spec 9.4: a conflicting commit forgets the oids it gave to new objects
/// and writes nothing; after abort the same new object can be stored.
#[test]
fn a_conflicting_commit_gives_new_objects_no_oids() {
    let server = server_with_counters();
    let c1 = server.connect();
    let c2 = server.connect();
    let before = server.records();
    let fresh = PRef::new(Counter::new(50));
    c1.root()
        .insert(key("fresh"), PObject::from(fresh.clone()))
        .unwrap();
    set(&counter(&c2, "a"), 9);
    c2.root().remove(&key("d")).unwrap();
    c2.commit().unwrap();
    let after_c2 = server.records();
    assert_ne!(before, after_c2);
    assert_eq!(conflict_oids(c1.commit()), vec![Oid::ROOT]);
    assert_eq!(fresh.oid(), None);
    assert_eq!(server.records(), after_c2, "nothing written by c1");
    c1.abort();
    c1.root()
        .insert(key("fresh"), PObject::from(fresh.clone()))
        .unwrap();
    c1.commit().unwrap();
    assert!(fresh.oid().is_some());
    assert_eq!(
        c1.root().keys().unwrap(),
        vec![key("a"), key("b"), key("c"), key("fresh")]
    );
    assert_eq!(n(&counter(&c1, "a")), 9);
}

/// spec 9.6 (ReadConflictError a): loading a ghost that another client
/// changed, when the catch-up shows that an object accessed in this
/// transaction was changed too, is a read conflict naming the oid being
/// loaded. Loading other objects still works; commit refuses until
/// abort; then everything shows the new values.
#[test]
fn loading_a_ghost_after_an_accessed_object_was_invalidated_is_a_read_conflict() {
    let server = server_with_counters();
    let c1 = server.connect();
    let c2 = server.connect();
    let (a1, c1c, d1) = (counter(&c1, "a"), counter(&c1, "c"), counter(&c1, "d"));
    assert_eq!(n(&a1), 1);
    assert!(c1c.is_ghost());
    set(&counter(&c2, "a"), 10);
    set(&counter(&c2, "c"), 30);
    c2.commit().unwrap();

    let err = c1c.read(|c| c.n).unwrap_err();
    assert!(
        matches!(err, Error::ReadConflict { ref oids } if oids == &vec![Oid(3)]),
        "{err:?}"
    );
    assert!(err.is_conflict());
    assert_eq!(n(&d1), 4, "loading an unaffected object works");
    assert_eq!(
        n(&a1),
        1,
        "the conflicting object keeps its state until abort"
    );
    set(&d1, 40);
    let err = c1.commit().unwrap_err();
    assert!(err.to_string().contains("abort"), "{err}");
    c1.abort();
    assert_eq!((n(&a1), n(&c1c), n(&d1)), (10, 30, 4));
}

/// spec 9.6 [sharp edge], made a conflict: a blind write to an object
/// another client changed, then a load that catches up, is a read
/// conflict (Durus fails an assertion here instead).
#[test]
fn a_blind_write_then_a_conflicting_load_is_a_read_conflict() {
    let server = server_with_counters();
    let c1 = server.connect();
    let c2 = server.connect();
    let (a1, c1c) = (counter(&c1, "a"), counter(&c1, "c"));
    assert_eq!(n(&a1), 1);
    c1.commit().unwrap();
    set(&counter(&c2, "a"), 10);
    set(&counter(&c2, "c"), 30);
    c2.commit().unwrap();
    a1.write(|a| a.label = "blind".into()).unwrap();
    let err = c1c.read(|c| c.n).unwrap_err();
    assert!(
        matches!(err, Error::ReadConflict { ref oids } if oids == &vec![Oid(3)]),
        "{err:?}"
    );
    assert!(c1.commit().is_err());
    c1.abort();
    assert_eq!((n(&a1), n(&c1c)), (10, 30));
    assert_eq!(a1.read(|a| a.label.clone()).unwrap(), "counter 1");
}

/// spec 9.6 (ReadConflictError a, benign case): if no object accessed in
/// this transaction was changed, loading a changed ghost is retried
/// transparently and gives the new value; `get` of an uncached oid does
/// the same.
#[test]
fn loading_a_changed_ghost_without_a_conflict_retries_transparently() {
    let server = server_with_counters();
    let c1 = server.connect();
    let c2 = server.connect();
    let c1c = counter(&c1, "c");
    c1.commit().unwrap(); // the root read above is now in an old transaction
    set(&counter(&c2, "c"), 30);
    let fresh = PRef::new(Counter::new(5));
    c2.root()
        .insert(key("e"), PObject::from(fresh.clone()))
        .unwrap();
    c2.commit().unwrap();
    let e_oid = fresh.oid().unwrap();
    // c1 never saw oid 5: get loads it although the server flags it.
    let e = c1.get(e_oid).unwrap().expect("the new object is there");
    assert_eq!(n(&e.downcast::<Counter>().unwrap()), 5);
    assert_eq!(n(&c1c), 30);
    set(&counter(&c1, "d"), 44);
    c1.commit().unwrap();
}

/// spec 9.6: `get` of an uncached oid that another client changed, when
/// an object accessed in this transaction was changed too, is a read
/// conflict (as for loading a ghost).
#[test]
fn get_of_a_changed_oid_after_an_accessed_object_was_invalidated_is_a_read_conflict() {
    let server = server_with_held_counter();
    let c1 = server.connect();
    let c2 = server.connect();
    let b1 = counter(&c1, "b");
    assert_eq!(n(&b1), 2);
    set(&counter(&c2, "b"), 20);
    let a2 = c2
        .get(Oid(3))
        .unwrap()
        .unwrap()
        .downcast::<Counter>()
        .unwrap();
    set(&a2, 10);
    c2.commit().unwrap();
    let err = c1.get(Oid(3)).unwrap_err();
    assert!(
        matches!(err, Error::ReadConflict { ref oids } if oids == &vec![Oid(3)]),
        "{err:?}"
    );
    c1.abort();
    let a1 = c1
        .get(Oid(3))
        .unwrap()
        .unwrap()
        .downcast::<Counter>()
        .unwrap();
    assert_eq!((n(&a1), n(&b1)), (10, 20));
}

/// spec 9.3 and 9.6 (ReadConflictError b): a ghost whose record another
/// client's pack removed is a read conflict (not a missing key).
#[test]
fn a_ghost_whose_record_was_packed_away_is_a_read_conflict() {
    let server = server_with_counters();
    let c1 = server.connect();
    let c2 = server.connect();
    let (a1, d1) = (counter(&c1, "a"), counter(&c1, "d"));
    assert_eq!(n(&a1), 1);
    assert!(d1.is_ghost());
    c1.commit().unwrap();
    c2.root().remove(&key("a")).unwrap();
    c2.root().remove(&key("d")).unwrap();
    c2.commit().unwrap();
    let report = c2.pack().unwrap();
    assert_eq!(report.removed, vec![Oid(1), Oid(4)]);
    c1.abort(); // catches up: A is ghosted
    assert!(a1.is_ghost());
    for (h, oid) in [(&a1, Oid(1)), (&d1, Oid(4))] {
        let err = h.read(|c| c.n).unwrap_err();
        assert!(
            matches!(err, Error::ReadConflict { ref oids } if oids == &vec![oid]),
            "{err:?}"
        );
    }
    assert_eq!(c1.root().keys().unwrap(), vec![key("b"), key("c")]);
}

/// DESIGN `transact`: after a conflict it aborts and runs the closure
/// again (so the closure may run more than once), then commits.
#[test]
fn transact_retries_after_a_conflict() {
    let server = server_with_counters();
    let c1 = server.connect();
    let c2 = server.connect();
    let attempts = Cell::new(0);
    let result = c1.transact(|conn| {
        attempts.set(attempts.get() + 1);
        let a = n(&counter(conn, "a"));
        if attempts.get() == 1 {
            // Another client changes A under our feet.
            set(&counter(&c2, "a"), 100);
            c2.commit().unwrap();
        }
        set(&counter(conn, "b"), a + 1);
        Ok(a)
    });
    assert_eq!(result.unwrap(), 100);
    assert_eq!(attempts.get(), 2);
    let c3 = server.connect();
    assert_eq!(n(&counter(&c3, "b")), 101);
}

/// DESIGN `transact`: it gives up after a bounded number of attempts,
/// returning the last conflict, and leaves nothing half-done.
#[test]
fn transact_gives_up_after_a_bounded_number_of_attempts() {
    let server = server_with_counters();
    let c1 = server.connect();
    let c2 = server.connect();
    let attempts = Cell::new(0);
    let err = c1
        .transact(|conn| {
            attempts.set(attempts.get() + 1);
            let a = n(&counter(conn, "a"));
            set(&counter(&c2, "a"), a + 1000);
            c2.commit().unwrap();
            set(&counter(conn, "b"), a);
            Ok(())
        })
        .unwrap_err();
    assert!(err.is_conflict(), "{err}");
    assert_eq!(attempts.get(), TRANSACT_ATTEMPTS);
    const { assert!(TRANSACT_ATTEMPTS > 1) };
    // The connection is usable again: the failed attempt was aborted.
    set(&counter(&c1, "c"), 33);
    c1.commit().unwrap();
    assert_eq!(n(&counter(&c1, "b")), 2);
}

/// DESIGN `transact`: an error that is not a conflict is returned at once,
/// after an abort.
#[test]
fn transact_returns_other_errors_without_retrying() {
    let server = server_with_counters();
    let c1 = server.connect();
    let attempts = Cell::new(0);
    let err = c1
        .transact(|conn| {
            attempts.set(attempts.get() + 1);
            set(&counter(conn, "a"), -1);
            Err::<(), _>(Error::OutOfRange { index: 3, len: 1 })
        })
        .unwrap_err();
    assert!(matches!(err, Error::OutOfRange { index: 3, len: 1 }));
    assert_eq!(attempts.get(), 1);
    assert_eq!(n(&counter(&c1, "a")), 1, "the attempt's change was aborted");
}
