//! Crash tests: nothing acknowledged is lost, nothing torn is kept.
//!
//! * Served: a `durus serve` process on a file, and client processes each
//!   committing transactions that set two objects of their own, A and B,
//!   to the same number n. The server is killed with SIGKILL at random
//!   moments and restarted with `--repair`. Every client, on getting back
//!   in, checks its pair: A = B (no torn transaction), at least the last
//!   number acknowledged to it (nothing acknowledged lost), at most the
//!   last number it tried (nothing invented).
//! * Embedded: a process committing the same way to a `FileStorage`
//!   directly is killed mid-commit at random moments; each time the file
//!   is reopened with repair and the pair checked against the acknowledged
//!   numbers the process reported.
//!
//! * Python (with the `interop` feature): the served scenario with Python
//!   Durus 4.3 client processes (`tests/interop/crash_client.py`), whose
//!   commits are pickles and whose client storage is Durus's own.
//!
//! A test binary without libtest's harness: run plainly it is the driver of
//! every scenario; `-- served embedded python` picks some;
//! `--worker served|embedded ...` makes it a client process.
//! `DURUS_CRASH_KILLS` (default 12 per scenario) for longer runs.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use durus::prelude::*;
use durus::storage::address::Address;
use serde::{Deserialize, Serialize};

#[derive(Persistent, Serialize, Deserialize)]
#[durus(name = "crash.Counter")]
struct Counter {
    value: u64,
}

type Pairs = PersistentDict<String, PObject>;

#[cfg(feature = "interop")]
mod peer_venv;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(i) = args.iter().position(|a| a == "--worker") {
        return worker(&args[i + 1], &args[i + 2..]);
    }
    let kills = std::env::var("DURUS_CRASH_KILLS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(12);
    // Scenario names among the arguments (cargo may pass flags too).
    let picked: Vec<&str> = args[1..]
        .iter()
        .map(String::as_str)
        .filter(|a| !a.starts_with('-'))
        .collect();
    let run = |name: &str| picked.is_empty() || picked.contains(&name);
    if run("served") {
        served(kills, &Clients::Rust);
    }
    if run("embedded") {
        embedded(kills);
    }
    #[cfg(feature = "interop")]
    if run("python") {
        let venv = peer_venv::durus43_venv().unwrap_or_else(|e| panic!("{e}"));
        served(kills, &Clients::Python(venv.join("bin/python")));
    }
}

/// xorshift64: the moments of the kills.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

// ------------------------------------------------------------------ served

const CLIENTS: usize = 3;

/// Who the served scenario's client processes are.
enum Clients {
    /// This binary with `--worker served`.
    Rust,
    /// `tests/interop/crash_client.py` run by this Python (Durus 4.3).
    #[cfg(feature = "interop")]
    Python(PathBuf),
}

impl Clients {
    fn name(&self) -> &'static str {
        match self {
            Clients::Rust => "served",
            #[cfg(feature = "interop")]
            Clients::Python(_) => "python",
        }
    }

    /// Stores a pair of zeroed counters for each client.
    fn setup(&self, sock: &Path) {
        match self {
            Clients::Rust => {
                let address = Address::Unix(sock.to_path_buf());
                let conn = Connection::new(ClientStorage::connect_to(&address).unwrap()).unwrap();
                for c in 0..CLIENTS {
                    let pair: PRef<Pairs> = PRef::new(PersistentDict::new());
                    for key in ["a", "b"] {
                        let counter = PObject::from(PRef::new(Counter { value: 0 }));
                        pair.insert(key.to_string(), counter).unwrap();
                    }
                    conn.root()
                        .insert(format!("client{c}"), PObject::from(pair))
                        .unwrap();
                }
                conn.commit().unwrap();
            }
            #[cfg(feature = "interop")]
            Clients::Python(python) => {
                let status = Command::new(python)
                    .arg(crash_client_script())
                    .arg("setup")
                    .arg(sock)
                    .arg(CLIENTS.to_string())
                    .status()
                    .unwrap();
                assert!(status.success(), "crash_client.py setup failed");
            }
        }
    }

    /// Client `c`, committing until `stop` exists, then printing
    /// "ACKED CHECKS" (or a violation, failing).
    fn spawn(&self, c: usize, sock: &Path, stop: &Path) -> Child {
        let mut cmd = match self {
            Clients::Rust => {
                let mut cmd = Command::new(std::env::current_exe().unwrap());
                cmd.args(["--worker", "served"]);
                cmd
            }
            #[cfg(feature = "interop")]
            Clients::Python(python) => {
                let mut cmd = Command::new(python);
                cmd.arg(crash_client_script()).arg("work");
                cmd
            }
        };
        cmd.arg(c.to_string())
            .arg(sock)
            .arg(stop)
            .stdout(Stdio::piped())
            .spawn()
            .unwrap()
    }
}

