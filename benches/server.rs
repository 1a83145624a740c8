//! Server-level benchmark: our storage server (`durus serve`) and clients
//! (`ClientStorage` under a `Connection`) over loopback TCP, the Rust side
//! of `scripts/bench-server` (the Python Durus 4.3 side is
//! `scripts/bench_server.py`, which runs the same workloads on the same
//! object graph against `durus -s`).
//!
//! ```text
//! cargo build --release --bin durus            # the server it runs
//! cargo bench --bench server                   # every workload, a table on stdout
//! cargo bench --bench server -- --quick        # n = 10,000, 1,000 transactions per client
//! cargo bench --bench server -- --json F.jsonl # also one JSON line per workload in F.jsonl
//! cargo bench --bench server -- --only server_tx,loopback
//! cargo bench --bench server -- --pin same     # server and clients on CPU 0 (cross: clients on 1)
//! ```
//!
//! The server is the real CLI, `target/release/durus serve --file F
//! --address 127.0.0.1:0 [--no-fsync]` (or `$DURUS_BIN`), a child process;
//! every client is a child process too (this executable again, with
//! `--worker`). The database: n = 100,000 `Item { id, name, value }`s in
//! a `BTree<i64, PRef<Item>>` under `root["items"]` (the reference's
//! graph, as in `benches/objects.rs`), written before the server starts.
//!
//! Workloads:
//!
//! * `server_tx_K` (K = 1, 4): K client processes, each with its own
//!   `Connection` over `ClientStorage`, load item `idx * (n / K)` (not
//!   timed), wait for a common start, then each does T transactions
//!   `item.write(|it| it.value += 1.0); conn.commit()` (T = 5,000;
//!   `--quick` 1,000). Rate: K * T over the time from the first client's
//!   start to the last client's end (wall clock, shared by the processes).
//!   Server with `--no-fsync` (Python Durus never fsyncs a commit).
//!   Also reported: the CPU time (user + system, /proc/PID/stat) the
//!   clients and the server used per transaction, and the throughput that
//!   cost allows on this machine's CPUs (the bound once they are all busy).
//! * `server_tx_fsync_K`: the same against a server with fsync'd commits
//!   (the default), T / 5 transactions per client.
//! * `server_load`: a fresh client process cold-loads every item through
//!   its `Connection` by iterating the tree in key order, reading the
//!   three fields of each: one `L` request per item; the tree fetches each
//!   inner node's children with one `B` (Durus: one `L` per node too). The
//!   root loads when the connection opens, before the clock; one process
//!   per repetition.
//! * `server_load_bulk`: the same through `Connection::crawl` (Durus's
//!   `get_crawler`, batches of 100 oids, one `B` each), reading the three
//!   fields of every item the crawl yields.
//! * `loopback`: the bound on everything above: 1-byte ping-pongs over a
//!   loopback TCP connection (`TCP_NODELAY`) between two processes of this
//!   executable, in round trips/s; unpinned, and with `taskset` (when there
//!   are two CPUs) on one CPU, on two, and on two with both ends spinning
//!   on non-blocking sockets (no idle CPU to wake).
//!
//! `--pin same|cross` pins the server (`taskset -c 0`) and the clients
//! (`taskset -p` on themselves, to CPU 0 or 1); unpinned without it.
//! `BENCH_SPIN_US=N` sets how long the server and the transaction clients
//! poll for an answer before sleeping (`durus serve --spin`,
//! `ClientStorage::set_spin`; default 200 µs, 0 sleeps at once).

mod common;

use std::fs::File;
use std::hint::black_box;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use durus_core::{BTree, ClientStorage, Connection, FileStorage, Oid, PRef};
use durus_core::{Persistent, Result as DurusResult};
use serde_json::{json, Value};

use common::items::{items_of, store_items, Item, Items};
use common::{
    bench_tmp_base, cpu_secs, file_len, peak_rss_kb, proc_peak_rss_kb, rate_row, run_worker,
    summary, take_flag, AnyResult, Args, Sink,
};

