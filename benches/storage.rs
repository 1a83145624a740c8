//! Storage-level benchmark of `FileStorage`, the Rust side of
//! `scripts/bench-storage` (the Python Durus 4.3 side is
//! `scripts/bench_storage.py`, which runs the identical workloads with
//! identical records: the files both sides write are byte for byte the same).
//!
//! ```text
//! cargo bench --bench storage                  # every workload, a table on stderr
//! cargo bench --bench storage -- --quick       # sizes divided by 10
//! cargo bench --bench storage -- --json F.jsonl # also one JSON line per workload in F.jsonl
//! cargo bench --bench storage -- --only append,pack
//! ```
//! Workloads (full sizes):
//!
//! * `append`: 100,000 records of 100 bytes (two refs each) in ONE
//!   transaction into a fresh file, fsync off (Python Durus never fsyncs);
//!   `append_fsync` is the same with the default fsync'd commit.
//! * `build`: a tree of 1,000,001 records (root -> 1000 nodes -> 999 leaves
//!   each) committed 1000 records per transaction (one repetition).
//! * `open_unpacked` / `open_packed`: opening that file before a pack (the
//!   index is built by scanning every transaction) and after it.
//! * `pack`: packing the file after 10% of its leaves became garbage
//!   (100 nodes overwritten without their leaves).
//! * `load`: 100,000 random loads from a freshly opened packed file.
//!
//! Every workload runs in its own child process (this executable again,
//! with `--worker`), so the peak RSS it reports (VmHWM) is that workload's.
//! Records are built before the clock starts; only storage calls are timed.

mod common;

use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use durus_core::format::record;
use durus_core::{FileStorage, Oid, Storage};
use serde_json::{json, Value};

use common::{file_len, peak_rss_kb, remove_db, AnyResult, Args, Sink};

/// Bytes of pseudo-random payload every record's data carries.
const PAYLOAD: usize = 56;
/// The pool the payloads are sliced from.
const POOL_LEN: usize = 1 << 16;
/// Records per transaction while building the tree.
const BUILD_TXN: usize = 1000;
/// Every GARBAGE_STEP-th node is overwritten without its leaves.
const GARBAGE_STEP: usize = 10;

fn main() {
    if let Err(e) = run() {
        eprintln!("bench storage: {e}");
        std::process::exit(1);
    }
}

fn run() -> AnyResult<()> {
    let args = Args::parse(std::env::args().skip(1))?;
    match &args.worker {
        Some(name) => {
            let dir = args.dir.clone().ok_or("--worker needs --dir")?;
            let line = worker(name, &dir, args.n, args.reps)?;
            println!("{line}");
            Ok(())
        }
        None => drive(&args),
    }
}

/// The workloads in the order the driver runs them: name, size, repetitions.
fn plan(quick: bool) -> Vec<(&'static str, usize, usize)> {
    let div = if quick { 10 } else { 1 };
    let (append, tree, loads) = (100_000 / div, 1_000_000 / div, 100_000 / div);
    vec![
        ("build", tree, 1),
        ("open_unpacked", tree, 5),
        ("open_packed", tree, 9),
        ("load", loads, 5),
        ("pack", tree, 3),
        ("append", append, 5),
        ("append_fsync", append, 5),
    ]
}

/// Runs every selected workload in a child process and reports.
fn drive(args: &Args) -> AnyResult<()> {
    let base = args.tmp.clone().unwrap_or_else(|| {
        std::env::var_os("BENCH_TMP")
            .map(PathBuf::from)
            .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target/bench-tmp"))
    });
    std::fs::create_dir_all(&base)?;
    let dir = tempfile::Builder::new()
        .prefix("rust-storage-")
        .tempdir_in(&base)?;
    let exe = std::env::current_exe()?;
    let selected = |name: &str| {
        args.only
            .as_ref()
            .is_none_or(|only| only.iter().any(|o| o == name))
    };
    let plan = plan(args.quick);
    let needs_tree = plan
        .iter()
        .any(|&(name, _, _)| name != "append" && name != "append_fsync" && selected(name));
    let mut sink = Sink::new(args)?;
    for &(name, n, reps) in &plan {
        if !(selected(name) || (name == "build" && needs_tree)) {
            continue;
        }
        eprintln!("rust: {name} (n = {n}, {reps} reps)");
        let out = Command::new(&exe)
            .args(["--worker", name, "--n", &n.to_string()])
            .args(["--reps", &reps.to_string(), "--dir"])
            .arg(dir.path())
            .output()?;
        if !out.status.success() {
            return Err(format!(
                "worker {name} failed ({}): {}",
                out.status,
                String::from_utf8_lossy(&out.stderr)
            )
            .into());
        }
        let row: Value = serde_json::from_str(String::from_utf8(out.stdout)?.trim())?;
        let line = summary(&row);
        sink.emit(row, line)?;
    }
    sink.finish();
    Ok(())
}

