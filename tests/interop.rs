//! Byte compatibility of our FileStorage with the real Python Durus 4.3, in
//! both directions (spec sections 2, 4 and 6).
//!
//! Run with `PEER_VENV=$PWD/target/durus-peer-venv cargo test --features
//! interop --test interop`. The Python side is `tests/interop/peer.py`
//! (its docstring lists the commands); the two sides talk through files and
//! JSON in which oids are integers and records are hex strings. A missing
//! venv or a venv without `durus` fails every test with a message saying
//! how to create it: these tests never skip.
//!
//! * Python-written files open in Rust: every record loads byte-identical,
//!   `records()`, the walk from the root and the census equal Durus's, and
//!   `new_oid()` hands out what Durus hands out.
//! * Rust replaying the storage calls Durus made (new_oid, commit, sync,
//!   pack, reopen) writes byte-identical files, unpacked and packed, and the
//!   same `.prepack`.
//! * Rust-written files (pickles from Python, or our CBOR records) open,
//!   load and pack in Durus.
//! * Torn tails of Python-written files are detected (including the cut
//!   inside the last record that Durus itself misses) and repaired to the
//!   start of the last transaction.
//! * A Python writer and a Rust writer exclude each other by the file lock.

mod peer_venv;

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::ffi::{OsStr, OsString};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use durus_core::format::{class_name, record, Record};
use durus_core::tools::census::census;
use durus_core::{Error, FileStorage, Oid, Storage, StorageExt};
use serde::Deserialize;
use tempfile::TempDir;

// ------------------------------------------------------------ the peer

/// The Python interpreter of the Durus 4.3 venv and our peer script.
struct Peer {
    python: PathBuf,
    script: PathBuf,
}

/// The peer, checked once: a missing python or `durus` fails the test.
fn peer() -> &'static Peer {
    static PEER: OnceLock<Result<Peer, String>> = OnceLock::new();
    match PEER.get_or_init(find_peer) {
        Ok(peer) => peer,
        Err(message) => panic!("{message}"),
    }
}

fn find_peer() -> Result<Peer, String> {
    let venv = peer_venv::durus43_venv()?;
    Ok(Peer {
        python: venv.join("bin/python"),
        script: Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/interop/peer.py"),
    })
}

impl Peer {
    /// Runs `peer.py args...`; a failure panics with the whole story.
    fn run(&self, args: &[OsString]) {
        let out = Command::new(&self.python)
            .arg("-B")
            .arg(&self.script)
            .args(args)
            .env("PYTHONHASHSEED", "0")
            .env("PYTHONDONTWRITEBYTECODE", "1")
            .output()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", self.python.display()));
        if !out.status.success() {
            panic!(
                "the Python Durus peer failed ({}):\n  peer.py {}\n--- stdout\n{}\n--- stderr\n{}",
                out.status,
                args.iter()
                    .map(|a| a.to_string_lossy())
                    .collect::<Vec<_>>()
                    .join(" "),
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }

    /// Runs a peer command whose first argument is its JSON output file.
    fn run_json<T: for<'de> Deserialize<'de>>(
        &self,
        dir: &Path,
        command: &str,
        args: &[OsString],
    ) -> T {
        let out = dir.join(format!("{command}-{}.json", unique()));
        let mut all: Vec<OsString> = vec![command.into(), out.clone().into()];
        all.extend(args.iter().cloned());
        self.run(&all);
        read_json(&out)
    }

    /// Builds a Python scenario (see peer.py) in a fresh temp dir.
    fn scenario(&self, name: &str, every_commit: bool) -> Scenario {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut args: Vec<OsString> = vec!["scenario".into(), name.into(), dir.path().into()];
        if every_commit {
            args.push("--every-commit".into());
        }
        self.run(&args);
        let out: ScenarioOut = read_json(&dir.path().join(format!("{name}.json")));
        Scenario {
            dir,
            name: name.to_string(),
            out,
        }
    }

    /// Durus's view of each file (see `Dump`).
    fn dump(&self, dir: &Path, paths: &[&Path], new_oids: usize) -> Vec<Dump> {
        let mut args: Vec<OsString> = paths.iter().map(|p| p.into()).collect();
        args.push("--new-oids".into());
        args.push(new_oids.to_string().into());
        self.run_json(dir, "dump", &args)
    }

    /// Packs each file with Durus, dumping it before and after.
    fn pack(&self, dir: &Path, paths: &[&Path], new_oids: usize) -> Vec<PackOut> {
        let mut args: Vec<OsString> = paths.iter().map(|p| p.into()).collect();
        args.push("--new-oids".into());
        args.push(new_oids.to_string().into());
        self.run_json(dir, "pack", &args)
    }

    /// Starts a Durus process holding `path` open read-write (its flock
    /// taken) until the returned guard is dropped.
    fn hold(&self, path: &Path) -> Held {
        use std::io::BufRead;
        use std::process::Stdio;
        let mut child = Command::new(&self.python)
            .arg("-B")
            .arg(&self.script)
            .arg("hold")
            .arg(path)
            .env("PYTHONHASHSEED", "0")
            .env("PYTHONDONTWRITEBYTECODE", "1")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", self.python.display()));
        let mut line = String::new();
        let stdout = child.stdout.take().expect("piped stdout");
        let _ = std::io::BufReader::new(stdout).read_line(&mut line);
        if line.trim() != "locked" {
            drop(child.stdin.take());
            let out = child.wait_with_output().expect("wait for the peer");
            panic!(
                "`peer.py hold` did not take the lock ({}): {}",
                out.status,
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Held(child)
    }
}

/// A Durus process holding a FileStorage open read-write (its flock
/// taken) until dropped.
struct Held(std::process::Child);

impl Drop for Held {
    fn drop(&mut self) {
        // End of stdin makes the peer close its storage and exit.
        drop(self.0.stdin.take());
        let _ = self.0.wait();
    }
}

fn unique() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    N.fetch_add(1, Ordering::Relaxed)
}

fn read_json<T: for<'de> Deserialize<'de>>(path: &Path) -> T {
    let text = fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("cannot read the peer's {}: {e}", path.display()));
    serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("the peer's {} is not what we expect: {e}", path.display()))
}

// ------------------------------------------------------ what Python says

/// A file as Durus reads it.
#[derive(Debug, Clone, Deserialize)]
struct Dump {
    /// `gen_oid_record()`: every stored record, garbage included.
    records: Vec<(u64, String)>,
    /// `gen_oid_record(start_oid=0)`: the oids reachable from the root.
    reachable: Vec<u64>,
    /// `durus.storage.get_census`.
    census: BTreeMap<String, u64>,
    #[serde(default)]
    file_len: u64,
    /// The next oids `new_oid()` hands out (taken from a copy of the file).
    #[serde(default)]
    new_oids: Vec<u64>,
}

impl Dump {
    fn records(&self) -> BTreeMap<Oid, Vec<u8>> {
        self.records
            .iter()
            .map(|(oid, hex)| (Oid(*oid), unhex(hex)))
            .collect()
    }