#[cfg(feature = "interop")]
fn crash_client_script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/interop/crash_client.py")
}

/// A child process killed when dropped: a failing driver (a panic) leaves
/// no server or client running behind it.
struct Reaped(Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn serve(file: &Path, sock: &Path) -> Reaped {
    let server = Reaped(
        Command::new(env!("CARGO_BIN_EXE_durus"))
            .args(["serve", "--repair", "--file"])
            .arg(file)
            .arg("--unix")
            .arg(sock)
            .stderr(Stdio::null())
            .spawn()
            .expect("durus serve starts"),
    );
    // Ready once it accepts a connection.
    let deadline = Instant::now() + Duration::from_secs(30);
    while Address::Unix(sock.to_path_buf()).connect().is_err() {
        assert!(Instant::now() < deadline, "the server did not come up");
        std::thread::sleep(Duration::from_millis(5));
    }
    server
}

fn served(kills: u64, who: &Clients) {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("crash.durus");
    let sock = dir.path().join("durus.sock");
    let stop = dir.path().join("stop");
    let mut server = serve(&file, &sock);
    who.setup(&sock);
    let mut clients: Vec<Reaped> = (0..CLIENTS)
        .map(|c| Reaped(who.spawn(c, &sock, &stop)))
        .collect();
    let mut rng = Rng(0x5EED_1234_ABCD_0001);
    let mut killed_mid_commit = 0;
    for _ in 0..kills {
        std::thread::sleep(Duration::from_millis(30 + rng.below(150)));
        server.0.kill().unwrap();
        server.0.wait().unwrap();
        // A tail past the last transaction's end: a commit was being written.
        let opened = FileStorageOptions::new()
            .readonly(true)
            .open(&file)
            .unwrap();
        if opened.tail_damage().is_some() {
            killed_mid_commit += 1;
        }
        drop(opened);
        server = serve(&file, &sock);
    }
    std::fs::write(&stop, b"").unwrap();
    let (mut acknowledged, mut checks) = (0, 0);
    for (c, Reaped(child)) in clients.iter_mut().enumerate() {
        let status = child.wait().unwrap();
        let mut out = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut out)
            .unwrap();
        assert!(status.success(), "client {c} found a violation: {out}");
        let (acked, checked) = out.trim().split_once(' ').unwrap();
        let (acked, checked): (u64, u64) = (acked.parse().unwrap(), checked.parse().unwrap());
        assert!(acked > 0, "client {c} never got a commit through");
        assert!(
            checked > kills / 2,
            "client {c} checked its pair {checked} times"
        );
        acknowledged += acked;
        checks += checked;
    }
    drop(server);
    println!(
        "crash ({}): {kills} SIGKILLs of the server ({killed_mid_commit} left a torn tail), \
         {CLIENTS} client processes, {acknowledged} commits acknowledged, pairs checked \
         {checks} times after reconnecting, none lost or torn",
        who.name()
    );
}

/// A served client: commits n = 1, 2, ... to its pair until the stop file
/// appears, reconnecting whenever the server goes; prints the last
/// acknowledged n. Exits non-zero on a violation.
fn served_worker(me: &str, sock: &Path, stop: &Path) {
    let key = format!("client{me}");
    let address = Address::Unix(sock.to_path_buf());
    let (mut tried, mut acked, mut checks) = (0u64, 0u64, 0u64);
    while !stop.exists() {
        let Ok(storage) = ClientStorage::connect_to(&address) else {
            std::thread::sleep(Duration::from_millis(5));
            continue;
        };
        let Ok(conn) = Connection::new(storage) else {
            continue;
        };
        let Ok((a, b)) = pair(&conn.root(), &key) else {
            continue;
        };
        let Ok(now) = check_pair(&a, &b, acked, tried) else {
            continue; // the server went again while we read
        };
        checks += 1;
        let mut n = now;
        while !stop.exists() {
            n += 1;
            tried = n;
            let wrote = a
                .write(|c| c.value = n)
                .and_then(|()| b.write(|c| c.value = n))
                .and_then(|()| conn.commit());
            if wrote.is_err() {
                break; // the server is gone: reconnect and check
            }
            acked = n;
        }
    }
    println!("{acked} {checks}");
}