/// One human-readable line for a result row.
fn summary(row: &Value) -> String {
    let f = |k: &str| row[k].as_f64().unwrap_or(f64::NAN);
    format!(
        "{}: median {:.4} {}, min {:.4}, max {:.4}, peak RSS {:.1} MiB",
        row["workload"].as_str().unwrap_or("?"),
        f("median"),
        row["unit"].as_str().unwrap_or(""),
        f("min"),
        f("max"),
        f("peak_rss_kb") / 1024.0
    )
}

// ---------------------------------------------------------------- records

/// The deterministic workload data, the same as `bench_storage.py` builds.
struct Gen {
    pool: Vec<u8>,
}

impl Gen {
    fn new() -> Gen {
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        let pool = (0..POOL_LEN)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                (x >> 32) as u8
            })
            .collect();
        Gen { pool }
    }

    /// Record data: the CBOR header naming `class`, then a 56-byte CBOR
    /// byte string sliced from the pool at a place that depends on `i`.
    fn data(&self, class: &str, i: u64) -> Vec<u8> {
        let mut d = Vec::with_capacity(6 + class.len() + PAYLOAD);
        durus_core::format::class_name::write_cbor_header(&mut d, class);
        d.extend_from_slice(&[0x58, PAYLOAD as u8]);
        let at = (i as usize).wrapping_mul(7919) % (POOL_LEN - PAYLOAD);
        d.extend_from_slice(&self.pool[at..at + PAYLOAD]);
        d
    }

    fn record(&self, class: &str, oid: u64, refs: &[u64]) -> Vec<u8> {
        let mut refs: Vec<u64> = refs.iter().copied().filter(|&r| r != oid).collect();
        refs.sort_unstable();
        refs.dedup();
        let refs: Vec<Oid> = refs.into_iter().map(Oid).collect();
        record::encode(Oid(oid), &self.data(class, oid), &refs).expect("small record")
    }

    /// Record `i` of the append workload: 100 bytes, two refs.
    fn append_record(&self, i: u64, n: u64) -> Vec<u8> {
        self.record("bench.Item", i, &[(i + 1) % n, (i * 31 + 7) % n])
    }
}

/// root (oid 0) -> `fanout` nodes (oids 1..=fanout) -> `leaves` leaves each
/// (oids after the nodes, grouped by node); leaves ref two siblings.
#[derive(Debug, Clone, Copy)]
struct Tree {
    fanout: u64,
    leaves: u64,
}

impl Tree {
    fn new(n: usize) -> Tree {
        let fanout = (n as u64).isqrt().max(1);
        let leaves = (n as u64 / fanout).saturating_sub(1).max(1);
        Tree { fanout, leaves }
    }

    fn total(self) -> u64 {
        1 + self.fanout + self.fanout * self.leaves
    }

    fn first_leaf(self, node: u64) -> u64 {
        1 + self.fanout + (node - 1) * self.leaves
    }

    /// Every record of the tree, indexed by oid.
    fn records(self, g: &Gen) -> Vec<Vec<u8>> {
        let mut out = Vec::with_capacity(self.total() as usize);
        out.push(g.record("bench.Root", 0, &(1..=self.fanout).collect::<Vec<_>>()));
        for node in 1..=self.fanout {
            out.push(self.node_record(g, node, true));
        }
        for oid in self.first_leaf(1)..self.total() {
            let base = oid - (oid - self.first_leaf(1)) % self.leaves;
            let j = oid - base;
            let sibs = [base + (j + 1) % self.leaves, base + (j + 7) % self.leaves];
            out.push(g.record("bench.Leaf", oid, &sibs));
        }
        out
    }

    fn node_record(self, g: &Gen, node: u64, with_leaves: bool) -> Vec<u8> {
        let first = self.first_leaf(node);
        let refs: Vec<u64> = if with_leaves {
            (first..first + self.leaves).collect()
        } else {
            Vec::new()
        };
        g.record("bench.Node", node, &refs)
    }
}

