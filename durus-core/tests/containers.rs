//! PersistentDict, PersistentList and PersistentSet through their handle
//! methods (spec 10.1–10.3; spec 14 `utest_persistent_dict.py`,
//! `utest_persistent_list.py`, `utest_persistent_set.py`): every change is
//! committed and read back after a reopen, and random operation sequences
//! match the std collections.

mod object_support;

use std::collections::{BTreeMap, BTreeSet};

use durus_core::{
    Connection, Error, FileStorageOptions, PRef, PersistentDict, PersistentList, PersistentSet,
};
use object_support::{root_get as at, root_store as store, Backend, Counter, Server};
use proptest::prelude::*;

fn key(s: &str) -> String {
    s.to_string()
}

/// Runs `change` on the container in a fresh connection, commits, and
/// checks `expect` on it in another fresh connection.
fn change_then_check<T: durus_core::Persistent>(
    backend: &Backend,
    name: &str,
    change: impl FnOnce(&PRef<T>),
    expect: impl FnOnce(&PRef<T>),
) {
    {
        let conn = backend.connect();
        let c = at::<T>(&conn, name);
        change(&c);
        conn.commit().unwrap();
    }
    let conn = backend.connect();
    expect(&at::<T>(&conn, name));
}

type Dict = PersistentDict<String, i64>;

/// spec 10.1 / `utest_persistent_dict.py`: insert, replace, get (with a
/// missing key), contains, len, keys/values/iter in key order, remove,
/// clear, each committed and reopened.
#[test]
fn dict_operations_persist() {
    for backend in Backend::all() {
        let name = backend.name();
        {
            let conn = backend.connect();
            let d = store(&conn, "d", Dict::new());
            assert!(d.is_empty().unwrap());
            assert_eq!(d.insert(key("b"), 2).unwrap(), None);
            assert_eq!(d.insert(key("a"), 1).unwrap(), None);
            conn.commit().unwrap();
        }
        change_then_check::<Dict>(
            &backend,
            "d",
            |d| {
                assert_eq!(d.len().unwrap(), 2, "{name}");
                assert_eq!(d.get(&key("a")).unwrap(), Some(1));
                assert_eq!(d.get(&key("zz")).unwrap(), None);
                assert_eq!(d.insert(key("a"), 10).unwrap(), Some(1), "replace");
                d.insert(key("c"), 3).unwrap();
            },
            |d| {
                assert_eq!(
                    d.keys().unwrap(),
                    vec![key("a"), key("b"), key("c")],
                    "{name}"
                );
                assert_eq!(d.values().unwrap(), vec![10, 2, 3]);
                assert_eq!(
                    d.iter().unwrap().collect::<Vec<_>>(),
                    vec![(key("a"), 10), (key("b"), 2), (key("c"), 3)]
                );
                assert!(d.contains_key(&key("b")).unwrap());
                assert!(!d.contains_key(&key("x")).unwrap());
            },
        );
        change_then_check::<Dict>(
            &backend,
            "d",
            |d| {
                assert_eq!(d.remove(&key("b")).unwrap(), Some(2));
                assert_eq!(d.remove(&key("b")).unwrap(), None);
            },
            |d| assert_eq!(d.keys().unwrap(), vec![key("a"), key("c")], "{name}"),
        );
        change_then_check::<Dict>(
            &backend,
            "d",
            |d| {
                // Iterating is over a snapshot: changing meanwhile is safe.
                for (k, v) in d.iter().unwrap() {
                    d.insert(format!("{k}{k}"), v * 2).unwrap();
                }
            },
            |d| {
                assert_eq!(
                    d.iter().unwrap().collect::<Vec<_>>(),
                    vec![
                        (key("a"), 10),
                        (key("aa"), 20),
                        (key("c"), 3),
                        (key("cc"), 6)
                    ],
                    "{name}"
                )
            },
        );
        change_then_check::<Dict>(
            &backend,
            "d",
            |d| d.clear().unwrap(),
            |d| {
                assert!(d.is_empty().unwrap(), "{name}");
                assert_eq!(d.len().unwrap(), 0);
            },
        );
    }
}

