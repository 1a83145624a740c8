#!/usr/bin/env python3
"""BTree benchmark of Python Durus 4.3: the reference side of
scripts/bench-btree, the same workloads as benches/btree.rs.

The reference workloads of ../shared/interop/bench_durus.py on its object
graph: n peer_models.Item (int id, str name "item<id>", float value
1.5 * id) in a durus.btree.BTree (BNode16, its default) keyed by id, under
root["items"], on a durus.file_storage.FileStorage. Cache size 2n + 10000,
as in the reference, so nothing is ghosted.

Workloads (every repetition is its own process, so every cold read is
cold and every peak RSS, ru_maxrss, is its own):
  insert       n Items into a fresh file, a commit every 1000 (w_insert).
  cold_scan    a fresh process opens the file (not timed), then reads the
               three fields of every Item iterating the BTree (w_read's
               cold part).
  pack         Connection.pack() of that file (one repetition).
  open_packed  FileStorage(path) + Connection(storage) on the packed file.
  lookup       K random keys, each in a NEW Connection over a freshly
               opened FileStorage of the packed file: the records loaded by
               tree[key] (storage.load calls, counted by wrapping the
               storage's load, and the connection's load count).

    bench_btree.py [--quick] [--json] [--tmp DIR] [--only a,b] [--n N] [--lookups K]
        runs every workload in child processes (--worker); a summary goes
        to stderr and, with --json, one JSON line per workload to stdout.
    bench_btree.py report RUST.jsonl DURUS.jsonl
        merges both sides' JSON lines into one markdown table.
    bench_btree.py report-nodes RUST.jsonl
        the table of the Rust side's --node-sizes sweep.

Run it with the Python that has Durus 4.3 (target/durus-peer-venv/bin/python).
"""
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
INTEROP = os.environ.get("DURUS_INTEROP") or os.path.join(
    HERE, "..", "..", "shared", "interop")
for path in (HERE, INTEROP):
    if path not in sys.path:
        sys.path.insert(0, path)

# The object bench's rate rows and summaries; the storage bench's flags,
# file helpers and JSON-line reader.
from bench_objects import result, summary  # noqa: E402
from bench_storage import (emit, file_len, parse_opts, peak_rss_kb,  # noqa: E402
                           read_rows, remove_db)

COMMIT_EVERY = 1000
LOOKUPS = 1000
REPS = 3
MASK = (1 << 64) - 1
# Durus's default node class: minimum degree t = 16, at most 2t - 1 = 31
# items per node.
DURUS_NODE = "BNode16"
DURUS_NODE_MAX_ITEMS = 31

# name, repetitions (one process each)
PLAN = [("insert", REPS), ("cold_scan", REPS), ("pack", 1),
        ("open_packed", REPS), ("lookup", 1)]


def sizes(quick):
    return 100000 if quick else 1000000


# ------------------------------------------------------------------ helpers

def time_result(workload, items, secs, rss, extra):
    """A row of plain times in ms (the schema of benches/btree.rs)."""
    s = sorted(secs)
    mid = len(s) // 2
    median = s[mid] if len(s) % 2 else (s[mid - 1] + s[mid]) / 2
    return dict(side="durus", workload=workload, items=items, unit="ms",
                reps=len(secs), secs=secs, median=median * 1e3,
                min=s[0] * 1e3, max=s[-1] * 1e3, peak_rss_kb=rss,
                extra=extra)


def median(xs):
    s = sorted(xs)
    mid = len(s) // 2
    return s[mid] if len(s) % 2 else (s[mid - 1] + s[mid]) / 2


def lookup_keys(n, k):
    """K keys in 0..n drawn by xorshift64, the keys benches/btree.rs
    draws."""
    x = 0x2545F4914F6CDD1D
    keys = []
    for _ in range(k):
        x ^= (x << 13) & MASK
        x ^= x >> 7
        x ^= (x << 17) & MASK
        keys.append(x % n)
    return keys


def connect(path, n, storage=None):
    from durus.connection import Connection
    from durus.file_storage import FileStorage
    return Connection(storage or FileStorage(path), cache_size=2 * n + 10000)