    fn reachable(&self) -> BTreeSet<Oid> {
        self.reachable.iter().map(|&o| Oid(o)).collect()
    }
}

#[derive(Debug, Deserialize)]
struct PackOut {
    before: Dump,
    after: Dump,
}

/// One storage call Durus made while building a scenario.
#[derive(Debug, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
enum Event {
    NewOid {
        oid: u64,
    },
    /// The records of one `end()`, in the order written.
    Commit {
        records: Vec<(u64, String)>,
    },
    Sync {
        oids: Vec<u64>,
    },
    Pack,
    /// The storage was closed and the file opened again.
    Reopen,
    /// Copies of the file (and of `<name>.prepack` after a pack) here.
    Checkpoint {
        file: String,
        prepack: Option<String>,
    },
}

impl Event {
    /// A one-line description for messages (records left out).
    fn summary(&self) -> String {
        match self {
            Event::NewOid { oid } => format!("new_oid -> {oid}"),
            Event::Commit { records } => format!(
                "commit of oids {}",
                short_list(records.iter().map(|(oid, _)| *oid))
            ),
            Event::Sync { oids } => format!("sync -> {}", short_list(oids)),
            Event::Pack => "pack".into(),
            Event::Reopen => "reopen".into(),
            Event::Checkpoint { file, prepack } => format!("checkpoint {file} {prepack:?}"),
        }
    }
}

#[derive(Debug, Deserialize)]
struct ScenarioOut {
    events: Vec<Event>,
    dump: Dump,
    // `describe` (every reachable object, attribute by attribute) is only
    // read back by the peer's `verify`.
    extra: serde_json::Value,
}

/// A database Python built, with its JSON.
struct Scenario {
    dir: TempDir,
    name: String,
    out: ScenarioOut,
}

impl Scenario {
    fn dir(&self) -> &Path {
        self.dir.path()
    }

    fn path(&self) -> PathBuf {
        self.dir().join(format!("{}.durus", self.name))
    }

    fn json_path(&self) -> PathBuf {
        self.dir().join(format!("{}.json", self.name))
    }

    fn extra_u64(&self, key: &str) -> u64 {
        self.out.extra[key]
            .as_u64()
            .unwrap_or_else(|| panic!("scenario {} has no integer extra.{key}", self.name))
    }

    fn extra_dump(&self, key: &str) -> Dump {
        serde_json::from_value(self.out.extra[key].clone())
            .unwrap_or_else(|e| panic!("scenario {} extra.{key}: {e}", self.name))
    }

