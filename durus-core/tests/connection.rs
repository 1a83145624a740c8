//! Conformance of `Connection` and persistent objects with Durus (spec
//! section 9; inventory items of spec 14, `utest_connection.py` and
//! `utest_persistent.py`), on a shared in-memory storage and on a real
//! file.

mod object_support;

use durus_core::format::class_name;
use durus_core::format::record;
use durus_core::{
    Connection, Error, MemoryStorage, Oid, PObject, PRef, PersistentDict, PersistentList,
};
use object_support::{Backend, Counter, Label, Server};
use serde::{Deserialize, Serialize};

/// A persistent node with references, for reachability.
#[derive(Debug, Default, Serialize, Deserialize)]
struct Node {
    value: i64,
    next: Option<PRef<Node>>,
    children: Vec<PRef<Node>>,
}

impl durus_core::Persistent for Node {
    const CLASS_NAME: &'static str = "test.Node";
}

fn key(s: &str) -> String {
    s.to_string()
}

fn counter_at(conn: &Connection, name: &str) -> PRef<Counter> {
    conn.root()
        .get(&key(name))
        .unwrap()
        .unwrap_or_else(|| panic!("no {name} in the root"))
        .downcast::<Counter>()
        .unwrap()
}

/// A record of class `class` whose CBOR state is `state`, as another
/// program might have written it.
fn raw_record<S: Serialize>(oid: Oid, class: &str, state: &S) -> Vec<u8> {
    let mut data = Vec::new();
    class_name::write_cbor_header(&mut data, class);
    ciborium::into_writer(state, &mut data).unwrap();
    record::encode(oid, &data, &[]).unwrap()
}

/// spec 9.2 and 14 `check_connection`: an empty database gets a root
/// `PersistentDict<String, PObject>` at oid 0, committed by the
/// constructor (which counts as a transaction: the serial is then 2).
#[test]
fn an_empty_database_gets_a_root_dict_at_oid_0() {
    for backend in Backend::all() {
        let name = backend.name();
        {
            let conn = backend.connect();
            let root = conn.root();
            assert_eq!(root.oid(), Some(Oid::ROOT), "{name}");
            assert!(!root.is_ghost(), "{name}");
            assert_eq!(root.len().unwrap(), 0, "{name}");
            assert_eq!(conn.transaction_serial(), 2, "{name}");
            let stored = conn.with_storage(|s| s.load(Oid::ROOT)).unwrap();
            let rec = record::Record::decode(&stored).unwrap();
            assert_eq!(
                class_name::extract(rec.data),
                class_name::ClassName::Cbor("durus.persistent_dict.PersistentDict"),
                "{name}"
            );
            assert_eq!(rec.ref_count(), 0, "{name}");
        }
        // Reopened: the root is found, not created again, and is loaded.
        let conn = backend.connect();
        assert_eq!(conn.transaction_serial(), 1, "{name}");
        let root = conn.root();
        assert_eq!(root.oid(), Some(Oid::ROOT), "{name}");
        assert!(!root.is_ghost(), "{name}: spec 14 says the root is loaded");
        assert_eq!(conn.load_count(), 1, "{name}");
        let again = conn.get(Oid::ROOT).unwrap().unwrap();
        assert!(again.same_object(&PObject::from(root.clone())), "{name}");
        assert_eq!(again.class_name(), "durus.persistent_dict.PersistentDict");
    }
}

/// spec 9.3, 14 `check_connection`: `get(1)` on a fresh database is None.
#[test]
fn get_of_a_missing_oid_is_none() {
    for backend in Backend::all() {
        let conn = backend.connect();
        assert!(conn.get(Oid(1)).unwrap().is_none(), "{}", backend.name());
        assert!(conn.get(Oid(12345)).unwrap().is_none());
    }
}

/// spec 9.8: the transaction serial starts at 1 and every commit and
/// abort (with or without changes) increments it.
#[test]
fn transaction_serial_counts_commits_and_aborts() {
    for backend in Backend::all() {
        let conn = backend.connect();
        assert_eq!(conn.transaction_serial(), 2); // the root-creating commit
        conn.commit().unwrap();
        assert_eq!(conn.transaction_serial(), 3);
        conn.abort();
        assert_eq!(conn.transaction_serial(), 4);
        conn.root()
            .insert(key("c"), PObject::from(PRef::new(Counter::new(1))))
            .unwrap();
        conn.commit().unwrap();
        assert_eq!(conn.transaction_serial(), 5);
        counter_at(&conn, "c").write(|c| c.n = 2).unwrap();
        conn.abort();
        assert_eq!(conn.transaction_serial(), 6);
    }
}

