#!/usr/bin/env python3
"""Object-level benchmark of Python Durus 4.3: the reference side of
scripts/bench-objects, the same workloads on the same object graph as
benches/objects.rs.

durus.connection.Connection over durus.file_storage.FileStorage, with Items
(int id, str name "item-<id>", float value 1.5 * id) in a durus.btree.BTree
keyed by id under root["items"], as the reference
(../shared/interop/bench_durus.py). Cache size 2n + 10000, so nothing is
ghosted.

    bench_objects.py [--quick] [--json] [--tmp DIR] [--only a,b]
        runs every workload in child processes (--worker) so that each
        peak RSS (ru_maxrss) is its own; a summary goes to stderr and, with
        --json, one JSON line per workload to stdout.
    bench_objects.py report RUST.jsonl DURUS.jsonl
        merges both sides' JSON lines into the markdown table of
        docs/BENCHMARKS.md.

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
if HERE not in sys.path:
    sys.path.insert(0, HERE)

# The storage benchmark's plumbing: peak RSS, file helpers, reading JSON lines.
from bench_storage import (file_len, parse_opts, peak_rss_kb, read_rows,  # noqa: E402
                           remove_db)

COMMIT_EVERY = 1000
UPDATE_DIVISOR = 10
UPDATE_COMMIT_EVERY = 100
WARM_PASSES = 3
MASK = (1 << 64) - 1

# name, repetitions (read: one process per repetition; others: one process)
PLAN = [("insert", 5), ("read", 5), ("update", 5)]


def sizes(quick):
    return 10000 if quick else 100000


# ------------------------------------------------------------------ helpers

def result(workload, items, unit, secs, rss, extra):
    """The JSON row, the schema of benches/objects.rs."""
    s = sorted(secs)
    mid = len(s) // 2
    median = s[mid] if len(s) % 2 else (s[mid - 1] + s[mid]) / 2
    return dict(side="durus", workload=workload, items=items, unit=unit,
                reps=len(secs), secs=secs, median=items / median,
                min=items / s[-1], max=items / s[0], peak_rss_kb=rss,
                extra=extra)


def connect(path, n):
    from durus.connection import Connection
    from durus.file_storage import FileStorage
    return Connection(FileStorage(path), cache_size=2 * n + 10000)


def update_ids(n, k):
    """A partial Fisher-Yates shuffle of range(n) driven by xorshift64, the
    same ids benches/objects.rs draws."""
    ids = list(range(n))
    x = 0x2545F4914F6CDD1D
    for j in range(k):
        x ^= (x << 13) & MASK
        x ^= x >> 7
        x ^= (x << 17) & MASK
        r = j + x % (n - j)
        ids[j], ids[r] = ids[r], ids[j]
    return ids[:k]


try:
    from durus.persistent import Persistent
except ImportError:  # the report needs no Durus
    Persistent = object


class Item(Persistent):
    """The benchmark object (as /work/shared/interop/peer_models.Item);
    pickles name it __main__.Item, the script being __main__ in every
    worker."""

    def __init__(self, id=0, name='', value=0.0):
        self.id = id
        self.name = name
        self.value = value


# ------------------------------------------------------------------ workloads

def insert(d, n, reps):
    from durus.btree import BTree
    path = os.path.join(d, "insert.durus")
    secs = []
    size = 0
    for _ in range(reps):
        remove_db(path)
        conn = connect(path, n)
        tree = BTree()
        conn.get_root()["items"] = tree
        conn.commit()
        t = time.perf_counter()
        for i in range(n):
            tree[i] = Item(i, "item-%d" % i, i * 1.5)
            if (i + 1) % COMMIT_EVERY == 0:
                conn.commit()
        conn.commit()
        secs.append(time.perf_counter() - t)
        conn.get_storage().close()
        del conn, tree
        size = file_len(path)
    items = os.path.join(d, "items.durus")
    remove_db(items)
    os.rename(path, items)
    return [result("insert", n, "objects/s", secs, peak_rss_kb(), dict(
        file_bytes=size, fsync=False, commits=-(-n // COMMIT_EVERY)))]


def one_pass(tree):
    """Reads the three fields of every item in key order (the reference's
    touch_all)."""
    count = ids = name_bytes = 0
    values = 0.0
    for key, obj in tree.items():
        ids += obj.id
        name_bytes += len(obj.name)
        values += obj.value
        count += 1
    return count, ids, name_bytes, values


def read(d, n):
    path = os.path.join(d, "items.durus")
    t = time.perf_counter()
    conn = connect(path, n)
    tree = conn.get_root()["items"]
    open_secs = time.perf_counter() - t
    t = time.perf_counter()
    cold = one_pass(tree)
    cold_secs = time.perf_counter() - t
    assert cold[0] == n and cold[1] == n * (n - 1) // 2, cold
    warm = []
    for _ in range(WARM_PASSES):
        t = time.perf_counter()
        p = one_pass(tree)
        warm.append(time.perf_counter() - t)
        assert p == cold, (p, cold)
    rss = peak_rss_kb()
    conn.get_storage().close()
    return [
        result("cold_read", n, "objects/s", [cold_secs], rss, dict(
            open_secs=open_secs, file_bytes=file_len(path))),
        result("warm_read", 3 * n, "field reads/s", warm, rss, dict(
            passes=WARM_PASSES, reads_per_item=3)),
    ]


def update(d, n, reps):
    items = os.path.join(d, "items.durus")
    work = os.path.join(d, "update.durus")
    k = n // UPDATE_DIVISOR
    ids = update_ids(n, k)
    secs = []
    size = 0
    for _ in range(reps):
        remove_db(work)
        shutil.copyfile(items, work)
        conn = connect(work, n)
        tree = conn.get_root()["items"]
        t = time.perf_counter()
        for j, i in enumerate(ids):
            obj = tree[i]
            obj.value += 1.0
            if (j + 1) % UPDATE_COMMIT_EVERY == 0:
                conn.commit()
        conn.commit()
        secs.append(time.perf_counter() - t)
        conn.abort()
        first = ids[0]
        assert tree[first].value == first * 1.5 + 1.0
        conn.get_storage().close()
        del conn, tree
        size = file_len(work)
        remove_db(work)
    return [result("update", k, "objects/s", secs, peak_rss_kb(), dict(
        file_bytes=size, fsync=False,
        commits=-(-k // UPDATE_COMMIT_EVERY)))]


def worker(name, d, n, reps):
    reps = max(reps, 1)
    if name == "insert":
        return insert(d, n, reps)
    if name == "read":
        return read(d, n)
    if name == "update":
        return update(d, n, reps)
    raise SystemExit("unknown workload %r" % name)


# ------------------------------------------------------------------ driver

def summary(row):
    return "%s: median %.0f %s, min %.0f, max %.0f, peak RSS %.1f MiB" % (
        row["workload"], row["median"], row["unit"], row["min"], row["max"],
        row["peak_rss_kb"] / 1024.0)


def spawn(name, n, reps, d):
    out = subprocess.run(
        [sys.executable, os.path.abspath(__file__), "--worker", name,
         "--n", str(n), "--reps", str(reps), "--dir", d],
        stdout=subprocess.PIPE, check=True).stdout.decode()
    return [json.loads(line) for line in out.splitlines()
            if line.startswith("{")]


def merge_reads(runs):
    """One row per read workload: the timings of every process together,
    the largest peak RSS."""
    merged = []
    for row in runs[0]:
        same = [r for run in runs for r in run
                if r["workload"] == row["workload"]]
        secs = [s for r in same for s in r["secs"]]
        extra = dict(row["extra"], processes=len(same))
        merged.append(result(row["workload"], row["items"], row["unit"], secs,
                             max(r["peak_rss_kb"] for r in same), extra))
    return merged


def drive(quick, as_json, tmp, only):
    n = sizes(quick)
    base = tmp or os.environ.get("BENCH_TMP") or os.path.join(
        HERE, "..", "target", "bench-tmp")
    os.makedirs(base, exist_ok=True)
    d = tempfile.mkdtemp(prefix="durus-objects-", dir=base)
    try:
        selected = lambda name: only is None or name in only
        needs_file = any(selected(name) for name, _ in PLAN if name != "insert")
        for name, reps in PLAN:
            if not (selected(name) or (name == "insert" and needs_file)):
                continue
            sys.stderr.write("durus: %s (n = %d, %d reps)\n" % (name, n, reps))
            sys.stderr.flush()
            if name == "read":
                rows = merge_reads([spawn(name, n, 1, d) for _ in range(reps)])
            else:
                rows = spawn(name, n, reps, d)
            for row in rows:
                if as_json:
                    sys.stdout.write(json.dumps(row) + "\n")
                    sys.stdout.flush()
                sys.stderr.write("  %s\n" % summary(row))
    finally:
        shutil.rmtree(d, ignore_errors=True)


# ------------------------------------------------------------------ report

ROWS = [
    # Rust workload, Durus workload, label, minimum speedup (target) or None
    ("insert", "insert", "insert, commit every 1000, fsync off", 20),
    ("insert_fsync", "insert", "insert, fsync on (vs Durus without)", None),
    ("cold_read", "cold_read", "cold read, fresh process, 3 fields per item", 20),
    ("warm_read", "warm_read", "warm read, same connection, a read() per field", 10),
    ("warm_read_closure", "warm_read", "warm read, one read() for 3 fields", None),
    ("update", "update", "update 10%, commit every 100, fsync off", None),
    ("update_fsync", "update", "update, fsync on (vs Durus without)", None),
]


def fmt_rate(v):
    if v >= 1e6:
        return "{:,.2f} M".format(v / 1e6)
    return "{:,.0f}".format(v)


def fmt_value(row):
    return "%s (%s–%s)" % (fmt_rate(row["median"]), fmt_rate(row["min"]),
                            fmt_rate(row["max"]))


def report(rust_path, durus_path):
    rust, durus = read_rows(rust_path), read_rows(durus_path)
    lines = [
        "| workload | n | unit | Rust median (min–max) | Durus 4.3 median (min–max) "
        "| speedup Rust/Durus | peak RSS Rust / Durus | target |",
        "| --- | ---: | --- | ---: | ---: | ---: | ---: | --- |",
    ]
    problems = []
    for key, dkey, label, target in ROWS:
        r, p = rust.get(key), durus.get(dkey)
        if r is None or p is None:
            continue
        ratio = r["median"] / p["median"]
        tgt = "" if target is None else "speedup >= %d: %s" % (
            target, "**met**" if ratio >= target else "**not met**")
        lines.append("| %s | %s | %s | %s | %s | %.1f× | %.0f / %.0f MiB | %s |" % (
            label, "{:,}".format(r["items"]), r["unit"], fmt_value(r),
            fmt_value(p), ratio, r["peak_rss_kb"] / 1024.0,
            p["peak_rss_kb"] / 1024.0, tgt))
        if r["items"] != p["items"] or r["unit"] != p["unit"]:
            problems.append("%s: sizes or units differ (%s %s vs %s %s)" % (
                key, r["items"], r["unit"], p["items"], p["unit"]))
    facts = []
    for side, rows in (("Rust", rust), ("Durus", durus)):
        ins, cold = rows.get("insert"), rows.get("cold_read")
        if ins and cold:
            facts.append("%s %.1f MB (open before the cold read %.1f ms)" % (
                side, ins["extra"]["file_bytes"] / 1e6,
                cold["extra"]["open_secs"] * 1e3))
    if facts:
        lines.append("")
        lines.append("File after insert: " + "; ".join(facts) + ".")
    for problem in problems:
        lines.append("")
        lines.append("**Mismatch**: " + problem)
    print("\n".join(lines))
    return 1 if problems else 0


def main(argv):
    if argv and argv[0] == "report":
        return report(argv[1], argv[2])
    opts = parse_opts(argv)
    if opts["worker"]:
        # Durus logs every commit at INFO to stderr; measure it quiet.
        import logging
        import durus.logger  # noqa: F401
        logging.getLogger("durus").setLevel(logging.WARNING)
        rows = worker(opts["worker"], opts["dir"], int(opts["n"]),
                      int(opts["reps"]))
        for row in rows:
            sys.stdout.write(json.dumps(row) + "\n")
        return 0
    only = opts["only"].split(",") if opts["only"] else None
    drive(opts["quick"], opts["json"], opts["tmp"], only)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