/// Items per commit while populating.
const COMMIT_EVERY: usize = 1000;
/// Client counts of `server_tx`.
const CLIENTS: [usize; 2] = [1, 4];
/// Oids per bulk load (Durus's crawler default).
const BULK_BATCH: usize = 100;

fn main() {
    if let Err(e) = run() {
        eprintln!("bench server: {e}");
        std::process::exit(1);
    }
}

/// Flags beyond [`Args`]: the driver's `--pin`, the workers' others.
#[derive(Debug, Default)]
struct WorkerFlags {
    address: Option<String>,
    idx: usize,
    clients: usize,
    tx: usize,
    /// The CPU a worker pins itself to.
    cpu: Option<usize>,
    /// `same` (server and clients on CPU 0) or `cross` (server on 0,
    /// clients on 1); unpinned without it.
    pin: Option<String>,
    /// `--spin 1`: the loopback workers spin on non-blocking sockets.
    spin: bool,
}

fn run() -> AnyResult<()> {
    let mut argv: Vec<String> = std::env::args().skip(1).collect();
    let flags = WorkerFlags {
        address: take_flag(&mut argv, "--address")?,
        idx: take_flag(&mut argv, "--idx")?.map_or(Ok(0), |v| v.parse())?,
        clients: take_flag(&mut argv, "--clients")?.map_or(Ok(1), |v| v.parse())?,
        tx: take_flag(&mut argv, "--tx")?.map_or(Ok(0), |v| v.parse())?,
        cpu: take_flag(&mut argv, "--cpu")?
            .map(|v| v.parse())
            .transpose()?,
        pin: take_flag(&mut argv, "--pin")?,
        spin: take_flag(&mut argv, "--spin")?.is_some_and(|v| v == "1"),
    };
    let args = Args::parse(argv.into_iter())?;
    match &args.worker {
        Some(name) => {
            if let Some(cpu) = flags.cpu {
                pin_self(cpu)?;
            }
            for line in worker(name, &args, &flags)? {
                println!("{line}");
            }
            Ok(())
        }
        None => drive(&args, flags.pin.as_deref()),
    }
}

/// Pins this (single-threaded) process to `cpu` with `taskset -p`.
fn pin_self(cpu: usize) -> AnyResult<()> {
    let status = Command::new("taskset")
        .args(["-pc", &cpu.to_string(), &std::process::id().to_string()])
        .stdout(Stdio::null())
        .status()?;
    if !status.success() {
        return Err(format!("taskset -pc {cpu} failed ({status})").into());
    }
    Ok(())
}

/// Whether processes can be pinned to two different CPUs here.
fn can_pin() -> bool {
    let two_cpus = std::thread::available_parallelism().is_ok_and(|n| n.get() >= 2);
    two_cpus
        && Command::new("taskset")
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
}

/// Where the server and the clients run: CPUs or unpinned.
#[derive(Debug, Clone, Copy, Default)]
struct Placement {
    server: Option<usize>,
    clients: Option<usize>,
}

impl Placement {
    fn from_flag(pin: Option<&str>) -> AnyResult<Placement> {
        let placement = match pin {
            None => return Ok(Placement::default()),
            Some("same") => Placement {
                server: Some(0),
                clients: Some(0),
            },
            Some("cross") => Placement {
                server: Some(0),
                clients: Some(1),
            },
            Some(other) => return Err(format!("--pin {other:?}: same or cross").into()),
        };
        if !can_pin() {
            return Err("--pin needs taskset and two CPUs".into());
        }
        Ok(placement)
    }

    /// `--cpu N` for a client worker, if pinned.
    fn client_args(&self) -> Vec<String> {
        self.clients
            .map(|c| vec!["--cpu".to_string(), c.to_string()])
            .unwrap_or_default()
    }
}