/// spec 9.1 and 14 `check_connection`: a new object is unsaved (no oid);
/// putting it into the root changes only the root; the commit writes
/// both and they are saved; a new connection sees a ghost that loads on
/// first access.
#[test]
fn objects_go_from_unsaved_to_saved_to_ghost_and_load_on_access() {
    let server = Server::new();
    let conn = server.connect();
    let root = conn.root();
    let c = PRef::new(Counter::new(7));
    assert_eq!(c.oid(), None);
    assert!(!c.is_ghost());
    assert_eq!(c.read(|c| c.n).unwrap(), 7); // readable before any commit
    root.insert(key("c"), PObject::from(c.clone())).unwrap();
    assert_eq!(c.oid(), None, "oids are given by the commit");
    let commits = server.commit_count();
    conn.commit().unwrap();
    assert_eq!(c.oid(), Some(Oid(1)));
    assert!(!c.is_ghost());
    assert_eq!(server.commits()[commits], vec![Oid(0), Oid(1)]);

    // Reading alone changes nothing: the next commit writes nothing.
    assert_eq!(c.read(|c| c.n).unwrap(), 7);
    conn.commit().unwrap();
    assert_eq!(server.commit_count(), commits + 1);

    // Changing only the child writes only the child.
    c.write(|c| c.n = 8).unwrap();
    conn.commit().unwrap();
    assert_eq!(server.commits()[commits + 1], vec![Oid(1)]);

    // Another connection: the child is a ghost until used.
    let other = server.connect();
    let loads = other.load_count();
    let c2 = counter_at(&other, "c");
    assert!(c2.is_ghost());
    assert_eq!(c2.oid(), Some(Oid(1)));
    assert_eq!(other.load_count(), loads, "getting a handle loads nothing");
    assert_eq!(c2.read(|c| c.n).unwrap(), 8);
    assert!(!c2.is_ghost());
    assert_eq!(other.load_count(), loads + 1);
    assert_eq!(c2.read(|c| c.label.clone()).unwrap(), "counter 7");
    assert_eq!(
        other.load_count(),
        loads + 1,
        "a loaded object is not reloaded"
    );
}

/// spec 9.3: the load count counts state loads, on a real file.
#[test]
fn load_count_counts_each_state_load_once() {
    let backend = Backend::file();
    {
        let conn = backend.connect();
        for i in 0..5 {
            conn.root()
                .insert(format!("c{i}"), PObject::from(PRef::new(Counter::new(i))))
                .unwrap();
        }
        conn.commit().unwrap();
    }
    let conn = backend.connect();
    assert_eq!(conn.load_count(), 1); // the root
    let handles: Vec<PRef<Counter>> = (0..5)
        .map(|i| counter_at(&conn, &format!("c{i}")))
        .collect();
    assert!(handles.iter().all(PRef::is_ghost));
    assert_eq!(conn.load_count(), 1);
    for (i, h) in handles.iter().enumerate() {
        assert_eq!(h.read(|c| c.n).unwrap(), i as i64);
        assert_eq!(h.read(|c| c.n).unwrap(), i as i64);
    }
    assert_eq!(conn.load_count(), 6);
}

/// spec 9.5 and 14 `TestPersistent` (abort): abort drops uncommitted
/// changes; a changed object becomes a ghost and reloads its committed
/// state; new objects reached only from the aborted changes are forgotten.
#[test]
fn abort_drops_uncommitted_changes() {
    for backend in Backend::all() {
        let name = backend.name();
        {
            let conn = backend.connect();
            conn.root()
                .insert(key("c"), PObject::from(PRef::new(Counter::new(5))))
                .unwrap();
            conn.commit().unwrap();
            let c = counter_at(&conn, "c");
            c.write(|c| c.n = 6).unwrap();
            let fresh = PRef::new(Counter::new(99));
            conn.root()
                .insert(key("fresh"), PObject::from(fresh.clone()))
                .unwrap();
            assert_eq!(conn.root().len().unwrap(), 2);
            conn.abort();
            assert!(c.is_ghost(), "{name}: a changed object is ghosted by abort");
            assert!(conn.root().is_ghost(), "{name}: so is the changed root");
            assert_eq!(c.read(|c| c.n).unwrap(), 5, "{name}");
            assert_eq!(conn.root().keys().unwrap(), vec![key("c")], "{name}");
            assert_eq!(fresh.oid(), None, "{name}");
            // Abort then shrink, then reading again works (check_connection).
            conn.shrink_cache();
            assert_eq!(c.read(|c| c.n).unwrap(), 5, "{name}");
            conn.commit().unwrap();
        }
        let conn = backend.connect();
        assert_eq!(counter_at(&conn, "c").read(|c| c.n).unwrap(), 5, "{name}");
        assert!(
            conn.get(Oid(2)).unwrap().is_none(),
            "{name}: the fresh object was never written"
        );
    }
}

