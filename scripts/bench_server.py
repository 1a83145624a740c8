#!/usr/bin/env python3
"""Server-level benchmark of Python Durus 4.3: the reference side of
scripts/bench-server, the same workloads on the same object graph as
benches/server.rs.

The reference server workloads of ../shared/interop/bench_durus.py
(server_tx with K = 1 and 4 client processes, server_load, server_load_bulk)
with its server (`python -m durus -s`, started and stopped by its Server
class, quiet: --logginglevel 30), on the reference's object graph, the one
scripts/bench_objects.py writes: n Items in a durus.btree.BTree keyed by
id under root["items"].

    bench_server.py [--quick] [--json] [--tmp DIR] [--only a,b] [--pin same|cross]
        runs every workload (clients in child processes); a summary goes to
        stderr and, with --json, one JSON line per workload to stdout.
        --pin same runs the server and every client on CPU 0, --pin cross
        the server on CPU 0 and the clients on CPU 1 (unpinned without it).
    bench_server.py report RUST.jsonl DURUS.jsonl
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
INTEROP = os.path.join(HERE, "..", "..", "shared", "interop")
for path in (HERE, INTEROP):
    if path not in sys.path:
        sys.path.insert(0, path)

# The object bench's graph, rows and formatting; the storage bench's flags
# and JSON-line reader.
from bench_objects import (fmt_value, insert, one_pass, use_engine,  # noqa: E402
                           result, summary)
from bench_storage import emit, parse_opts, peak_rss_kb, read_rows  # noqa: E402

CLIENTS = (1, 4)
# The reference's server command, quiet: `durus -s` logs a line per commit
# at INFO by default (10-40% of its tx/s on this machine); measured quiet,
# as the other benchmarks measure Durus, and as our server is (it logs
# commits at debug level).
QUIET = " --logginglevel 30"
# name, repetitions (every repetition runs fresh client processes)
PLAN = [("server_tx", 5), ("server_load", 5), ("server_load_bulk", 5)]


def sizes(quick):
    """n, transactions per client"""
    return (10000, 1000) if quick else (100000, 5000)


# ------------------------------------------------------------------ workers

def client(port, n):
    from durus.client_storage import ClientStorage
    from durus.connection import Connection
    st = ClientStorage(address=("127.0.0.1", port))
    return st, Connection(st, cache_size=2 * n + 10000)


def load(port, n, bulk):
    """bench_durus.w_server_load."""
    import bench_objects
    use_engine(False)  # makes bench_objects.Item, the items' class
    Item = bench_objects.Item
    st, conn = client(port, n)
    if bulk:
        t0 = time.perf_counter()
        count = ids = 0
        for obj in conn.get_crawler(batch_size=100):
            if type(obj) is Item:
                ids += obj.id
                len(obj.name)
                obj.value
                count += 1
        dt = time.perf_counter() - t0
    else:
        t0 = time.perf_counter()
        tree = conn.get_root()["items"]
        count, ids, _, _ = one_pass(tree)
        dt = time.perf_counter() - t0
    assert count == n and ids == n * (n - 1) // 2, (count, ids)
    st.close()
    return dict(secs=dt, peak_rss_kb=peak_rss_kb())


def placement(pin):
    """(server CPU, client CPU) for --pin, or (None, None)."""
    if pin is None:
        return None, None
    if pin not in ("same", "cross"):
        raise SystemExit("--pin %r: same or cross" % pin)
    return 0, (0 if pin == "same" else 1)


def tx_client(port, n, idx, stride, t, barrier, q, cpu):
    """bench_durus.server_tx_client."""
    try:
        if cpu is not None:
            os.sched_setaffinity(0, {cpu})
        st, conn = client(port, 0)
        i = idx * stride
        obj = conn.get_root()["items"][i]
        start_value = obj.value              # warm: path + object loaded
        barrier.wait(60)
        t0 = time.perf_counter()
        for _ in range(t):
            obj.value += 1.0
            conn.commit()
        t1 = time.perf_counter()
        conn.abort()
        assert obj.value == start_value + t
        st.close()
        q.put((idx, t0, t1, peak_rss_kb(), None))
    except Exception:
        import traceback
        q.put((idx, None, None, None, traceback.format_exc()))


# ------------------------------------------------------------------ driver

def server_tx(server, n, k, t, reps, cpu):
    """bench_durus.run_server_tx, `reps` times, fresh processes each."""
    import multiprocessing
    mp = multiprocessing.get_context("fork")
    secs = []
    client_rss = 0
    for _ in range(reps):
        barrier = mp.Barrier(k)
        q = mp.Queue()
        stride = max(1, n // k)
        procs = [mp.Process(target=tx_client,
                            args=(server.port, n, i, stride, t, barrier, q, cpu))
                 for i in range(k)]
        for p in procs:
            p.start()
        res = [q.get(timeout=300) for _ in procs]
        for p in procs:
            p.join(30)
        errors = [r[4] for r in res if r[4]]
        if errors:
            raise RuntimeError("server_tx client failed:\n" + errors[0])
        secs.append(max(r[2] for r in res) - min(r[1] for r in res))
        client_rss = max([client_rss] + [r[3] for r in res])
    return result("server_tx_%d" % k, k * t, "tx/s", secs,
                  server.peak_rss_kib(), dict(
                      clients=k, tx_per_client=t, fsync=False,
                      client_peak_rss_kb=client_rss, rss="server"))


def server_load(server, name, n, reps, cpu):
    secs = []
    client_rss = 0
    for _ in range(reps):
        cmd = [sys.executable, os.path.abspath(__file__), "--worker", name,
               "--n", str(n), "--port", str(server.port)]
        if cpu is not None:
            cmd += ["--cpu", str(cpu)]
        out = subprocess.run(cmd, stdout=subprocess.PIPE, check=True)
        row = json.loads(out.stdout.decode().strip().splitlines()[-1])
        secs.append(row["secs"])
        client_rss = max(client_rss, row["peak_rss_kb"])
    extra = dict(client_peak_rss_kb=client_rss, rss="server", processes=reps)
    if name == "server_load_bulk":
        extra["batch"] = 100
    return result(name, n, "objects/s", secs, server.peak_rss_kib(), extra)


def drive(quick, as_json, tmp, only, pin):
    from bench_durus import DEFAULT_SERVER_CMD, Server
    server_cpu, client_cpu = placement(pin)
    n, t = sizes(quick)
    base = tmp or os.environ.get("BENCH_TMP") or os.path.join(
        HERE, "..", "target", "bench-tmp")
    os.makedirs(base, exist_ok=True)
    d = tempfile.mkdtemp(prefix="durus-server-", dir=base)
    server = None
    try:
        selected = lambda name: only is None or any(
            name == o or name.startswith(o + "_") for o in only)
        plan = [(name, reps) for name, reps in PLAN if selected(name)]
        if not plan:
            return
        sys.stderr.write("durus: populating %d items\n" % n)
        insert(use_engine(False), d, n, 1)
        cmd = DEFAULT_SERVER_CMD + QUIET
        if server_cpu is not None:
            cmd = "taskset -c %d %s" % (server_cpu, cmd)
        server = Server(cmd, os.path.join(d, "items.durus"), d)
        for name, reps in plan:
            if name == "server_tx":
                rows = []
                for k in CLIENTS:
                    sys.stderr.write("durus: server_tx K = %d (%d reps of %d x %d tx)\n"
                                     % (k, reps, k, t))
                    rows.append(server_tx(server, n, k, t, reps, client_cpu))
            else:
                sys.stderr.write("durus: %s (n = %d, %d reps)\n" % (name, n, reps))
                rows = [server_load(server, name, n, reps, client_cpu)]
            for row in rows:
                row["extra"]["pin"] = pin or "none"
                emit(row, as_json, summary(row))
    finally:
        if server is not None:
            server.stop()
        shutil.rmtree(d, ignore_errors=True)


# ------------------------------------------------------------------ report

ROWS = [
    # Rust workload, Durus workload, label, minimum speedup (target) or None
    ("server_tx_1", "server_tx_1", "small transactions, 1 client, fsync off", 5),
    ("server_tx_4", "server_tx_4", "small transactions, 4 client processes, fsync off", 10),
    ("server_tx_fsync_1", "server_tx_1", "small transactions, 1 client, fsync on (vs Durus without)", None),
    ("server_tx_fsync_4", "server_tx_4", "small transactions, 4 clients, fsync on (vs Durus without)", None),
    ("server_load", "server_load", "cold load over loopback, one load per object", 5),
    ("server_load_bulk", "server_load_bulk", "cold load over loopback, bulk loads of 100", 20),
]


LOOPBACK = [
    # Rust workload, label, short name
    ("loopback", "loopback 1-byte ping-pong, two processes, unpinned", "unpinned"),
    ("loopback_same_cpu", "loopback 1-byte ping-pong, same CPU", "same CPU"),
    ("loopback_cross_cpu", "loopback 1-byte ping-pong, across CPUs", "across CPUs"),
    ("loopback_cross_cpu_spin", "loopback 1-byte ping-pong, across CPUs, both "
     "spinning (no idle CPU to wake)", "across CPUs spinning"),
]


def report(rust_path, durus_path):
    rust, durus = read_rows(rust_path), read_rows(durus_path)
    lines = [
        "| workload | n | unit | Rust median (min–max) | Durus 4.3 median (min–max) "
        "| speedup Rust/Durus | server peak RSS Rust / Durus | target |",
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
        cpu = r["extra"].get("cpu_bound_tx_s")
        if target and ratio < target and cpu:
            # With every CPU busy, the CPU a transaction costs caps the rate.
            tgt += " (CPU-bound: %.0f%% of the %s tx/s that %.1f µs of CPU " \
                "per transaction allow on %d CPUs)" % (
                    100 * r["median"] / cpu, "{:,.0f}".format(cpu),
                    r["extra"]["cpu_us_per_tx"], r["extra"]["cpus"])
        lines.append("| %s | %s | %s | %s | %s | %.1f× | %.0f / %.0f MiB | %s |" % (
            label, "{:,}".format(r["items"]), r["unit"], fmt_value(r),
            fmt_value(p), ratio, r["peak_rss_kb"] / 1024.0,
            p["peak_rss_kb"] / 1024.0, tgt))
        if r["unit"] != p["unit"] or (key == dkey and r["items"] != p["items"]):
            problems.append("%s: sizes or units differ (%s %s vs %s %s)" % (
                key, r["items"], r["unit"], p["items"], p["unit"]))
    loops = [(short, label, rust[key]) for key, label, short in LOOPBACK
             if key in rust]
    for _, label, row in loops:
        lines.append("| %s | %s | %s | %s | | | | |" % (
            label, "{:,}".format(row["items"]), row["unit"], fmt_value(row)))
    notes = []
    if loops:
        notes.append("Loopback round trip (median): %s." % ", ".join(
            "%s %.1f µs" % (short, 1e6 / row["median"])
            for short, _, row in loops))
    for key, trips, per in (("server_tx_1", 2, "transaction"),
                            ("server_load", 1, "object")):
        got = ["%s %.1f µs" % (side, 1e6 / rows[key]["median"])
               for side, rows in (("Rust", rust), ("Durus", durus)) if key in rows]
        if got:
            notes.append("%s: %s per %s (the protocol needs %d round trip%s)." % (
                key, ", ".join(got), per, trips, "s" if trips > 1 else ""))
    # Rust cannot beat the round trips the protocol needs, so the speedup
    # is at most Durus's time per operation over those round trips.
    pin = next((row["extra"].get("pin") for row in rust.values()
                if "pin" in row["extra"]), "none")
    # Both ends spin for the answer (storage/address.rs), so the round
    # trip that bounds us is the awake one, except on one CPU.
    rtt_key = {"none": "loopback_cross_cpu_spin", "same": "loopback_same_cpu",
               "cross": "loopback_cross_cpu_spin"}.get(pin)
    if rtt_key in rust:
        rtt = 1e6 / rust[rtt_key]["median"]
        ceilings = ["%s %.1f×" % (key, 1e6 / durus[key]["median"] / (trips * rtt))
                    for key, trips in (("server_tx_1", 2), ("server_tx_4", 1),
                                       ("server_load", 1)) if key in durus]
        if ceilings:
            notes.append("Round-trip ceiling of the speedup (Durus's time per "
                         "transaction or object over the round trips it needs at "
                         "least: 2 per commit, 1 per commit with K = 4 since "
                         "commits serialise on one, 1 per load; round trip %s "
                         "%.1f µs): %s." % (
                             "on one CPU" if pin == "same" else
                             "across CPUs with both ends spinning",
                             rtt, ", ".join(ceilings)))
    # With every CPU busy, the CPU one transaction costs (clients and
    # server together, waiting spins included) bounds the throughput.
    cpu = ["%s: %.1f µs CPU per transaction on %d CPUs, bound %s tx/s, "
           "measured %.0f%% of it%s" % (
               key, row["extra"]["cpu_us_per_tx"], row["extra"]["cpus"],
               "{:,.0f}".format(row["extra"]["cpu_bound_tx_s"]),
               100 * row["median"] / row["extra"]["cpu_bound_tx_s"],
               "" if key not in durus else
               " (%.0f× Durus needs %s tx/s: at most %.1f µs per transaction)" % (
                   10, "{:,.0f}".format(10 * durus[key]["median"]),
                   row["extra"]["cpus"] * 1e6 / (10 * durus[key]["median"]))
               if key == "server_tx_4" else "")
           for key in ("server_tx_1", "server_tx_4")
           for row in [rust.get(key)] if row and "cpu_us_per_tx" in row["extra"]]
    if cpu:
        notes.append("CPU per transaction (clients + server, /proc/PID/stat): "
                     + "; ".join(cpu) + ".")
    bulk = rust.get("server_load_bulk")
    if bulk and "walk_secs" in bulk["extra"]:
        walk = sorted(bulk["extra"]["walk_secs"])
        notes.append("Rust server_load_bulk: the bulk-load walk alone %.1f ms "
                     "(median) of %.1f ms." % (walk[len(walk) // 2] * 1e3,
                                               bulk["items"] / bulk["median"] * 1e3))
    pins = set(row["extra"].get("pin", "none") for rows in (rust, durus)
               for key, row in rows.items() if not key.startswith("loopback"))
    if pins - {"none"}:
        notes.append("Pinned: %s (`--pin`)." % ", ".join(sorted(pins)))
    if notes:
        lines.append("")
        lines.append(" ".join(notes))
    for problem in problems:
        lines.append("")
        lines.append("**Mismatch**: " + problem)
    print("\n".join(lines))
    return 1 if problems else 0


def main(argv):
    if argv and argv[0] == "report":
        return report(argv[1], argv[2])
    extra = {}
    for flag in ("--port", "--cpu", "--pin"):
        if flag in argv:
            i = argv.index(flag)
            extra[flag[2:]] = argv[i + 1]
            del argv[i:i + 2]
    opts = parse_opts(argv)
    if opts["worker"]:
        if "cpu" in extra:
            os.sched_setaffinity(0, {int(extra["cpu"])})
        # Durus logs every commit at INFO to stderr; measure the client quiet.
        import logging
        import durus.logger  # noqa: F401
        logging.getLogger("durus").setLevel(logging.WARNING)
        row = load(int(extra["port"]), int(opts["n"]),
                   opts["worker"] == "server_load_bulk")
        sys.stdout.write(json.dumps(row) + "\n")
        return 0
    import logging
    import durus.logger  # noqa: F401
    logging.getLogger("durus").setLevel(logging.WARNING)
    only = opts["only"].split(",") if opts["only"] else None
    drive(opts["quick"], opts["json"], opts["tmp"], only, extra.get("pin"))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
