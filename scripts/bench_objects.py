#!/usr/bin/env python3
"""Object-level benchmark of Python Durus 4.3 (and of ZODB 6.4): the
reference sides of scripts/bench-objects, the same workloads on the same
object graph as benches/objects.rs.

Durus: durus.connection.Connection over durus.file_storage.FileStorage, with
Items (int id, str name "item-<id>", float value 1.5 * id) in a
durus.btree.BTree keyed by id under root["items"], as the reference
(../shared/interop/bench_durus.py). ZODB (--zodb): ZODB.DB over
ZODB.FileStorage.FileStorage, the same Items in a BTrees.OOBTree.OOBTree,
transaction.commit(), as ../shared/interop/bench_zodb.py; its FileStorage
fsyncs every commit (it has no switch), Durus never does. Cache size
2n + 10000 on both, so nothing is ghosted.

Workloads, in this order (insert's last file, items.<ext>, unpacked, is
the input of the others; pack's last file, packed.<ext>, of open_packed):
insert (commit every 1000), open (the storage's construction only; ZODB:
read-only, with its .index file, and without it as open_noindex), read
(cold_read and warm_read, a fresh process per repetition), update (10%,
commit every 100, on a fresh copy of the file), pack (on a fresh copy, after
the update workload, untimed), open_packed.

    bench_objects.py [--zodb] [--quick] [--json] [--tmp DIR] [--only a,b]
        runs every workload in child processes (--worker) so that each
        peak RSS (ru_maxrss) is its own; a summary goes to stderr and, with
        --json, one JSON line per workload to stdout. --only open selects
        open and open_packed (a name selects the names it prefixes + "_").
    bench_objects.py report RUST.jsonl DURUS.jsonl [ZODB.jsonl]
        merges the sides' JSON lines into the markdown table of
        docs/BENCHMARKS.md.

Run it with the Python that has Durus 4.3 and ZODB 6.4
(target/durus-peer-venv/bin/python).
"""
import functools
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
from bench_storage import (emit, file_len, parse_opts, peak_rss_kb,  # noqa: E402
                           read_rows, time_opens)

COMMIT_EVERY = 1000
UPDATE_DIVISOR = 10
UPDATE_COMMIT_EVERY = 100
WARM_PASSES = 3
MASK = (1 << 64) - 1

# name, repetitions (read: one process per repetition; others: one process)
PLAN = [("insert", 5), ("open", 9), ("read", 5), ("update", 5), ("pack", 3),
        ("open_packed", 9)]


def sizes(quick):
    return 10000 if quick else 100000


def cache_size(n):
    return 2 * n + 10000


# ------------------------------------------------------------------ helpers

def median(secs):
    s = sorted(secs)
    mid = len(s) // 2
    return s[mid] if len(s) % 2 else (s[mid - 1] + s[mid]) / 2


def side():
    """This run's side: its engine's, else Durus (for the scripts that
    borrow these helpers without choosing an engine)."""
    return ENGINE.side if ENGINE else "durus"


def result(workload, items, unit, secs, rss, extra):
    """A rate row, the schema of benches/objects.rs."""
    s = sorted(secs)
    return dict(side=side(), workload=workload, items=items, unit=unit,
                reps=len(secs), secs=secs, median=items / median(secs),
                min=items / s[-1], max=items / s[0], peak_rss_kb=rss,
                extra=extra)


def time_result(workload, items, secs, rss, extra):
    """A time row (benches/common/mod.rs's time_row): milliseconds, min the
    fastest."""
    return dict(side=side(), workload=workload, items=items, unit="ms",
                reps=len(secs), secs=secs, median=median(secs) * 1e3,
                min=min(secs) * 1e3, max=max(secs) * 1e3, peak_rss_kb=rss,
                extra=extra)


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


def item_class(base):
    """The benchmark object (as ../shared/interop/peer_models.Item and
    zodb_models.Item) on the engine's Persistent. Pickles name it
    __main__.Item: the script is __main__ in every worker, and use_engine
    makes the class its global Item."""

    class Item(base):

        def __init__(self, id=0, name='', value=0.0):
            self.id = id
            self.name = name
            self.value = value

    Item.__qualname__ = "Item"
    return Item


# ------------------------------------------------------------------ engines

