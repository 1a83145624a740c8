//! BTree benchmark: a `BTree<i64, PRef<Item>>` over a `FileStorage`, the
//! Rust side of `scripts/bench-btree` (the Python Durus 4.3 side is
//! `scripts/bench_btree.py`, which runs the same workloads on Durus's
//! `BTree` with its default `BNode16` nodes).
//!
//! ```text
//! cargo bench --bench btree                      # n = 1,000,000, a table on stdout
//! cargo bench --bench btree -- --quick           # n = 100,000
//! cargo bench --bench btree -- --json F.jsonl    # also one JSON line per workload in F.jsonl
//! cargo bench --bench btree -- --only lookup     # (and what it needs: insert, pack)
//! cargo bench --bench btree -- --node-sizes 16,32,64,128,256 [--quick]
//! ```
//!
//! The objects are the reference's: `Item { id: i64, name: String, value:
//! f64 }` (name `"item<id>"`, value `1.5 * id`), in a `BTree` keyed by id
//! under `root["items"]`, the shape of `../shared/interop/bench_durus.py`.
//! The cache size is 2n + 10,000, as in the reference, so nothing is
//! ghosted. Commits are not fsync'd (Python Durus never fsyncs).
//!
//! Workloads, each repetition in its own child process (this executable
//! again, with `--worker`), so every cold read is cold and every peak RSS
//! (VmHWM) is the workload's own:
//!
//! * `insert`: n items into a fresh file, a commit every 1,000 (the
//!   reference's `w_insert`). The last repetition's file is the input of
//!   the others.
//! * `cold_scan`: a fresh process opens the file (not timed), then reads
//!   the three fields of every item iterating the tree in key order (the
//!   cold part of the reference's `w_read`), one `read` call per field as
//!   generated getters make them.
//! * `pack`: `Connection::pack` of that file (one repetition; not a
//!   target, but the next two need a packed file).
//! * `open_packed`: `FileStorage` open plus `Connection::new` (which loads
//!   the root) on the packed file: what `Connection::open` does.
//! * `lookup`: K random keys, each looked up in a NEW connection over a
//!   freshly opened storage, so nothing is cached: the records `get` loads
//!   (storage calls, counted by a wrapper around the storage, and states
//!   decoded, `Connection::load_count`), beside ceil(log_B n) + 1, the
//!   nodes on a root-to-leaf path plus the tree object.
//!
//! `--node-sizes 16,32,...` runs insert, cold scan, pack and lookup once
//! per node size (`BTree::with_node_size`) instead, to choose the default
//! by measurement, plus `insert_random`: the same n items inserted in a
//! shuffled order (one process), where every commit rewrites leaves all
//! over the tree, so that the size of a node shows in the bytes written.
//! `scripts/bench_btree.py report-nodes` makes its table.

mod common;

use std::cell::Cell;
use std::hint::black_box;
use std::path::Path;
use std::rc::Rc;
use std::time::Instant;

use durus::storage::{PackJob, RecordIter};
use durus::{BTree, Connection, FileStorage, Oid, PRef, PackReport};
use durus::{Result as DurusResult, Storage};
use serde_json::{json, Value};

use common::items::{items_of, store_items, Item, Items};
use common::{
    bench_tmp_base, file_len, median, merge_runs, peak_rss_kb, rate_row, remove_db, run_worker,
    summary, take_flag, time_row, AnyResult, Args, Sink,
};

/// Items per commit while inserting (the reference's `COMMIT_EVERY`).
const COMMIT_EVERY: usize = 1000;
/// The key of the tree in the root dict (the reference's).
/// Lookups in the `lookup` workload (`--lookups K`).
const LOOKUPS: usize = 1000;
/// Processes per timed workload (`--reps R`).
const REPS: usize = 3;

type Tree = Items;

fn main() {
    if let Err(e) = run() {
        eprintln!("bench btree: {e}");
        std::process::exit(1);
    }
}

/// Flags beyond [`Args`].
#[derive(Debug, Default)]
struct Flags {
    /// The driver's node-size sweep.
    node_sizes: Option<Vec<usize>>,
    /// The insert worker's node size (0: `BTree::new()`'s default).
    node_size: usize,
    lookups: usize,
}

