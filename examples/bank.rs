//! A bank: several clients move money between shared accounts at once,
//! each transfer one transaction retried on conflict, and not a cent is
//! lost.
//!
//! ```text
//! cargo run --example bank [FILE]              # a server + 4 client processes
//! cargo run --example bank -- --threads [FILE] # one process: a Database, 4 threads
//! ```
//!
//! With the server, the example runs a durus server on a free loopback
//! port over FILE (default: a temporary file) and starts itself four
//! times as client processes (`bank --client ADDRESS SEED`), each making
//! transfers through `ClientStorage`. With `--threads`, four threads share
//! the file through `Database`. Either way it prints the conflicts retried
//! and checks that the total is what it was.

use std::process::{Command, Stdio};

use durus::prelude::*;
use durus::storage::address::Address;
use durus::storage::{Server, ServerOptions};
use serde::{Deserialize, Serialize};

const ACCOUNTS: u64 = 5;
const OPENING_BALANCE: i64 = 1_000;
const CLIENTS: u64 = 4;
const TRANSFERS: u64 = 200;

#[derive(Persistent, Serialize, Deserialize)]
#[durus(name = "bank.Account")]
struct Account {
    owner: String,
    balance: i64,
}

type Accounts = PersistentList<PRef<Account>>;

fn main() {
    if let Err(e) = run() {
        eprintln!("bank: {e}");
        std::process::exit(1);
    }
}

fn run() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.as_slice() {
        [flag, address, seed] if flag == "--client" => {
            let conn = Connection::new(ClientStorage::connect(address)?)?;
            let retries = transfers(&conn, seed.parse()?)?;
            println!("{retries}"); // read by the parent
            Ok(())
        }
        [flag, rest @ ..] if flag == "--threads" => with_threads(rest.first()),
        rest => with_server(rest.first()),
    }
}

/// `TRANSFERS` random transfers; returns how many conflicts were retried.
fn transfers(conn: &Connection, seed: u64) -> durus::Result<u64> {
    let accounts = conn
        .root()
        .get(&"accounts".to_string())?
        .ok_or(Error::KeyNotFound(Oid::ROOT))?
        .downcast::<Accounts>()?;
    let mut rng = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut attempts = 0;
    for _ in 0..TRANSFERS {
        let mut next = || {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            rng
        };
        let (from, to, amount) = (
            next() % ACCOUNTS,
            next() % ACCOUNTS,
            (next() % 50) as i64 + 1,
        );
        // Retried after every conflict: transact gives up after 10
        // attempts, so a very unlucky transfer is simply tried again.
        loop {
            let result = conn.transact(|_| {
                attempts += 1;
                let from = accounts.get(from as usize)?.ok_or(Error::OutOfRange {
                    index: from as usize,
                    len: 0,
                })?;
                let to = accounts.get(to as usize)?.ok_or(Error::OutOfRange {
                    index: to as usize,
                    len: 0,
                })?;
                from.write(|a| a.balance -= amount)?;
                to.write(|a| a.balance += amount)?;
                Ok(())
            });
            match result {
                Ok(()) => break,
                Err(e) if e.is_conflict() => continue,
                Err(e) => return Err(e),
            }
        }
    }
    Ok(attempts - TRANSFERS)
}

/// Opens the accounts (if new) and returns their total.
fn open_bank(conn: &Connection) -> durus::Result<i64> {
    let key = "accounts".to_string();
    if !conn.root().contains_key(&key)? {
        let accounts: Accounts = (0..ACCOUNTS)
            .map(|i| {
                PRef::new(Account {
                    owner: format!("customer {i}"),
                    balance: OPENING_BALANCE,
                })
            })
            .collect();
        conn.root()
            .insert(key, PObject::from(PRef::new(accounts)))?;
        conn.commit()?;
        println!("opened {ACCOUNTS} accounts with {OPENING_BALANCE} each");
    }
    total(conn)
}

fn total(conn: &Connection) -> durus::Result<i64> {
    conn.abort(); // see every commit so far
    let accounts = conn
        .root()
        .get(&"accounts".to_string())?
        .ok_or(Error::KeyNotFound(Oid::ROOT))?
        .downcast::<Accounts>()?;
    let mut sum = 0;
    accounts.for_each(|a| {
        sum += a.read(|a| a.balance)?;
        Ok(())
    })?;
    Ok(sum)
}

fn report(before: i64, after: i64, retries: u64) -> Result<(), Box<dyn std::error::Error>> {
    println!(
        "{} transfers by {CLIENTS} clients, {retries} conflicts retried",
        CLIENTS * TRANSFERS
    );
    println!("total before {before}, after {after}");
    if before != after {
        return Err(format!("the total changed from {before} to {after}").into());
    }
    println!("the total is exact");
    Ok(())
}

fn with_server(file: Option<&String>) -> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let path = file
        .map(Into::into)
        .unwrap_or_else(|| dir.path().join("bank.durus"));
    let server = Server::bind(
        FileStorage::open(&path)?,
        &"127.0.0.1:0".parse::<Address>()?,
        ServerOptions::default(),
    )?;
    let address = server.address().to_string();
    let handle = server.handle();
    let serving = std::thread::spawn(move || server.run());
    println!("server on {address}, file {}", path.display());

    let conn = Connection::new(ClientStorage::connect(&address)?)?;
    let before = open_bank(&conn)?;
    let exe = std::env::current_exe()?;
    // All running at once, then waited for.
    let children = (0..CLIENTS)
        .map(|i| {
            Command::new(&exe)
                .args(["--client", &address, &(i + 1).to_string()])
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
        })
        .collect::<Result<Vec<_>, _>>()?;
    let mut retries = 0;
    for child in children {
        let out = child.wait_with_output()?;
        if !out.status.success() {
            return Err(
                format!("a client failed: {}", String::from_utf8_lossy(&out.stderr)).into(),
            );
        }
        retries += String::from_utf8_lossy(&out.stdout).trim().parse::<u64>()?;
    }
    let after = total(&conn)?;
    drop(conn);
    handle.stop();
    serving.join().map_err(|_| "the server thread panicked")??;
    report(before, after, retries)
}

fn with_threads(file: Option<&String>) -> Result<(), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let path = file
        .map(Into::into)
        .unwrap_or_else(|| dir.path().join("bank.durus"));
    let db = Database::open(&path)?;
    println!("database {} shared by {CLIENTS} threads", path.display());
    let conn = db.connect()?;
    let before = open_bank(&conn)?;
    let threads: Vec<_> = (0..CLIENTS)
        .map(|i| {
            let db = db.clone();
            std::thread::spawn(move || transfers(&db.connect()?, i + 1))
        })
        .collect();
    let mut retries = 0;
    for t in threads {
        retries += t.join().map_err(|_| "a client thread panicked")??;
    }
    report(before, total(&conn)?, retries)
}