    fn commits(&self) -> usize {
        self.out
            .events
            .iter()
            .filter(|e| matches!(e, Event::Commit { .. }))
            .count()
    }
}

// ------------------------------------------------------------- helpers

fn unhex(s: &str) -> Vec<u8> {
    assert!(s.len().is_multiple_of(2), "odd hex string from the peer");
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex from the peer"))
        .collect()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn oids(set: impl IntoIterator<Item = u64>) -> BTreeSet<Oid> {
    set.into_iter().map(Oid).collect()
}

fn short_list<T: std::fmt::Debug>(items: impl IntoIterator<Item = T>) -> String {
    let items: Vec<T> = items.into_iter().collect();
    if items.len() > 12 {
        format!("{:?} ... ({} in all)", &items[..12], items.len())
    } else {
        format!("{items:?}")
    }
}

/// Every record the storage yields, checking each oid comes once.
fn all_records(storage: &mut dyn Storage) -> BTreeMap<Oid, Vec<u8>> {
    let mut out = BTreeMap::new();
    for item in storage.records().expect("records()") {
        let (oid, rec) = item.expect("records() item");
        assert!(
            out.insert(oid, rec).is_none(),
            "records() yields oid {oid} twice"
        );
    }
    out
}

fn walk_set(storage: &mut dyn Storage) -> BTreeSet<Oid> {
    let mut out = BTreeSet::new();
    for item in storage.walk(Oid::ROOT) {
        let (oid, _) = item.expect("walk from the root");
        assert!(out.insert(oid), "the walk yields oid {oid} twice");
    }
    out
}

fn assert_record_maps_equal(
    ours: &BTreeMap<Oid, Vec<u8>>,
    theirs: &BTreeMap<Oid, Vec<u8>>,
    what: &str,
) {
    let ours_keys: BTreeSet<Oid> = ours.keys().copied().collect();
    let theirs_keys: BTreeSet<Oid> = theirs.keys().copied().collect();
    assert!(
        ours_keys == theirs_keys,
        "{what}: oid sets differ: only in Rust {}, only in Durus {}",
        short_list(ours_keys.difference(&theirs_keys)),
        short_list(theirs_keys.difference(&ours_keys)),
    );
    for (oid, want) in theirs {
        let got = &ours[oid];
        assert!(
            got == want,
            "{what}: record of oid {oid} differs: Rust has {} bytes {}..., Durus {} bytes {}...",
            got.len(),
            hex(&got[..got.len().min(48)]),
            want.len(),
            hex(&want[..want.len().min(48)]),
        );
    }
}

/// Panics with the first differing offset, where it falls in Durus's file
/// and the bytes around it.
fn assert_same_file(ours: &Path, theirs: &Path, what: &str) {
    let a =
        fs::read(ours).unwrap_or_else(|e| panic!("{what}: cannot read {}: {e}", ours.display()));
    let b = fs::read(theirs)
        .unwrap_or_else(|e| panic!("{what}: cannot read {}: {e}", theirs.display()));
    if a == b {
        return;
    }
    let first = a
        .iter()
        .zip(&b)
        .position(|(x, y)| x != y)
        .unwrap_or(a.len().min(b.len()));
    let window = |bytes: &[u8]| {
        let lo = first.saturating_sub(16).min(bytes.len());
        let hi = (first + 32).min(bytes.len());
        format!("[{lo}..{hi}] {}", hex(&bytes[lo..hi]))
    };
    panic!(
        "{what}: Rust's {} ({} bytes) differs from Durus's {} ({} bytes); first difference at offset {first}, {}\n  Rust  {}\n  Durus {}",
        ours.display(),
        a.len(),
        theirs.display(),
        b.len(),
        ShelfLayout::parse(&b).locate(first as u64),
        window(&a),
        window(&b),
    );
}

// ---------------------------------------- an independent SHELF-1 parser

/// The structure of a SHELF-1 file, parsed here independently of
/// durus-core (spec 4.1-4.3): the oracle for offsets in the tests.
#[derive(Debug)]
struct ShelfLayout {
    base_records: Vec<(u64, Oid)>,
    map_start: u64,
    width: u64,
    count: u64,
    words: Vec<u64>,
    txns: Vec<TxnLayout>,
}

#[derive(Debug)]
struct TxnLayout {
    start: u64,
    end: u64,
    /// (offset of the shelf record, its oid, its end)
    records: Vec<(u64, Oid, u64)>,
}

fn be(bytes: &[u8], at: u64, n: u64) -> u64 {
    bytes[at as usize..(at + n) as usize]
        .iter()
        .fold(0, |acc, &b| (acc << 8) | b as u64)
}

impl ShelfLayout {
    /// Parses a well-formed file (panics on a damaged one).
    fn parse(b: &[u8]) -> ShelfLayout {
        assert_eq!(&b[..8], b"SHELF-1\n", "not a SHELF-1 file");
        let t0 = be(b, 8, 8);
        let map_start = 16 + t0;
        let records = |start: u64, end: u64| {
            let mut out = Vec::new();
            let mut at = start;
            while at < end {
                let next = at + 8 + be(b, at, 8);
                out.push((at, Oid(be(b, at + 8, 8)), next));
                at = next;
            }
            assert_eq!(at, end, "shelf records do not tile the transaction");
            out
        };
        let base_records = records(16, map_start)
            .into_iter()
            .map(|(at, oid, _)| (at, oid))
            .collect();
        let map_bytes = be(b, map_start, 8);
        let width = be(b, map_start + 8, 8);
        let count = be(b, map_start + 16, 8);
        assert_eq!(map_bytes, 16 + width * count, "offset map header");
        let words = (0..count)
            .map(|i| be(b, map_start + 24 + i * width, width))
            .collect();
        let mut txns = Vec::new();
        let mut pos = map_start + 8 + map_bytes;
        while pos < b.len() as u64 {
            let end = pos + 8 + be(b, pos, 8);
            txns.push(TxnLayout {
                start: pos,
                end,
                records: records(pos + 8, end),
            });
            pos = end;
        }
        ShelfLayout {
            base_records,
            map_start,
            width,
            count,
            words,
            txns,
        }
    }

    /// Says which part of the file `offset` is in.
    fn locate(&self, offset: u64) -> String {
        if offset < 16 {
            return "in the magic or the base transaction length".into();
        }
        if offset < self.map_start {
            let rec = self.base_records.iter().rev().find(|(at, _)| *at <= offset);
            return format!("in the base transaction, shelf record {rec:?} (offset, oid)");
        }
        if offset < self.map_start + 24 + self.width * self.count {
            return format!(
                "in the offset map at {} (W = {}, N = {})",
                self.map_start, self.width, self.count
            );
        }
        for (i, t) in self.txns.iter().enumerate() {
            if offset < t.end {
                let rec = t
                    .records
                    .iter()
                    .find(|(at, _, end)| *at <= offset && offset < *end);
                return format!(
                    "in transaction #{i} [{}..{}), shelf record {rec:?} (offset, oid, end)",
                    t.start, t.end
                );
            }
        }
        "past the end of Durus's file".into()
    }
}

// ------------------------------------ checks on Python-written files

/// Everything Rust must agree with Durus on, for a file Durus wrote:
/// read-write and read-only opens, every record, `records()`, the walk,
/// the census and the oids `new_oid()` hands out. The file must not change.
fn check_python_file_in_rust(path: &Path, dump: &Dump) {
    let original = fs::read(path).expect("read the Python file");
    assert_eq!(
        original.len() as u64,
        dump.file_len,
        "file length Durus saw"
    );
    let want = dump.records();
    let reachable = dump.reachable();
    assert!(!want.is_empty(), "Durus dumped no records");
    for readonly in [false, true] {
        let mode = if readonly { "read-only" } else { "read-write" };
        let mut storage = FileStorage::options()
            .readonly(readonly)
            .open(path)
            .unwrap_or_else(|e| panic!("{mode} open of {}: {e}", path.display()));
        assert!(
            storage.tail_damage().is_none(),
            "{mode}: a damaged tail in Durus's file"
        );
        for (oid, rec) in &want {
            let got = storage
                .load(*oid)
                .unwrap_or_else(|e| panic!("{mode}: load({oid}): {e}"));
            assert!(
                got == *rec,
                "{mode}: load({oid}) differs from Durus's storage.load"
            );
        }
        let got = all_records(&mut storage);
        assert_record_maps_equal(
            &got,
            &want,
            &format!("{mode}: records() vs gen_oid_record()"),
        );
        assert_eq!(
            walk_set(&mut storage),
            reachable,
            "{mode}: walk(ROOT) vs gen_oid_record(start_oid=0)"
        );
        assert_eq!(
            census(&mut storage).expect("census"),
            dump.census,
            "{mode}: census vs durus.storage.get_census"
        );
        if !readonly {
            let got: Vec<u64> = (0..dump.new_oids.len())
                .map(|_| storage.new_oid().expect("new_oid").0)
                .collect();
            assert_eq!(
                got, dump.new_oids,
                "new_oid() sequence vs Durus's FileStorage.new_oid"
            );
        }
    }
    assert!(
        fs::read(path).expect("reread") == original,
        "opening the Python file changed it"
    );
}

/// The file of spec 4.9 (root PersistentDict + one Persistent with x = 1,
/// two commits), 421 bytes, as hex-dumped there.
const SPEC_4_9_HEX: [&str; 27] = [
    "5348454c462d310a0000000000000000",
    "00000000000000100000000000000001",
    "00000000000000000000000000000062",
    "000000000000005a0000000000000000",
    "00000000000000000000004680026364",
    "757275732e70657273697374656e745f",
    "646963740a50657273697374656e7444",
    "6963740a71002e789c6b60aa2d648c60",
    "61606048492c492c04f2988bf500396a",
    "056d000000000000010b000000000000",
    "00ac0000000000000000000000000000",
    "00000000009080026364757275732e70",
    "657273697374656e745f646963740a50",
    "657273697374656e74446963740a7100",
    "2e789c45873d0e802014c640f10fef62",
    "e24dd489cd10602031e8e7c3d1c4c973",
    "8b8b76697b6527b8128c31aba346ba5c",
    "f1741ac2cc66b5ce9074e10d8942d5ec",
    "83a35465f2a2a30f3daa1bf584c6d863",
    "3fa8dbdc4e9ea20b510e7f42de6847a2",
    "ee01b1c9202400000000000000010000",
    "00000000004f00000000000000010000",
    "0000000000010000003b800263647572",
    "75732e70657273697374656e740a5065",
    "7273697374656e740a71002e789c6b60",
    "aa2d648c60646060a82864f2662cd603",
    "0022a503a3",
];

fn spec_4_9_file() -> Vec<u8> {
    unhex(&SPEC_4_9_HEX.concat())
}

/// 1a: the spec 4.9 worked example, written by Durus, is the spec's bytes
/// and reads identically in Rust.
#[test]
fn python_worked_example_opens_in_rust_byte_for_byte() {
    let sc = peer().scenario("worked", false);
    let bytes = fs::read(sc.path()).unwrap();
    assert!(
        bytes == spec_4_9_file(),
        "Durus's worked example is not the spec 4.9 hex dump"
    );
    assert_eq!(
        sc.commits(),
        2,
        "Connection creates the root, then the commit"
    );
    assert_eq!(sc.out.dump.reachable, vec![0, 1]);
    let census: Vec<(&str, u64)> = sc
        .out
        .dump
        .census
        .iter()
        .map(|(k, v)| (k.as_str(), *v))
        .collect();
    assert_eq!(census, [("Persistent", 1), ("PersistentDict", 1)]);
    check_python_file_in_rust(&sc.path(), &sc.out.dump);
}

/// 1b: sixty transactions rewriting the same objects: the latest record of
/// each oid wins, in Rust as in Durus.
#[test]
fn python_many_update_transactions_open_in_rust() {
    let sc = peer().scenario("many_updates", false);
    assert_eq!(sc.commits(), 62);
    let layout = ShelfLayout::parse(&fs::read(sc.path()).unwrap());
    assert_eq!(
        layout.txns.len(),
        62,
        "one transaction per commit, none packed"
    );
    let stored: usize = layout.txns.iter().map(|t| t.records.len()).sum();
    assert!(
        stored > 3 * sc.out.dump.records.len(),
        "the oids are rewritten many times"
    );
    check_python_file_in_rust(&sc.path(), &sc.out.dump);
}

/// 1c (spec 14 ShelfStorageTest a, spec 4.2): ten objects, oids 1, 3, 8, 9
/// deleted, packed: the offset map has holes, and Rust reuses them in
/// Durus's order 9, 8, 3, 1, 11, 12.
#[test]
fn python_packed_file_with_offset_map_holes_opens_in_rust_and_allocates_the_same_oids() {
    let sc = peer().scenario("holes", false);
    assert_eq!(
        sc.out.dump.new_oids,
        vec![9, 8, 3, 1, 11, 12],
        "Durus's own allocation (spec 4.2)"
    );
    assert_eq!(sc.out.dump.reachable, vec![0, 2, 4, 5, 6, 7, 10]);
    let layout = ShelfLayout::parse(&fs::read(sc.path()).unwrap());
    assert_eq!((layout.width, layout.count), (2, 12), "W and N of spec 4.2");
    assert!(layout.txns.is_empty(), "nothing after the pack");
    let s = layout.map_start;
    let links: Vec<(usize, u64)> = layout
        .words
        .iter()
        .enumerate()
        .filter(|(_, &w)| w >= s)
        .map(|(i, &w)| (i, w - s))
        .collect();
    assert_eq!(
        links,
        [(1, 11), (3, 1), (8, 3), (9, 8), (11, 9)],
        "the hole chain of spec 4.2"
    );
    check_python_file_in_rust(&sc.path(), &sc.out.dump);
}

/// 1d: a 3000-entry BTree, packed, then commits appended after the base:
/// base records shadowed by appended ones, garbage after the pack.
#[test]
fn python_packed_btree_with_appended_commits_opens_in_rust() {
    let sc = peer().scenario("btree", false);
    assert_eq!(sc.extra_u64("tree_len"), 2699);
    let layout = ShelfLayout::parse(&fs::read(sc.path()).unwrap());
    assert!(layout.base_records.len() > 400, "a packed base");
    assert_eq!(layout.txns.len(), 2, "two commits after the pack");
    assert!(
        sc.out.dump.records.len() > sc.out.dump.reachable.len(),
        "the appended commits left garbage"
    );
    assert_eq!(sc.out.dump.census.get("Thing"), Some(&300));
    check_python_file_in_rust(&sc.path(), &sc.out.dump);
}

/// 1e: five sessions (reopen, append, allocate-but-never-commit, pack,
/// append) on one file.
#[test]
fn python_file_reopened_and_appended_several_times_opens_in_rust() {
    let sc = peer().scenario("reopen", false);
    let reopens = sc
        .out
        .events
        .iter()
        .filter(|e| matches!(e, Event::Reopen))
        .count();
    assert_eq!(reopens, 4);
    let layout = ShelfLayout::parse(&fs::read(sc.path()).unwrap());
    assert_eq!(
        layout.txns.len(),
        1,
        "one commit appended after the packing session"
    );
    check_python_file_in_rust(&sc.path(), &sc.out.dump);
}

/// Durus's incremental packer (stepped as its server steps it) with a
/// commit arriving mid-pack (spec 6.1 step 6): after the new base come
/// catch-up transactions, one per oid committed during the pack, then the
/// later commit, which reuses a hole of the new offset map.
#[test]
fn python_file_packed_while_a_commit_arrived_opens_in_rust() {
    let sc = peer().scenario("pack_during_commits", false);
    let during = sc.extra_u64("during_oid");
    assert_eq!(during, 21);
    let layout = ShelfLayout::parse(&fs::read(sc.path()).unwrap());
    let txns: Vec<Vec<Oid>> = layout
        .txns
        .iter()
        .map(|t| t.records.iter().map(|r| r.1).collect())
        .collect();
    assert_eq!(
        txns,
        [
            vec![Oid(21)],
            vec![Oid(3)],
            vec![Oid(0)],
            vec![Oid(0), Oid(19)]
        ],
        "catch-up transactions for the oids committed mid-pack, then the next commit"
    );
    let synced: Vec<&Vec<u64>> = sc
        .out
        .events
        .iter()
        .filter_map(|e| match e {
            Event::Sync { oids } => Some(oids),
            _ => None,
        })
        .collect();
    assert_eq!(
        synced,
        [&vec![1, 4, 7, 10, 13, 16, 19, 21]],
        "Durus reports the removed oids, and spuriously the one created mid-pack (spec 6.1)"
    );
    assert!(sc.out.dump.reachable.contains(&during));
    check_python_file_in_rust(&sc.path(), &sc.out.dump);
}

/// Durus writes an 8-byte empty transaction for a storage-level commit
/// with no records; Rust reads past it.
#[test]
fn python_file_with_an_empty_transaction_opens_in_rust() {
    let sc = peer().scenario("empty_txn", false);
    let at = sc.extra_u64("empty_txn_start");
    let layout = ShelfLayout::parse(&fs::read(sc.path()).unwrap());
    let empty: Vec<u64> = layout
        .txns
        .iter()
        .filter(|t| t.records.is_empty())
        .map(|t| t.start)
        .collect();
    assert_eq!(empty, vec![at], "Durus's empty transaction");
    check_python_file_in_rust(&sc.path(), &sc.out.dump);
    let storage = FileStorage::options()
        .readonly(true)
        .open(sc.path())
        .unwrap();
    assert_eq!(
        storage.stats().unwrap().transactions,
        4,
        "root, x, the empty one, y"
    );
}

// ----------------------------- Rust replaying what Durus did, byte for byte

struct Replay {
    /// Merge consecutive commits pairwise (a different file layout with the
    /// same content) instead of committing exactly as Durus did.
    merge_commits: bool,
    /// Compare the file (and `.prepack`) with Durus's at each checkpoint.
    compare_checkpoints: bool,
}

/// Replays Durus's storage calls on a Rust FileStorage at `target`,
/// asserting that `new_oid` and `sync` answer as Durus's did.
fn replay(sc: &Scenario, target: &Path, how: &Replay) -> FileStorage {
    let open = || {
        FileStorage::options()
            .fsync(false)
            .open(target)
            .expect("open the Rust file")
    };
    let mut storage = open();
    let mut pending: Vec<&Vec<(u64, String)>> = Vec::new();
    let flush = |storage: &mut FileStorage, pending: &mut Vec<&Vec<(u64, String)>>| {
        if pending.is_empty() {
            return;
        }
        storage.begin().expect("begin");
        for records in pending.drain(..) {
            for (oid, rec) in records {
                storage
                    .store(Oid(*oid), unhex(rec))
                    .unwrap_or_else(|e| panic!("store({oid}): {e}"));
            }
        }
        storage.end(&mut |_| Ok(())).expect("end");
    };
    let mut checkpoints = 0;
    for (i, event) in sc.out.events.iter().enumerate() {
        let at = &format!("{} event #{i} ({})", sc.name, event.summary());
        match event {
            Event::NewOid { oid } => {
                let got = storage.new_oid().unwrap_or_else(|e| panic!("{at}: {e}"));
                assert_eq!(got, Oid(*oid), "{at}: Rust's new_oid differs from Durus's");
            }
            Event::Commit { records } => {
                pending.push(records);
                if !how.merge_commits || pending.len() == 2 {
                    flush(&mut storage, &mut pending);
                }
            }
            Event::Sync { oids } => {
                flush(&mut storage, &mut pending);
                let got = storage.sync().unwrap_or_else(|e| panic!("{at}: {e}"));
                let want: Vec<Oid> = oids.iter().map(|&o| Oid(o)).collect();
                assert_eq!(
                    got, want,
                    "{at}: the oids sync() reports (removed by the pack)"
                );
            }
            Event::Pack => {
                flush(&mut storage, &mut pending);
                storage.pack().unwrap_or_else(|e| panic!("{at}: pack: {e}"));
            }
            Event::Reopen => {
                flush(&mut storage, &mut pending);
                storage.close().expect("close");
                drop(storage);
                storage = open();
            }
            Event::Checkpoint { file, prepack } => {
                flush(&mut storage, &mut pending);
                checkpoints += 1;
                if how.compare_checkpoints {
                    assert_same_file(target, &sc.dir().join(file), at);
                    if let Some(prepack) = prepack {
                        let ours = PathBuf::from(format!("{}.prepack", target.display()));
                        assert_same_file(&ours, &sc.dir().join(prepack), &format!("{at} .prepack"));
                    }
                }
            }
        }
    }
    flush(&mut storage, &mut pending);
    assert!(checkpoints > 0, "the scenario has no checkpoint");
    storage
}

/// Replays a scenario checkpointed at every commit, comparing every
/// intermediate file, then checks Rust reads its own result as Durus does.
fn replay_is_byte_identical(name: &str) -> (Scenario, PathBuf) {
    let sc = peer().scenario(name, true);
    let target = sc.dir().join("rust.durus");
    let mut storage = replay(
        &sc,
        &target,
        &Replay {
            merge_commits: false,
            compare_checkpoints: true,
        },
    );
    assert_same_file(&target, &sc.path(), &format!("{name}: the final file"));
    assert_record_maps_equal(&all_records(&mut storage), &sc.out.dump.records(), name);
    drop(storage);
    (sc, target)
}

/// 2a: Rust writing the worked example's commits gives the spec's 421
/// bytes, and packing gives Durus's 313 bytes and the same `.prepack`.
#[test]
fn rust_replay_of_worked_example_is_byte_identical_to_durus_unpacked_and_packed() {
    let (sc, target) = replay_is_byte_identical("worked_packed");
    assert_eq!(sc.extra_u64("unpacked_len"), 421);
    assert_eq!(
        fs::read(&target).unwrap().len(),
        313,
        "spec 4.9: 313 bytes after pack"
    );
    let prepack = fs::read(format!("{}.prepack", target.display())).unwrap();
    assert!(
        prepack == spec_4_9_file(),
        "the .prepack is the unpacked spec 4.9 file"
    );
}

/// 2a: sixty commits rewriting the same objects.
#[test]
fn rust_replay_of_many_update_transactions_is_byte_identical_to_durus() {
    replay_is_byte_identical("many_updates");
}

/// 2a: updates, deletions, a pack, commits that reuse (and, before a
/// sync, skip) the freed oids, a second pack and more commits.
#[test]
fn rust_replay_of_multi_transaction_history_with_packs_is_byte_identical_to_durus() {
    let (sc, _) = replay_is_byte_identical("multi");
    let packs = sc
        .out
        .events
        .iter()
        .filter(|e| matches!(e, Event::Pack))
        .count();
    assert_eq!(packs, 2);
    let removed: Vec<&Vec<u64>> = sc
        .out
        .events
        .iter()
        .filter_map(|e| match e {
            Event::Sync { oids } if !oids.is_empty() => Some(oids),
            _ => None,
        })
        .collect();
    assert_eq!(
        removed.len(),
        2,
        "each pack removed oids, reported by the next sync"
    );
}

/// 2a: the packed file with holes of spec 4.2.
#[test]
fn rust_replay_of_packed_file_with_holes_is_byte_identical_to_durus() {
    replay_is_byte_identical("holes");
}

/// 2a: the BTree history (big offset map, base shadowed by appends).
#[test]
fn rust_replay_of_packed_btree_history_is_byte_identical_to_durus() {
    replay_is_byte_identical("btree");
}

/// 2a: five sessions, including oids allocated and never committed.
#[test]
fn rust_replay_of_reopened_sessions_is_byte_identical_to_durus() {
    let (sc, _) = replay_is_byte_identical("reopen");
    let unused = &sc.out.extra["unused_oids"];
    assert_eq!(unused, &serde_json::json!([5, 6]));
}

// --------------------------------------------- Rust-written files in Durus

#[derive(Debug, Deserialize)]
struct VerifyOut {
    objects: usize,
    before: Dump,
    after: Dump,
}

/// 2b: Rust writes 2000+ pickled objects from Python in its own
/// transaction layout (commits merged pairwise), with garbage, packs,
/// commits more; Durus loads every reachable object through Connection
/// with the attribute values Python stored, and packing it with Durus
/// keeps exactly the reachable set.
#[test]
fn rust_written_pickle_database_loads_and_packs_in_python_durus() {
    let sc = peer().scenario("large", false);
    let target = sc.dir().join("rust.durus");
    let mut storage = replay(
        &sc,
        &target,
        &Replay {
            merge_commits: true,
            compare_checkpoints: false,
        },
    );
    let ours = all_records(&mut storage);
    let reachable = walk_set(&mut storage);
    let transactions = storage.stats().unwrap().transactions;
    drop(storage);
    assert_record_maps_equal(
        &ours,
        &sc.out.dump.records(),
        "the content of the merged replay",
    );
    assert!(
        fs::read(&target).unwrap() != fs::read(sc.path()).unwrap(),
        "the merged replay should lay the file out differently from Durus"
    );
    assert!(
        transactions > 0 && ours.len() > reachable.len(),
        "garbage appended after the pack"
    );

    let out: VerifyOut = peer().run_json(
        sc.dir(),
        "verify",
        &[target.clone().into(), sc.json_path().into()],
    );
    assert_eq!(
        out.objects,
        reachable.len(),
        "objects Durus loaded through Connection"
    );
    assert_record_maps_equal(&out.before.records(), &ours, "Durus reading the Rust file");
    assert_eq!(
        out.before.reachable(),
        reachable,
        "Durus's reachable set vs Rust's walk"
    );
    assert_eq!(
        out.before.census,
        census_of(&ours),
        "Durus's census vs Rust's"
    );
    assert_eq!(
        out.after.reachable(),
        reachable,
        "reachable set after Durus's pack"
    );
    let kept: BTreeMap<Oid, Vec<u8>> = ours
        .into_iter()
        .filter(|(o, _)| reachable.contains(o))
        .collect();
    assert_record_maps_equal(&out.after.records(), &kept, "records after Durus's pack");
}

fn census_of(records: &BTreeMap<Oid, Vec<u8>>) -> BTreeMap<String, u64> {
    let mut out = BTreeMap::new();
    for rec in records.values() {
        let name = class_name::extract(Record::decode(rec).unwrap().data).display();
        *out.entry(name).or_insert(0) += 1;
    }
    out
}

/// Record data in our CBOR encoding: the header naming `class`, then
/// `state` (any bytes; Durus never looks inside).
fn cbor_data(class: &str, state: &[u8]) -> Vec<u8> {
    let mut data = Vec::new();
    class_name::write_cbor_header(&mut data, class);
    data.extend_from_slice(state);
    data
}

/// A graph of CBOR records written by Rust, with the expected outcome
/// computed here from the refs.
struct CborGraph {
    latest: BTreeMap<Oid, Vec<u8>>,
    refs: BTreeMap<Oid, Vec<Oid>>,
}

impl CborGraph {
    fn reachable(&self) -> BTreeSet<Oid> {
        let mut seen = BTreeSet::from([Oid::ROOT]);
        let mut todo = VecDeque::from([Oid::ROOT]);
        while let Some(oid) = todo.pop_front() {
            for &r in &self.refs[&oid] {
                if seen.insert(r) {
                    todo.push_back(r);
                }
            }
        }
        seen
    }
}

/// One CBOR record to write: (oid, index of its class name, refs, state size).
type CborObject = (u64, usize, Vec<u64>, usize);

/// Writes the CBOR graph: four transactions, with a garbage subtree, a
/// garbage cycle, a 5000-byte record and class names in every CBOR text
/// length form.
fn write_cbor_graph(path: &Path) -> CborGraph {
    let long_name = format!("app.{}", "VeryLongModuleName.".repeat(15));
    let classes = [
        "app.Thing",
        "app.models.SomewhatLongerClassName",
        long_name.as_str(),
    ];
    let mut storage = FileStorage::open(path).unwrap();
    let mut graph = CborGraph {
        latest: BTreeMap::new(),
        refs: BTreeMap::new(),
    };
    let ids: Vec<Oid> = (0..10).map(|_| storage.new_oid().unwrap()).collect();
    assert_eq!(
        ids,
        (0..10).map(Oid).collect::<Vec<_>>(),
        "a new file hands out 0, 1, 2, ..."
    );
    let txns: Vec<Vec<CborObject>> = vec![
        vec![
            (0, 0, vec![1, 2, 3], 10),
            (1, 0, vec![4], 20),
            (2, 1, vec![4, 5], 30),
            (3, 2, vec![], 40),
            (4, 0, vec![1], 50),
            (5, 1, vec![6], 10),
            (6, 0, vec![], 10),
        ],
        // 2 becomes garbage; 5 and 6 stay reachable through 3.
        vec![(0, 0, vec![1, 3], 11), (3, 2, vec![5], 41)],
        // 7 <-> 8 a garbage cycle; 9 a big record reached from 1.
        vec![
            (7, 0, vec![8], 5),
            (8, 0, vec![7], 5),
            (9, 1, vec![], 5000),
            (1, 0, vec![4, 9], 21),
        ],
        vec![
            (6, 0, vec![], 12),
            (6, 0, vec![], 13),
            (4, 2, vec![0, 1], 51),
        ],
    ];
    for (t, txn) in txns.iter().enumerate() {
        storage.begin().unwrap();
        for (oid, class, refs, size) in txn {
            let oid = Oid(*oid);
            let state: Vec<u8> = (0..*size)
                .map(|i| (i * 7 + t * 13 + oid.0 as usize) as u8)
                .collect();
            let refs: Vec<Oid> = refs.iter().map(|&r| Oid(r)).collect();
            let rec = record::encode(oid, &cbor_data(classes[*class], &state), &refs).unwrap();
            storage.store(oid, rec.clone()).unwrap();
            graph.latest.insert(oid, rec);
            graph.refs.insert(oid, refs);
        }
        storage.end(&mut |_| Ok(())).unwrap();
    }
    graph
}

/// 2c: CBOR records written by Rust load byte-identical in Durus's
/// FileStorage, Durus's pack keeps exactly the Rust-computed reachable set
/// (and writes the same file as our pack), and Rust reads the Durus-packed
/// file back.
#[test]
fn rust_written_cbor_records_load_and_pack_in_python_durus() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cbor.durus");
    let graph = write_cbor_graph(&path);
    let reachable = graph.reachable();
    assert_eq!(reachable, oids([0, 1, 3, 4, 5, 6, 9]));
    let rust_packed = dir.path().join("rust-packed.durus");
    fs::copy(&path, &rust_packed).unwrap();
    {
        let mut storage = FileStorage::open(&path).unwrap();
        assert_eq!(walk_set(&mut storage), reachable, "Rust's walk");
        assert_record_maps_equal(
            &all_records(&mut storage),
            &graph.latest,
            "Rust reading its own file",
        );
    }

    let out = peer().pack(dir.path(), &[&path], 6).remove(0);
    assert_record_maps_equal(
        &out.before.records(),
        &graph.latest,
        "Durus's storage.load of Rust's CBOR records",
    );
    assert_eq!(
        out.before.reachable(),
        reachable,
        "Durus's traversal of Rust's refs"
    );
    assert_eq!(out.after.reachable(), reachable, "after Durus's pack");
    let kept: BTreeMap<Oid, Vec<u8>> = graph
        .latest
        .iter()
        .filter(|(o, _)| reachable.contains(o))
        .map(|(o, r)| (*o, r.clone()))
        .collect();
    assert_record_maps_equal(&out.after.records(), &kept, "the records Durus's pack kept");

    let mut storage = FileStorage::open(&rust_packed).unwrap();
    let report = storage.pack().unwrap();
    assert_eq!(report.removed, vec![Oid(2), Oid(7), Oid(8)]);
    drop(storage);
    assert_same_file(
        &rust_packed,
        &path,
        "Rust's pack vs Durus's pack of the same CBOR file",
    );

    let mut storage = FileStorage::open(&path).unwrap();
    assert_record_maps_equal(
        &all_records(&mut storage),
        &kept,
        "Rust reading the Durus-packed file",
    );
    for (oid, rec) in &kept {
        assert!(
            storage.load(*oid).unwrap() == *rec,
            "load({oid}) after Durus's pack"
        );
    }
    assert_eq!(walk_set(&mut storage), reachable);
    let long_name = format!("app.{}", "VeryLongModuleName.".repeat(15));
    let want: BTreeMap<String, u64> = [
        ("app.Thing".to_string(), 3),
        ("app.models.SomewhatLongerClassName".to_string(), 2),
        (long_name, 2),
    ]
    .into_iter()
    .collect();
    assert_eq!(
        census(&mut storage).unwrap(),
        want,
        "census of CBOR class names"
    );
    let got: Vec<u64> = (0..6).map(|_| storage.new_oid().unwrap().0).collect();
    assert_eq!(got, out.after.new_oids, "new_oid after Durus's pack");
    assert_eq!(got, vec![8, 7, 2, 10, 11, 12]);
}

/// The offset map's word width W is sized for S + max oid + 3 (spec 4.2):
/// packs whose S lands just below, on and above a byte boundary give the
/// same W and the same bytes in Rust and Durus.
#[test]
fn pack_offset_map_word_width_matches_durus_at_byte_boundaries() {
    let dir = tempfile::tempdir().unwrap();
    // After the pack: S = 16 + (16 + 12 + d0 + 8) + (16 + 12 + d1) and the
    // max oid is 1, so S + max + 3 = 84 + d0 + d1.
    let d0 = 20;
    let cases: Vec<(u64, u64)> = vec![
        (255, 1),
        (256, 2),
        (257, 2),
        (65535, 2),
        (65536, 3),
        (65537, 3),
    ];
    let mut paths = Vec::new();
    for &(target, _) in &cases {
        let path = dir.path().join(format!("w{target}.durus"));
        let mut storage = FileStorage::open(&path).unwrap();
        let ids: Vec<Oid> = (0..3).map(|_| storage.new_oid().unwrap()).collect();
        let d1 = (target - 84 - d0) as usize;
        let data = |len: usize, tag: u8| {
            let mut d = cbor_data("w.Pad", &[]);
            d.resize(len, tag);
            d
        };
        storage
            .commit_records([
                record::encode(ids[0], &data(d0 as usize, 0xA0), &[ids[1], ids[2]]).unwrap(),
                record::encode(ids[1], &data(d1, 0x11), &[]).unwrap(),
                record::encode(ids[2], &data(7, 0x22), &[]).unwrap(),
            ])
            .unwrap();
        storage
            .commit_records([record::encode(ids[0], &data(d0 as usize, 0xA1), &[ids[1]]).unwrap()])
            .unwrap();
        drop(storage);
        let rust_copy = dir.path().join(format!("w{target}.rust.durus"));
        fs::copy(&path, &rust_copy).unwrap();
        FileStorage::open(&rust_copy).unwrap().pack().unwrap();
        paths.push((path, rust_copy));
    }
    let durus_paths: Vec<&Path> = paths.iter().map(|(p, _)| p.as_path()).collect();
    peer().pack(dir.path(), &durus_paths, 0);
    for ((target, width), (durus, rust)) in cases.iter().zip(&paths) {
        let layout = ShelfLayout::parse(&fs::read(durus).unwrap());
        assert_eq!(
            layout.map_start + 1 + 3,
            *target,
            "the case is sized as intended"
        );
        assert_eq!(layout.width, *width, "Durus's W for S + max + 3 = {target}");
        assert_same_file(rust, durus, &format!("pack with S + max + 3 = {target}"));
    }
}

// ------------------------------------------------------------ the lock

#[derive(Debug, Deserialize)]
struct LockProbe {
    read_write_error: Option<String>,
    readonly_records: usize,
}

/// Durus (spec 4.8) and we both take an exclusive non-blocking flock on a
/// read-write open and none on a read-only one, so a Python writer and a
/// Rust writer (a server, `durus pack`) can never both have the file.
#[test]
fn python_and_rust_writers_exclude_each_other_through_the_file_lock() {
    let sc = peer().scenario("worked", false);
    let path = sc.path();
    let probe = |sc: &Scenario| -> LockProbe {
        peer().run_json(sc.dir(), "lock-probe", &[path.clone().into()])
    };
    {
        let _rust = FileStorage::open(&path).unwrap();
        let seen = probe(&sc);
        let err = seen
            .read_write_error
            .expect("Durus opened read-write a file a Rust FileStorage holds");
        assert!(err.starts_with("BlockingIOError"), "Durus's error: {err}");
        assert_eq!(
            seen.readonly_records, 2,
            "Durus's read-only open beside Rust"
        );
    }
    assert_eq!(probe(&sc).read_write_error, None, "Rust released its lock");
    {
        let _python = peer().hold(&path);
        match FileStorage::open(&path) {
            Err(Error::Locked { path: locked }) => assert_eq!(locked, path),
            Err(other) => panic!("expected Error::Locked while Durus holds the file, got {other}"),
            Ok(_) => panic!("Rust opened read-write a file Durus holds"),
        }
        let mut ro = FileStorage::options().readonly(true).open(&path).unwrap();
        assert_eq!(
            all_records(&mut ro).len(),
            2,
            "Rust's read-only open beside Durus"
        );
    }
    FileStorage::open(&path).expect("Durus released its lock");
}

// ------------------------------------------------------------ torn files

/// A damaged copy of the torn scenario's file.
struct TornCase {
    name: &'static str,
    bytes: Vec<u8>,
    /// Where the damage starts: the start of the last (partial) transaction.
    offset: u64,
    /// Whether Durus 4.3 notices (spec 4.4 sharp edge: not inside the last
    /// record's value).
    durus_detects: bool,
}

struct TornSetup {
    sc: Scenario,
    cases: Vec<TornCase>,
    /// Durus's records before the last transaction.
    before_last: BTreeMap<Oid, Vec<u8>>,
    /// Durus's records of the complete file.
    complete: BTreeMap<Oid, Vec<u8>>,
}

impl TornSetup {
    /// The records that survive a damage starting at `offset`.
    fn surviving(&self, case: &TornCase) -> &BTreeMap<Oid, Vec<u8>> {
        if case.offset >= self.sc.out.dump.file_len {
            &self.complete
        } else {
            &self.before_last
        }
    }