def expected_loads(n, b):
    """ceil(log_B n) + 1: the nodes on a path of a B+tree of n entries
    with B per node, plus the tree object."""
    levels, reach = 1, b
    while reach < n:
        levels += 1
        reach *= b
    return levels + 1


# ------------------------------------------------------------------ workloads

def insert(d, n):
    """w_insert of the reference, into a fresh file that becomes
    items.durus."""
    from durus.btree import BTree
    from peer_models import Item
    path = os.path.join(d, "insert.durus")
    remove_db(path)
    conn = connect(path, n)
    tree = BTree()
    conn.get_root()["items"] = tree
    conn.commit()
    t = time.perf_counter()
    for i in range(n):
        tree[i] = Item(i, "item%d" % i, i * 1.5)
        if (i + 1) % COMMIT_EVERY == 0:
            conn.commit()
    conn.commit()
    secs = time.perf_counter() - t
    conn.get_storage().close()
    size = file_len(path)
    items = os.path.join(d, "items.durus")
    remove_db(items)
    os.rename(path, items)
    return [result("insert", n, "objects/s", [secs], peak_rss_kb(), dict(
        file_bytes=size, fsync=False, node=DURUS_NODE,
        commits=-(-n // COMMIT_EVERY)))]


def cold_scan(d, n):
    """w_read's cold part: open (not timed), then every Item in key
    order."""
    import peer_models  # noqa: F401  (imported before the clock, as w_read)
    path = os.path.join(d, "items.durus")
    t = time.perf_counter()
    conn = connect(path, n)
    tree = conn.get_root()["items"]
    open_secs = time.perf_counter() - t
    loads0 = conn.get_load_count()
    t = time.perf_counter()
    count = check = 0
    for key, obj in tree.items():
        check += obj.id
        len(obj.name)
        obj.value
        count += 1
    secs = time.perf_counter() - t
    assert count == n and check == n * (n - 1) // 2, (count, check)
    loads = conn.get_load_count() - loads0
    conn.get_storage().close()
    return [result("cold_scan", n, "objects/s", [secs], peak_rss_kb(), dict(
        open_secs=open_secs, loads=loads, file_bytes=file_len(path)))]


def pack(d, n):
    path = os.path.join(d, "items.durus")
    before = file_len(path)
    conn = connect(path, n)
    t = time.perf_counter()
    conn.pack()
    secs = time.perf_counter() - t
    conn.get_storage().close()
    for leftover in (path + ".prepack", path + ".pack"):
        if os.path.exists(leftover):
            os.unlink(leftover)
    return [time_result("pack", n, [secs], peak_rss_kb(), dict(
        size_before=before, size_after=file_len(path)))]


def open_packed(d, n):
    """FileStorage(path) + Connection(storage) (which loads the root)."""
    from durus.connection import Connection
    from durus.file_storage import FileStorage
    path = os.path.join(d, "items.durus")
    t = time.perf_counter()
    storage = FileStorage(path)
    storage_secs = time.perf_counter() - t
    conn = Connection(storage, cache_size=2 * n + 10000)
    secs = time.perf_counter() - t
    assert "items" in conn.get_root()
    storage.close()
    return [time_result("open_packed", n, [secs], peak_rss_kb(), dict(
        storage_open_secs=storage_secs, file_bytes=file_len(path)))]


def lookup(d, n, k):
    """K lookups, each in a new Connection over a freshly opened storage:
    how many records does tree[key] load from cold?"""
    from durus.file_storage import FileStorage
    import peer_models  # noqa: F401
    path = os.path.join(d, "items.durus")
    keys = lookup_keys(n, k)
    storage_loads, states, secs = [], [], []
    for key in keys:
        storage = FileStorage(path)
        counter = [0]
        real_load = storage.load

        def counting_load(oid, real_load=real_load, counter=counter):
            counter[0] += 1
            return real_load(oid)
        storage.load = counting_load
        conn = connect(path, n, storage)
        tree = conn.get_root()["items"]
        loads0, states0 = counter[0], conn.get_load_count()
        t = time.perf_counter()
        item = tree[key]
        secs.append(time.perf_counter() - t)
        storage_loads.append(counter[0] - loads0)
        states.append(conn.get_load_count() - states0)
        assert item.value == key * 1.5, (key, item.value)
        storage.close()
    # The shape of the tree, after the clock (node_count loads every node).
    conn = connect(path, n)
    tree = conn.get_root()["items"]
    depth = tree.root.get_level() + 1
    nodes = tree.root.get_node_count()
    conn.get_storage().close()
    return [dict(
        side="durus", workload="lookup", items=k, unit="loads/lookup",
        reps=k, median=median(storage_loads), min=min(storage_loads),
        max=max(storage_loads), peak_rss_kb=peak_rss_kb(),
        extra=dict(
            n=n, mean=sum(storage_loads) / float(k),
            states_mean=sum(states) / float(k), states_median=median(states),
            lookup_us_median=median(secs) * 1e6, node=DURUS_NODE,
            node_size=DURUS_NODE_MAX_ITEMS, depth=depth, node_count=nodes,
            expected=expected_loads(n, DURUS_NODE_MAX_ITEMS),
            counted="storage.load calls (wrapped); states: get_load_count()"))]


def worker(name, d, n, k):
    if name == "insert":
        return insert(d, n)
    if name == "cold_scan":
        return cold_scan(d, n)
    if name == "pack":
        return pack(d, n)
    if name == "open_packed":
        return open_packed(d, n)
    if name == "lookup":
        return lookup(d, n, k)
    raise SystemExit("unknown workload %r" % name)


# ------------------------------------------------------------------ driver

def spawn(name, n, k, d):
    out = subprocess.run(
        [sys.executable, os.path.abspath(__file__), "--worker", name,
         "--n", str(n), "--lookups", str(k), "--dir", d],
        stdout=subprocess.PIPE, check=True).stdout.decode()
    return [json.loads(line) for line in out.splitlines()
            if line.startswith("{")]


def merge(runs):
    """One row per workload from several processes: every timing, the
    largest peak RSS. A single process's rows stay as they are."""
    if len(runs) == 1:
        return runs[0]
    merged = []
    for row in runs[0]:
        same = [r for run in runs for r in run
                if r["workload"] == row["workload"]]
        secs = [s for r in same for s in r["secs"]]
        rss = max(r["peak_rss_kb"] for r in same)
        extra = dict(row["extra"], processes=len(same))
        if row["unit"] == "ms":
            merged.append(time_result(row["workload"], row["items"], secs,
                                      rss, extra))
        else:
            merged.append(result(row["workload"], row["items"], row["unit"],
                                 secs, rss, extra))
    return merged


def line(row):
    if row["workload"] == "lookup":
        e = row["extra"]
        return ("lookup: %.2f loads per lookup (mean; median %s, %s–%s), "
                "ceil(log_B n)+1 = %d with B = %d, depth %d, %d nodes" % (
                    e["mean"], row["median"], row["min"], row["max"],
                    e["expected"], e["node_size"], e["depth"], e["node_count"]))
    if row["unit"] == "ms":
        return "%s: median %.3f ms, min %.3f, max %.3f, peak RSS %.1f MiB" % (
            row["workload"], row["median"], row["min"], row["max"],
            row["peak_rss_kb"] / 1024.0)
    return summary(row)


def drive(quick, as_json, tmp, only, n, k):
    n = n or sizes(quick)
    base = tmp or os.environ.get("BENCH_TMP") or os.path.join(
        HERE, "..", "target", "bench-tmp")
    os.makedirs(base, exist_ok=True)
    d = tempfile.mkdtemp(prefix="durus-btree-", dir=base)
    try:
        # Every workload after insert reads the file insert leaves (and
        # open_packed and lookup the file pack leaves).
        selected = lambda name: only is None or name in only
        wanted = [name for name, _ in PLAN if selected(name)]
        needs = set(wanted)
        if needs - {"insert"}:
            needs.add("insert")
        if needs & {"open_packed", "lookup"}:
            needs.add("pack")
        for name, reps in PLAN:
            if name not in needs:
                continue
            sys.stderr.write("durus: %s (n = %d, %d process%s)\n" % (
                name, n, reps, "es" if reps > 1 else ""))
            sys.stderr.flush()
            rows = merge([spawn(name, n, k, d) for _ in range(reps)])
            for row in rows:
                emit(row, as_json, line(row))
    finally:
        shutil.rmtree(d, ignore_errors=True)


# ------------------------------------------------------------------ report

ROWS = [
    # workload, label, target: ("speedup", x) or ("rust_ms_below", ms) or None
    ("insert", "insert into a BTree, commit every 1000, fsync off",
     ("speedup", 20)),
    ("cold_scan", "cold ordered scan, fresh process, 3 fields per item",
     ("speedup", 20)),
    ("pack", "pack the inserted file", None),
    ("open_packed", "open the packed file (storage + connection)",
     ("rust_ms_below", 50)),
]


def fmt_num(v, unit):
    if unit == "ms":
        return "{:,.3f}".format(v) if v < 10 else "{:,.1f}".format(v)
    if v >= 1e6:
        return "{:,.2f} M".format(v / 1e6)
    return "{:,.0f}".format(v)


def fmt_value(row):
    u = row["unit"]
    return "%s (%s–%s)" % (fmt_num(row["median"], u), fmt_num(row["min"], u),
                            fmt_num(row["max"], u))


def speedup(r, p):
    """Above 1 means Rust is faster: rates Rust/Durus, times Durus/Rust."""
    if r["unit"] == "ms":
        return p["median"] / r["median"]
    return r["median"] / p["median"]


def target_text(target, r, p):
    if target is None:
        return ""
    kind, x = target
    if kind == "speedup":
        met = speedup(r, p) >= x
        text = "speedup >= %d" % x
    else:
        met = r["median"] < x
        text = "Rust < %d ms" % x
    return "%s: %s" % (text, "**met**" if met else "**not met**")


def lookup_table(rust, durus):
    lines = [
        "| side | node | B (max entries) | depth | nodes | records loaded per "
        "lookup, mean (median, min–max) | states decoded, mean | "
        "ceil(log_B n) + 1 | tree[key] from cold, median µs |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for side, row in (("Rust", rust), ("Durus 4.3", durus)):
        if row is None:
            continue
        e = row["extra"]
        lines.append("| %s | %s | %d | %d | %s | %.2f (%s, %s–%s) | %.2f | %d | %.1f |" % (
            side, e.get("node", ""), e["node_size"], e["depth"],
            "{:,}".format(e["node_count"]), e["mean"], fmt_int(row["median"]),
            fmt_int(row["min"]), fmt_int(row["max"]), e["states_mean"],
            e["expected"], e["lookup_us_median"]))
    return lines


def fmt_int(v):
    return ("%d" % v) if float(v).is_integer() else ("%.1f" % v)


def report(rust_path, durus_path):
    rust, durus = read_rows(rust_path), read_rows(durus_path)
    lines = [
        "| workload | n | unit | Rust median (min–max) | Durus 4.3 median (min–max) "
        "| speedup Rust/Durus | peak RSS Rust / Durus | target |",
        "| --- | ---: | --- | ---: | ---: | ---: | ---: | --- |",
    ]
    problems = []
    for key, label, target in ROWS:
        r, p = rust.get(key), durus.get(key)
        if r is None or p is None:
            continue
        lines.append("| %s | %s | %s | %s | %s | %.1f× | %.0f / %.0f MiB | %s |" % (
            label, "{:,}".format(r["items"]), r["unit"], fmt_value(r),
            fmt_value(p), speedup(r, p), r["peak_rss_kb"] / 1024.0,
            p["peak_rss_kb"] / 1024.0, target_text(target, r, p)))
        if r["items"] != p["items"] or r["unit"] != p["unit"]:
            problems.append("%s: sizes or units differ (%s %s vs %s %s)" % (
                key, r["items"], r["unit"], p["items"], p["unit"]))
    facts = []
    for side, rows in (("Rust", rust), ("Durus", durus)):
        ins, scan, pk = rows.get("insert"), rows.get("cold_scan"), rows.get("pack")
        parts = []
        if ins:
            parts.append("%.1f MB after insert" % (ins["extra"]["file_bytes"] / 1e6))
        if pk:
            parts.append("%.1f MB packed" % (pk["extra"]["size_after"] / 1e6))
        if scan:
            parts.append("open before the scan %.1f ms, %s loads in the scan" % (
                scan["extra"]["open_secs"] * 1e3,
                "{:,}".format(scan["extra"]["loads"])))
        if parts:
            facts.append("%s: %s" % (side, ", ".join(parts)))
    if facts:
        lines.append("")
        lines.append("Files: " + "; ".join(facts) + ".")
    if "lookup" in rust or "lookup" in durus:
        r, p = rust.get("lookup"), durus.get("lookup")
        k = (r or p)["items"]
        lines.append("")
        lines.append("Point lookups: %s random keys, each in a new connection "
                     "over a freshly opened packed file (nothing cached); "
                     "records loaded by the lookup alone (the tree object and "
                     "its nodes; the root dict is loaded before, the item "
                     "after)." % "{:,}".format(k))
        lines.append("")
        lines.extend(lookup_table(r, p))
        if r and p and r["items"] != p["items"]:
            problems.append("lookup: key counts differ (%s vs %s)" % (
                r["items"], p["items"]))
    for problem in problems:
        lines.append("")
        lines.append("**Mismatch**: " + problem)
    print("\n".join(lines))
    return 1 if problems else 0


def report_nodes(rust_path):
    """The Rust side's --node-sizes sweep: one line per node size."""
    by_size = {}
    with open(rust_path) as f:
        for text in f:
            text = text.strip()
            if text.startswith("{"):
                row = json.loads(text)
                size = row["extra"].get("node_size")
                by_size.setdefault(size, {})[row["workload"]] = row
    lines = [
        "| node size B | insert objects/s | cold scan objects/s | depth | nodes "
        "| file MB (unpacked / packed) | loads per lookup, mean (max) "
        "| ceil(log_B n) + 1 | tree.get from cold, median µs "
        "| shuffled insert objects/s (file MB) | peak RSS insert / scan |",
        "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    n = None
    for size in sorted(s for s in by_size if s is not None):
        rows = by_size[size]
        ins, scan, pk, lk, rnd = (rows.get(k) for k in (
            "insert", "cold_scan", "pack", "lookup", "insert_random"))
        if not (ins and scan and lk):
            continue
        n = ins["items"]
        e = lk["extra"]
        shuffled = "%s (%.0f)" % (fmt_num(rnd["median"], rnd["unit"]),
                                  rnd["extra"]["file_bytes"] / 1e6) if rnd else ""
        lines.append("| %d%s | %s | %s | %d | %s | %.1f / %s | %.2f (%s) | %d | %.1f | %s | %.0f / %.0f MiB |" % (
            size, " (default)" if e.get("default") else "",
            fmt_value(ins), fmt_value(scan), e["depth"],
            "{:,}".format(e["node_count"]), ins["extra"]["file_bytes"] / 1e6,
            "%.1f" % (pk["extra"]["size_after"] / 1e6) if pk else "?",
            e["mean"], fmt_int(lk["max"]), e["expected"],
            e["lookup_us_median"], shuffled, ins["peak_rss_kb"] / 1024.0,
            scan["peak_rss_kb"] / 1024.0))
    if n is not None:
        lines.insert(0, "n = %s; medians (min–max) over processes.\n" % "{:,}".format(n))
    print("\n".join(lines))
    return 0


def main(argv):
    if argv and argv[0] == "report":
        return report(argv[1], argv[2])
    if argv and argv[0] == "report-nodes":
        return report_nodes(argv[1])
    k = LOOKUPS
    if "--lookups" in argv:
        i = argv.index("--lookups")
        k = int(argv[i + 1])
        del argv[i:i + 2]
    opts = parse_opts(argv)
    # Durus logs every commit at INFO to stderr; measure it quiet.
    import logging
    import durus.logger  # noqa: F401
    logging.getLogger("durus").setLevel(logging.WARNING)
    if opts["worker"]:
        for row in worker(opts["worker"], opts["dir"], int(opts["n"]), k):
            sys.stdout.write(json.dumps(row) + "\n")
        return 0
    only = opts["only"].split(",") if opts["only"] else None
    drive(opts["quick"], opts["json"], opts["tmp"], only, int(opts["n"]), k)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