/// A dict whose values are persistent references: the referenced objects
/// are stored with the dict and come back as the same objects.
#[test]
fn dict_of_references_persists() {
    for backend in Backend::all() {
        let name = backend.name();
        {
            let conn = backend.connect();
            let shared = PRef::new(Counter::new(1));
            let d: PRef<PersistentDict<u32, PRef<Counter>>> = store(
                &conn,
                "d",
                [
                    (1, shared.clone()),
                    (2, shared.clone()),
                    (3, PRef::new(Counter::new(3))),
                ]
                .into_iter()
                .collect(),
            );
            assert!(shared.oid().is_some(), "{name}");
            d.get(&3).unwrap().unwrap().write(|c| c.n = 33).unwrap();
            conn.commit().unwrap();
        }
        let conn = backend.connect();
        let d = at::<PersistentDict<u32, PRef<Counter>>>(&conn, "d");
        let one = d.get(&1).unwrap().unwrap();
        assert!(one.same_object(&d.get(&2).unwrap().unwrap()), "{name}");
        assert_eq!(one.read(|c| c.n).unwrap(), 1);
        assert_eq!(
            d.get(&3).unwrap().unwrap().read(|c| c.n).unwrap(),
            33,
            "{name}"
        );
    }
}

/// spec 10.1: only changes mark a dict changed (Rust's `remove` of a
/// missing key writes nothing, unlike Python's `pop`).
#[test]
fn dict_reads_and_missing_removals_write_nothing() {
    let server = Server::new();
    let conn = server.connect();
    let d = store(&conn, "d", Dict::new());
    d.insert(key("a"), 1).unwrap();
    conn.commit().unwrap();
    let commits = server.commit_count();
    d.get(&key("a")).unwrap();
    d.keys().unwrap();
    assert_eq!(d.remove(&key("nope")).unwrap(), None);
    conn.commit().unwrap();
    assert_eq!(server.commit_count(), commits);
    d.remove(&key("a")).unwrap();
    conn.commit().unwrap();
    assert_eq!(server.commits()[commits], vec![d.oid().unwrap()]);
}

type List = PersistentList<i64>;

/// spec 10.2 / `utest_persistent_list.py`: push, get (past the end is
/// None), set, insert (at the end too), remove, pop, iter, clear, each
/// committed and reopened.
#[test]
fn list_operations_persist() {
    for backend in Backend::all() {
        let name = backend.name();
        {
            let conn = backend.connect();
            let l = store(&conn, "l", List::new());
            for i in 0..5 {
                l.push(i).unwrap();
            }
            conn.commit().unwrap();
        }
        change_then_check::<List>(
            &backend,
            "l",
            |l| {
                assert_eq!(l.len().unwrap(), 5, "{name}");
                assert_eq!(l.get(4).unwrap(), Some(4));
                assert_eq!(l.get(5).unwrap(), None);
                assert_eq!(l.set(0, 100).unwrap(), 0);
                l.insert(1, 50).unwrap();
                l.insert(6, 60).unwrap(); // == len: appends
                assert_eq!(l.remove(3).unwrap(), 2);
                assert_eq!(l.pop().unwrap(), Some(60));
            },
            |l| {
                assert_eq!(
                    l.iter().unwrap().collect::<Vec<_>>(),
                    vec![100, 50, 1, 3, 4],
                    "{name}"
                );
            },
        );
        change_then_check::<List>(
            &backend,
            "l",
            |l| l.clear().unwrap(),
            |l| {
                assert!(l.is_empty().unwrap(), "{name}");
                assert_eq!(l.pop().unwrap(), None);
            },
        );
    }
}

/// spec 10.2: an index past the end is `Error::OutOfRange` with the
/// index and length, and changes nothing (nothing is written).
#[test]
fn out_of_range_list_indexes_are_errors_and_change_nothing() {
    let server = Server::new();
    let conn = server.connect();
    let l = store(&conn, "l", [1i64, 2, 3].into_iter().collect::<List>());
    let commits = server.commit_count();
    assert!(matches!(
        l.set(3, 0),
        Err(Error::OutOfRange { index: 3, len: 3 })
    ));
    assert!(matches!(
        l.remove(7),
        Err(Error::OutOfRange { index: 7, len: 3 })
    ));
    assert!(matches!(
        l.insert(4, 0),
        Err(Error::OutOfRange { index: 4, len: 3 })
    ));
    let err = l.set(usize::MAX, 0).unwrap_err();
    assert!(err.to_string().contains("out of range"), "{err}");
    conn.commit().unwrap();
    assert_eq!(
        server.commit_count(),
        commits,
        "failed operations wrote nothing"
    );
    assert_eq!(l.iter().unwrap().collect::<Vec<_>>(), vec![1, 2, 3]);
    let empty = store(&conn, "e", List::new());
    assert!(matches!(
        empty.remove(0),
        Err(Error::OutOfRange { index: 0, len: 0 })
    ));
    empty.insert(0, 9).unwrap();
    assert_eq!(empty.get(0).unwrap(), Some(9));
}