/// The workloads in the order the driver runs them: name, repetitions.
const PLAN: &[(&str, usize)] = &[
    ("loopback", 5),
    ("server_tx", 5),
    ("server_load", 5),
    ("server_load_bulk", 5),
    ("server_tx_fsync", 3),
];

/// Runs every selected workload and reports.
fn drive(args: &Args, pin: Option<&str>) -> AnyResult<()> {
    let placement = Placement::from_flag(pin)?;
    let n = if args.quick { 10_000 } else { 100_000 };
    let tx = if args.quick { 1_000 } else { 5_000 };
    let base = bench_tmp_base(args.tmp.as_deref());
    std::fs::create_dir_all(&base)?;
    let dir = tempfile::Builder::new()
        .prefix("rust-server-")
        .tempdir_in(&base)?;
    let selected = |name: &str| {
        args.only.as_ref().is_none_or(|only| {
            only.iter()
                .any(|o| o == name || name.starts_with(&format!("{o}_")))
        })
    };
    let db = dir.path().join("items.durus");
    let mut populated = false;
    // The no-fsync server serves everything but the fsync'd transactions.
    let mut server: Option<ServerProc> = None;
    let mut sink = Sink::new(args)?;
    for &(name, reps) in PLAN {
        if !selected(name) {
            continue;
        }
        if name != "loopback" && !populated {
            eprintln!("rust: populating {n} items");
            run_worker("populate", &worker_args(n, 1, dir.path()))?;
            populated = true;
        }
        let fsync = name == "server_tx_fsync";
        if name != "loopback" && server.as_ref().is_none_or(|s| s.fsync != fsync) {
            if let Some(mut s) = server.take() {
                s.stop()?;
            }
            server = Some(ServerProc::start(&db, fsync, placement, dir.path())?);
        }
        let rows = match name {
            "loopback" => {
                eprintln!("rust: loopback ping-pong ({reps} reps)");
                let mut rows = vec![loopback("loopback", None, false, n, reps, dir.path())?];
                if can_pin() {
                    for (name, cpus, spin) in [
                        ("loopback_same_cpu", (0, 0), false),
                        ("loopback_cross_cpu", (0, 1), false),
                        // No idle CPU to wake: what the wake-ups cost.
                        ("loopback_cross_cpu_spin", (0, 1), true),
                    ] {
                        rows.push(loopback(name, Some(cpus), spin, n, reps, dir.path())?);
                    }
                }
                rows
            }
            "server_tx" | "server_tx_fsync" => {
                let s = server.as_ref().ok_or("no server")?;
                let per_client = if fsync { tx / 5 } else { tx };
                let mut rows = Vec::new();
                for k in CLIENTS {
                    eprintln!("rust: {name} K = {k} ({reps} reps of {k} x {per_client} tx)");
                    rows.push(server_tx(s, name, n, k, per_client, reps, placement)?);
                }
                rows
            }
            _ => {
                let s = server.as_ref().ok_or("no server")?;
                eprintln!("rust: {name} (n = {n}, {reps} reps)");
                vec![server_load(s, name, n, reps, placement, dir.path())?]
            }
        };
        for mut row in rows {
            if !name.starts_with("loopback") {
                row["extra"]["pin"] = json!(pin.unwrap_or("none"));
            }
            let line = summary(&row);
            sink.emit(row, line)?;
        }
    }
    if let Some(mut s) = server.take() {
        s.stop()?;
    }
    sink.finish();
    Ok(())
}

fn worker_args(n: usize, reps: usize, dir: &Path) -> Vec<String> {
    vec![
        "--n".into(),
        n.to_string(),
        "--reps".into(),
        reps.to_string(),
        "--dir".into(),
        dir.display().to_string(),
    ]
}

/// Seconds since the epoch: a clock all the client processes share.
fn wall_clock() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

// ---------------------------------------------------------------- the server

