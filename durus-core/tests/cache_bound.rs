//! Bounded memory within one transaction, prefetching through bulk loads,
//! and the crawler (spec 9.3 `get_crawler`, 9.7 cache), over a
//! `MemoryStorage` and a `FileStorage`, each shared by connections through
//! a `SharedStorage` (which tells each connection what the others
//! committed, as Durus's server does).
//!
//! The cache may ghost objects in the middle of a transaction, even ones
//! the transaction read, so that one transaction can read more objects
//! than fit in memory; these tests pin that it stays within a small
//! multiple of the cache size, that conflicts are detected exactly as if
//! nothing had been evicted, and that changed objects are never evicted.

use std::cell::Cell;
use std::rc::Rc;

use durus_core::storage::{RecordIter, SharedStorage};
use durus_core::{
    Connection, Error, FileStorageOptions, MemoryStorage, Oid, PObject, PRef, PackReport,
    Persistent, PersistentList, Result, Storage,
};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Item {
    n: u64,
    label: String,
}

impl Persistent for Item {
    const CLASS_NAME: &'static str = "cache_bound.Item";
}

impl Item {
    fn new(n: u64) -> Self {
        Item {
            n,
            label: format!("item {n}"),
        }
    }
}

/// A node of a graph for the crawler.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Node {
    label: String,
    children: Vec<PRef<Node>>,
}

impl Persistent for Node {
    const CLASS_NAME: &'static str = "cache_bound.Node";
}

type Chunk = PersistentList<PRef<Item>>;

/// Storage calls made through a [`Counting`] storage.
#[derive(Default)]
struct Calls {
    loads: Cell<u64>,
    bulk_loads: Cell<u64>,
}

/// A storage that counts the `load` and `bulk_load` calls made on it.
struct Counting<S> {
    inner: S,
    calls: Rc<Calls>,
}

impl<S: Storage> Storage for Counting<S> {
    fn load(&mut self, oid: Oid) -> Result<Vec<u8>> {
        self.calls.loads.set(self.calls.loads.get() + 1);
        self.inner.load(oid)
    }

    fn bulk_load(&mut self, oids: &[Oid]) -> Result<Vec<Vec<u8>>> {
        self.calls.bulk_loads.set(self.calls.bulk_loads.get() + 1);
        self.inner.bulk_load(oids)
    }

    fn begin(&mut self) -> Result<()> {
        self.inner.begin()
    }

    fn store(&mut self, oid: Oid, record: Vec<u8>) -> Result<()> {
        self.inner.store(oid, record)
    }

    fn end(&mut self, invalidations: &mut dyn FnMut(&[Oid]) -> Result<()>) -> Result<()> {
        self.inner.end(invalidations)
    }

    fn sync(&mut self) -> Result<Vec<Oid>> {
        self.inner.sync()
    }

    fn new_oid(&mut self) -> Result<Oid> {
        self.inner.new_oid()
    }

    fn records(&mut self) -> Result<RecordIter<'_>> {
        self.inner.records()
    }

    fn pack(&mut self) -> Result<PackReport> {
        self.inner.pack()
    }

    fn close(&mut self) -> Result<()> {
        self.inner.close()
    }
}

/// A database on one backend; its connections see each other's commits.
struct Db {
    name: &'static str,
    shared: SharedStorage,
    _dir: Option<tempfile::TempDir>,
}

impl Db {
    fn connect(&self) -> Connection {
        Connection::new(self.shared.client()).unwrap()
    }

    /// A connection whose storage calls are counted.
    fn connect_counted(&self) -> (Connection, Rc<Calls>) {
        let calls = Rc::new(Calls::default());
        let storage = Counting {
            inner: self.shared.client(),
            calls: calls.clone(),
        };
        (Connection::new(storage).unwrap(), calls)
    }
}