type Set = PersistentSet<String>;

/// spec 10.3 / `utest_persistent_set.py`: insert (reporting whether it
/// was new), contains, remove, iteration in order, clear, each committed
/// and reopened; re-adding or removing a missing element writes nothing.
#[test]
fn set_operations_persist() {
    for backend in Backend::all() {
        let name = backend.name();
        {
            let conn = backend.connect();
            let s = store(&conn, "s", Set::new());
            assert!(s.insert(key("pear")).unwrap());
            assert!(s.insert(key("apple")).unwrap());
            assert!(!s.insert(key("pear")).unwrap());
            conn.commit().unwrap();
        }
        change_then_check::<Set>(
            &backend,
            "s",
            |s| {
                assert_eq!(s.len().unwrap(), 2, "{name}");
                assert!(s.contains(&key("apple")).unwrap());
                assert!(!s.contains(&key("fig")).unwrap());
                assert!(s.remove(&key("apple")).unwrap());
                assert!(!s.remove(&key("apple")).unwrap());
                assert!(s.insert(key("fig")).unwrap());
            },
            |s| {
                assert_eq!(
                    s.iter().unwrap().collect::<Vec<_>>(),
                    vec![key("fig"), key("pear")],
                    "{name}"
                )
            },
        );
        change_then_check::<Set>(
            &backend,
            "s",
            |s| s.clear().unwrap(),
            |s| assert!(s.is_empty().unwrap(), "{name}"),
        );
    }
    let server = Server::new();
    let conn = server.connect();
    let s = store(&conn, "s", [key("x")].into_iter().collect::<Set>());
    let commits = server.commit_count();
    assert!(!s.insert(key("x")).unwrap());
    assert!(!s.remove(&key("y")).unwrap());
    conn.commit().unwrap();
    assert_eq!(server.commit_count(), commits);
}

/// Containers nest: a list of dicts of sets, each its own object.
#[test]
fn nested_containers_are_separate_objects() {
    for backend in Backend::all() {
        let name = backend.name();
        {
            let conn = backend.connect();
            let set: PRef<Set> = PRef::new([key("s")].into_iter().collect());
            let dict: PRef<PersistentDict<String, PRef<Set>>> =
                PRef::new([(key("k"), set)].into_iter().collect());
            store(
                &conn,
                "l",
                [dict].into_iter().collect::<PersistentList<_>>(),
            );
        }
        {
            let conn = backend.connect();
            let l = at::<PersistentList<PRef<PersistentDict<String, PRef<Set>>>>>(&conn, "l");
            let set = l.get(0).unwrap().unwrap().get(&key("k")).unwrap().unwrap();
            set.insert(key("t")).unwrap();
            let loads = conn.load_count();
            conn.commit().unwrap();
            assert_eq!(conn.load_count(), loads);
        }
        let conn = backend.connect();
        let l = at::<PersistentList<PRef<PersistentDict<String, PRef<Set>>>>>(&conn, "l");
        let set = l.get(0).unwrap().unwrap().get(&key("k")).unwrap().unwrap();
        assert_eq!(
            set.iter().unwrap().collect::<Vec<_>>(),
            vec![key("s"), key("t")],
            "{name}"
        );
    }
}