// ---------------------------------------------------------------- helpers

fn open_nosync(path: &Path) -> durus_core::Result<FileStorage> {
    FileStorage::options().fsync(false).open(path)
}

/// The result line: raw seconds per repetition and the summary in `unit`
/// (records/s for rates, where `items` records were handled per rep; ms
/// for plain times).
fn result(workload: &str, items: u64, rate: bool, secs: &[f64], extra: Value) -> Value {
    let mut sorted = secs.to_vec();
    sorted.sort_by(f64::total_cmp);
    let mid = sorted.len() / 2;
    let median = if sorted.len() % 2 == 1 {
        sorted[mid]
    } else {
        (sorted[mid - 1] + sorted[mid]) / 2.0
    };
    let (lo, hi) = (sorted[0], sorted[sorted.len() - 1]);
    let (unit, median, min, max) = if rate {
        let r = |s: f64| items as f64 / s;
        ("records/s", r(median), r(hi), r(lo))
    } else {
        ("ms", median * 1e3, lo * 1e3, hi * 1e3)
    };
    json!({
        "side": "rust",
        "workload": workload,
        "items": items,
        "unit": unit,
        "reps": secs.len(),
        "secs": secs,
        "median": median,
        "min": min,
        "max": max,
        "peak_rss_kb": peak_rss_kb(),
        "extra": extra,
    })
}

// ---------------------------------------------------------------- workloads

fn worker(name: &str, dir: &Path, n: usize, reps: usize) -> AnyResult<Value> {
    let reps = reps.max(1);
    let tree = Tree::new(n);
    let unpacked = dir.join("tree.durus");
    let packed = dir.join("packed.durus");
    let garbage = dir.join("garbage.durus");
    match name {
        "build" => build(dir, tree),
        "append" => append(dir, n as u64, reps, false),
        "append_fsync" => append(dir, n as u64, reps, true),
        "open_unpacked" => open(name, &unpacked, tree, reps),
        "open_packed" => open(name, &packed, tree, reps),
        "load" => load(&packed, tree, n, reps),
        "pack" => pack(dir, &garbage, tree, reps),
        other => Err(format!("unknown workload {other:?}").into()),
    }
}

/// `n` records in one transaction into a fresh file.
fn append(dir: &Path, n: u64, reps: usize, fsync: bool) -> AnyResult<Value> {
    let g = Gen::new();
    let path = dir.join("append.durus");
    let mut secs = Vec::with_capacity(reps);
    let mut size = 0;
    for _ in 0..reps {
        remove_db(&path);
        let records: Vec<Vec<u8>> = (0..n).map(|i| g.append_record(i, n)).collect();
        let mut storage = FileStorage::options().fsync(fsync).open(&path)?;
        let t = Instant::now();
        storage.begin()?;
        for (i, rec) in records.into_iter().enumerate() {
            let oid = storage.new_oid()?;
            debug_assert_eq!(oid, Oid(i as u64));
            storage.store(oid, rec)?;
        }
        storage.end(&mut |_| Ok(()))?;
        secs.push(t.elapsed().as_secs_f64());
        storage.close()?;
        size = file_len(&path);
        remove_db(&path);
    }
    let name = if fsync { "append_fsync" } else { "append" };
    Ok(result(
        name,
        n,
        true,
        &secs,
        json!({ "file_bytes": size, "fsync": fsync }),
    ))
}