/// A memory database and a file database (fsync off: these tests are
/// about the cache, not durability).
fn databases() -> [Db; 2] {
    let dir = tempfile::tempdir().unwrap();
    let file = FileStorageOptions::new()
        .fsync(false)
        .open(dir.path().join("cache_bound.durus"))
        .unwrap();
    [
        Db {
            name: "memory",
            shared: SharedStorage::new(MemoryStorage::new()),
            _dir: None,
        },
        Db {
            name: "file",
            shared: SharedStorage::new(file),
            _dir: Some(dir),
        },
    ]
}

fn key(s: &str) -> String {
    s.to_string()
}

fn root_get<T: Persistent>(conn: &Connection, name: &str) -> PRef<T> {
    conn.root()
        .get(&key(name))
        .unwrap()
        .unwrap()
        .downcast::<T>()
        .unwrap()
}

/// Stores root["chunks"] = `chunks` lists of `per_chunk` items numbered
/// from 0, one commit per chunk.
fn store_chunks(conn: &Connection, chunks: u64, per_chunk: u64) {
    let all: PRef<PersistentList<PRef<Chunk>>> = PRef::new(PersistentList::new());
    conn.root()
        .insert(key("chunks"), PObject::from(all.clone()))
        .unwrap();
    for c in 0..chunks {
        let chunk: Chunk = (0..per_chunk)
            .map(|i| PRef::new(Item::new(c * per_chunk + i)))
            .collect();
        all.push(PRef::new(chunk)).unwrap();
        conn.commit().unwrap();
    }
}

/// Stores root["items"] = a list of `n` items and root["flag"] = an item
/// numbered `n`; returns the items' oids.
fn store_items(conn: &Connection, n: u64) -> Vec<Oid> {
    let items: Vec<PRef<Item>> = (0..n).map(|i| PRef::new(Item::new(i))).collect();
    let list: PRef<Chunk> = PRef::new(items.iter().cloned().collect());
    let root = conn.root();
    root.insert(key("items"), PObject::from(list)).unwrap();
    root.insert(key("flag"), PObject::from(PRef::new(Item::new(n))))
        .unwrap();
    conn.commit().unwrap();
    items.iter().map(|i| i.oid().unwrap()).collect()
}

/// Sets item `oid` to `n` through `conn` and commits.
fn change_item(conn: &Connection, oid: Oid, n: u64) {
    let item = conn.get(oid).unwrap().unwrap().downcast::<Item>().unwrap();
    item.write(|it| it.n = n).unwrap();
    conn.commit().unwrap();
}

const CACHE: usize = 1_000;
/// The most cells the cache may hold during a scan, in cache sizes.
const BOUND: usize = 3;

/// The point of the bounded cache: 200,000 objects read in ONE
/// transaction with a cache of 1,000 keep the cache under a few times its
/// size at every step, every value read is right, and every object loads
/// exactly once (nothing is evicted and reloaded under the reader).
#[test]
fn a_one_transaction_scan_of_200_000_objects_keeps_the_cache_within_a_few_times_its_size() {
    const CHUNKS: u64 = 200;
    const PER_CHUNK: u64 = 1_000;
    for db in databases() {
        let name = db.name;
        store_chunks(&db.connect(), CHUNKS, PER_CHUNK);
        let conn = db.connect();
        conn.set_cache_size(CACHE);
        let serial = conn.transaction_serial();
        let loads = conn.load_count();
        let chunks: Vec<PRef<Chunk>> = root_get::<PersistentList<PRef<Chunk>>>(&conn, "chunks")
            .iter()
            .unwrap()
            .collect();
        assert_eq!(chunks.len(), CHUNKS as usize, "{name}");
        let mut most = 0;
        for (c, chunk) in chunks.iter().enumerate() {
            let items: Vec<PRef<Item>> = chunk.iter().unwrap().collect();
            for (i, item) in items.iter().enumerate() {
                let expected = c as u64 * PER_CHUNK + i as u64;
                let (n, label) = item.read(|it| (it.n, it.label.clone())).unwrap();
                assert_eq!((n, label), (expected, format!("item {expected}")), "{name}");
                if i % 50 == 0 {
                    let count = conn.cache_count();
                    most = most.max(count);
                    assert!(
                        count <= BOUND * CACHE,
                        "{name}: {count} objects cached after reading {expected}"
                    );
                }
            }
        }
        assert_eq!(conn.transaction_serial(), serial, "{name}: one transaction");
        let scanned = CHUNKS * PER_CHUNK + CHUNKS + 1;
        assert_eq!(
            conn.load_count() - loads,
            scanned,
            "{name}: each loaded once"
        );
        assert!(most > CACHE, "{name}: the scan did fill the cache ({most})");
        conn.commit().unwrap();
    }
}

