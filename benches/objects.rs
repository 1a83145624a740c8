//! Object-level benchmark: `Connection`, `PRef` and a `BTree` over a
//! `FileStorage`, the Rust side of `scripts/bench-objects` (the Python
//! Durus 4.3 side is `scripts/bench_objects.py`, which runs the same
//! workloads on the same object graph: the reference's, in
//! `../shared/interop/bench_durus.py`).
//!
//! ```text
//! cargo bench --bench objects                  # every workload, a table on stdout
//! cargo bench --bench objects -- --quick       # n = 10,000 instead of 100,000
//! cargo bench --bench objects -- --json F.jsonl # also one JSON line per workload in F.jsonl
//! cargo bench --bench objects -- --only read,update
//! ```
//!
//! The objects: `Item { id: i64, name: String, value: f64 }` (name
//! `"item-<id>"`, value `1.5 * id`), in a `BTree<i64, PRef<Item>>` keyed by
//! id under `root["items"]` (Python: Durus's `BTree`, whose nodes hold at
//! most 31 items, ours 64).
//!
//! Workloads:
//!
//! * `insert`: n items, a commit every 1000, into a fresh file, fsync off
//!   (Python Durus never fsyncs); `insert_fsync` with the default fsync'd
//!   commit. The last `insert` repetition's file is the input of the others.
//! * `read`: a fresh process opens the file (not timed), then reads the
//!   three fields of every item in key order (`cold_read`, objects/s),
//!   then does the same again on the same connection (`warm_read`, field
//!   reads/s, three `read` calls per item as generated getters make them);
//!   `warm_read_closure` reads the three fields in one `read` call.
//! * `open`: `FileStorage::open` of the file `insert` left (unpacked: its
//!   index is built by scanning every transaction), closed untimed.
//! * `update`: 10% of the items, drawn by the same pseudo-random sequence as
//!   Python, `value += 1`, a commit every 100, on a fresh copy of the file
//!   and a fresh connection per repetition; fsync off, and `update_fsync`.
//! * `pack`: on a fresh copy of the file, the update workload (untimed),
//!   then `Connection::pack`; the last packed file is the input of
//!   `open_packed`, which opens it as `open` does.
//! * `open_floor`: what opening the packed file cannot do without: open
//!   it read-write, lock it, stat it, read the 16-byte head and the
//!   24-byte map header (the system calls of `open_packed`, nothing else).
//!
//! The cache size is 2n + 10000, as in the reference, so nothing is ghosted.
//! Every workload runs in its own child process (this executable again,
//! with `--worker`), so the peak RSS it reports (VmHWM) is its own; `read`
//! runs one child per repetition, so that every cold read is cold.

mod common;

use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use durus_core::Result as DurusResult;
use durus_core::{BTree, Connection, FileStorage, PRef};
use serde_json::{json, Value};

use common::items::{items_of, store_items, Item, Items};
use common::{
    file_len, merge_runs, peak_rss_kb, rate_row, remove_db, summary, time_row, AnyResult, Args,
    Sink,
};

/// Items per commit while inserting.
const COMMIT_EVERY: usize = 1000;
/// Part of the items the update workload changes.
const UPDATE_DIVISOR: usize = 10;
/// Updates per commit.
const UPDATE_COMMIT_EVERY: usize = 100;
/// Warm passes per read process (`BENCH_WARM_PASSES` overrides it, e.g.
/// to profile the warm read: `perf record ... --worker read ...`).
const WARM_PASSES: usize = 3;
fn main() {
    if let Err(e) = run() {
        eprintln!("bench objects: {e}");
        std::process::exit(1);
    }
}

fn run() -> AnyResult<()> {
    let args = Args::parse(std::env::args().skip(1))?;
    match &args.worker {
        Some(name) => {
            let dir = args.dir.clone().ok_or("--worker needs --dir")?;
            for line in worker(name, &dir, args.n, args.reps)? {
                println!("{line}");
            }
            Ok(())
        }
        None => drive(&args),
    }
}

/// The workloads in the order the driver runs them: name, repetitions.
/// `read` repetitions are separate processes; the others run in one.
const PLAN: &[(&str, usize)] = &[
    ("insert", 5),
    ("insert_fsync", 3),
    ("open", 9),
    ("read", 5),
    ("update", 5),
    ("update_fsync", 3),
    ("pack", 3),
    ("open_packed", 9),
    ("open_floor", 9),
];