class Engine(object):
    """What differs between Durus and ZODB; the workloads are written once
    against it. A session (connect) has root(), commit(), abort(), pack(),
    records() and close()."""

    side = suffix = None
    companions = ()  # files beside the data file that go with it
    leftovers = ()   # files beside it that are dropped with it
    index = None     # the companion holding the index, if any
    flags = []       # the driver's flags for its workers

    def path(self, d, stem):
        return os.path.join(d, stem + self.suffix)

    def remove(self, path):
        for suffix in ("",) + self.companions + self.leftovers:
            try:
                os.remove(path + suffix)
            except OSError:
                pass

    def copy(self, src, dst):
        self.remove(dst)
        for suffix in ("",) + self.companions:
            if os.path.exists(src + suffix):
                shutil.copyfile(src + suffix, dst + suffix)

    def rename(self, src, dst):
        self.remove(dst)
        for suffix in ("",) + self.companions:
            if os.path.exists(src + suffix):
                os.rename(src + suffix, dst + suffix)
        self.remove(src)


class Durus(Engine):
    side, suffix = "durus", ".durus"
    leftovers = (".pack", ".prepack")

    def persistent(self):
        from durus.persistent import Persistent
        return Persistent

    def new_tree(self):
        from durus.btree import BTree
        return BTree()

    def connect(self, path, n):
        return DurusSession(path, n)

    def opener(self):
        """What the open workloads time: FileStorage(path)."""
        from durus.file_storage import FileStorage
        return FileStorage

    def records(self, storage):
        return sum(1 for _ in storage.shelf.iterindex())


class DurusSession(object):

    def __init__(self, path, n):
        from durus.connection import Connection
        from durus.file_storage import FileStorage
        self.conn = conn = Connection(FileStorage(path),
                                      cache_size=cache_size(n))
        self.root, self.commit = conn.get_root, conn.commit
        self.abort, self.pack = conn.abort, conn.pack

    def records(self):
        return ENGINE.records(self.conn.get_storage())

    def close(self):
        self.conn.get_storage().close()


class Zodb(Engine):
    side, suffix = "zodb", ".fs"
    index = ".index"
    companions = (index,)
    leftovers = (".lock", ".tmp", ".old", ".pack")
    flags = ["--zodb"]

    def persistent(self):
        from persistent import Persistent
        return Persistent

    def new_tree(self):
        from BTrees.OOBTree import OOBTree
        return OOBTree()

    def connect(self, path, n):
        return ZodbSession(path, n)

    def opener(self):
        """What the open workloads time: FileStorage(path, read_only=True)."""
        import ZODB.FileStorage
        return functools.partial(ZODB.FileStorage.FileStorage, read_only=True)

    def records(self, storage):
        return len(storage)


class ZodbSession(object):

    def __init__(self, path, n):
        import transaction
        import ZODB
        import ZODB.FileStorage
        self.db = ZODB.DB(ZODB.FileStorage.FileStorage(path),
                          cache_size=cache_size(n))
        self.conn = self.db.open()
        self.root = self.conn.root
        self.commit, self.abort = transaction.commit, transaction.abort
        self.pack = self.db.pack

    def records(self):
        return len(self.db.storage)

    def close(self):
        self.conn.close()
        self.db.close()


ENGINE = None  # this run's engine (use_engine)
Item = None    # the benchmark object's class on ENGINE's Persistent


def use_engine(zodb):
    global ENGINE, Item
    ENGINE = Zodb() if zodb else Durus()
    Item = item_class(ENGINE.persistent())
    return ENGINE


# ------------------------------------------------------------------ workloads