/// A mid-transaction shrink triggered by a load inside a `read` closure
/// leaves the object being read (borrowed) loaded, and does not fail.
#[test]
fn a_scan_inside_a_read_closure_keeps_the_borrowed_container_loaded() {
    for db in databases() {
        let name = db.name;
        store_items(&db.connect(), 5_000);
        let conn = db.connect();
        conn.set_cache_size(100);
        let list = root_get::<Chunk>(&conn, "items");
        let mut sum = 0;
        list.for_each(|item| {
            sum += item.read(|it| it.n)?;
            assert!(!list.is_ghost(), "{name}: the list being read stays loaded");
            Ok(())
        })
        .unwrap();
        assert_eq!(sum, 4_999 * 5_000 / 2, "{name}");
        assert!(conn.cache_count() <= BOUND * 5_000, "{name}");
        conn.commit().unwrap();
    }
}

/// Reads item 0 through a temporary handle (or keeps the handle), then
/// every other item of root["items"] with a cache of 100: item 0 is
/// evicted in the middle of the transaction.
fn read_then_evict_item_0(conn: &Connection, keep: bool) -> Option<PRef<Item>> {
    conn.set_cache_size(100);
    let list = root_get::<Chunk>(conn, "items");
    let first = list.get(0).unwrap().unwrap();
    assert_eq!(first.read(|it| it.n).unwrap(), 0);
    let n = list.len().unwrap();
    for i in 1..n {
        let item = list.get(i).unwrap().unwrap();
        assert_eq!(item.read(|it| it.n).unwrap(), i as u64);
    }
    if keep {
        assert!(first.is_ghost(), "item 0 was evicted mid-transaction");
        Some(first)
    } else {
        None
    }
}

/// spec 9.6 with eviction: an object read in this transaction, then
/// evicted by a mid-transaction shrink (its handle kept, or not), then
/// changed by another connection, makes this transaction's commit fail
/// with a conflict naming it, exactly as without eviction; abort and the
/// new value shows.
#[test]
fn an_object_read_then_evicted_mid_transaction_still_conflicts_at_commit() {
    for db in databases() {
        for keep in [true, false] {
            let name = format!("{} keep={keep}", db.name);
            let oids = store_items(&db.connect(), 3_000);
            let (c1, c2) = (db.connect(), db.connect());
            let held = read_then_evict_item_0(&c1, keep);
            change_item(&c2, oids[0], 100);
            root_get::<Item>(&c1, "flag").write(|f| f.n += 1).unwrap();
            match c1.commit() {
                Err(Error::Conflict { oids: conflicts }) => {
                    assert!(conflicts.contains(&oids[0]), "{name}: {conflicts:?}")
                }
                other => panic!("{name}: expected a conflict, got {other:?}"),
            }
            c1.abort();
            let first = held.unwrap_or_else(|| {
                c1.get(oids[0])
                    .unwrap()
                    .unwrap()
                    .downcast::<Item>()
                    .unwrap()
            });
            assert_eq!(first.read(|it| it.n).unwrap(), 100, "{name}");
            assert_eq!(root_get::<Item>(&c1, "flag").read(|f| f.n).unwrap(), 3_000);
        }
    }
}