fn run() -> AnyResult<()> {
    let mut argv: Vec<String> = std::env::args().skip(1).collect();
    let flags = Flags {
        node_sizes: take_flag(&mut argv, "--node-sizes")?
            .map(|list| list.split(',').map(str::parse).collect())
            .transpose()?,
        node_size: take_flag(&mut argv, "--node-size")?.map_or(Ok(0), |v| v.parse())?,
        lookups: take_flag(&mut argv, "--lookups")?.map_or(Ok(LOOKUPS), |v| v.parse())?,
    };
    let args = Args::parse(argv.into_iter())?;
    match &args.worker {
        Some(name) => {
            let dir = args.dir.clone().ok_or("--worker needs --dir")?;
            for line in worker(name, &dir, args.n, &flags)? {
                println!("{line}");
            }
            Ok(())
        }
        None => drive(&args, &flags),
    }
}

// ---------------------------------------------------------------- driver

/// The workloads in the order they run: name, processes (each one
/// repetition).
fn plan(reps: usize) -> [(&'static str, usize); 5] {
    [
        ("insert", reps),
        ("cold_scan", reps),
        ("pack", 1),
        ("open_packed", reps),
        ("lookup", 1),
    ]
}

/// Runs the selected workloads (or the node-size sweep) in child
/// processes and prints their rows.
fn drive(args: &Args, flags: &Flags) -> AnyResult<()> {
    let n = match args.n {
        0 if args.quick => 100_000,
        0 => 1_000_000,
        n => n,
    };
    let reps = if args.reps == 0 { REPS } else { args.reps };
    let base = bench_tmp_base(args.tmp.as_deref());
    std::fs::create_dir_all(&base)?;
    let dir = tempfile::Builder::new()
        .prefix("rust-btree-")
        .tempdir_in(&base)?;
    let default_size = PRef::new(Tree::new()).node_size()?;
    let mut sink = Sink::new(args)?;
    let mut emit = |mut row: Value, requested: usize| {
        let size = row["extra"]["node_size"].as_u64();
        row["extra"]["default"] = json!(requested == 0 || size == Some(default_size as u64));
        let text = line(&row);
        sink.emit(row, text)
    };
    match &flags.node_sizes {
        None => {
            let wanted = needed(args.only.as_deref());
            for (name, procs) in plan(reps) {
                if wanted.contains(&name) {
                    for row in run_workload(name, procs, n, 0, flags.lookups, dir.path())? {
                        emit(row, 0)?;
                    }
                }
            }
        }
        Some(sizes) => {
            for &size in sizes {
                eprintln!("rust: node size {size}");
                // open_packed reads one offset map whatever the nodes:
                // not a question of size. insert_random is: every commit
                // rewrites the leaves it touched, whole.
                let sweep = plan(reps)
                    .into_iter()
                    .filter(|&(name, _)| name != "open_packed")
                    .chain([("insert_random", 1)]);
                for (name, procs) in sweep {
                    for row in run_workload(name, procs, n, size, flags.lookups, dir.path())? {
                        emit(row, size)?;
                    }
                }
            }
        }
    }
    sink.finish();
    Ok(())
}

/// The workloads `--only` selects, with the ones they need: every
/// workload reads the file `insert` writes, and `open_packed` and
/// `lookup` the one `pack` leaves.
fn needed(only: Option<&[String]>) -> Vec<&'static str> {
    let all = plan(1).map(|(name, _)| name);
    let Some(only) = only else {
        return all.to_vec();
    };
    let picked = |name: &str| only.iter().any(|o| o == name);
    let packed = picked("open_packed") || picked("lookup");
    all.into_iter()
        .filter(|&name| picked(name) || name == "insert" || (name == "pack" && packed))
        .collect()
}

/// Runs `procs` worker processes of one workload and merges their rows.
fn run_workload(
    name: &str,
    procs: usize,
    n: usize,
    node_size: usize,
    lookups: usize,
    dir: &Path,
) -> AnyResult<Vec<Value>> {
    let plural = if procs > 1 { "es" } else { "" };
    eprintln!("rust: {name} (n = {n}, {procs} process{plural})");
    let args: Vec<String> = [
        "--n",
        &n.to_string(),
        "--node-size",
        &node_size.to_string(),
        "--lookups",
        &lookups.to_string(),
        "--dir",
        &dir.display().to_string(),
    ]
    .map(str::to_owned)
    .to_vec();
    let mut runs = Vec::with_capacity(procs);
    for _ in 0..procs.max(1) {
        runs.push(run_worker(name, &args)?);
    }
    if runs.len() == 1 {
        return Ok(runs.remove(0));
    }
    merge_runs(&runs)
}