    fn write(&self, case: &TornCase) -> PathBuf {
        let path = self.sc.dir().join(format!("torn-{}.durus", case.name));
        fs::write(&path, &case.bytes).unwrap();
        path
    }
}

fn torn_setup() -> TornSetup {
    let sc = peer().scenario("torn", false);
    let file = fs::read(sc.path()).unwrap();
    let len = file.len() as u64;
    let layout = ShelfLayout::parse(&file);
    let last = layout.txns.last().expect("transactions");
    let t = last.start;
    assert_eq!(
        t,
        sc.extra_u64("last_txn_start"),
        "the last transaction starts where Durus was before it"
    );
    assert!(
        last.records.len() >= 4,
        "the last transaction has non-final records"
    );
    let (first_rec, _, first_end) = last.records[0];
    let (last_rec, _, _) = *last.records.last().unwrap();
    let cut = |n: u64| file[..n as usize].to_vec();
    let with = |mut bytes: Vec<u8>, tail: &[u8]| {
        bytes.extend_from_slice(tail);
        bytes
    };
    let mut zeroed = file.clone();
    zeroed[t as usize..t as usize + 8].fill(0);
    let cases = vec![
        TornCase {
            name: "cut-in-txn-length",
            bytes: cut(t + 3),
            offset: t,
            durus_detects: true,
        },
        TornCase {
            name: "cut-in-record-length",
            bytes: cut(first_rec + 5),
            offset: t,
            durus_detects: true,
        },
        TornCase {
            name: "cut-in-record-name",
            bytes: cut(first_rec + 12),
            offset: t,
            durus_detects: true,
        },
        TornCase {
            name: "cut-in-record-header",
            bytes: cut(first_rec + 16 + 6),
            offset: t,
            durus_detects: true,
        },
        TornCase {
            name: "cut-in-non-final-record-data",
            bytes: cut((first_rec + first_end) / 2 + 8),
            offset: t,
            durus_detects: true,
        },
        TornCase {
            name: "cut-in-last-record-data",
            bytes: cut(len - 10),
            offset: t,
            durus_detects: false,
        },
        TornCase {
            name: "only-20-bytes-of-last-record",
            bytes: cut(last_rec + 20),
            offset: t,
            durus_detects: false,
        },
        TornCase {
            name: "one-byte-short",
            bytes: cut(len - 1),
            offset: t,
            durus_detects: false,
        },
        TornCase {
            name: "cut-in-last-record-data-then-garbage",
            bytes: with(cut(len - 10), &[0xAB; 3]),
            offset: t,
            durus_detects: false,
        },
        TornCase {
            name: "cut-in-txn-length-then-garbage",
            bytes: with(cut(t + 3), &[0xFF; 20]),
            offset: t,
            durus_detects: true,
        },
        // A crash between the 0 placeholder and the length rewrite (spec
        // 4.6): an empty transaction, then the orphan records.
        TornCase {
            name: "zeroed-txn-length",
            bytes: zeroed,
            offset: t + 8,
            durus_detects: true,
        },
        TornCase {
            name: "six-garbage-bytes-appended",
            bytes: with(file.clone(), &[0x5A; 6]),
            offset: len,
            durus_detects: true,
        },
        TornCase {
            name: "one-garbage-byte-appended",
            bytes: with(file.clone(), &[0]),
            offset: len,
            durus_detects: true,
        },
        TornCase {
            name: "garbage-shaped-like-a-transaction",
            bytes: with(
                file.clone(),
                &[0, 0, 0, 0, 0, 0, 0, 8, 1, 2, 3, 4, 5, 6, 7, 8],
            ),
            offset: len,
            durus_detects: true,
        },
    ];
    TornSetup {
        before_last: sc.extra_dump("before_last").records(),
        complete: sc.out.dump.records(),
        sc,
        cases,
    }
}

/// 3: every torn tail fails a plain open with `TornTail` at the start of
/// the last transaction (leaving the file alone); a read-only open
/// succeeds, reports the damage and sees exactly the earlier records.
#[test]
fn torn_python_file_fails_to_open_with_torn_tail_at_the_last_transaction() {
    let setup = torn_setup();
    for case in &setup.cases {
        let path = setup.write(case);
        let len = case.bytes.len() as u64;
        match FileStorage::open(&path) {
            Err(Error::TornTail {
                offset,
                file_len,
                detail,
                ..
            }) => {
                assert_eq!(
                    (offset, file_len),
                    (case.offset, len),
                    "{}: TornTail offset/file_len ({detail})",
                    case.name
                );
            }
            Err(other) => panic!(
                "{}: expected TornTail at {}, got {other}",
                case.name, case.offset
            ),
            Ok(_) => panic!("{}: the torn file opened without error", case.name),
        }
        assert!(
            fs::read(&path).unwrap() == case.bytes,
            "{}: a failed open changed the file",
            case.name
        );
        let mut ro = FileStorage::options()
            .readonly(true)
            .open(&path)
            .unwrap_or_else(|e| panic!("{}: read-only open: {e}", case.name));
        let damage = ro
            .tail_damage()
            .unwrap_or_else(|| panic!("{}: no tail_damage", case.name));
        assert_eq!(
            (damage.offset, damage.file_len),
            (case.offset, len),
            "{}: tail_damage",
            case.name
        );
        assert_record_maps_equal(&all_records(&mut ro), setup.surviving(case), case.name);
    }
}

/// 3: `repair(true)` truncates each torn file to exactly the start of the
/// last transaction; every earlier record loads byte-identical to Durus's
/// dump, the file reopens cleanly, and Durus reads the repaired file too.
#[test]
fn repair_truncates_torn_python_file_to_the_last_transaction_and_keeps_earlier_records() {
    let setup = torn_setup();
    let mut repaired = Vec::new();
    for case in &setup.cases {
        let path = setup.write(case);
        let mut storage = FileStorage::options()
            .repair(true)
            .open(&path)
            .unwrap_or_else(|e| panic!("{}: repairing open: {e}", case.name));
        let fixed = storage
            .repaired()
            .unwrap_or_else(|| panic!("{}: repaired() is None", case.name));
        assert_eq!(fixed.offset, case.offset, "{}: repaired at", case.name);
        assert_eq!(
            fs::metadata(&path).unwrap().len(),
            case.offset,
            "{}: truncated length",
            case.name
        );
        let want = setup.surviving(case);
        for (oid, rec) in want {
            assert!(
                storage.load(*oid).unwrap() == *rec,
                "{}: load({oid}) after repair",
                case.name
            );
        }
        assert_record_maps_equal(&all_records(&mut storage), want, case.name);
        assert_eq!(
            walk_set(&mut storage).len(),
            want.len(),
            "{}: all reachable",
            case.name
        );
        drop(storage);
        let mut again = FileStorage::open(&path)
            .unwrap_or_else(|e| panic!("{}: reopen after repair: {e}", case.name));
        assert!(again.repaired().is_none());
        assert_record_maps_equal(&all_records(&mut again), want, case.name);
        repaired.push(path);
    }
    let paths: Vec<&Path> = repaired.iter().map(|p| p.as_path()).collect();
    let dumps = peer().dump(setup.sc.dir(), &paths, 0);
    for (case, dump) in setup.cases.iter().zip(&dumps) {
        assert_record_maps_equal(
            &dump.records(),
            setup.surviving(case),
            &format!("Durus reading Rust's repair of {}", case.name),
        );
    }
}

#[derive(Debug, Deserialize)]
struct Probe {
    opens: bool,
    #[serde(default)]
    error: Option<String>,
    repaired_len: Option<u64>,
}

/// 3: Durus misses a cut inside the last record's value (spec 4.4 sharp
/// edge: it seeks past values unchecked) and then cannot repair it; Rust
/// checks every record length against the transaction and catches it.
/// Where Durus does detect the damage, its repair truncates to the same
/// offset as ours.
#[test]
fn rust_detects_torn_tails_that_durus_misses() {
    let setup = torn_setup();
    let paths: Vec<PathBuf> = setup.cases.iter().map(|c| setup.write(c)).collect();
    let args: Vec<OsString> = paths.iter().map(|p| p.into()).collect();
    let probes: Vec<Probe> = peer().run_json(setup.sc.dir(), "probe-torn", &args);
    let mut missed = Vec::new();
    for ((case, probe), path) in setup.cases.iter().zip(&probes).zip(&paths) {
        assert_eq!(
            !probe.opens,
            case.durus_detects,
            "{}: Durus {} the damage ({:?})",
            case.name,
            if probe.opens { "misses" } else { "detects" },
            probe.error
        );
        if case.durus_detects {
            assert_eq!(
                probe.repaired_len,
                Some(case.offset),
                "{}: Durus's repair",
                case.name
            );
        } else {
            assert_eq!(
                probe.repaired_len,
                Some(case.bytes.len() as u64),
                "{}: Durus leaves it",
                case.name
            );
            missed.push(case.name);
        }
        assert!(
            matches!(FileStorage::open(path), Err(Error::TornTail { offset, .. }) if offset == case.offset),
            "{}: Rust must detect it",
            case.name
        );
    }
    assert_eq!(
        missed,
        [
            "cut-in-last-record-data",
            "only-20-bytes-of-last-record",
            "one-byte-short",
            "cut-in-last-record-data-then-garbage"
        ]
    );
}

/// Runs the `durus` binary; returns (exit code, stdout as JSON).
fn durus_json(args: &[&OsStr]) -> (i32, serde_json::Value) {
    let out = Command::new(env!("CARGO_BIN_EXE_durus"))
        .args(args)
        .arg("--json")
        .output()
        .expect("run durus");
    let json = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "durus {args:?} printed no JSON ({e}):\n{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (out.status.code().unwrap_or(-1), json)
}

/// The `durus` tools on a file Python Durus wrote: verify passes, census
/// and info agree with Durus, and a pack by `durus pack` leaves a file
/// that Durus opens with exactly the reachable records.
#[test]
fn durus_cli_tools_work_on_a_python_written_file() {
    let sc = peer().scenario("btree", false);
    let path = sc.path();
    let dump = &sc.out.dump;
    let (code, verify) = durus_json(&["verify".as_ref(), path.as_os_str()]);
    assert_eq!(code, 0, "{verify}");
    assert_eq!(verify["records"], dump.records.len() as u64);
    let (code, census) = durus_json(&["census".as_ref(), path.as_os_str()]);
    assert_eq!(code, 0);
    let census: BTreeMap<String, u64> = serde_json::from_value(census).expect("name -> count");
    assert_eq!(census, dump.census);
    let (code, pack) = durus_json(&["pack".as_ref(), path.as_os_str()]);
    assert_eq!(code, 0, "{pack}");
    assert_eq!(pack["kept"], dump.reachable.len() as u64);
    assert_eq!(
        pack["removed_count"],
        (dump.records.len() - dump.reachable.len()) as u64
    );
    let after = &peer().dump(sc.dir(), &[&path], 0)[0];
    let before_records = dump.records();
    let kept: BTreeMap<Oid, Vec<u8>> = before_records
        .into_iter()
        .filter(|(oid, _)| dump.reachable().contains(oid))
        .collect();
    assert_eq!(after.records(), kept);
    assert_eq!(after.reachable(), dump.reachable());
}