/// spec 9.4: new objects reachable from changed ones (at any depth, and
/// through each other) get oids in the same commit, which writes them.
#[test]
fn new_objects_reachable_from_changed_ones_are_written_in_the_same_commit() {
    for backend in Backend::all() {
        let name = backend.name();
        let oids;
        {
            let conn = backend.connect();
            let leaf = PRef::new(Node {
                value: 3,
                ..Node::default()
            });
            let mid = PRef::new(Node {
                value: 2,
                next: Some(leaf.clone()),
                children: vec![leaf.clone(), leaf.clone()],
            });
            let top = PRef::new(Node {
                value: 1,
                next: Some(mid.clone()),
                children: vec![],
            });
            // A cycle back to the top, through a new object.
            leaf.write(|l| l.next = Some(top.clone())).unwrap();
            conn.root()
                .insert(key("top"), PObject::from(top.clone()))
                .unwrap();
            conn.commit().unwrap();
            oids = [top.oid(), mid.oid(), leaf.oid()];
            assert_eq!(oids, [Some(Oid(1)), Some(Oid(2)), Some(Oid(3))], "{name}");
            if let Backend::Memory(server) = &backend {
                let last = server.commits().pop().unwrap();
                assert_eq!(last, vec![Oid(0), Oid(1), Oid(2), Oid(3)]);
            }
            let mid_rec = conn.with_storage(|s| s.load(Oid(2))).unwrap();
            let refs: Vec<Oid> = record::Record::decode(&mid_rec).unwrap().refs().collect();
            assert_eq!(refs, vec![Oid(3)], "{name}: refs are unique and sorted");
        }
        let conn = backend.connect();
        let top = conn
            .root()
            .get(&key("top"))
            .unwrap()
            .unwrap()
            .downcast::<Node>()
            .unwrap();
        let mid = top.read(|t| t.next.clone()).unwrap().unwrap();
        let leaf = mid.read(|m| m.next.clone()).unwrap().unwrap();
        assert_eq!(leaf.read(|l| l.value).unwrap(), 3, "{name}");
        let children = mid.read(|m| m.children.clone()).unwrap();
        assert!(children.iter().all(|c| c.same_object(&leaf)), "{name}");
        let back = leaf.read(|l| l.next.clone()).unwrap().unwrap();
        assert!(
            back.same_object(&top),
            "{name}: the cycle closes on the same object"
        );
    }
}

/// spec 9.4/9.5: a new object no stored object refers to at commit time
/// is not written and gets no oid.
#[test]
fn unreachable_new_objects_are_not_written() {
    for backend in Backend::all() {
        let name = backend.name();
        let conn = backend.connect();
        let orphan = PRef::new(Counter::new(1));
        let dropped = PRef::new(Counter::new(2));
        let kept = PRef::new(Counter::new(3));
        conn.root()
            .insert(key("dropped"), PObject::from(dropped.clone()))
            .unwrap();
        conn.root()
            .insert(key("kept"), PObject::from(kept.clone()))
            .unwrap();
        conn.root().remove(&key("dropped")).unwrap();
        orphan.write(|o| o.n += 1).unwrap();
        conn.commit().unwrap();
        assert_eq!(orphan.oid(), None, "{name}");
        assert_eq!(dropped.oid(), None, "{name}");
        assert_eq!(kept.oid(), Some(Oid(1)), "{name}");
        let stored: Vec<Oid> =
            conn.with_storage(|s| s.records().unwrap().map(|r| r.unwrap().0).collect());
        assert_eq!(stored, vec![Oid(0), Oid(1)], "{name}");
    }
}