/// One human-readable line for a result row.
fn line(row: &Value) -> String {
    if row["workload"] != "lookup" {
        return summary(row);
    }
    let e = &row["extra"];
    format!(
        "lookup: {:.2} records loaded per lookup (mean; max {}), {:.2} states decoded, \
         ceil(log_B n)+1 = {} with B = {}, depth {}, {} nodes, {:.1} µs per get",
        e["mean"].as_f64().unwrap_or(f64::NAN),
        row["max"],
        e["states_mean"].as_f64().unwrap_or(f64::NAN),
        e["expected"],
        e["node_size"],
        e["depth"],
        e["node_count"],
        e["lookup_us_median"].as_f64().unwrap_or(f64::NAN),
    )
}

// ---------------------------------------------------------------- helpers

/// A storage that counts the calls that reach it: what a cold lookup
/// costs in storage round trips (on a `ClientStorage`, each call is
/// one), next to the states the connection decodes.
struct Counting<S> {
    inner: S,
    /// `load` and `bulk_load` calls.
    calls: Rc<Cell<u64>>,
    /// Records those calls returned.
    records: Rc<Cell<u64>>,
}

impl<S: Storage> Storage for Counting<S> {
    fn load(&mut self, oid: Oid) -> DurusResult<Vec<u8>> {
        self.calls.set(self.calls.get() + 1);
        self.records.set(self.records.get() + 1);
        self.inner.load(oid)
    }
    fn contains(&mut self, oid: Oid) -> DurusResult<bool> {
        self.inner.contains(oid)
    }
    fn bulk_load(&mut self, oids: &[Oid]) -> DurusResult<Vec<Vec<u8>>> {
        self.calls.set(self.calls.get() + 1);
        self.records.set(self.records.get() + oids.len() as u64);
        self.inner.bulk_load(oids)
    }
    fn begin(&mut self) -> DurusResult<()> {
        self.inner.begin()
    }
    fn store(&mut self, oid: Oid, record: Vec<u8>) -> DurusResult<()> {
        self.inner.store(oid, record)
    }
    fn end(&mut self, invalidations: &mut dyn FnMut(&[Oid]) -> DurusResult<()>) -> DurusResult<()> {
        self.inner.end(invalidations)
    }
    fn sync(&mut self) -> DurusResult<Vec<Oid>> {
        self.inner.sync()
    }
    fn new_oid(&mut self) -> DurusResult<Oid> {
        self.inner.new_oid()
    }
    fn records(&mut self) -> DurusResult<RecordIter<'_>> {
        self.inner.records()
    }
    fn pack(&mut self) -> DurusResult<PackReport> {
        self.inner.pack()
    }
    fn start_background_pack(&mut self) -> DurusResult<Option<PackJob>> {
        self.inner.start_background_pack()
    }
    fn finish_background_pack(&mut self, job: PackJob) -> DurusResult<PackReport> {
        self.inner.finish_background_pack(job)
    }
    fn close(&mut self) -> DurusResult<()> {
        self.inner.close()
    }
}

/// A connection over `storage` with the reference's cache size.
fn connect_over(storage: impl Storage + 'static, n: usize) -> DurusResult<Connection> {
    let conn = Connection::new(storage)?;
    conn.set_cache_size(2 * n + 10_000);
    Ok(conn)
}

/// A connection over the file at `path`, commits not fsync'd.
fn connect(path: &Path, n: usize) -> DurusResult<Connection> {
    connect_over(FileStorage::options().fsync(false).open(path)?, n)
}

/// The keys the lookups use: K draws of xorshift64 modulo n, the keys
/// `bench_btree.py` draws.
fn lookup_keys(n: usize, k: usize) -> Vec<i64> {
    let mut x: u64 = 0x2545_F491_4F6C_DD1D;
    (0..k)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x % n as u64) as i64
        })
        .collect()
}

/// ceil(log_B n) + 1: the nodes on a root-to-leaf path of a B+ tree of n
/// entries with B per node (full nodes), plus the tree object.
fn expected_loads(n: usize, b: usize) -> u64 {
    let (mut levels, mut reach) = (1u64, b as u128);
    while reach < n as u128 {
        levels += 1;
        reach *= b as u128;
    }
    levels + 1
}

/// The shape of the tree as extra row fields.
fn shape(tree: &PRef<Tree>) -> DurusResult<Value> {
    Ok(json!({
        "node_size": tree.node_size()?,
        "depth": tree.depth()?,
        "node_count": tree.node_count()?,
    }))
}