/// The newest modification time of a file under `dir`.
fn newest_mtime(dir: &Path) -> Option<SystemTime> {
    let mut newest = None;
    for entry in std::fs::read_dir(dir).ok()?.flatten() {
        let path = entry.path();
        let t = if path.is_dir() {
            newest_mtime(&path)
        } else {
            entry.metadata().and_then(|m| m.modified()).ok()
        };
        newest = newest.max(t);
    }
    newest
}

/// `durus serve` running as a child process.
struct ServerProc {
    child: Child,
    address: String,
    fsync: bool,
    bin: PathBuf,
}

impl ServerProc {
    /// The `durus` executable: `$DURUS_BIN`, else `durus` beside the
    /// directory of this bench executable (`target/release/deps/..`).
    fn binary() -> AnyResult<PathBuf> {
        if let Some(bin) = std::env::var_os("DURUS_BIN") {
            return Ok(PathBuf::from(bin));
        }
        let exe = std::env::current_exe()?;
        let bin = exe
            .parent()
            .and_then(Path::parent)
            .ok_or("cannot locate the target directory")?
            .join("durus");
        if !bin.exists() {
            return Err(format!(
                "{} is missing: run `cargo build --release --bin durus` first (or set DURUS_BIN)",
                bin.display()
            )
            .into());
        }
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let built = std::fs::metadata(&bin).and_then(|m| m.modified())?;
        let newest = [root.join("src"), root.join("durus-core/src")]
            .iter()
            .filter_map(|d| newest_mtime(d))
            .max();
        if newest.is_some_and(|t| t > built) {
            eprintln!(
                "rust: warning: {} is older than the sources; \
                 `cargo build --release --bin durus` to measure the current server",
                bin.display()
            );
        }
        Ok(bin)
    }

    /// Starts `durus serve` on `db` on a free loopback port and waits until
    /// it accepts connections.
    fn start(db: &Path, fsync: bool, placement: Placement, dir: &Path) -> AnyResult<ServerProc> {
        let bin = Self::binary()?;
        let log_path = dir.join(if fsync {
            "server-fsync.log"
        } else {
            "server.log"
        });
        let log = File::create(&log_path)?;
        // taskset execs the server: the child's pid is the server's.
        let mut cmd = match placement.server {
            Some(cpu) => {
                let mut c = Command::new("taskset");
                c.args(["-c", &cpu.to_string()]).arg(&bin);
                c
            }
            None => Command::new(&bin),
        };
        cmd.arg("serve")
            .arg("--file")
            .arg(db)
            .args(["--address", "127.0.0.1:0"]);
        if !fsync {
            cmd.arg("--no-fsync");
        }
        if let Ok(us) = std::env::var("BENCH_SPIN_US") {
            cmd.args(["--spin", &us]);
        }
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()?;
        // It says where it listens (the port 0 became a real one).
        let deadline = Instant::now() + Duration::from_secs(60);
        let address = loop {
            let text = std::fs::read_to_string(&log_path)?;
            if let Some(line) = text.lines().find(|l| l.contains("durus: serving")) {
                let addr = line.rsplit(" on ").next().unwrap_or("").trim().to_string();
                if TcpStream::connect(&addr).is_ok() {
                    break addr;
                }
            }
            if let Some(status) = child.try_wait()? {
                return Err(format!("durus serve exited ({status}): {text}").into());
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                return Err(format!("durus serve did not start: {text}").into());
            }
            std::thread::sleep(Duration::from_millis(10));
        };
        Ok(ServerProc {
            child,
            address,
            fsync,
            bin,
        })
    }

    fn peak_rss_kb(&self) -> u64 {
        proc_peak_rss_kb(self.child.id())
    }

