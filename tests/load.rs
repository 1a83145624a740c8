//! Load: 64 client connections (threads of this process, each with its own
//! socket and `Connection`) against a real `durus serve` process over
//! loopback, for a bounded time, with mixed loads and commits. Pins: no
//! error but conflicts, no client starved, every acknowledged commit
//! present afterwards, the server's memory bounded; prints the latency
//! percentiles of each operation (`cargo test --release --test load --
//! --nocapture`).
//!
//! `DURUS_LOAD_SECS` (default 5) and `DURUS_LOAD_CLIENTS` (default 64) make
//! longer or wider runs.

mod common;

use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use common::Serving;
use durus::prelude::*;
use serde::{Deserialize, Serialize};

#[derive(Persistent, Serialize, Deserialize)]
#[durus(name = "load.Counter")]
struct Counter {
    value: u64,
}

type Counters = BTree<u64, PRef<Counter>>;

/// Counters every client reads and bumps (conflicts happen here).
const SHARED: u64 = 1000;
/// The server's peak RSS must stay under this.
const SERVER_RSS_LIMIT_KB: u64 = 256 << 10;

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn connect(address: &str) -> Connection {
    Connection::new(ClientStorage::connect(address).unwrap()).unwrap()
}

fn tree(conn: &Connection, key: &str) -> PRef<Counters> {
    conn.root()
        .get(&key.to_string())
        .unwrap()
        .unwrap()
        .downcast::<Counters>()
        .unwrap()
}

/// What one client did, and how long each operation took (µs).
#[derive(Default)]
struct Tally {
    reads: Vec<u64>,
    commits: Vec<u64>,
    conflicts: u64,
    acknowledged: u64,
}

/// A client: until `deadline`, 7 in 10 operations read a random shared
/// counter (then end the transaction), 3 in 10 bump a random shared
/// counter and the client's own one in one commit.
fn client(address: &str, me: u64, start: &Barrier, secs: u64) -> Tally {
    let conn = connect(address);
    let shared = tree(&conn, "shared");
    let own = tree(&conn, "own").get(&me).unwrap().unwrap();
    let mut tally = Tally::default();
    let mut x = 0x9E37_79B9_7F4A_7C15 ^ (me + 1);
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    start.wait();
    let deadline = Instant::now() + Duration::from_secs(secs);
    while Instant::now() < deadline {
        let r = next();
        let key = (r >> 8) % SHARED;
        let t = Instant::now();
        if r % 10 < 7 {
            let got = shared.get(&key).and_then(|c| c.unwrap().read(|c| c.value));
            match got {
                Ok(_) => tally.reads.push(t.elapsed().as_micros() as u64),
                Err(e) if e.is_conflict() => tally.conflicts += 1,
                Err(e) => panic!("client {me}: read of counter {key}: {e}"),
            }
            conn.abort();
        } else {
            let done = shared
                .get(&key)
                .and_then(|c| c.unwrap().write(|c| c.value += 1))
                .and_then(|()| own.write(|c| c.value += 1))
                .and_then(|()| conn.commit());
            match done {
                Ok(()) => {
                    tally.commits.push(t.elapsed().as_micros() as u64);
                    tally.acknowledged += 1;
                }
                Err(e) if e.is_conflict() => {
                    tally.conflicts += 1;
                    conn.abort();
                }
                Err(e) => panic!("client {me}: commit: {e}"),
            }
        }
    }
    tally
}

/// The p-th percentile of sorted `xs`.
fn pct(xs: &[u64], p: f64) -> u64 {
    xs[((xs.len() - 1) as f64 * p).round() as usize]
}

#[test]
fn many_clients_under_mixed_load_get_no_errors_but_conflicts_and_lose_nothing() {
    let secs = env_or("DURUS_LOAD_SECS", 5);
    let clients = env_or("DURUS_LOAD_CLIENTS", 64);
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("load.durus");
    let server = Serving::start(&["--file", file.to_str().unwrap(), "--address", "127.0.0.1:0"]);
    let address = server.address.clone();

    let conn = connect(&address);
    let make = |n: u64| {
        let t: PRef<Counters> = PRef::new(BTree::new());
        for k in 0..n {
            t.insert(k, PRef::new(Counter { value: 0 })).unwrap();
        }
        PObject::from(t)
    };
    conn.root().insert("shared".into(), make(SHARED)).unwrap();
    conn.root().insert("own".into(), make(clients)).unwrap();
    conn.commit().unwrap();

    let start = Arc::new(Barrier::new(clients as usize));
    let threads: Vec<_> = (0..clients)
        .map(|me| {
            let (address, start) = (address.clone(), start.clone());
            std::thread::spawn(move || client(&address, me, &start, secs))
        })
        .collect();
    let tallies: Vec<Tally> = threads.into_iter().map(|t| t.join().unwrap()).collect();
    let server_rss_kb = server.peak_rss_kb();

    // Every acknowledged commit is there: each client's own counter
    // counts exactly its acknowledged commits, and the shared counters
    // add up to all of them.
    conn.abort();
    let own = tree(&conn, "own");
    for (me, t) in tallies.iter().enumerate() {
        let value = own
            .get(&(me as u64))
            .unwrap()
            .unwrap()
            .read(|c| c.value)
            .unwrap();
        assert_eq!(value, t.acknowledged, "client {me}'s counter");
    }
    let mut shared_sum = 0;
    tree(&conn, "shared")
        .for_each(|_, c| {
            shared_sum += c.read(|c| c.value)?;
            Ok(())
        })
        .unwrap();
    let acknowledged: u64 = tallies.iter().map(|t| t.acknowledged).sum();
    assert_eq!(shared_sum, acknowledged);

    // Nobody starved.
    for (me, t) in tallies.iter().enumerate() {
        assert!(t.acknowledged >= 1, "client {me} never committed");
        assert!(!t.reads.is_empty(), "client {me} never read");
    }
    assert!(
        server_rss_kb > 0 && server_rss_kb < SERVER_RSS_LIMIT_KB,
        "server peak RSS {server_rss_kb} KiB"
    );

    let mut reads: Vec<u64> = tallies.iter().flat_map(|t| t.reads.clone()).collect();
    let mut commits: Vec<u64> = tallies.iter().flat_map(|t| t.commits.clone()).collect();
    reads.sort_unstable();
    commits.sort_unstable();
    let per_client: Vec<u64> = tallies.iter().map(|t| t.acknowledged).collect();
    let conflicts: u64 = tallies.iter().map(|t| t.conflicts).sum();
    println!(
        "load: {clients} clients, {secs} s, server peak RSS {} MiB",
        server_rss_kb / 1024
    );
    for (op, xs) in [("read", &reads), ("commit", &commits)] {
        println!(
            "  {op}: {} ops, p50 {} µs, p99 {} µs, max {} µs",
            xs.len(),
            pct(xs, 0.5),
            pct(xs, 0.99),
            xs[xs.len() - 1]
        );
    }
    println!(
        "  commits per client: min {}, max {}; conflicts {conflicts}",
        per_client.iter().min().unwrap(),
        per_client.iter().max().unwrap()
    );
}