/// `extra` fields merged into one object.
fn with(mut extra: Value, more: Value) -> Value {
    if let (Some(a), Value::Object(b)) = (extra.as_object_mut(), more) {
        a.extend(b);
    }
    extra
}

// ---------------------------------------------------------------- workloads

fn worker(name: &str, dir: &Path, n: usize, flags: &Flags) -> AnyResult<Vec<Value>> {
    let items = dir.join("items.durus");
    match name {
        "insert" => insert(dir, n, flags.node_size, Order::Ascending),
        "insert_random" => insert(dir, n, flags.node_size, Order::Shuffled),
        "cold_scan" => cold_scan(&items, n),
        "pack" => pack(&items, n),
        "open_packed" => open_packed(&items, n),
        "lookup" => lookup(&items, n, flags.lookups),
        other => Err(format!("unknown workload {other:?}").into()),
    }
}

/// The order in which `insert` adds the ids `0..n`.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Order {
    /// 0, 1, 2, ...: the reference's workload, every commit appends to
    /// the last leaf.
    Ascending,
    /// A fixed pseudo-random permutation: every commit touches leaves all
    /// over the tree.
    Shuffled,
}

impl Order {
    /// The ids in insertion order (Shuffled: a Fisher-Yates shuffle driven
    /// by xorshift64, the same on every run).
    fn ids(self, n: usize) -> Vec<usize> {
        let mut ids: Vec<usize> = (0..n).collect();
        if self == Order::Shuffled {
            let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
            for j in (1..n).rev() {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                ids.swap(j, (x % (j as u64 + 1)) as usize);
            }
        }
        ids
    }
}

/// `n` items into a fresh file, a commit every 1,000 (the reference's
/// `w_insert`); in ascending order the file becomes `items.durus`, the
/// shuffled order's is measured and deleted.
fn insert(dir: &Path, n: usize, node_size: usize, order: Order) -> AnyResult<Vec<Value>> {
    let path = dir.join("insert.durus");
    remove_db(&path);
    let conn = connect(&path, n)?;
    let tree = store_items(
        &conn,
        match node_size {
            0 => BTree::new(),
            size => BTree::with_node_size(size),
        },
    )?;
    conn.commit()?;
    let ids = order.ids(n);
    let t = Instant::now();
    for (i, &id) in ids.iter().enumerate() {
        let id = id as i64;
        let item = PRef::new(Item {
            id,
            name: format!("item{id}"),
            value: i as f64 * 1.5,
        });
        tree.insert(id, item)?;
        if (i + 1) % COMMIT_EVERY == 0 {
            conn.commit()?;
        }
    }
    conn.commit()?;
    let secs = t.elapsed().as_secs_f64();
    if tree.len()? != n {
        return Err(format!("the tree has {} entries, not {n}", tree.len()?).into());
    }
    let extra = with(
        json!({ "fsync": false, "commits": n.div_ceil(COMMIT_EVERY) }),
        shape(&tree)?,
    );
    drop(tree);
    drop(conn);
    let size = file_len(&path);
    let name = match order {
        Order::Ascending => {
            let items = dir.join("items.durus");
            remove_db(&items);
            std::fs::rename(&path, &items)?;
            "insert"
        }
        Order::Shuffled => {
            remove_db(&path);
            "insert_random"
        }
    };
    Ok(vec![rate_row(
        name,
        n as u64,
        "objects/s",
        &[secs],
        peak_rss_kb(),
        with(extra, json!({ "file_bytes": size })),
    )])
}

/// A freshly opened file (not timed), then the three fields of every item
/// in key order (the cold part of the reference's `w_read`).
fn cold_scan(path: &Path, n: usize) -> AnyResult<Vec<Value>> {
    let t = Instant::now();
    let conn = connect(path, n)?;
    let tree = items_of(&conn)?;
    let open_secs = t.elapsed().as_secs_f64();
    let loads = conn.load_count();

    let t = Instant::now();
    let (mut count, mut ids, mut name_bytes, mut values) = (0usize, 0i64, 0usize, 0f64);
    for entry in tree.iter()? {
        let (_, item) = entry?;
        ids += item.read(|it| it.id)?;
        name_bytes += item.read(|it| it.name.len())?;
        values += item.read(|it| it.value)?;
        count += 1;
    }
    let secs = t.elapsed().as_secs_f64();
    black_box((name_bytes, values));
    let loads = conn.load_count() - loads;

    let n64 = n as i64;
    if count != n || ids != n64 * (n64 - 1) / 2 {
        return Err(format!("the scan saw {count} items with ids summing to {ids}").into());
    }
    let rss = peak_rss_kb();
    let extra = with(
        json!({ "open_secs": open_secs, "loads": loads, "file_bytes": file_len(path) }),
        shape(&tree)?,
    );
    Ok(vec![rate_row(
        "cold_scan",
        n as u64,
        "objects/s",
        &[secs],
        rss,
        extra,
    )])
}