/// Builds `tree.durus` (timed), then untimed `packed.durus` (its pack) and
/// `garbage.durus` (it plus one transaction dropping 10% of the leaves).
fn build(dir: &Path, tree: Tree) -> AnyResult<Value> {
    let g = Gen::new();
    let unpacked = dir.join("tree.durus");
    remove_db(&unpacked);
    let total = tree.total();
    let records = tree.records(&g);
    let mut storage = open_nosync(&unpacked)?;
    let t = Instant::now();
    for i in 0..total {
        let oid = storage.new_oid()?;
        debug_assert_eq!(oid, Oid(i));
    }
    let mut records = records.into_iter().enumerate();
    let head = 1 + tree.fanout as usize;
    let mut txn = head;
    loop {
        storage.begin()?;
        let mut any = false;
        for (oid, rec) in records.by_ref().take(txn) {
            storage.store(Oid(oid as u64), rec)?;
            any = true;
        }
        if !any {
            break;
        }
        storage.end(&mut |_| Ok(()))?;
        txn = BUILD_TXN;
    }
    let build_secs = t.elapsed().as_secs_f64();
    storage.close()?;

    let packed = dir.join("packed.durus");
    remove_db(&packed);
    std::fs::copy(&unpacked, &packed)?;
    let mut storage = open_nosync(&packed)?;
    let report = storage.pack()?;
    storage.close()?;
    let _ = std::fs::remove_file(dir.join("packed.durus.prepack"));
    if report.kept != total {
        return Err(format!("pack kept {} of {total} records", report.kept).into());
    }

    let garbage = dir.join("garbage.durus");
    remove_db(&garbage);
    std::fs::copy(&unpacked, &garbage)?;
    let mut storage = open_nosync(&garbage)?;
    storage.begin()?;
    for node in (1..=tree.fanout).step_by(GARBAGE_STEP) {
        storage.store(Oid(node), tree.node_record(&g, node, false))?;
    }
    storage.end(&mut |_| Ok(()))?;
    storage.close()?;

    Ok(result(
        "build",
        total,
        true,
        &[build_secs],
        json!({
            "records": total,
            "transactions": 1 + (total as usize - head).div_ceil(BUILD_TXN),
            "unpacked_bytes": file_len(&unpacked),
            "packed_bytes": file_len(&packed),
            "garbage_bytes": file_len(&garbage),
        }),
    ))
}

/// Time to open `path` (read-write, as Durus opens it).
fn open(name: &str, path: &Path, tree: Tree, reps: usize) -> AnyResult<Value> {
    let mut secs = Vec::with_capacity(reps);
    for _ in 0..reps {
        let t = Instant::now();
        let storage = black_box(open_nosync(path)?);
        secs.push(t.elapsed().as_secs_f64());
        drop(storage);
    }
    // One check outside the clock: the last record is reachable.
    let mut storage = open_nosync(path)?;
    storage.load(Oid(tree.total() - 1))?;
    storage.close()?;
    Ok(result(
        name,
        tree.total(),
        false,
        &secs,
        json!({ "file_bytes": file_len(path), "best_ms": secs.iter().copied().fold(f64::INFINITY, f64::min) * 1e3 }),
    ))
}

/// The oids of `count` random loads, the same sequence Python draws.
fn random_oids(count: usize, total: u64) -> Vec<Oid> {
    let mut x: u64 = 0x2545_F491_4F6C_DD1D;
    (0..count)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            Oid((x >> 11) % total)
        })
        .collect()
}

/// `count` random loads from a freshly opened packed file.
fn load(path: &Path, tree: Tree, count: usize, reps: usize) -> AnyResult<Value> {
    let oids = random_oids(count, tree.total());
    let mut secs = Vec::with_capacity(reps);
    let mut bytes = 0u64;
    for _ in 0..reps {
        let mut storage = open_nosync(path)?;
        bytes = 0;
        let t = Instant::now();
        for &oid in &oids {
            bytes += black_box(storage.load(oid)?).len() as u64;
        }
        secs.push(t.elapsed().as_secs_f64());
        storage.close()?;
    }
    Ok(result(
        "load",
        count as u64,
        true,
        &secs,
        json!({ "bytes_loaded": bytes }),
    ))
}

/// A full pack of a copy of `garbage.durus` per repetition.
fn pack(dir: &Path, source: &Path, tree: Tree, reps: usize) -> AnyResult<Value> {
    let work = dir.join("work.durus");
    let mut secs = Vec::with_capacity(reps);
    let mut report = None;
    for _ in 0..reps {
        remove_db(&work);
        std::fs::copy(source, &work)?;
        let mut storage = open_nosync(&work)?;
        let t = Instant::now();
        let r = storage.pack()?;
        secs.push(t.elapsed().as_secs_f64());
        storage.close()?;
        report = Some(r);
        remove_db(&work);
    }
    let report = report.expect("at least one repetition");
    let dropped = tree.fanout.div_ceil(GARBAGE_STEP as u64) * tree.leaves;
    if report.kept != tree.total() - dropped {
        return Err(format!(
            "pack kept {} records, expected {}",
            report.kept,
            tree.total() - dropped
        )
        .into());
    }
    Ok(result(
        "pack",
        tree.total(),
        false,
        &secs,
        json!({
            "kept": report.kept,
            "removed": report.removed.len(),
            "size_before": report.size_before,
            "size_after": report.size_after,
        }),
    ))
}