/// spec 9.8: a reference from an object of one connection to an object
/// of another is refused at commit with a clear error, and nothing at all
/// is written; removing the reference lets the same changes commit.
#[test]
fn a_reference_to_another_connections_object_is_refused_and_nothing_is_written() {
    for backend in Backend::all() {
        let name = backend.name();
        let conn = backend.connect();
        let elsewhere = Connection::new(MemoryStorage::new()).unwrap();
        let foreign = PRef::new(Counter::new(1));
        elsewhere
            .root()
            .insert(key("f"), PObject::from(foreign.clone()))
            .unwrap();
        elsewhere.commit().unwrap();
        assert_eq!(foreign.oid(), Some(Oid(1)));

        conn.root()
            .insert(key("c"), PObject::from(PRef::new(Counter::new(1))))
            .unwrap();
        conn.commit().unwrap();
        let before = backend.snapshot();

        // "a" sorts first, so a new object gets an oid before the refusal.
        let fresh = PRef::new(Counter::new(2));
        conn.root()
            .insert(key("a"), PObject::from(fresh.clone()))
            .unwrap();
        conn.root()
            .insert(key("x"), PObject::from(foreign.clone()))
            .unwrap();
        counter_at(&conn, "c").write(|c| c.n = 10).unwrap();
        let err = conn.commit().unwrap_err();
        let text = err.to_string();
        assert!(text.contains("different connection"), "{name}: {text}");
        assert!(!err.is_conflict(), "{name}");
        assert_eq!(backend.snapshot(), before, "{name}: nothing was written");
        assert_eq!(fresh.oid(), None, "{name}: the new object's oid is undone");
        assert_eq!(
            foreign.oid(),
            Some(Oid(1)),
            "{name}: the foreign object is untouched"
        );
        assert_eq!(foreign.read(|f| f.n).unwrap(), 1);

        conn.root().remove(&key("x")).unwrap();
        conn.commit().unwrap();
        assert!(fresh.oid().is_some(), "{name}");
        drop(conn);
        let conn = backend.connect();
        assert_eq!(
            conn.root().keys().unwrap(),
            vec![key("a"), key("c")],
            "{name}"
        );
        assert_eq!(counter_at(&conn, "a").read(|c| c.n).unwrap(), 2, "{name}");
        assert_eq!(counter_at(&conn, "c").read(|c| c.n).unwrap(), 10, "{name}");
        // The foreign connection still works on its own data.
        assert_eq!(elsewhere.root().len().unwrap(), 1);
    }
}

/// spec 9.7: the cache size is settable and `cache_count` counts live
/// objects, ghosts included.
#[test]
fn cache_size_and_count() {
    let conn = Connection::new(MemoryStorage::new()).unwrap();
    assert_eq!(conn.cache_size(), 100_000);
    conn.set_cache_size(100);
    assert_eq!(conn.cache_size(), 100);
    assert_eq!(conn.cache_count(), 1); // the root
    let items: Vec<PRef<Counter>> = (0..10).map(|i| PRef::new(Counter::new(i))).collect();
    for (i, item) in items.iter().enumerate() {
        conn.root()
            .insert(format!("{i}"), PObject::from(item.clone()))
            .unwrap();
    }
    assert_eq!(
        conn.cache_count(),
        1,
        "new objects join the cache when stored"
    );
    conn.commit().unwrap();
    assert_eq!(conn.cache_count(), 11);
}

/// Builds root["items"] = a list of `n` new counters; returns the list.
fn store_counters(conn: &Connection, n: i64) -> PRef<PersistentList<PRef<Counter>>> {
    let list: PRef<PersistentList<PRef<Counter>>> =
        PRef::new((0..n).map(|i| PRef::new(Counter::new(i))).collect());
    conn.root()
        .insert(key("items"), PObject::from(list.clone()))
        .unwrap();
    conn.commit().unwrap();
    list
}