/// The pair of counters under `root[key]`.
fn pair(root: &PRef<Pairs>, key: &str) -> Result<(PRef<Counter>, PRef<Counter>)> {
    let pair = root
        .get(&key.to_string())?
        .ok_or_else(|| Error::InvalidState(format!("no {key}")))?
        .downcast::<Pairs>()?;
    let get = |k: &str| -> Result<PRef<Counter>> {
        pair.get(&k.to_string())?
            .ok_or_else(|| Error::InvalidState(format!("no {k}")))?
            .downcast::<Counter>()
    };
    Ok((get("a")?, get("b")?))
}

/// Checks the pair after a crash: A = B, acknowledged <= A <= tried.
/// Prints the violation and fails the process otherwise.
fn check_pair(a: &PRef<Counter>, b: &PRef<Counter>, acked: u64, tried: u64) -> Result<u64> {
    let (va, vb) = (a.read(|c| c.value)?, b.read(|c| c.value)?);
    if va != vb || va < acked || va > tried {
        println!("violation: A = {va}, B = {vb}, acknowledged {acked}, tried {tried}");
        std::process::exit(2);
    }
    Ok(va)
}

// ---------------------------------------------------------------- embedded

fn embedded(kills: u64) {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("embedded.durus");
    {
        let conn = Connection::open(&file).unwrap();
        for key in ["a", "b"] {
            let counter = PObject::from(PRef::new(Counter { value: 0 }));
            conn.root().insert(key.to_string(), counter).unwrap();
        }
        conn.commit().unwrap();
    }
    let exe = std::env::current_exe().unwrap();
    let mut rng = Rng(0x5EED_1234_ABCD_0002);
    let (mut acked, mut tried, mut torn) = (0u64, 0u64, 0);
    for _ in 0..kills {
        let mut child = Command::new(&exe)
            .args(["--worker", "embedded"])
            .arg(&file)
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        // The worker prints "try n" before a commit and "ack n" after.
        let started = lines.next().unwrap().unwrap();
        assert_eq!(started, "ready");
        let reader = std::thread::spawn(move || {
            lines.map_while(std::result::Result::ok).collect::<Vec<_>>()
        });
        std::thread::sleep(Duration::from_millis(20 + rng.below(100)));
        child.kill().unwrap();
        child.wait().unwrap();
        // The pipe closes with the process: the reader ends.
        let seen = reader.join().unwrap();
        for line in seen {
            let (what, n) = line.split_once(' ').unwrap();
            let n: u64 = n.parse().unwrap();
            match what {
                "try" => tried = tried.max(n),
                "ack" => acked = acked.max(n),
                other => panic!("worker said {other:?}"),
            }
        }
        let storage = FileStorageOptions::new().repair(true).open(&file).unwrap();
        if storage.repaired().is_some() {
            torn += 1;
        }
        let conn = Connection::new(storage).unwrap();
        let read = |k: &str| counter(&conn, k).read(|c| c.value).unwrap();
        let (a, b) = (read("a"), read("b"));
        assert_eq!(a, b, "a torn transaction survived the repair");
        assert!(a >= acked, "acknowledged commit {acked} lost (found {a})");
        assert!(a <= tried, "found {a}, never tried past {tried}");
        tried = a; // the next worker starts from what is there
        acked = a;
    }
    println!(
        "crash (embedded): {kills} SIGKILLs of a committing process ({torn} left a torn tail), \
         reached commit {acked}, none lost"
    );
}

/// The embedded scenario's counter `root[key]`.
fn counter(conn: &Connection, key: &str) -> PRef<Counter> {
    conn.root()
        .get(&key.to_string())
        .unwrap()
        .unwrap()
        .downcast::<Counter>()
        .unwrap()
}

/// An embedded writer: from the pair's value, commits n + 1, n + 2, ...
/// (fsync on) until killed, saying "try n" and "ack n" around each commit.
fn embedded_worker(file: &Path) {
    let conn = Connection::open(file).unwrap();
    let (a, b) = (counter(&conn, "a"), counter(&conn, "b"));
    let mut n = a.read(|c| c.value).unwrap();
    let mut out = std::io::stdout().lock();
    writeln!(out, "ready").unwrap();
    out.flush().unwrap();
    loop {
        n += 1;
        writeln!(out, "try {n}").unwrap();
        out.flush().unwrap();
        a.write(|c| c.value = n).unwrap();
        b.write(|c| c.value = n).unwrap();
        conn.commit().unwrap();
        writeln!(out, "ack {n}").unwrap();
        out.flush().unwrap();
    }
}

fn worker(role: &str, args: &[String]) {
    match role {
        "served" => served_worker(&args[0], &PathBuf::from(&args[1]), &PathBuf::from(&args[2])),
        "embedded" => embedded_worker(Path::new(&args[0])),
        other => panic!("unknown worker {other:?}"),
    }
}