/// Loading again an object this transaction read and the cache evicted,
/// after another connection changed it, is a read conflict (the
/// transaction would otherwise see two states of one object).
#[test]
fn reloading_an_evicted_object_another_connection_changed_is_a_read_conflict() {
    for db in databases() {
        let name = db.name;
        let oids = store_items(&db.connect(), 3_000);
        let (c1, c2) = (db.connect(), db.connect());
        let first = read_then_evict_item_0(&c1, true).unwrap();
        change_item(&c2, oids[0], 100);
        match first.read(|it| it.n) {
            Err(Error::ReadConflict { oids: conflicts }) => {
                assert_eq!(conflicts, vec![oids[0]], "{name}")
            }
            other => panic!("{name}: expected a read conflict, got {other:?}"),
        }
        c1.abort();
        assert_eq!(first.read(|it| it.n).unwrap(), 100, "{name}");
    }
}

/// An object evicted mid-transaction that no other connection changed
/// reloads with its value and can be changed and committed; another
/// connection's change to an object this transaction never read causes
/// no conflict.
#[test]
fn an_evicted_object_nobody_else_changed_reloads_and_commits_without_conflict() {
    for db in databases() {
        let name = db.name;
        let oids = store_items(&db.connect(), 3_000);
        let (c1, c2) = (db.connect(), db.connect());
        let first = read_then_evict_item_0(&c1, true).unwrap();
        let flag = root_get::<Item>(&c2, "flag");
        flag.write(|f| f.n = 9).unwrap();
        c2.commit().unwrap();
        assert_eq!(first.read(|it| it.n).unwrap(), 0, "{name}");
        first.write(|it| it.n = 1).unwrap();
        c1.commit().unwrap();
        c2.abort();
        let again = c2
            .get(oids[0])
            .unwrap()
            .unwrap()
            .downcast::<Item>()
            .unwrap();
        assert_eq!(again.read(|it| it.n).unwrap(), 1, "{name}");
    }
}

/// A changed object is never evicted in the middle of its transaction
/// (handle kept or not): the change is still there at commit and is
/// committed.
#[test]
fn a_changed_object_is_never_evicted_mid_transaction_and_its_change_is_committed() {
    for db in databases() {
        for keep in [true, false] {
            let name = format!("{} keep={keep}", db.name);
            let oids = store_items(&db.connect(), 3_000);
            let c1 = db.connect();
            c1.set_cache_size(100);
            let list = root_get::<Chunk>(&c1, "items");
            let first = list.get(0).unwrap().unwrap();
            first.write(|it| it.n = 7_000).unwrap();
            let held = keep.then_some(first);
            for i in 1..3_000 {
                let item = list.get(i).unwrap().unwrap();
                assert_eq!(item.read(|it| it.n).unwrap(), i as u64, "{name}");
            }
            if let Some(first) = &held {
                assert!(!first.is_ghost(), "{name}: the changed object stays loaded");
            }
            c1.commit().unwrap();
            let c2 = db.connect();
            let first = c2
                .get(oids[0])
                .unwrap()
                .unwrap()
                .downcast::<Item>()
                .unwrap();
            assert_eq!(first.read(|it| it.n).unwrap(), 7_000, "{name}");
        }
    }
}

/// The items of root["items"], as ghosts of a new counted connection.
fn ghost_items(db: &Db) -> (Connection, Rc<Calls>, Vec<PRef<Item>>) {
    let (conn, calls) = db.connect_counted();
    let items: Vec<PRef<Item>> = root_get::<Chunk>(&conn, "items").iter().unwrap().collect();
    assert!(items.iter().all(PRef::is_ghost));
    (conn, calls, items)
}

/// Prefetching 100 ghosts is one bulk load; loading them afterwards
/// costs no storage call at all, and counts 100 state loads.
#[test]
fn loading_100_prefetched_ghosts_costs_one_bulk_load_and_no_single_load() {
    for db in databases() {
        let name = db.name;
        store_items(&db.connect(), 100);
        let (conn, calls, items) = ghost_items(&db);
        let (loads, bulk, round_trips, states) = (
            calls.loads.get(),
            calls.bulk_loads.get(),
            conn.storage_loads(),
            conn.load_count(),
        );
        assert_eq!(PRef::prefetch(&items).unwrap(), 100, "{name}");
        for (i, item) in items.iter().enumerate() {
            assert_eq!(item.read(|it| it.n).unwrap(), i as u64, "{name}");
        }
        assert_eq!(calls.bulk_loads.get() - bulk, 1, "{name}");
        assert_eq!(calls.loads.get() - loads, 0, "{name}");
        assert_eq!(conn.storage_loads() - round_trips, 1, "{name}");
        assert_eq!(conn.load_count() - states, 100, "{name}");
        // Nothing left to fetch: no storage call.
        assert_eq!(PRef::prefetch(&items).unwrap(), 0, "{name}");
        assert_eq!(calls.bulk_loads.get() - bulk, 1, "{name}");
    }
}