#[test]
fn borrowing_views_visit_stored_contents_in_place_and_in_order() {
    for backend in Backend::all() {
        let name = backend.name();
        {
            let conn = backend.connect();
            store(
                &conn,
                "d",
                [(2, key("b")), (1, key("a"))]
                    .into_iter()
                    .collect::<PersistentDict<i32, String>>(),
            );
            store(
                &conn,
                "l",
                [3, 1, 2].into_iter().collect::<PersistentList<i32>>(),
            );
            store(
                &conn,
                "s",
                [3, 1, 2].into_iter().collect::<PersistentSet<i32>>(),
            );
        }
        let conn = backend.connect();
        let d = at::<PersistentDict<i32, String>>(&conn, "d");
        let l = at::<PersistentList<i32>>(&conn, "l");
        let s = at::<PersistentSet<i32>>(&conn, "s");
        let entries = d
            .read(|d| d.iter().map(|(k, v)| format!("{k}{v}")).collect::<Vec<_>>())
            .unwrap();
        assert_eq!(entries, ["1a", "2b"], "{name}");
        assert_eq!(
            d.read(|d| (d.len(), d.get(&2).cloned(), d.contains_key(&3)))
                .unwrap(),
            (2, Some(key("b")), false)
        );
        assert_eq!(
            l.read(|l| l.as_slice().to_vec()).unwrap(),
            [3, 1, 2],
            "{name}"
        );
        assert_eq!(
            l.read(|l| (l.len(), l.get(1).copied())).unwrap(),
            (3, Some(1))
        );
        assert_eq!(
            s.read(|s| s.iter().copied().collect::<Vec<_>>()).unwrap(),
            [1, 2, 3]
        );
        assert!(s.read(|s| s.contains(&2) && !s.is_empty()).unwrap());

        let mut seen = Vec::new();
        d.for_each(|k, v| {
            seen.push((*k, v.clone()));
            Ok(())
        })
        .unwrap();
        assert_eq!(seen, [(1, key("a")), (2, key("b"))], "{name}");
        let mut sum = 0;
        l.for_each(|x| {
            sum += x;
            Ok(())
        })
        .unwrap();
        s.for_each(|x| {
            sum += 10 * x;
            Ok(())
        })
        .unwrap();
        assert_eq!(sum, 66, "{name}");
        // Nothing was changed, so a commit writes nothing.
        let loads = conn.load_count();
        conn.commit().unwrap();
        assert_eq!(conn.load_count(), loads);
    }
}

#[test]
fn for_each_stops_at_the_first_error_and_refuses_changes_to_its_container() {
    let conn = Backend::memory().connect();
    let l = store(
        &conn,
        "l",
        [1, 2, 3].into_iter().collect::<PersistentList<i32>>(),
    );
    let mut visited = Vec::new();
    let err = l
        .for_each(|x| {
            visited.push(*x);
            if *x == 2 {
                Err(Error::OutOfRange { index: 2, len: 0 })
            } else {
                Ok(())
            }
        })
        .unwrap_err();
    assert!(matches!(err, Error::OutOfRange { index: 2, .. }), "{err}");
    assert_eq!(visited, [1, 2]);
    // Changing the list it walks is refused, not a panic or a torn walk.
    let err = l.for_each(|_| l.push(9)).unwrap_err();
    assert!(err.to_string().contains("already borrowed"), "{err}");
    assert_eq!(l.iter().unwrap().collect::<Vec<_>>(), [1, 2, 3]);
}

// ---- model-based tests ------------------------------------------------

/// What the model test does between operations on the container.
#[derive(Debug, Clone)]
enum Step<Op> {
    Op(Op),
    Commit,
    Abort,
    Reopen,
}

fn steps<Op: std::fmt::Debug + Clone>(
    op: impl Strategy<Value = Op>,
) -> impl Strategy<Value = Vec<Step<Op>>> {
    proptest::collection::vec(
        prop_oneof![
            12 => op.prop_map(Step::Op),
            2 => Just(Step::Commit),
            1 => Just(Step::Abort),
            1 => Just(Step::Reopen),
        ],
        0..40,
    )
}

/// A database for a model test: in memory (a fresh connection per
/// reopen) or a file without fsync (fast enough for many cases).
struct Db {
    backend: Backend,
    file: Option<std::path::PathBuf>,
}

impl Db {
    fn new(file: bool) -> Db {
        let backend = if file {
            Backend::file()
        } else {
            Backend::memory()
        };
        let file = match &backend {
            Backend::File { path, .. } => Some(path.clone()),
            Backend::Memory(_) | Backend::Socket(_) => None,
        };
        Db { backend, file }
    }

