#!/usr/bin/env python3
"""Storage-level benchmark of Python Durus 4.3's FileStorage: the reference
side of scripts/bench-storage, the same workloads and the same records as
benches/storage.rs (the files both sides write are byte for byte the same).

Only durus.file_storage.FileStorage is used (new_oid, begin, store, end,
load, pack) with records built before the clock starts; no Connection.

    bench_storage.py [--quick] [--json] [--tmp DIR] [--only a,b]
        runs every workload, each in a child process (--worker) so its peak
        RSS (ru_maxrss) is its own; a summary goes to stderr and, with
        --json, one JSON line per workload to stdout.
    bench_storage.py report RUST.jsonl DURUS.jsonl [--quick]
        merges both sides' JSON lines into the markdown table of
        docs/BENCHMARKS.md.

Run it with the Python that has Durus 4.3 (target/durus-peer-venv/bin/python).
"""
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time

PAYLOAD = 56
POOL_LEN = 1 << 16
BUILD_TXN = 1000
GARBAGE_STEP = 10
MASK = (1 << 64) - 1


def plan(quick):
    div = 10 if quick else 1
    append, tree, loads = 100000 // div, 1000000 // div, 100000 // div
    return [
        ("build", tree, 1),
        ("open_unpacked", tree, 5),
        ("open_packed", tree, 9),
        ("load", loads, 5),
        ("pack", tree, 3),
        ("append", append, 5),
    ]


# ------------------------------------------------------------------ records

def xorshift(x):
    x ^= (x << 13) & MASK
    x ^= x >> 7
    x ^= (x << 17) & MASK
    return x


class Gen(object):
    """The deterministic workload data, the same as the Rust side builds."""

    def __init__(self):
        x = 0x9E3779B97F4A7C15
        pool = bytearray(POOL_LEN)
        for i in range(POOL_LEN):
            x = xorshift(x)
            pool[i] = (x >> 32) & 0xFF
        self.pool = bytes(pool)

    def data(self, class_name, i):
        """CBOR header naming the class, then a 56-byte CBOR byte string."""
        name = class_name.encode()
        assert len(name) < 24
        at = (i * 7919) % (POOL_LEN - PAYLOAD)
        return (b"\xd9\xd9\xf7" + bytes([0x60 | len(name)]) + name
                + bytes([0x58, PAYLOAD]) + self.pool[at:at + PAYLOAD])

    def record(self, class_name, oid, refs):
        refs = sorted(set(r for r in refs if r != oid))
        data = self.data(class_name, oid)
        return b"".join([oid.to_bytes(8, "big"), len(data).to_bytes(4, "big"),
                         data] + [r.to_bytes(8, "big") for r in refs])

    def append_record(self, i, n):
        return self.record("bench.Item", i, [(i + 1) % n, (i * 31 + 7) % n])