def insert(e, d, n, reps):
    path = e.path(d, "insert")
    secs = []
    size = 0
    for _ in range(reps):
        e.remove(path)
        conn = e.connect(path, n)
        tree = e.new_tree()
        conn.root()["items"] = tree
        conn.commit()
        t = time.perf_counter()
        for i in range(n):
            tree[i] = Item(i, "item-%d" % i, i * 1.5)
            if (i + 1) % COMMIT_EVERY == 0:
                conn.commit()
        conn.commit()
        secs.append(time.perf_counter() - t)
        conn.close()
        del conn, tree
        size = file_len(path)
    e.rename(path, e.path(d, "items"))
    return [result("insert", n, "objects/s", secs, peak_rss_kb(), dict(
        file_bytes=size, fsync=e.side == "zodb",
        commits=-(-n // COMMIT_EVERY)))]


def time_open(e, name, path, reps):
    """Times the storage's construction (closed untimed), after an untimed
    first open that counts the records."""
    open_storage = e.opener()
    storage = open_storage(path)
    records = e.records(storage)
    storage.close()
    secs = time_opens(open_storage, path, reps)
    return time_result(name, records, secs, peak_rss_kb(), dict(
        file_bytes=file_len(path)))


def open_(e, name, path, reps):
    """open and open_packed; ZODB's open also without its .index file, the
    index then rebuilt by scanning the file (open_noindex)."""
    rows = [time_open(e, name, path, reps)]
    if name == "open" and e.index:
        index = path + e.index
        hidden = index + ".hidden"
        os.rename(index, hidden)
        try:
            rows.append(time_open(e, "open_noindex", path, reps))
            assert not os.path.exists(index), index
        finally:
            os.rename(hidden, index)
    return rows


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


def read(e, d, n):
    path = e.path(d, "items")
    t = time.perf_counter()
    conn = e.connect(path, n)
    tree = conn.root()["items"]
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
    conn.close()
    return [
        result("cold_read", n, "objects/s", [cold_secs], rss, dict(
            open_secs=open_secs, file_bytes=file_len(path))),
        result("warm_read", 3 * n, "field reads/s", warm, rss, dict(
            passes=WARM_PASSES, reads_per_item=3)),
    ]


def apply_updates(conn, tree, ids):
    """value += 1 on the items of ids, a commit every 100."""
    for j, i in enumerate(ids):
        obj = tree[i]
        obj.value += 1.0
        if (j + 1) % UPDATE_COMMIT_EVERY == 0:
            conn.commit()
    conn.commit()


def check_updates(conn, tree, ids):
    conn.abort()
    first = ids[0]
    assert tree[first].value == first * 1.5 + 1.0


def update(e, d, n, reps):
    items = e.path(d, "items")
    work = e.path(d, "update")
    k = n // UPDATE_DIVISOR
    ids = update_ids(n, k)
    secs = []
    size = 0
    for _ in range(reps):
        e.copy(items, work)
        conn = e.connect(work, n)
        tree = conn.root()["items"]
        t = time.perf_counter()
        apply_updates(conn, tree, ids)
        secs.append(time.perf_counter() - t)
        check_updates(conn, tree, ids)
        conn.close()
        del conn, tree
        size = file_len(work)
        e.remove(work)
    return [result("update", k, "objects/s", secs, peak_rss_kb(), dict(
        file_bytes=size, fsync=e.side == "zodb",
        commits=-(-k // UPDATE_COMMIT_EVERY)))]


def pack(e, d, n, reps):
    """On a fresh copy of the file per repetition, the update workload
    (untimed), then a pack; the last packed file stays as packed.<ext>."""
    items = e.path(d, "items")
    work = e.path(d, "pack")
    ids = update_ids(n, n // UPDATE_DIVISOR)
    secs = []
    before = after = records = 0
    for _ in range(reps):
        e.copy(items, work)
        conn = e.connect(work, n)
        tree = conn.root()["items"]
        apply_updates(conn, tree, ids)
        check_updates(conn, tree, ids)
        del tree
        before = file_len(work)
        t = time.perf_counter()
        conn.pack()
        secs.append(time.perf_counter() - t)
        records = conn.records()
        conn.close()
        del conn
        after = file_len(work)
    e.rename(work, e.path(d, "packed"))
    return [time_result("pack", records, secs, peak_rss_kb(), dict(
        bytes_before=before, bytes_after=after))]


def worker(e, name, d, n, reps):
    reps = max(reps, 1)
    if name == "insert":
        return insert(e, d, n, reps)
    if name == "open":
        return open_(e, name, e.path(d, "items"), reps)
    if name == "read":
        return read(e, d, n)
    if name == "update":
        return update(e, d, n, reps)
    if name == "pack":
        return pack(e, d, n, reps)
    if name == "open_packed":
        return open_(e, name, e.path(d, "packed"), reps)
    raise SystemExit("unknown workload %r" % name)


# ------------------------------------------------------------------ driver

def summary(row):
    f = "%.3f" if row["unit"] == "ms" else "%.0f"
    return ("%s: median " + f + " %s, min " + f + ", max " + f
            + ", peak RSS %.1f MiB") % (
        row["workload"], row["median"], row["unit"], row["min"], row["max"],
        row["peak_rss_kb"] / 1024.0)


def spawn(e, name, n, reps, d):
    out = subprocess.run(
        [sys.executable, os.path.abspath(__file__)] + e.flags
        + ["--worker", name, "--n", str(n), "--reps", str(reps), "--dir", d],
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


def drive(e, quick, as_json, tmp, only):
    n = sizes(quick)
    base = tmp or os.environ.get("BENCH_TMP") or os.path.join(
        HERE, "..", "target", "bench-tmp")
    os.makedirs(base, exist_ok=True)
    d = tempfile.mkdtemp(prefix="%s-objects-" % e.side, dir=base)
    try:
        # As benches/objects.rs: a name selects itself and the names it
        # prefixes + "_" (open: open and open_packed).
        selected = lambda name: only is None or any(
            o == name or name.startswith(o + "_") for o in only)
        # Everything reads the file insert leaves; open_packed the one
        # pack leaves.
        needed = dict(
            insert=any(selected(name) for name, _ in PLAN if name != "insert"),
            pack=selected("open_packed"))
        for name, reps in PLAN:
            if not (selected(name) or needed.get(name)):
                continue
            sys.stderr.write("%s: %s (n = %d, %d reps)\n" % (
                e.side, name, n, reps))
            sys.stderr.flush()
            if name == "read":
                rows = merge_reads([spawn(e, name, n, 1, d)
                                    for _ in range(reps)])
            else:
                rows = spawn(e, name, n, reps, d)
            for row in rows:
                emit(row, as_json, summary(row))
    finally:
        shutil.rmtree(d, ignore_errors=True)


# ------------------------------------------------------------------ report

ROWS = [
    # Rust workload, Durus workload, ZODB workload (None: no like-for-like
    # ZODB figure), label, minimum speedup over Durus (target) or None.
    # ZODB fsyncs every commit, so its insert and update stand beside ours
    # with fsync on.
    ("insert", "insert", None, "insert, commit every 1000, fsync off", 20),
    ("insert_fsync", "insert", "insert",
     "insert, fsync on (vs Durus without; ZODB always fsyncs)", None),
    ("open", "open", "open_noindex",
     "open unpacked file (index built by scanning)", 20),
    ("cold_read", "cold_read", "cold_read",
     "cold read, fresh process, 3 fields per item", 20),
    ("warm_read", "warm_read", "warm_read",
     "warm read, same connection, a read() per field", 10),
    ("warm_read_closure", "warm_read", "warm_read",
     "warm read, one read() for 3 fields", None),
    ("update", "update", None, "update 10%, commit every 100, fsync off", 20),
    ("update_fsync", "update", "update",
     "update, fsync on (vs Durus without; ZODB always fsyncs)", None),
    ("pack", "pack", "pack", "pack after the 10% update", 20),
    ("open_packed", "open_packed", "open_packed", "open packed file", 20),
]


def fmt_number(v, unit):
    if unit == "ms":
        return "{:,.3f}".format(v) if v >= 0.1 else "{:.3g}".format(v)
    if v >= 1e6:
        return "{:,.2f} M".format(v / 1e6)
    return "{:,.0f}".format(v)


def fmt_value(row):
    unit = row["unit"]
    return "%s (%s–%s)" % (fmt_number(row["median"], unit),
                            fmt_number(row["min"], unit),
                            fmt_number(row["max"], unit))


def speedup(rust, other):
    """How many times faster Rust is: rates Rust / other, times other /
    Rust."""
    if rust["unit"] == "ms":
        return other["median"] / rust["median"]
    return rust["median"] / other["median"]


def fmt_speedup(ratio):
    return ("%.1f×" if ratio >= 1 else "%.2g×") % ratio


def mismatch(key, rust, side, other):
    """Units must agree, and so must sizes of rates (times count the records
    of the file, which differ with the BTrees' node sizes)."""
    if rust["unit"] == other["unit"] and (
            rust["unit"] == "ms" or rust["items"] == other["items"]):
        return []
    return ["%s: sizes or units differ (Rust %s %s, %s %s %s)" % (
        key, rust["items"], rust["unit"], side, other["items"],
        other["unit"])]


def table_line(cells):
    return "| " + " | ".join(cells) + " |"


def mb(row, key):
    return "%.1f MB" % (row["extra"][key] / 1e6)


def report(rust_path, durus_path, zodb_path=None):
    rust, durus = read_rows(rust_path), read_rows(durus_path)
    sides = [("Rust", rust), ("Durus", durus)]
    head = ["workload", "n", "unit", "Rust median (min–max)",
            "Durus 4.3 median (min–max)", "speedup Rust/Durus"]
    if zodb_path:
        zodb = read_rows(zodb_path)
        sides.append(("ZODB", zodb))
        head += ["ZODB 6.4 median (min–max)", "speedup Rust/ZODB"]
    head += ["peak RSS " + " / ".join(side for side, _ in sides), "target"]
    align = ["---", "---:", "---"] + ["---:"] * (len(head) - 4) + ["---"]
    lines = [table_line(head), table_line(align)]
    problems = []
    for key, dkey, zkey, label, target in ROWS:
        r, p = rust.get(key), durus.get(dkey)
        if r is None or p is None:
            continue
        ratio = speedup(r, p)
        cells = [label, "{:,}".format(r["items"]), r["unit"], fmt_value(r),
                 fmt_value(p), fmt_speedup(ratio)]
        problems += mismatch(key, r, "Durus", p)
        rss = [r, p]
        if zodb_path:
            z = zodb.get(zkey) if zkey else None
            if z is None:
                cells += ["–", "–"]
            else:
                cells += [fmt_value(z), fmt_speedup(speedup(r, z))]
                problems += mismatch(key, r, "ZODB", z)
            rss.append(z)
        cells.append(" / ".join("–" if x is None else "%.0f" % (
            x["peak_rss_kb"] / 1024.0) for x in rss) + " MiB")
        verdict = "" if target is None else "speedup >= %d: %s" % (
            target, "**met**" if ratio >= target else "**not met**")
        floor = rust.get("open_floor")
        if key == "open_packed" and floor and target and ratio < target:
            # No open beats the system calls it needs: say where that caps
            # the speedup and how close to it we are.
            verdict += " (the system calls of any open cap it at %.1f×; " \
                "ours is %.1f× that floor)" % (
                    p["median"] / floor["median"], r["median"] / floor["median"])
        cells.append(verdict)
        lines.append(table_line(cells))
    notes = []
    facts = []
    for side, rows in sides:
        ins, cold = rows.get("insert"), rows.get("cold_read")
        if ins and cold:
            facts.append("%s %s (open before the cold read %.1f ms)" % (
                side, mb(ins, "file_bytes"), cold["extra"]["open_secs"] * 1e3))
    if facts:
        notes.append("File after insert: " + "; ".join(facts) + ".")
    facts = ["%s %s (%s before)" % (side, mb(rows["pack"], "bytes_after"),
                                    mb(rows["pack"], "bytes_before"))
             for side, rows in sides if "pack" in rows]
    if facts:
        notes.append("File after pack: " + ", ".join(facts) + ".")
    facts = []
    for key, what in (("open", "unpacked"), ("open_packed", "packed")):
        counts = ["%s %s" % (side, "{:,}".format(rows[key]["items"]))
                  for side, rows in sides if key in rows]
        if counts:
            facts.append("%s %s" % (what, ", ".join(counts)))
    if facts:
        notes.append("Records in the file (the n of the open and pack rows is "
                     "Rust's; the BTrees' nodes differ): " + "; ".join(facts)
                     + ".")
    floor, packed = rust.get("open_floor"), rust.get("open_packed")
    if floor and packed and "open_packed" in durus:
        d = durus["open_packed"]["median"]
        notes.append(
            "Opening a packed file needs at least open, flock, fstat and two "
            "small reads: %s ms on this machine (`open_floor`, Rust alone), "
            "so no open can beat Durus's %s ms by more than %.1f×; ours "
            "takes %s ms, %.1f× the floor." % (
                fmt_number(floor["median"], "ms"), fmt_number(d, "ms"),
                d / floor["median"], fmt_number(packed["median"], "ms"),
                packed["median"] / floor["median"]))
    if zodb_path:
        z, r = zodb.get("open"), rust.get("open")
        if z:
            notes.append(
                "ZODB 6.4 normally opens its unpacked file from the .index "
                "file it writes on close (the table's ZODB open is without "
                "it, the index rebuilt by scanning the file, as Durus and "
                "Rust do): median %s ms (%s–%s)%s." % (
                    fmt_number(z["median"], "ms"), fmt_number(z["min"], "ms"),
                    fmt_number(z["max"], "ms"), "" if r is None else
                    ", speedup Rust/ZODB " + fmt_speedup(speedup(r, z))))
        notes.append("ZODB 6.4's FileStorage fsyncs every commit (it has no "
                     "switch); Durus 4.3 never does.")
    for note in notes:
        lines.append("")
        lines.append(note)
    for problem in problems:
        lines.append("")
        lines.append("**Mismatch**: " + problem)
    print("\n".join(lines))
    return 1 if problems else 0


def main(argv):
    if argv and argv[0] == "report":
        return report(*argv[1:4])
    e = use_engine("--zodb" in argv)
    opts = parse_opts([arg for arg in argv if arg != "--zodb"])
    if opts["worker"]:
        if e.side == "durus":
            # Durus logs every commit at INFO to stderr; measure it quiet.
            import logging
            import durus.logger  # noqa: F401
            logging.getLogger("durus").setLevel(logging.WARNING)
        rows = worker(e, opts["worker"], opts["dir"], int(opts["n"]),
                      int(opts["reps"]))
        for row in rows:
            sys.stdout.write(json.dumps(row) + "\n")
        return 0
    only = opts["only"].split(",") if opts["only"] else None
    drive(e, opts["quick"], opts["json"], opts["tmp"], only)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