/// `Connection::pack` of the inserted file (one repetition).
fn pack(path: &Path, n: usize) -> AnyResult<Vec<Value>> {
    let conn = connect(path, n)?;
    let t = Instant::now();
    let report = conn.pack()?;
    let secs = t.elapsed().as_secs_f64();
    let extra = with(
        json!({
            "size_before": report.size_before,
            "size_after": report.size_after,
            "kept": report.kept,
        }),
        shape(&items_of(&conn)?)?,
    );
    drop(conn);
    if let Some(prepack) = &report.prepack {
        let _ = std::fs::remove_file(prepack);
    }
    Ok(vec![time_row(
        "pack",
        n as u64,
        &[secs],
        peak_rss_kb(),
        extra,
    )])
}

/// Opening the packed file: the storage, then a connection over it (which
/// loads the root), as `Connection::open` does.
fn open_packed(path: &Path, n: usize) -> AnyResult<Vec<Value>> {
    let t = Instant::now();
    let storage = FileStorage::options().fsync(false).open(path)?;
    let storage_secs = t.elapsed().as_secs_f64();
    let conn = connect_over(storage, n)?;
    let secs = t.elapsed().as_secs_f64();
    let tree = items_of(&conn)?;
    let extra = with(
        json!({ "storage_open_secs": storage_secs, "file_bytes": file_len(path) }),
        json!({ "node_size": tree.node_size()? }),
    );
    Ok(vec![time_row(
        "open_packed",
        n as u64,
        &[secs],
        peak_rss_kb(),
        extra,
    )])
}

/// K lookups, each in a new connection over a freshly opened storage:
/// what does `get` load from cold?
fn lookup(path: &Path, n: usize, k: usize) -> AnyResult<Vec<Value>> {
    let keys = lookup_keys(n, k);
    let (mut calls, mut records, mut states, mut secs) = (vec![], vec![], vec![], vec![]);
    for &key in &keys {
        let storage = Counting {
            inner: FileStorage::options().fsync(false).open(path)?,
            calls: Rc::new(Cell::new(0)),
            records: Rc::new(Cell::new(0)),
        };
        let (call_count, record_count) = (storage.calls.clone(), storage.records.clone());
        let conn = connect_over(storage, n)?;
        let tree = items_of(&conn)?;
        let (c0, r0, s0) = (call_count.get(), record_count.get(), conn.load_count());
        let t = Instant::now();
        let item = tree.get(&key)?;
        secs.push(t.elapsed().as_secs_f64());
        calls.push((call_count.get() - c0) as f64);
        records.push((record_count.get() - r0) as f64);
        states.push((conn.load_count() - s0) as f64);
        let item = item.ok_or_else(|| format!("key {key} is missing"))?;
        let value = item.read(|it| it.value)?;
        if value != key as f64 * 1.5 {
            return Err(format!("item {key} has value {value}").into());
        }
    }
    // The shape of the tree, after the clock (node_count loads every node).
    let conn = connect(path, n)?;
    let tree_shape = shape(&items_of(&conn)?)?;
    let node_size = tree_shape["node_size"].as_u64().unwrap_or(0) as usize;
    let mean = |xs: &[f64]| xs.iter().sum::<f64>() / xs.len().max(1) as f64;
    let extra = with(
        json!({
            "n": n,
            "mean": mean(&calls),
            "records_mean": mean(&records),
            "states_mean": mean(&states),
            "states_median": median(&states),
            "lookup_us_median": median(&secs) * 1e6,
            "node": "BTree",
            "expected": expected_loads(n, node_size),
            "counted": "storage load/bulk_load calls (a wrapper); states: Connection::load_count",
        }),
        tree_shape,
    );
    Ok(vec![json!({
        "side": "rust",
        "workload": "lookup",
        "items": k,
        "unit": "loads/lookup",
        "reps": k,
        "median": median(&calls),
        "min": calls.iter().copied().fold(f64::NAN, f64::min),
        "max": calls.iter().copied().fold(f64::NAN, f64::max),
        "peak_rss_kb": peak_rss_kb(),
        "extra": extra,
    })])
}