/// spec 9.7: shrinking ghosts the least recently used saved objects down
/// to about the cache size, including objects held only by a container's
/// state; evicted objects reload correctly.
#[test]
fn shrinking_the_cache_ghosts_least_recently_used_objects() {
    for backend in Backend::all() {
        let name = backend.name();
        let conn = backend.connect();
        conn.set_cache_size(100);
        let items: Vec<PRef<Counter>> = (0..1000).map(|i| PRef::new(Counter::new(i))).collect();
        let list: PRef<PersistentList<PRef<Counter>>> = PRef::new(items.iter().cloned().collect());
        conn.root()
            .insert(key("items"), PObject::from(list.clone()))
            .unwrap();
        conn.commit().unwrap();
        // A commit ends its transaction, then shrinks: what it wrote is
        // only the most recently used. (Durus shrinks first and keeps all
        // of it, however much; we bound memory, issue 5.) The handles here
        // keep all 1002 cells alive, so the shrink ghosted them all trying
        // to get down to 100.
        assert_eq!(conn.cache_count(), 1002, "{name}");
        assert!(items.iter().all(PRef::is_ghost), "{name}");
        // Keep handles to the five oldest only.
        let first: Vec<PRef<Counter>> = items[..5].to_vec();
        drop(items);
        let list_oid = list.oid().unwrap();
        drop(list);
        conn.shrink_cache();
        let count = conn.cache_count();
        assert!(count <= 100, "{name}: {count} objects left");
        assert!(
            first.iter().all(PRef::is_ghost),
            "{name}: old objects are ghosts"
        );
        for (i, c) in first.iter().enumerate() {
            assert_eq!(c.read(|c| c.n).unwrap(), i as i64, "{name}");
        }
        // The list was evicted too (nothing held it but the root's state).
        let list = conn
            .get(list_oid)
            .unwrap()
            .unwrap()
            .downcast::<PersistentList<PRef<Counter>>>()
            .unwrap();
        assert!(list.is_ghost(), "{name}");
        let loads = conn.load_count();
        assert_eq!(list.len().unwrap(), 1000, "{name}");
        let c500 = list.get(500).unwrap().unwrap();
        assert!(
            c500.is_ghost(),
            "{name}: an object held only by the list was evicted"
        );
        assert_eq!(c500.read(|c| c.n).unwrap(), 500, "{name}");
        assert_eq!(conn.load_count(), loads + 2, "{name}");
        // Touch every object in one transaction: the next commit keeps
        // them (accessed now), the one after shrinks again. (A cache
        // smaller than what one transaction loads would evict within it.)
        conn.set_cache_size(2_000);
        let sum: i64 = list.iter().unwrap().map(|c| c.read(|c| c.n).unwrap()).sum();
        assert_eq!(sum, 999 * 1000 / 2, "{name}");
        conn.commit().unwrap();
        assert!(conn.cache_count() > 1000, "{name}");
        conn.set_cache_size(100);
        drop((list, c500));
        conn.commit().unwrap();
        let count = conn.cache_count();
        assert!(
            count <= 110,
            "{name}: {count} objects left after the next commit"
        );
    }
}

/// spec 9.7: objects accessed in the current transaction are never
/// shrunk away, whatever the cache size.
#[test]
fn objects_accessed_in_the_current_transaction_stay_loaded() {
    let conn = Connection::new(MemoryStorage::new()).unwrap();
    let list = store_counters(&conn, 50);
    conn.set_cache_size(1);
    conn.abort(); // shrinks what the last transaction used
                  // Loads evict within a transaction once they exceed the cache size.
    conn.set_cache_size(100);
    let handles: Vec<PRef<Counter>> = list.iter().unwrap().collect();
    for h in &handles[..10] {
        h.read(|c| c.n).unwrap();
    }
    conn.set_cache_size(1);
    conn.shrink_cache();
    assert!(handles[..10].iter().all(|h| !h.is_ghost()));
    assert!(handles[10..].iter().all(PRef::is_ghost));
}

/// spec 14 `check_shrink`: with a cache of 3, repeated commits of new and
/// changed objects, then a pack, work and lose nothing.
#[test]
fn a_tiny_cache_survives_repeated_commits_and_a_pack() {
    for backend in Backend::all() {
        let name = backend.name();
        {
            let conn = backend.connect();
            conn.set_cache_size(3);
            for round in 0..10i64 {
                conn.root()
                    .insert(
                        format!("k{round}"),
                        PObject::from(PRef::new(Counter::new(round))),
                    )
                    .unwrap();
                conn.commit().unwrap();
                for k in 0..=round {
                    counter_at(&conn, &format!("k{k}"))
                        .write(|c| c.n += 100)
                        .unwrap();
                }
                conn.commit().unwrap();
            }
            conn.pack().unwrap();
            for k in 0..10i64 {
                let c = counter_at(&conn, &format!("k{k}"));
                assert_eq!(c.read(|c| c.n).unwrap(), k + 100 * (10 - k), "{name}");
            }
        }
        let conn = backend.connect();
        assert_eq!(conn.root().len().unwrap(), 10, "{name}");
        assert_eq!(
            counter_at(&conn, "k9").read(|c| c.n).unwrap(),
            109,
            "{name}"
        );
    }
}