    fn connect(&self) -> Connection {
        match &self.file {
            Some(path) => {
                Connection::new(FileStorageOptions::new().fsync(false).open(path).unwrap()).unwrap()
            }
            None => self.backend.connect(),
        }
    }
}

/// Runs `steps` on a container stored under "c" and on a model; after
/// every step the container's contents (`read`) equal the model's.
fn run_model<T, Op, M>(
    file: bool,
    initial: T,
    steps: &[Step<Op>],
    apply: impl Fn(&PRef<T>, &mut M, &Op) -> Result<(), TestCaseError>,
    read: impl Fn(&PRef<T>) -> M,
) -> Result<(), TestCaseError>
where
    T: durus_core::Persistent,
    Op: std::fmt::Debug,
    M: Clone + PartialEq + std::fmt::Debug + Default,
{
    let db = Db::new(file);
    let mut conn = db.connect();
    let mut c = store(&conn, "c", initial);
    let mut model = M::default();
    let mut committed = model.clone();
    for step in steps {
        match step {
            Step::Op(op) => apply(&c, &mut model, op)?,
            Step::Commit => {
                conn.commit().unwrap();
                committed = model.clone();
            }
            Step::Abort => {
                conn.abort();
                model = committed.clone();
            }
            Step::Reopen => {
                conn.commit().unwrap();
                committed = model.clone();
                drop(c);
                drop(conn);
                conn = db.connect();
                c = at::<T>(&conn, "c");
                prop_assert!(c.is_ghost());
            }
        }
        prop_assert_eq!(&read(&c), &model, "after {:?}", step);
    }
    conn.commit().unwrap();
    drop(c);
    drop(conn);
    let conn = db.connect();
    prop_assert_eq!(
        &read(&at::<T>(&conn, "c")),
        &model,
        "after the final reopen"
    );
    Ok(())
}

#[derive(Debug, Clone)]
enum DictOp {
    Insert(u32, String),
    Remove(u32),
    Get(u32),
    Clear,
}

fn dict_op() -> impl Strategy<Value = DictOp> {
    prop_oneof![
        6 => (0u32..20, "[a-z]{0,6}").prop_map(|(k, v)| DictOp::Insert(k, v)),
        3 => (0u32..20).prop_map(DictOp::Remove),
        2 => (0u32..20).prop_map(DictOp::Get),
        1 => Just(DictOp::Clear),
    ]
}

fn dict_model(file: bool, steps: &[Step<DictOp>]) -> Result<(), TestCaseError> {
    run_model(
        file,
        PersistentDict::<u32, String>::new(),
        steps,
        |d, m: &mut BTreeMap<u32, String>, op| {
            match op {
                DictOp::Insert(k, v) => {
                    prop_assert_eq!(d.insert(*k, v.clone()).unwrap(), m.insert(*k, v.clone()))
                }
                DictOp::Remove(k) => prop_assert_eq!(d.remove(k).unwrap(), m.remove(k)),
                DictOp::Get(k) => {
                    prop_assert_eq!(d.get(k).unwrap(), m.get(k).cloned());
                    prop_assert_eq!(d.contains_key(k).unwrap(), m.contains_key(k));
                }
                DictOp::Clear => {
                    d.clear().unwrap();
                    m.clear();
                }
            }
            prop_assert_eq!(d.len().unwrap(), m.len());
            prop_assert_eq!(d.is_empty().unwrap(), m.is_empty());
            Ok(())
        },
        |d| d.iter().unwrap().collect(),
    )
}

#[derive(Debug, Clone)]
enum ListOp {
    Push(i64),
    Pop,
    Set(usize, i64),
    Insert(usize, i64),
    Remove(usize),
    Get(usize),
    Clear,
}

fn list_op() -> impl Strategy<Value = ListOp> {
    prop_oneof![
        5 => any::<i64>().prop_map(ListOp::Push),
        2 => Just(ListOp::Pop),
        2 => (0usize..12, any::<i64>()).prop_map(|(i, v)| ListOp::Set(i, v)),
        2 => (0usize..12, any::<i64>()).prop_map(|(i, v)| ListOp::Insert(i, v)),
        2 => (0usize..12).prop_map(ListOp::Remove),
        2 => (0usize..12).prop_map(ListOp::Get),
        1 => Just(ListOp::Clear),
    ]
}