/// A prefetched record of an object another connection then changed is
/// not served once this connection has caught up: after a sync in the
/// middle of the transaction (a load that meets the change) or after an
/// abort, the object loads its new state from the storage.
#[test]
fn a_prefetched_record_invalidated_by_a_sync_is_not_served() {
    for db in databases() {
        let name = db.name;
        let oids = store_items(&db.connect(), 100);
        let writer = db.connect();

        // A sync in the middle of the transaction: loading root["flag"],
        // also changed, meets the change and catches up.
        let (conn, calls, items) = ghost_items(&db);
        let flag = root_get::<Item>(&conn, "flag");
        assert_eq!(PRef::prefetch(&items).unwrap(), 100, "{name}");
        let flag_oid = flag.oid().unwrap();
        let w = writer
            .get(oids[5])
            .unwrap()
            .unwrap()
            .downcast::<Item>()
            .unwrap();
        w.write(|it| it.n = 500).unwrap();
        let wf = writer
            .get(flag_oid)
            .unwrap()
            .unwrap()
            .downcast::<Item>()
            .unwrap();
        wf.write(|it| it.n = 1_000).unwrap();
        writer.commit().unwrap();
        assert_eq!(flag.read(|f| f.n).unwrap(), 1_000, "{name}");
        let loads = calls.loads.get();
        assert_eq!(items[5].read(|it| it.n).unwrap(), 500, "{name}");
        assert_eq!(
            calls.loads.get() - loads,
            1,
            "{name}: loaded from the storage"
        );
        assert_eq!(items[6].read(|it| it.n).unwrap(), 6, "{name}");
        assert_eq!(calls.loads.get() - loads, 1, "{name}: still prefetched");
        drop((conn, items, flag));

        // An abort drops every prefetched record.
        let (conn, calls, items) = ghost_items(&db);
        assert_eq!(PRef::prefetch(&items).unwrap(), 100, "{name}");
        change_item(&writer, oids[7], 700);
        conn.abort();
        let loads = calls.loads.get();
        assert_eq!(items[7].read(|it| it.n).unwrap(), 700, "{name}");
        assert_eq!(items[8].read(|it| it.n).unwrap(), 8, "{name}");
        assert_eq!(
            calls.loads.get() - loads,
            2,
            "{name}: nothing served after the abort"
        );
    }
}

/// A prefetched record is as good as a state loaded at prefetch time:
/// read after another connection changed the object, it makes the
/// commit conflict (Durus's rule for an object loaded before the change).
#[test]
fn a_prefetched_record_read_after_another_connections_change_conflicts_at_commit() {
    for db in databases() {
        let name = db.name;
        let oids = store_items(&db.connect(), 100);
        let writer = db.connect();
        let (conn, _calls, items) = ghost_items(&db);
        assert_eq!(PRef::prefetch(&items).unwrap(), 100, "{name}");
        change_item(&writer, oids[5], 500);
        assert_eq!(items[5].read(|it| it.n).unwrap(), 5, "{name}");
        root_get::<Item>(&conn, "flag").write(|f| f.n += 1).unwrap();
        match conn.commit() {
            Err(Error::Conflict { oids: conflicts }) => {
                assert_eq!(conflicts, vec![oids[5]], "{name}")
            }
            other => panic!("{name}: expected a conflict, got {other:?}"),
        }
        conn.abort();
        assert_eq!(items[5].read(|it| it.n).unwrap(), 500, "{name}");
    }
}