    /// `durus stop`, then waits for the process.
    fn stop(&mut self) -> AnyResult<()> {
        let status = Command::new(&self.bin)
            .args(["stop", "--address", &self.address])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()?;
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if self.child.try_wait()?.is_some() {
                break;
            }
            if Instant::now() > deadline {
                self.child.kill()?;
                self.child.wait()?;
                return Err(format!("the server at {} did not stop", self.address).into());
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        if !status.success() {
            return Err(format!("durus stop --address {} failed", self.address).into());
        }
        Ok(())
    }
}

impl Drop for ServerProc {
    /// A server left running by a failed run is killed.
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

// ---------------------------------------------------------------- drivers

/// A worker process whose stdout is read line by line (for the start
/// barrier of `server_tx` and the port of the echo worker).
struct LiveWorker {
    child: Child,
    stdin: Option<ChildStdin>,
    stdout: BufReader<ChildStdout>,
}

impl LiveWorker {
    fn spawn(name: &str, args: &[String]) -> AnyResult<LiveWorker> {
        let mut child = Command::new(std::env::current_exe()?)
            .args(["--worker", name])
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()?;
        let stdin = child.stdin.take();
        let stdout = BufReader::new(child.stdout.take().ok_or("no stdout")?);
        Ok(LiveWorker {
            child,
            stdin,
            stdout,
        })
    }

    /// The next line of output, without its newline.
    fn line(&mut self) -> AnyResult<String> {
        let mut line = String::new();
        if self.stdout.read_line(&mut line)? == 0 {
            let status = self.child.wait()?;
            return Err(format!("a worker exited early ({status})").into());
        }
        Ok(line.trim_end().to_string())
    }