/// spec 9.8 and 6: `Connection::pack` drops the records the root no longer
/// reaches, and objects that are still reachable keep working.
#[test]
fn pack_through_the_connection_drops_unreachable_records() {
    for backend in Backend::all() {
        let name = backend.name();
        {
            let conn = backend.connect();
            conn.root()
                .insert(key("a"), PObject::from(PRef::new(Counter::new(1))))
                .unwrap();
            conn.root()
                .insert(key("b"), PObject::from(PRef::new(Counter::new(2))))
                .unwrap();
            conn.commit().unwrap();
            let b = counter_at(&conn, "b");
            assert_eq!(b.oid(), Some(Oid(2)));
            conn.root().remove(&key("b")).unwrap();
            conn.commit().unwrap();
            let report = conn.pack().unwrap();
            if let Backend::Socket(_) = backend {
                // Protocol 1's P carries no report: the removals arrive as
                // invalidations, as the checks below show.
                assert_eq!(report, durus_core::PackReport::default());
            } else {
                assert_eq!(report.removed, vec![Oid(2)], "{name}");
                assert_eq!(report.kept, 2, "{name}");
            }
            assert!(conn.with_storage(|s| s.load(Oid(2))).is_err(), "{name}");
            // A handle to the removed object: a ghost whose record is gone.
            assert!(b.is_ghost(), "{name}");
            assert!(matches!(
                b.read(|b| b.n),
                Err(Error::ReadConflict { ref oids }) if oids == &vec![Oid(2)]
            ));
            conn.abort();
            assert_eq!(counter_at(&conn, "a").read(|c| c.n).unwrap(), 1, "{name}");
        }
        let conn = backend.connect();
        assert!(conn.get(Oid(2)).unwrap().is_none(), "{name}");
        assert_eq!(conn.root().keys().unwrap(), vec![key("a")], "{name}");
    }
}

/// Downcasting an object to a type it is not is `Error::TypeMismatch`,
/// naming both classes; the right type works.
#[test]
fn downcast_to_the_wrong_type_is_a_type_mismatch() {
    for backend in Backend::all() {
        let name = backend.name();
        {
            let conn = backend.connect();
            conn.root()
                .insert(key("c"), PObject::from(PRef::new(Counter::new(1))))
                .unwrap();
            conn.commit().unwrap();
            let obj = conn.root().get(&key("c")).unwrap().unwrap();
            // Before and after a reopen (stored class names).
            assert!(obj.is::<Counter>() && !obj.is::<Label>());
            assert!(
                matches!(
                    obj.downcast::<Label>(),
                    Err(Error::TypeMismatch { oid: Oid(1), expected: "test.Label", ref found }) if found == "test.Counter"
                ),
                "{name}"
            );
            let new = PObject::from(PRef::new(Label::default()));
            assert!(matches!(
                new.downcast::<Counter>(),
                Err(Error::TypeMismatch { .. })
            ));
        }
        let conn = backend.connect();
        let obj = conn.get(Oid(1)).unwrap().unwrap();
        let err = obj.downcast::<Label>().unwrap_err();
        assert!(matches!(err, Error::TypeMismatch { .. }), "{name}: {err}");
        assert!(err.to_string().contains("test.Counter"), "{err}");
        assert_eq!(obj.downcast::<Counter>().unwrap().read(|c| c.n).unwrap(), 1);
    }
}

/// A record whose class no registered type claims is
/// `Error::UnknownClass`, both when downcasting and when a typed ghost
/// finds such a record; so is a Python pickle record.
#[test]
fn an_unregistered_class_is_unknown_class() {
    for backend in Backend::all() {
        let name = backend.name();
        let stranger_oid;
        {
            let conn = backend.connect();
            conn.root()
                .insert(key("c"), PObject::from(PRef::new(Counter::new(1))))
                .unwrap();
            conn.commit().unwrap();
            stranger_oid = conn.with_storage(|s| s.new_oid()).unwrap();
            let stranger = raw_record(stranger_oid, "nobody.Knows", &Counter::new(3));
            // The counter's record replaced by a Python pickle.
            let pickle = record::encode(Oid(1), b"\x80\x02cshop\nItem\nq\x01.", &[]).unwrap();
            conn.with_storage(|s| {
                s.begin()?;
                s.store(stranger_oid, stranger)?;
                s.store(Oid(1), pickle)?;
                s.end(&mut |_| Ok(()))
            })
            .unwrap();
        }
        let conn = backend.connect();
        let obj = conn.get(stranger_oid).unwrap().unwrap();
        assert_eq!(obj.class_name(), "nobody.Knows");
        assert!(
            matches!(
                obj.downcast::<Counter>(),
                Err(Error::UnknownClass { ref name, oid }) if name == "nobody.Knows" && oid == stranger_oid
            ),
            "{name}"
        );
        // The root still calls oid 1 a test.Counter; its record disagrees.
        let c = counter_at(&conn, "c");
        assert!(c.is_ghost());
        let err = c.read(|c| c.n).unwrap_err();
        assert!(
            matches!(err, Error::UnknownClass { oid: Oid(1), .. }),
            "{name}: {err:?}"
        );
        assert!(err.to_string().contains("pickle"), "{err}");
        assert!(c.is_ghost(), "{name}: a failed load leaves a ghost");
    }
}