class Tree(object):
    """root (oid 0) -> fanout nodes -> leaves each; leaves ref 2 siblings."""

    def __init__(self, n):
        import math
        self.fanout = max(math.isqrt(n), 1)
        self.leaves = max(n // self.fanout - 1, 1)

    def total(self):
        return 1 + self.fanout + self.fanout * self.leaves

    def first_leaf(self, node):
        return 1 + self.fanout + (node - 1) * self.leaves

    def records(self, g):
        out = [g.record("bench.Root", 0, range(1, self.fanout + 1))]
        for node in range(1, self.fanout + 1):
            out.append(self.node_record(g, node, True))
        first, leaves = self.first_leaf(1), self.leaves
        for oid in range(first, self.total()):
            j = (oid - first) % leaves
            base = oid - j
            sibs = (base + (j + 1) % leaves, base + (j + 7) % leaves)
            out.append(g.record("bench.Leaf", oid, sibs))
        return out

    def node_record(self, g, node, with_leaves):
        first = self.first_leaf(node)
        refs = range(first, first + self.leaves) if with_leaves else ()
        return g.record("bench.Node", node, refs)


# ------------------------------------------------------------------ helpers

def peak_rss_kb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux


def file_len(path):
    try:
        return os.path.getsize(path)
    except OSError:
        return 0


def remove_db(path):
    for suffix in ("", ".pack", ".prepack"):
        try:
            os.remove(path + suffix)
        except OSError:
            pass


def oid_str(n):
    return n.to_bytes(8, "big")


def result(workload, items, rate, secs, extra):
    s = sorted(secs)
    mid = len(s) // 2
    median = s[mid] if len(s) % 2 else (s[mid - 1] + s[mid]) / 2
    if rate:
        unit, med, lo, hi = ("records/s", items / median, items / s[-1],
                             items / s[0])
    else:
        unit, med, lo, hi = ("ms", median * 1e3, s[0] * 1e3, s[-1] * 1e3)
    return dict(side="durus", workload=workload, items=items, unit=unit,
                reps=len(secs), secs=secs, median=med, min=lo, max=hi,
                peak_rss_kb=peak_rss_kb(), extra=extra)


def storage(path):
    from durus.file_storage import FileStorage
    return FileStorage(path)


# ------------------------------------------------------------------ workloads

def append(d, n, reps):
    g = Gen()
    path = os.path.join(d, "append.durus")
    secs = []
    size = 0
    for _ in range(reps):
        remove_db(path)
        records = [g.append_record(i, n) for i in range(n)]
        s = storage(path)
        t = time.perf_counter()
        s.begin()
        for rec in records:
            oid = s.new_oid()
            s.store(oid, rec)
        s.end()
        secs.append(time.perf_counter() - t)
        s.close()
        size = file_len(path)
        remove_db(path)
    return result("append", n, True, secs, dict(file_bytes=size, fsync=False))


def build(d, tree):
    g = Gen()
    unpacked = os.path.join(d, "tree.durus")
    remove_db(unpacked)
    total = tree.total()
    records = tree.records(g)
    s = storage(unpacked)
    t = time.perf_counter()
    for i in range(total):
        oid = s.new_oid()
        assert oid == oid_str(i)
    head = 1 + tree.fanout
    start, txn = 0, head
    while start < total:
        s.begin()
        for i in range(start, min(start + txn, total)):
            s.store(oid_str(i), records[i])
        s.end()
        start += txn
        txn = BUILD_TXN
    build_secs = time.perf_counter() - t
    s.close()
    del records

    packed = os.path.join(d, "packed.durus")
    remove_db(packed)
    shutil.copyfile(unpacked, packed)
    s = storage(packed)
    s.pack()
    s.close()
    remove_db(packed + ".prepack")

    garbage = os.path.join(d, "garbage.durus")
    remove_db(garbage)
    shutil.copyfile(unpacked, garbage)
    s = storage(garbage)
    s.begin()
    for node in range(1, tree.fanout + 1, GARBAGE_STEP):
        s.store(oid_str(node), tree.node_record(g, node, False))
    s.end()
    s.close()
    transactions = 1 + -(-(total - head) // BUILD_TXN)
    return result("build", total, True, [build_secs], dict(
        records=total, transactions=transactions,
        unpacked_bytes=file_len(unpacked), packed_bytes=file_len(packed),
        garbage_bytes=file_len(garbage)))


def time_opens(open_storage, path, reps):
    """Seconds of each of `reps` opens of `path` (each closed untimed)."""
    secs = []
    for _ in range(reps):
        t = time.perf_counter()
        opened = open_storage(path)
        secs.append(time.perf_counter() - t)
        opened.close()
    return secs


def open_(name, path, tree, reps):
    secs = time_opens(storage, path, reps)
    s = storage(path)
    s.load(oid_str(tree.total() - 1))
    s.close()
    return result(name, tree.total(), False, secs, dict(
        file_bytes=file_len(path), best_ms=min(secs) * 1e3))


def random_oids(count, total):
    x = 0x2545F4914F6CDD1D
    out = []
    for _ in range(count):
        x = xorshift(x)
        out.append(oid_str((x >> 11) % total))
    return out


def load(path, tree, count, reps):
    oids = random_oids(count, tree.total())
    secs = []
    nbytes = 0
    for _ in range(reps):
        s = storage(path)
        nbytes = 0
        load = s.load
        t = time.perf_counter()
        for oid in oids:
            nbytes += len(load(oid))
        secs.append(time.perf_counter() - t)
        s.close()
    return result("load", count, True, secs, dict(bytes_loaded=nbytes))


def pack(d, source, tree, reps):
    work = os.path.join(d, "work.durus")
    secs = []
    before = after = 0
    for _ in range(reps):
        remove_db(work)
        shutil.copyfile(source, work)
        s = storage(work)
        before = file_len(work)
        t = time.perf_counter()
        s.pack()
        secs.append(time.perf_counter() - t)
        removed = len(s.sync())
        s.close()
        after = file_len(work)
        remove_db(work)
    dropped = -(-tree.fanout // GARBAGE_STEP) * tree.leaves
    return result("pack", tree.total(), False, secs, dict(
        kept=tree.total() - dropped, removed=removed, size_before=before,
        size_after=after))


def worker(name, d, n, reps):
    reps = max(reps, 1)
    tree = Tree(n)
    if name == "build":
        return build(d, tree)
    if name == "append":
        return append(d, n, reps)
    if name == "open_unpacked":
        return open_(name, os.path.join(d, "tree.durus"), tree, reps)
    if name == "open_packed":
        return open_(name, os.path.join(d, "packed.durus"), tree, reps)
    if name == "load":
        return load(os.path.join(d, "packed.durus"), tree, n, reps)
    if name == "pack":
        return pack(d, os.path.join(d, "garbage.durus"), tree, reps)
    raise SystemExit("unknown workload %r" % name)


def summary(row):
    return "%s: median %.4f %s, min %.4f, max %.4f, peak RSS %.1f MiB" % (
        row["workload"], row["median"], row["unit"], row["min"], row["max"],
        row["peak_rss_kb"] / 1024.0)


def drive(quick, as_json, tmp, only):
    base = tmp or os.environ.get("BENCH_TMP") or os.path.join(
        os.path.dirname(os.path.abspath(__file__)), "..", "target", "bench-tmp")
    os.makedirs(base, exist_ok=True)
    d = tempfile.mkdtemp(prefix="durus-storage-", dir=base)
    try:
        steps = plan(quick)
        selected = lambda name: only is None or name in only
        needs_tree = any(selected(name) for name, _, _ in steps
                         if name != "append")
        for name, n, reps in steps:
            if not (selected(name) or (name == "build" and needs_tree)):
                continue
            sys.stderr.write("durus: %s (n = %d, %d reps)\n" % (name, n, reps))
            sys.stderr.flush()
            out = subprocess.run(
                [sys.executable, os.path.abspath(__file__), "--worker", name,
                 "--n", str(n), "--reps", str(reps), "--dir", d],
                stdout=subprocess.PIPE, check=True).stdout.decode()
            row = json.loads(out)
            if as_json:
                sys.stdout.write(out.strip() + "\n")
                sys.stdout.flush()
            sys.stderr.write("  %s\n" % summary(row))
    finally:
        shutil.rmtree(d, ignore_errors=True)


# ------------------------------------------------------------------ report

ROWS = [
    # workload key, durus key, label, target
    ("append", "append", "append, one transaction, fsync off", "speedup >= 20"),
    ("append_fsync", "append", "append, one transaction, fsync on (vs Durus without)", None),
    ("build", "build", "build tree, commits of 1000 records", None),
    ("open_unpacked", "open_unpacked", "open unpacked (index built by scanning)", None),
    ("open_packed", "open_packed", "open packed", "Rust < 50 ms"),
    ("load", "load", "random loads, freshly opened packed file", None),
    ("pack", "pack", "pack, ~10% garbage", "Rust < 2 s"),
]


def emit(row, as_json, text):
    """A driver's report of one row: its summary `text` on stderr and, with
    --json, the row as a JSON line on stdout."""
    if as_json:
        sys.stdout.write(json.dumps(row) + "\n")
        sys.stdout.flush()
    sys.stderr.write("  %s\n" % text)


def read_rows(path):
    rows = {}
    with open(path) as f:
        for line in f:
            line = line.strip()
            if line.startswith("{"):
                row = json.loads(line)
                rows[row["workload"]] = row
    return rows


def fmt_value(row):
    def one(v):
        if row["unit"] == "records/s":
            return "{:,.0f}".format(v)
        return "{:,.3f}".format(v) if v < 10 else "{:,.1f}".format(v)
    return "%s (%s–%s)" % (one(row["median"]), one(row["min"]), one(row["max"]))


def speedup(rust, durus):
    if rust["unit"] == "records/s":
        return rust["median"] / durus["median"]
    return durus["median"] / rust["median"]


def target_met(key, rust, durus):
    if key == "append":
        return speedup(rust, durus) >= 20
    if key == "open_packed":
        return rust["median"] < 50
    if key == "pack":
        return rust["median"] < 2000
    return None


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
        met = target_met(key, r, p)
        tgt = "" if target is None else "%s: %s" % (
            target, "**met**" if met else "**not met**")
        lines.append("| %s | %s | %s | %s | %s | %.1f× | %.0f / %.0f MiB | %s |" % (
            label, "{:,}".format(r["items"]), r["unit"], fmt_value(r),
            fmt_value(p), speedup(r, p), r["peak_rss_kb"] / 1024.0,
            p["peak_rss_kb"] / 1024.0, tgt))
        if key != "append_fsync" and r["items"] != p["items"]:
            problems.append("%s: sizes differ (%s vs %s)" % (key, r["items"], p["items"]))
    for key in ("build", "append"):
        r, p = rust.get(key), durus.get(key)
        if r and p:
            for k, v in r["extra"].items():
                if k.endswith("bytes") and p["extra"].get(k) != v:
                    problems.append("%s: %s differs: Rust %s, Durus %s" % (
                        key, k, v, p["extra"].get(k)))
    if "pack" in rust and "pack" in durus:
        r, p = rust["pack"]["extra"], durus["pack"]["extra"]
        for k in ("removed", "size_after"):
            if r.get(k) != p.get(k):
                problems.append("pack: %s differs: Rust %s, Durus %s" % (k, r.get(k), p.get(k)))
    b = rust.get("build")
    if b:
        e = b["extra"]
        lines.append("")
        lines.append("Files: %s records in %s transactions, %.1f MB unpacked, "
                     "%.1f MB packed (identical sizes on both sides: %s)." % (
                         "{:,}".format(e["records"]), "{:,}".format(e["transactions"]),
                         e["unpacked_bytes"] / 1e6, e["packed_bytes"] / 1e6,
                         "no" if any(x.startswith("build") for x in problems) else "yes"))
    for problem in problems:
        lines.append("")
        lines.append("**Mismatch**: " + problem)
    print("\n".join(lines))
    return 1 if problems else 0


def parse_opts(argv):
    """The driver's and the worker's flags (shared with bench_objects.py)."""
    opts = dict(quick=False, json=False, tmp=None, only=None, worker=None,
                dir=None, n=0, reps=1)
    it = iter(argv)
    for arg in it:
        if arg == "--quick":
            opts["quick"] = True
        elif arg == "--json":
            opts["json"] = True
        elif arg in ("--tmp", "--only", "--worker", "--dir", "--n", "--reps"):
            opts[arg[2:]] = next(it)
        else:
            raise SystemExit("unknown argument %r" % arg)
    return opts


def main(argv):
    if argv and argv[0] == "report":
        return report(argv[1], argv[2])
    opts = parse_opts(argv)
    if opts["worker"]:
        # Durus logs every commit at INFO to stderr (its logger sets that
        # level when imported); measure it quiet.
        import logging
        import durus.logger
        logging.getLogger("durus").setLevel(logging.WARNING)
        row = worker(opts["worker"], opts["dir"], int(opts["n"]), int(opts["reps"]))
        sys.stdout.write(json.dumps(row) + "\n")
        return 0
    only = opts["only"].split(",") if opts["only"] else None
    drive(opts["quick"], opts["json"], opts["tmp"], only)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