/// The model's answer for an index operation: `OutOfRange` when `index`
/// is not below `limit`.
fn check_index<T: std::fmt::Debug + PartialEq>(
    got: durus_core::Result<T>,
    index: usize,
    len: usize,
    limit: usize,
    expected: impl FnOnce() -> T,
) -> Result<(), TestCaseError> {
    if index < limit {
        prop_assert_eq!(got.unwrap(), expected());
    } else {
        prop_assert!(
            matches!(got, Err(Error::OutOfRange { index: i, len: l }) if i == index && l == len),
            "expected OutOfRange"
        );
    }
    Ok(())
}

fn list_model(file: bool, steps: &[Step<ListOp>]) -> Result<(), TestCaseError> {
    run_model(
        file,
        List::new(),
        steps,
        |l, m: &mut Vec<i64>, op| {
            let len = m.len();
            match op {
                ListOp::Push(v) => {
                    l.push(*v).unwrap();
                    m.push(*v);
                }
                ListOp::Pop => prop_assert_eq!(l.pop().unwrap(), m.pop()),
                ListOp::Set(i, v) => check_index(l.set(*i, *v), *i, len, len, || {
                    std::mem::replace(&mut m[*i], *v)
                })?,
                ListOp::Insert(i, v) => {
                    check_index(l.insert(*i, *v), *i, len, len + 1, || m.insert(*i, *v))?
                }
                ListOp::Remove(i) => check_index(l.remove(*i), *i, len, len, || m.remove(*i))?,
                ListOp::Get(i) => prop_assert_eq!(l.get(*i).unwrap(), m.get(*i).copied()),
                ListOp::Clear => {
                    l.clear().unwrap();
                    m.clear();
                }
            }
            prop_assert_eq!(l.len().unwrap(), m.len());
            Ok(())
        },
        |l| l.iter().unwrap().collect(),
    )
}

#[derive(Debug, Clone)]
enum SetOp {
    Insert(String),
    Remove(String),
    Contains(String),
    Clear,
}

fn set_op() -> impl Strategy<Value = SetOp> {
    let element = "[a-d]{0,2}|\\PC{0,8}";
    prop_oneof![
        5 => element.prop_map(SetOp::Insert),
        3 => element.prop_map(SetOp::Remove),
        2 => element.prop_map(SetOp::Contains),
        1 => Just(SetOp::Clear),
    ]
}

fn set_model(file: bool, steps: &[Step<SetOp>]) -> Result<(), TestCaseError> {
    run_model(
        file,
        Set::new(),
        steps,
        |s, m: &mut BTreeSet<String>, op| {
            match op {
                SetOp::Insert(v) => {
                    prop_assert_eq!(s.insert(v.clone()).unwrap(), m.insert(v.clone()))
                }
                SetOp::Remove(v) => prop_assert_eq!(s.remove(v).unwrap(), m.remove(v)),
                SetOp::Contains(v) => prop_assert_eq!(s.contains(v).unwrap(), m.contains(v)),
                SetOp::Clear => {
                    s.clear().unwrap();
                    m.clear();
                }
            }
            prop_assert_eq!(s.len().unwrap(), m.len());
            Ok(())
        },
        |s| s.iter().unwrap().collect(),
    )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(96))]

    #[test]
    fn dict_matches_a_btreemap(steps in steps(dict_op())) {
        dict_model(false, &steps)?;
    }

    #[test]
    fn list_matches_a_vec(steps in steps(list_op())) {
        list_model(false, &steps)?;
    }

    #[test]
    fn set_matches_a_btreeset(steps in steps(set_op())) {
        set_model(false, &steps)?;
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(16))]

    #[test]
    fn dict_matches_a_btreemap_on_a_file(steps in steps(dict_op())) {
        dict_model(true, &steps)?;
    }

    #[test]
    fn list_matches_a_vec_on_a_file(steps in steps(list_op())) {
        list_model(true, &steps)?;
    }

    #[test]
    fn set_matches_a_btreeset_on_a_file(steps in steps(set_op())) {
        set_model(true, &steps)?;
    }
}