/// spec 9.3: the cache hands out one object per oid, so all handles to
/// an oid are the same object (also after it was ghosted).
#[test]
fn two_handles_to_one_oid_are_the_same_object() {
    for backend in Backend::all() {
        let name = backend.name();
        let conn = backend.connect();
        conn.root()
            .insert(key("c"), PObject::from(PRef::new(Counter::new(1))))
            .unwrap();
        conn.root()
            .insert(key("d"), PObject::from(PRef::new(Counter::new(1))))
            .unwrap();
        conn.commit().unwrap();
        let a = counter_at(&conn, "c");
        let b = counter_at(&conn, "c");
        let by_oid = conn
            .get(a.oid().unwrap())
            .unwrap()
            .unwrap()
            .downcast::<Counter>()
            .unwrap();
        assert!(a.same_object(&b) && a.same_object(&by_oid), "{name}");
        assert_eq!(a, b);
        assert!(
            !a.same_object(&counter_at(&conn, "d")),
            "{name}: equal states, other objects"
        );
        a.write(|c| c.n = 42).unwrap();
        assert_eq!(b.read(|c| c.n).unwrap(), 42, "{name}");
        conn.abort();
        assert!(a.is_ghost() && b.is_ghost());
        let c = counter_at(&conn, "c");
        assert!(c.same_object(&a), "{name}");
        assert_eq!(c.read(|c| c.n).unwrap(), 1);
        assert!(!a.is_ghost(), "{name}: loading one handle loads them all");
    }
}

/// spec 9.8 (`touch_every_reference` builds on it): touching an object
/// marks it changed, so the next commit rewrites exactly it, even if it
/// was a ghost; a missing oid is `KeyNotFound`.
#[test]
fn touch_marks_a_stored_object_changed() {
    let server = Server::new();
    {
        let conn = server.connect();
        conn.root()
            .insert(key("c"), PObject::from(PRef::new(Counter::new(1))))
            .unwrap();
        conn.root()
            .insert(key("d"), PObject::from(PRef::new(Counter::new(2))))
            .unwrap();
        conn.commit().unwrap();
    }
    let conn = server.connect();
    let commits = server.commit_count();
    conn.touch(Oid(2)).unwrap();
    conn.commit().unwrap();
    assert_eq!(server.commits()[commits], vec![Oid(2)]);
    assert!(matches!(
        conn.touch(Oid(9)),
        Err(Error::KeyNotFound(Oid(9)))
    ));
    // Touching twice, or touching something already changed, writes once.
    let c = counter_at(&conn, "c");
    c.write(|c| c.n = 5).unwrap();
    conn.touch(Oid(1)).unwrap();
    conn.touch(Oid(1)).unwrap();
    conn.touch(Oid::ROOT).unwrap();
    conn.commit().unwrap();
    assert_eq!(server.commits()[commits + 1], vec![Oid(1), Oid(0)]);
    let fresh = server.connect();
    assert_eq!(counter_at(&fresh, "c").read(|c| c.n).unwrap(), 5);
    assert_eq!(counter_at(&fresh, "d").read(|c| c.n).unwrap(), 2);
}

/// All `PersistentDict`s share one class name, so the record of a ghost
/// dict does not say which instantiation to load it as: touching such a
/// ghost is refused with a clear error (instead of decoding it as the
/// wrong type), and works once a typed handle has loaded it.
#[test]
fn touching_a_ghost_of_a_generic_container_needs_a_typed_load_first() {
    let server = Server::new();
    {
        let conn = server.connect();
        let numbers: PRef<PersistentDict<u32, String>> =
            PRef::new([(1, key("one"))].into_iter().collect());
        conn.root()
            .insert(key("numbers"), PObject::from(numbers))
            .unwrap();
        conn.commit().unwrap();
    }
    let conn = server.connect();
    let err = conn.touch(Oid(1)).unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains("several Rust types") && text.contains("u32"),
        "{text}"
    );
    let numbers = conn
        .root()
        .get(&key("numbers"))
        .unwrap()
        .unwrap()
        .downcast::<PersistentDict<u32, String>>()
        .unwrap();
    assert_eq!(numbers.get(&1).unwrap(), Some(key("one")));
    let commits = server.commit_count();
    conn.touch(Oid(1)).unwrap();
    conn.commit().unwrap();
    assert_eq!(server.commits()[commits], vec![Oid(1)]);
    let fresh = server.connect();
    let numbers = fresh
        .root()
        .get(&key("numbers"))
        .unwrap()
        .unwrap()
        .downcast::<PersistentDict<u32, String>>()
        .unwrap();
    assert_eq!(numbers.get(&1).unwrap(), Some(key("one")));
}