    /// Closes its stdin, reads the JSON line it ends with, waits for it.
    fn finish(mut self) -> AnyResult<Value> {
        drop(self.stdin.take());
        let mut out = String::new();
        self.stdout.read_to_string(&mut out)?;
        let status = self.child.wait()?;
        if !status.success() {
            return Err(format!("a worker failed ({status})").into());
        }
        let line = out
            .lines()
            .find(|l| l.starts_with('{'))
            .ok_or("a worker printed no result")?;
        Ok(serde_json::from_str(line)?)
    }
}

/// `reps` runs of `k` client processes doing `tx` transactions each.
fn server_tx(
    server: &ServerProc,
    name: &str,
    n: usize,
    k: usize,
    tx: usize,
    reps: usize,
    placement: Placement,
) -> AnyResult<Value> {
    let mut secs = Vec::with_capacity(reps);
    let mut client_rss = 0;
    // CPU time of the clients and the server over every repetition.
    let mut cpu = 0.0;
    let server_pid = server.child.id().to_string();
    for _ in 0..reps {
        let server_cpu = cpu_secs(&server_pid)?;
        let mut clients = Vec::with_capacity(k);
        for idx in 0..k {
            let mut args = worker_args(n, 1, Path::new("."));
            args.extend([
                "--address".into(),
                server.address.clone(),
                "--idx".into(),
                idx.to_string(),
                "--clients".into(),
                k.to_string(),
                "--tx".into(),
                tx.to_string(),
            ]);
            args.extend(placement.client_args());
            clients.push(LiveWorker::spawn("tx", &args)?);
        }
        // A common start: every client has connected and loaded its item.
        for c in &mut clients {
            let line = c.line()?;
            if line != "ready" {
                return Err(format!("a tx worker said {line:?}, not ready").into());
            }
        }
        for c in &mut clients {
            if let Some(stdin) = c.stdin.as_mut() {
                stdin.write_all(b"go\n")?;
                stdin.flush()?;
            }
        }
        let mut start = f64::INFINITY;
        let mut end = f64::NEG_INFINITY;
        for c in clients {
            let r = c.finish()?;
            start = start.min(r["t0"].as_f64().ok_or("no t0")?);
            end = end.max(r["t1"].as_f64().ok_or("no t1")?);
            client_rss = client_rss.max(r["peak_rss_kb"].as_u64().unwrap_or(0));
            cpu += r["cpu_secs"].as_f64().ok_or("no cpu_secs")?;
        }
        secs.push(end - start);
        cpu += cpu_secs(&server_pid)? - server_cpu;
    }
    // The most transactions the CPUs could do at this CPU cost each (the
    // server's CPU covers its idle polling too: an upper bound on cost).
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let cpu_per_tx = cpu / (reps * k * tx) as f64;
    let fsync = name == "server_tx_fsync";
    Ok(rate_row(
        &format!("{name}_{k}"),
        (k * tx) as u64,
        "tx/s",
        &secs,
        server.peak_rss_kb(),
        json!({
            "clients": k,
            "tx_per_client": tx,
            "fsync": fsync,
            "client_peak_rss_kb": client_rss,
            "rss": "server",
            "cpus": cpus,
            "cpu_us_per_tx": cpu_per_tx * 1e6,
            "cpu_bound_tx_s": cpus as f64 / cpu_per_tx,
        }),
    ))
}

/// `reps` fresh client processes, each loading every item once.
fn server_load(
    server: &ServerProc,
    name: &str,
    n: usize,
    reps: usize,
    placement: Placement,
    dir: &Path,
) -> AnyResult<Value> {
    let worker = if name == "server_load_bulk" {
        "load_bulk"
    } else {
        "load"
    };
    let mut secs = Vec::with_capacity(reps);
    let mut walk_secs = Vec::new();
    let mut client_rss = 0;
    let mut requests = 0;
    for _ in 0..reps {
        let mut args = worker_args(n, 1, dir);
        args.extend(["--address".into(), server.address.clone()]);
        args.extend(placement.client_args());
        let rows = run_worker(worker, &args)?;
        let r = rows.first().ok_or("a load worker printed no result")?;
        secs.push(r["secs"].as_f64().ok_or("no secs")?);
        if let Some(w) = r["walk_secs"].as_f64() {
            walk_secs.push(w);
        }
        client_rss = client_rss.max(r["peak_rss_kb"].as_u64().unwrap_or(0));
        requests = r["requests"].as_u64().unwrap_or(0);
    }
    let mut extra = json!({
        "client_peak_rss_kb": client_rss,
        "requests": requests,
        "rss": "server",
        "processes": reps,
    });
    if !walk_secs.is_empty() {
        extra["walk_secs"] = json!(walk_secs);
        extra["batch"] = json!(BULK_BATCH);
    }
    Ok(rate_row(
        name,
        n as u64,
        "objects/s",
        &secs,
        server.peak_rss_kb(),
        extra,
    ))
}

/// An echo process and a pinging process: 1-byte round trips, unpinned
/// or on the CPUs `(echo, ping)`.
fn loopback(
    name: &str,
    cpus: Option<(usize, usize)>,
    spin: bool,
    n: usize,
    reps: usize,
    dir: &Path,
) -> AnyResult<Value> {
    let cpu_args = |cpu: usize| vec!["--cpu".to_string(), cpu.to_string()];
    let spin_args = || vec!["--spin".to_string(), u8::from(spin).to_string()];
    let mut args = worker_args(n, 1, dir);
    args.extend(spin_args());
    args.extend(cpus.map(|c| cpu_args(c.0)).unwrap_or_default());
    let mut echo = LiveWorker::spawn("echo", &args)?;
    let address = echo.line()?;
    let mut args = worker_args(n, reps, dir);
    args.extend(["--address".into(), address]);
    args.extend(spin_args());
    args.extend(cpus.map(|c| cpu_args(c.1)).unwrap_or_default());
    let rows = run_worker("ping", &args)?;
    echo.finish().ok(); // it prints nothing; it ends when the ping hangs up
    let mut row = rows
        .into_iter()
        .next()
        .ok_or("the ping worker printed no result")?;
    row["workload"] = json!(name);
    row["extra"]["cpus"] = json!(cpus.map(|c| [c.0, c.1]));
    Ok(row)
}

// ---------------------------------------------------------------- workers

fn worker(name: &str, args: &Args, flags: &WorkerFlags) -> AnyResult<Vec<Value>> {
    let n = args.n;
    let address = || flags.address.clone().ok_or("--worker needs --address");
    let dir = || args.dir.clone().ok_or("--worker needs --dir");
    match name {
        "populate" => populate(&dir()?.join("items.durus"), n),
        "tx" => tx_client(&address()?, n, flags),
        "load" => load(&address()?, n),
        "load_bulk" => load_bulk(&address()?, n),
        "echo" => echo(flags.spin),
        "ping" => ping(&address()?, n, args.reps.max(1), flags.spin),
        other => Err(format!("unknown workload {other:?}").into()),
    }
}

/// `n` items into a fresh file (fsync off), a commit every 1000.
fn populate(path: &Path, n: usize) -> AnyResult<Vec<Value>> {
    common::remove_db(path);
    let conn = Connection::new(FileStorage::options().fsync(false).open(path)?)?;
    conn.set_cache_size(2 * n + 10_000);
    let tree = store_items(&conn, BTree::new())?;
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
    drop(conn);
    Ok(vec![json!({ "items": n, "file_bytes": file_len(path) })])
}

/// One `server_tx` client: its own item, `tx` commits of `value += 1`.
fn tx_client(address: &str, n: usize, flags: &WorkerFlags) -> AnyResult<Vec<Value>> {
    let mut storage = ClientStorage::connect(address)?;
    if let Ok(us) = std::env::var("BENCH_SPIN_US") {
        storage.set_spin(Duration::from_micros(us.parse()?))?;
    }
    let conn = Connection::new(storage)?;
    conn.set_cache_size(10_000);
    let id = flags.idx * (n / flags.clients.max(1)).max(1);
    let item = items_of(&conn)?.get(&(id as i64))?.ok_or("missing item")?;
    let start_value = item.read(|it| it.value)?; // warm: path and item loaded
    println!("ready");
    std::io::stdout().flush()?;
    let mut go = String::new();
    std::io::stdin().read_line(&mut go)?;
    let cpu0 = cpu_secs("self")?;
    let t0 = wall_clock();
    for _ in 0..flags.tx {
        item.write(|it| it.value += 1.0)?;
        conn.commit()?;
    }
    let t1 = wall_clock();
    let cpu = cpu_secs("self")? - cpu0;
    conn.abort();
    let value = item.read(|it| it.value)?;
    if value != start_value + flags.tx as f64 {
        return Err(format!(
            "item {id}: value {value} after {} increments of {start_value}",
            flags.tx
        )
        .into());
    }
    Ok(vec![json!({
        "t0": t0,
        "t1": t1,
        "cpu_secs": cpu,
        "tx": flags.tx,
        "peak_rss_kb": peak_rss_kb(),
    })])
}

/// Reads the three fields of `item`, adding to `seen` (items, sum of ids).
fn read_item(item: &PRef<Item>, seen: &mut (u64, i64)) -> DurusResult<()> {
    seen.1 += item.read(|it| it.id)?;
    black_box(item.read(|it| it.name.len())?);
    black_box(item.read(|it| it.value)?);
    seen.0 += 1;
    Ok(())
}

/// Reads the three fields of every item in key order, in place; the
/// number of items and the sum of their ids.
fn read_items(tree: &PRef<Items>) -> DurusResult<(u64, i64)> {
    let mut seen = (0, 0);
    tree.for_each(|_, item| read_item(item, &mut seen))?;
    Ok(seen)
}

fn check_items(seen: (u64, i64), n: usize) -> AnyResult<()> {
    let n64 = n as i64;
    if seen != (n as u64, n64 * (n64 - 1) / 2) {
        return Err(format!("read {seen:?} (items, sum of ids) of {n} items").into());
    }
    Ok(())
}

/// A fresh connection loads every item, one `L` per item.
fn load(address: &str, n: usize) -> AnyResult<Vec<Value>> {
    let conn = Connection::new(ClientStorage::connect(address)?)?;
    conn.set_cache_size(2 * n + 10_000);
    let before = conn.storage_loads();
    let t = Instant::now();
    let tree = items_of(&conn)?;
    let seen = read_items(&tree)?;
    let secs = t.elapsed().as_secs_f64();
    check_items(seen, n)?;
    Ok(vec![json!({
        "secs": secs,
        "requests": conn.storage_loads() - before,
        "peak_rss_kb": peak_rss_kb(),
    })])
}

/// The same through `Connection::crawl` (Durus's crawler): every object
/// reachable from the root, breadth first, 100 per bulk load; the items
/// among them read as they come.
fn load_bulk(address: &str, n: usize) -> AnyResult<Vec<Value>> {
    let conn = Connection::new(ClientStorage::connect(address)?)?;
    conn.set_cache_size(2 * n + 10_000);
    let before = conn.storage_loads();
    let t = Instant::now();
    let mut seen = (0, 0);
    let mut objects = 0u64;
    for obj in conn.crawl(Oid::ROOT, BULK_BATCH) {
        let obj = obj?;
        objects += 1;
        if obj.class_name() == Item::CLASS_NAME {
            read_item(&obj.downcast::<Item>()?, &mut seen)?;
        }
    }
    let secs = t.elapsed().as_secs_f64();
    check_items(seen, n)?;
    Ok(vec![json!({
        "secs": secs,
        "objects": objects,
        "requests": conn.storage_loads() - before,
        "peak_rss_kb": peak_rss_kb(),
    })])
}

/// Echoes single bytes on one loopback connection until it closes; says
/// its address first.
fn echo(spin: bool) -> AnyResult<Vec<Value>> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    println!("{}", listener.local_addr()?);
    std::io::stdout().flush()?;
    let (mut s, _) = listener.accept()?;
    s.set_nodelay(true)?;
    s.set_nonblocking(spin)?;
    let mut b = [0u8; 1];
    while read_byte(&mut s, &mut b)? == 1 {
        s.write_all(&b)?;
    }
    Ok(Vec::new())
}

/// Reads one byte; on a non-blocking socket by spinning until it comes
/// (so the CPU never idles, and the peer never has to wake it).
fn read_byte(s: &mut TcpStream, b: &mut [u8; 1]) -> std::io::Result<usize> {
    loop {
        match s.read(b) {
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => std::hint::spin_loop(),
            other => return other,
        }
    }
}

/// `reps` runs of 1-byte round trips to the echo process (`n / 5` per
/// run, after 1,000 to warm up), both sides blocking or both spinning.
fn ping(address: &str, n: usize, reps: usize, spin: bool) -> AnyResult<Vec<Value>> {
    let mut s = TcpStream::connect(address)?;
    s.set_nodelay(true)?;
    s.set_nonblocking(spin)?;
    let round_trip = |s: &mut TcpStream| -> std::io::Result<()> {
        let mut b = [7u8; 1];
        s.write_all(&b)?;
        match read_byte(s, &mut b)? {
            1 => Ok(()),
            _ => Err(std::io::ErrorKind::UnexpectedEof.into()),
        }
    };
    for _ in 0..1000 {
        round_trip(&mut s)?;
    }
    let count = (n / 5).max(1000);
    let mut secs = Vec::with_capacity(reps);
    for _ in 0..reps {
        let t = Instant::now();
        for _ in 0..count {
            round_trip(&mut s)?;
        }
        secs.push(t.elapsed().as_secs_f64());
    }
    let rtt_us: Vec<f64> = secs.iter().map(|s| s / count as f64 * 1e6).collect();
    Ok(vec![rate_row(
        "loopback",
        count as u64,
        "round trips/s",
        &secs,
        peak_rss_kb(),
        json!({ "rtt_us": rtt_us, "bytes": 1, "nodelay": true, "spin": spin }),
    )])
}