/// Runs every selected workload in child processes and reports.
fn drive(args: &Args) -> AnyResult<()> {
    let n = if args.quick { 10_000 } else { 100_000 };
    let base = args.tmp.clone().unwrap_or_else(|| {
        std::env::var_os("BENCH_TMP")
            .map(PathBuf::from)
            .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target/bench-tmp"))
    });
    std::fs::create_dir_all(&base)?;
    let dir = tempfile::Builder::new()
        .prefix("rust-objects-")
        .tempdir_in(&base)?;
    let exe = std::env::current_exe()?;
    let mut sink = Sink::new(args)?;
    let selected = |name: &str| {
        args.only.as_ref().is_none_or(|only| {
            only.iter()
                .any(|o| o == name || name.starts_with(&format!("{o}_")))
        })
    };
    // Everything but the fsync'd insert reads the file `insert` leaves;
    // `open_packed` reads the one `pack` leaves.
    let needs_file = PLAN
        .iter()
        .any(|&(name, _)| !name.starts_with("insert") && selected(name));
    let needed = |name: &str| match name {
        "insert" => needs_file,
        "pack" => selected("open_packed") || selected("open_floor"),
        _ => false,
    };
    for &(name, reps) in PLAN {
        if !(selected(name) || needed(name)) {
            continue;
        }
        eprintln!("rust: {name} (n = {n}, {reps} reps)");
        let rows = if name == "read" {
            // One process per repetition: every cold read is cold.
            let mut runs = Vec::new();
            for _ in 0..reps {
                runs.push(spawn(&exe, name, n, 1, dir.path())?);
            }
            merge_runs(&runs)?
        } else {
            spawn(&exe, name, n, reps, dir.path())?
        };
        for row in rows {
            let line = summary(&row);
            sink.emit(row, line)?;
        }
    }
    sink.finish();
    Ok(())
}