/// spec 14 `check_alternative_root`: a connection can be made with any
/// persistent root type; opening it as the default root is a type error.
#[test]
fn an_alternative_root_type() {
    let server = Server::new();
    {
        let conn = Connection::new_with_root::<Counter>(server.client()).unwrap();
        let root = conn.root_as::<Counter>().unwrap();
        assert_eq!(root.oid(), Some(Oid::ROOT));
        root.write(|c| c.n = 4).unwrap();
        conn.commit().unwrap();
    }
    let again = Connection::new_with_root::<Counter>(server.client()).unwrap();
    assert_eq!(
        again.root_as::<Counter>().unwrap().read(|c| c.n).unwrap(),
        4
    );
    assert!(matches!(
        again.root_as::<Label>(),
        Err(Error::TypeMismatch { .. })
    ));
    assert!(matches!(
        Connection::new(server.client()),
        Err(Error::TypeMismatch { .. })
    ));
}

/// spec 9.1: mutation through `write` marks the object changed even when
/// it was a ghost (it loads first); the change survives a reopen.
#[test]
fn writing_a_ghost_loads_it_then_marks_it_changed() {
    for backend in Backend::all() {
        let name = backend.name();
        {
            let conn = backend.connect();
            conn.root()
                .insert(key("c"), PObject::from(PRef::new(Counter::new(1))))
                .unwrap();
            conn.commit().unwrap();
        }
        {
            let conn = backend.connect();
            let c = counter_at(&conn, "c");
            assert!(c.is_ghost());
            c.write(|c| c.n += 1).unwrap();
            assert!(!c.is_ghost());
            conn.commit().unwrap();
        }
        let conn = backend.connect();
        assert_eq!(counter_at(&conn, "c").read(|c| c.n).unwrap(), 2, "{name}");
    }
}

/// spec 6.4 (oid reuse, made safe): after a pack, a file storage gives
/// the oids of removed objects to new ones. A handle still held to a
/// removed object must not load, overwrite or be stored as the new object
/// that now has its oid: it is a read conflict to use, and an error to
/// refer to; the new object is untouched.
#[test]
fn a_removed_objects_handle_cannot_reach_the_object_that_reuses_its_oid() {
    let backend = Backend::file();
    let conn = backend.connect();
    let old = PRef::new(Counter::new(1));
    conn.root()
        .insert(key("a"), PObject::from(old.clone()))
        .unwrap();
    conn.root()
        .insert(key("k"), PObject::from(PRef::new(Counter::new(3))))
        .unwrap();
    conn.commit().unwrap();
    assert_eq!(old.read(|c| c.n).unwrap(), 1);
    conn.root().remove(&key("a")).unwrap();
    conn.commit().unwrap();
    assert_eq!(conn.pack().unwrap().removed, vec![Oid(1)]);
    let new = PRef::new(Counter::new(2));
    conn.root()
        .insert(key("n"), PObject::from(new.clone()))
        .unwrap();
    conn.commit().unwrap();
    assert_eq!(new.oid(), Some(Oid(1)), "the storage reused the oid");

    assert!(matches!(old.read(|c| c.n), Err(Error::ReadConflict { .. })));
    assert!(matches!(
        old.write(|c| c.n = 99),
        Err(Error::ReadConflict { .. })
    ));
    conn.root()
        .insert(key("a"), PObject::from(old.clone()))
        .unwrap();
    let err = conn.commit().unwrap_err();
    assert!(err.to_string().contains("removed"), "{err}");
    conn.abort();
    let by_oid = conn
        .get(Oid(1))
        .unwrap()
        .unwrap()
        .downcast::<Counter>()
        .unwrap();
    assert!(by_oid.same_object(&new));
    assert_eq!(new.read(|c| c.n).unwrap(), 2);
    drop((conn, old, new, by_oid));
    let conn = backend.connect();
    assert_eq!(counter_at(&conn, "n").read(|c| c.n).unwrap(), 2);
    assert_eq!(conn.root().keys().unwrap(), vec![key("k"), key("n")]);
}