/// A bulk load that meets an object changed since the last sync (a read
/// conflict from the storage) prefetches nothing; the loads that follow
/// catch up and see the new state.
#[test]
fn a_prefetch_meeting_a_conflict_fetches_nothing_and_loads_still_work() {
    for db in databases() {
        let name = db.name;
        let oids = store_items(&db.connect(), 100);
        let (_conn, calls, items) = ghost_items(&db);
        change_item(&db.connect(), oids[5], 500);
        assert_eq!(PRef::prefetch(&items).unwrap(), 0, "{name}");
        let loads = calls.loads.get();
        let values: Vec<u64> = items.iter().map(|i| i.read(|it| it.n).unwrap()).collect();
        assert_eq!(values[5], 500, "{name}");
        assert_eq!(values.iter().sum::<u64>(), 99 * 100 / 2 - 5 + 500, "{name}");
        assert!(
            calls.loads.get() - loads >= 100,
            "{name}: loaded one by one"
        );
    }
}

/// Stores root["top"] = a node with 30 children of 3 children each; every
/// middle node also refers to the first grandchild, and the last
/// grandchild back to the top (so shared nodes and a cycle). Returns the
/// labels in breadth-first order.
fn store_graph(conn: &Connection) -> Vec<String> {
    let node = |label: String, children| PRef::new(Node { label, children });
    let mut bfs = vec!["top".to_string()];
    let mut leaves = Vec::new();
    let mut mids = Vec::new();
    for i in 0..30 {
        let kids: Vec<PRef<Node>> = (0..3)
            .map(|j| {
                leaves.push(format!("leaf {i}.{j}"));
                node(format!("leaf {i}.{j}"), Vec::new())
            })
            .collect();
        mids.push(kids);
        bfs.push(format!("mid {i}"));
    }
    bfs.extend(leaves);
    let shared = mids[0][0].clone();
    let last = mids[29][2].clone();
    let mids: Vec<PRef<Node>> = mids
        .into_iter()
        .enumerate()
        .map(|(i, mut kids)| {
            if i > 0 {
                kids.push(shared.clone());
            }
            node(format!("mid {i}"), kids)
        })
        .collect();
    let top = node("top".to_string(), mids);
    last.write(|n| n.children.push(top.clone())).unwrap();
    conn.root().insert(key("top"), PObject::from(top)).unwrap();
    conn.commit().unwrap();
    bfs
}

/// spec 9.3 `get_crawler`: the crawl yields every object reachable from
/// the start once, breadth first, with one bulk load per batch (the start
/// is a batch of its own: 1 + 120/10 = 13 = ceil(121/10)), and the
/// yielded objects load from the fetched records with no further call.
#[test]
fn a_crawl_yields_every_reachable_object_once_breadth_first_in_bulk_loaded_batches() {
    for db in databases() {
        let name = db.name;
        let expected = store_graph(&db.connect());
        let (conn, calls) = db.connect_counted();
        let top = root_get::<Node>(&conn, "top").oid().unwrap();
        let (loads, bulk) = (calls.loads.get(), calls.bulk_loads.get());
        let mut labels = Vec::new();
        let mut oids = std::collections::BTreeSet::new();
        for obj in conn.crawl(top, 10) {
            let obj = obj.unwrap();
            assert!(oids.insert(obj.oid().unwrap()), "{name}: {obj:?} twice");
            let node = obj.downcast::<Node>().unwrap();
            labels.push(node.read(|n| n.label.clone()).unwrap());
        }
        assert_eq!(labels, expected, "{name}");
        assert_eq!(calls.bulk_loads.get() - bulk, 13, "{name}");
        assert_eq!(calls.loads.get() - loads, 0, "{name}");
    }
}

/// A crawl from an oid with no record yields that error once, then ends.
#[test]
fn a_crawl_from_a_missing_oid_yields_one_error_then_ends() {
    let conn = Connection::new(MemoryStorage::new()).unwrap();
    let mut crawl = conn.crawl(Oid(12_345), 10);
    assert!(matches!(
        crawl.next(),
        Some(Err(Error::KeyNotFound(Oid(12_345))))
    ));
    assert!(crawl.next().is_none());
}