/// Runs one worker process and parses its JSON lines.
fn spawn(exe: &Path, name: &str, n: usize, reps: usize, dir: &Path) -> AnyResult<Vec<Value>> {
    let out = Command::new(exe)
        .args(["--worker", name, "--n", &n.to_string()])
        .args(["--reps", &reps.to_string(), "--dir"])
        .arg(dir)
        .output()?;
    if !out.status.success() {
        return Err(format!(
            "worker {name} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        )
        .into());
    }
    let text = String::from_utf8(out.stdout)?;
    let mut rows = Vec::new();
    for line in text.lines().filter(|l| l.starts_with('{')) {
        rows.push(serde_json::from_str(line)?);
    }
    Ok(rows)
}

// ---------------------------------------------------------------- helpers

/// A connection over the file at `path`, with the reference's cache size.
fn connect(path: &Path, n: usize, fsync: bool) -> DurusResult<Connection> {
    let conn = Connection::new(FileStorage::options().fsync(fsync).open(path)?)?;
    conn.set_cache_size(2 * n + 10_000);
    Ok(conn)
}

/// The ids the update workload changes: the first `k` of a partial
/// Fisher-Yates shuffle of `0..n` driven by xorshift64, as Python draws
/// them.
fn update_ids(n: usize, k: usize) -> Vec<usize> {
    let mut ids: Vec<usize> = (0..n).collect();
    let mut x: u64 = 0x2545_F491_4F6C_DD1D;
    for j in 0..k {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let r = j + (x % (n - j) as u64) as usize;
        ids.swap(j, r);
    }
    ids.truncate(k);
    ids
}

// ---------------------------------------------------------------- workloads

fn worker(name: &str, dir: &Path, n: usize, reps: usize) -> AnyResult<Vec<Value>> {
    let reps = reps.max(1);
    let items = dir.join("items.durus");
    match name {
        "insert" => insert(dir, n, reps, false),
        "insert_fsync" => insert(dir, n, reps, true),
        "read" => read(&items, n),
        "update" => update(dir, &items, n, reps, false),
        "update_fsync" => update(dir, &items, n, reps, true),
        "open" => open("open", &items, reps),
        "pack" => pack(dir, &items, n, reps),
        "open_packed" => open("open_packed", &dir.join("packed.durus"), reps),
        "open_floor" => open_floor(&dir.join("packed.durus"), reps),
        other => Err(format!("unknown workload {other:?}").into()),
    }
}

/// `n` items into a fresh file, a commit every 1000; the fsync-off variant
/// leaves its last file as `items.durus`.
fn insert(dir: &Path, n: usize, reps: usize, fsync: bool) -> AnyResult<Vec<Value>> {
    let path = dir.join(if fsync {
        "insert-fsync.durus"
    } else {
        "insert.durus"
    });
    let mut secs = Vec::with_capacity(reps);
    let mut size = 0;
    for _ in 0..reps {
        remove_db(&path);
        let conn = connect(&path, n, fsync)?;
        let tree = store_items(&conn, BTree::new())?;
        conn.commit()?;
        let t = Instant::now();
        for i in 0..n {
            let item = PRef::new(Item {
                id: i as i64,
                name: format!("item-{i}"),
                value: i as f64 * 1.5,
            });
            tree.insert(i as i64, item)?;
            if (i + 1) % COMMIT_EVERY == 0 {
                conn.commit()?;
            }
        }
        conn.commit()?;
        secs.push(t.elapsed().as_secs_f64());
        drop(tree);
        drop(conn);
        size = file_len(&path);
    }
    if fsync {
        remove_db(&path);
    } else {
        let items = dir.join("items.durus");
        remove_db(&items);
        std::fs::rename(&path, &items)?;
    }
    let name = if fsync { "insert_fsync" } else { "insert" };
    Ok(vec![rate_row(
        name,
        n as u64,
        "objects/s",
        &secs,
        peak_rss_kb(),
        json!({
            "file_bytes": size,
            "fsync": fsync,
            "commits": n.div_ceil(COMMIT_EVERY),
        }),
    )])
}

/// What one pass over every item saw: items, sum of ids, of name lengths,
/// of values.
#[derive(Debug, Default, PartialEq)]
struct Pass {
    count: u64,
    ids: i64,
    name_bytes: usize,
    values: f64,
}

/// Reads the three fields of every item in key order, each with its own
/// `read` call (what generated getters do), or all three in one.
fn pass(tree: &PRef<Items>, one_closure: bool) -> DurusResult<Pass> {
    let mut p = Pass::default();
    // In place, as Python's `for key, obj in tree.items()`: no snapshot.
    tree.for_each(|_, item| {
        if one_closure {
            let (id, len, value) = item.read(|it| (it.id, it.name.len(), it.value))?;
            p.ids += id;
            p.name_bytes += len;
            p.values += value;
        } else {
            p.ids += item.read(|it| it.id)?;
            p.name_bytes += item.read(|it| it.name.len())?;
            p.values += item.read(|it| it.value)?;
        }
        p.count += 1;
        Ok(())
    })?;
    Ok(black_box(p))
}

/// A cold pass from a freshly opened file, then warm passes on the same
/// connection.
fn read(path: &Path, n: usize) -> AnyResult<Vec<Value>> {
    let t = Instant::now();
    let conn = connect(path, n, false)?;
    let tree = items_of(&conn)?;
    let open_secs = t.elapsed().as_secs_f64();

    let t = Instant::now();
    let cold = pass(&tree, false)?;
    let cold_secs = t.elapsed().as_secs_f64();
    let loads = conn.load_count();

    let n64 = n as i64;
    let expect = Pass {
        count: n as u64,
        ids: n64 * (n64 - 1) / 2,
        name_bytes: cold.name_bytes,
        values: cold.values,
    };
    if cold.count != expect.count || cold.ids != expect.ids {
        return Err(format!("cold read saw {cold:?}, expected {} items", n).into());
    }
    let passes = std::env::var("BENCH_WARM_PASSES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(WARM_PASSES)
        .max(1);
    let mut warm = Vec::with_capacity(passes);
    let mut warm_closure = Vec::with_capacity(passes);
    for _ in 0..passes {
        let t = Instant::now();
        let p = pass(&tree, false)?;
        warm.push(t.elapsed().as_secs_f64());
        if p != expect {
            return Err(format!("warm read saw {p:?}, expected {expect:?}").into());
        }
        let t = Instant::now();
        let p = pass(&tree, true)?;
        warm_closure.push(t.elapsed().as_secs_f64());
        if p != expect {
            return Err(format!("warm read saw {p:?}, expected {expect:?}").into());
        }
    }
    if conn.load_count() != loads {
        return Err("a warm pass loaded objects: the cache ghosted some".into());
    }
    let rss = peak_rss_kb();
    let fields = 3 * n as u64;
    Ok(vec![
        rate_row(
            "cold_read",
            n as u64,
            "objects/s",
            &[cold_secs],
            rss,
            json!({ "open_secs": open_secs, "loads": loads, "file_bytes": file_len(path) }),
        ),
        rate_row(
            "warm_read",
            fields,
            "field reads/s",
            &warm,
            rss,
            json!({ "passes": passes, "reads_per_item": 3 }),
        ),
        rate_row(
            "warm_read_closure",
            fields,
            "field reads/s",
            &warm_closure,
            rss,
            json!({ "passes": passes, "reads_per_item": 1 }),
        ),
    ])
}

/// 10% of the items, `value += 1`, a commit every 100, each repetition on a
/// fresh copy of `items.durus` with a fresh connection.
fn update(dir: &Path, items: &Path, n: usize, reps: usize, fsync: bool) -> AnyResult<Vec<Value>> {
    let work = dir.join("update.durus");
    let k = n / UPDATE_DIVISOR;
    let ids = update_ids(n, k);
    let mut secs = Vec::with_capacity(reps);
    let mut size = 0;
    for _ in 0..reps {
        remove_db(&work);
        std::fs::copy(items, &work)?;
        let conn = connect(&work, n, fsync)?;
        let tree = items_of(&conn)?;
        let t = Instant::now();
        apply_updates(&conn, &tree, &ids)?;
        secs.push(t.elapsed().as_secs_f64());
        conn.abort();
        let first = ids[0];
        let item = tree.get(&(first as i64))?.ok_or("missing item")?;
        let value = item.read(|it| it.value)?;
        if value != first as f64 * 1.5 + 1.0 {
            return Err(format!("item {first} has value {value} after the update").into());
        }
        drop(conn);
        size = file_len(&work);
        remove_db(&work);
    }
    let name = if fsync { "update_fsync" } else { "update" };
    Ok(vec![rate_row(
        name,
        k as u64,
        "objects/s",
        &secs,
        peak_rss_kb(),
        json!({ "file_bytes": size, "fsync": fsync, "commits": k.div_ceil(UPDATE_COMMIT_EVERY) }),
    )])
}

/// `value += 1` on the items `ids`, a commit every 100.
fn apply_updates(conn: &Connection, tree: &PRef<Items>, ids: &[usize]) -> AnyResult<()> {
    for (j, &i) in ids.iter().enumerate() {
        let item = tree.get(&(i as i64))?.ok_or("missing item")?;
        item.write(|it| it.value += 1.0)?;
        if (j + 1) % UPDATE_COMMIT_EVERY == 0 {
            conn.commit()?;
        }
    }
    conn.commit()?;
    Ok(())
}

/// Opens the file at `path` `reps` times (closing it untimed), as Durus's
/// `FileStorage(path)`: for an unpacked file the index is built by
/// scanning every transaction.
fn open(name: &str, path: &Path, reps: usize) -> AnyResult<Vec<Value>> {
    // An untimed first open counts the records (reading the whole map),
    // as Python's does.
    let records = FileStorage::open(path)?.stats()?.records;
    let mut secs = Vec::with_capacity(reps);
    for _ in 0..reps {
        let t = Instant::now();
        let storage = FileStorage::options().fsync(false).open(path)?;
        secs.push(t.elapsed().as_secs_f64());
        drop(black_box(storage));
    }
    Ok(vec![time_row(
        name,
        records,
        &secs,
        peak_rss_kb(),
        json!({ "file_bytes": file_len(path) }),
    )])
}

/// On a fresh copy of `items.durus` per repetition, the update workload
/// (untimed), then a pack; the last packed file stays as `packed.durus`.
fn pack(dir: &Path, items: &Path, n: usize, reps: usize) -> AnyResult<Vec<Value>> {
    let work = dir.join("pack.durus");
    let ids = update_ids(n, n / UPDATE_DIVISOR);
    let mut secs = Vec::with_capacity(reps);
    let (mut before, mut after, mut records) = (0, 0, 0);
    for _ in 0..reps {
        remove_db(&work);
        std::fs::copy(items, &work)?;
        let conn = connect(&work, n, false)?;
        apply_updates(&conn, &items_of(&conn)?, &ids)?;
        before = file_len(&work);
        let t = Instant::now();
        let report = conn.pack()?;
        secs.push(t.elapsed().as_secs_f64());
        records = report.kept;
        drop(conn);
        after = file_len(&work);
    }
    let packed = dir.join("packed.durus");
    remove_db(&packed);
    std::fs::rename(&work, &packed)?;
    Ok(vec![time_row(
        "pack",
        records,
        &secs,
        peak_rss_kb(),
        json!({ "bytes_before": before, "bytes_after": after }),
    )])
}

/// The system calls opening a packed file needs (open, lock, stat, read
/// the head and the offset map's header), timed alone: the floor under
/// `open_packed`.
fn open_floor(path: &Path, reps: usize) -> AnyResult<Vec<Value>> {
    use std::os::unix::fs::FileExt;
    let mut secs = Vec::with_capacity(reps);
    for _ in 0..reps {
        let t = Instant::now();
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)?;
        file.try_lock()?;
        let len = file.metadata()?.len();
        let mut head = [0u8; 16];
        file.read_exact_at(&mut head, 0)?;
        // The map header follows the base transaction: 16 + T0.
        let t0 = u64::from_be_bytes(head[8..16].try_into()?);
        let mut header = [0u8; 24];
        file.read_exact_at(&mut header, 16 + t0)?;
        secs.push(t.elapsed().as_secs_f64());
        black_box((len, header));
    }
    Ok(vec![time_row(
        "open_floor",
        0,
        &secs,
        peak_rss_kb(),
        json!({ "calls": "open, flock, fstat, pread 16, pread 24" }),
    )])
}
