//! The `durus` command line tool, run as a real process on real files.
//! Fixtures are built through the library: CBOR-headed records as durus
//! for Rust writes them, and pickle-headed ones as Python Durus does.

use std::fs;
use std::path::{Path, PathBuf};

use durus::format::class_name::write_cbor_header;
use durus::format::record;
use durus::{Error, FileStorage, Oid, Storage, StorageExt};
use serde_json::Value;

mod common;
use common::{durus, Run};

fn durus_on(args: &[&str], path: &Path) -> Run {
    let mut all: Vec<&str> = args.to_vec();
    all.push(path.to_str().expect("UTF-8 temp path"));
    durus(&all)
}

/// Rust-written record data: the CBOR header, then an empty map as state.
fn cbor(class: &str) -> Vec<u8> {
    let mut data = Vec::new();
    write_cbor_header(&mut data, class);
    data.push(0xA0);
    data
}

/// Python-written record data: a class pickle, then (here) no state.
const PICKLED_DICT: &[u8] = b"\x80\x02cdurus.persistent_dict\nPersistentDict\nq\x00.";

fn rec(oid: u64, data: &[u8], refs: &[u64]) -> Vec<u8> {
    let refs: Vec<Oid> = refs.iter().map(|&r| Oid(r)).collect();
    record::encode(Oid(oid), data, &refs).expect("encodable record")
}

fn file_len(path: &Path) -> u64 {
    fs::metadata(path).expect("file exists").len()
}

struct Fixture {
    _dir: tempfile::TempDir,
    path: PathBuf,
    /// File length after each transaction, in commit order.
    ends: Vec<u64>,
    /// The latest committed record of each oid.
    records: Vec<(u64, Vec<u8>)>,
}

/// A file with `oids` allocated (0..oids) and one transaction per entry of
/// `transactions`.
fn fixture(oids: u64, transactions: Vec<Vec<Vec<u8>>>) -> Fixture {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("db.durus");
    let mut storage = FileStorage::options()
        .fsync(false)
        .open(&path)
        .expect("create");
    for expected in 0..oids {
        assert_eq!(storage.new_oid().expect("new oid"), Oid(expected));
    }
    let mut ends = Vec::new();
    let mut latest = std::collections::BTreeMap::new();
    for txn in transactions {
        for r in &txn {
            latest.insert(record::oid_of(r).expect("oid").get(), r.clone());
        }
        storage.commit_records(txn).expect("commit");
        ends.push(file_len(&path));
    }
    drop(storage);
    Fixture {
        _dir: dir,
        path,
        ends,
        records: latest.into_iter().collect(),
    }
}

/// Root 0 → {1, 2}, 1 → 3 (added in the second transaction), and 4, which
/// nothing refers to (garbage), in three transactions.
fn sample() -> Fixture {
    fixture(
        5,
        vec![
            vec![
                rec(0, PICKLED_DICT, &[1, 2]),
                rec(1, &cbor("shop.Item"), &[]),
                rec(2, &cbor("shop.Item"), &[]),
            ],
            vec![
                rec(1, &cbor("shop.Item"), &[3]),
                rec(3, &cbor("shop.Tag"), &[]),
            ],
            vec![rec(4, &cbor("shop.Item"), &[])],
        ],
    )
}

/// `sample()` with its last transaction cut 5 bytes short, as a crash
/// during the commit leaves it. Returns the fixture and the torn offset.
fn torn_sample() -> (Fixture, u64) {
    let fx = sample();
    let torn_at = fx.ends[1];
    let file = fs::OpenOptions::new()
        .write(true)
        .open(&fx.path)
        .expect("open");
    file.set_len(fx.ends[2] - 5).expect("truncate");
    (fx, torn_at)
}

#[test]
fn help_lists_the_subcommands_with_descriptions() {
    let run = durus(&["--help"]);
    assert_eq!(run.code, 0);
    for line in [
        "info    Show a file's format",
        "verify  Check a file",
        "repair  Truncate a damaged tail",
        "pack    Rewrite the file keeping only what the root reaches",
        "census  Count the stored instances of each class",
    ] {
        assert!(run.stdout.contains(line), "{line:?} in\n{}", run.stdout);
    }
    for sub in ["info", "verify", "repair", "pack", "census"] {
        let run = durus(&[sub, "--help"]);
        assert_eq!(run.code, 0, "{sub} --help");
        assert!(run.stdout.contains("<FILE>"), "{sub}: {}", run.stdout);
    }
}

#[test]
fn missing_argument_is_a_usage_error_with_status_2() {
    let run = durus(&["info"]);
    assert_eq!(run.code, 2);
    assert!(run.stderr.contains("<FILE>"), "{}", run.stderr);
}

#[test]
fn info_on_a_fresh_file_reports_an_empty_shelf() {
    let fx = fixture(0, vec![]);
    let run = durus_on(&["info"], &fx.path);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(
        run.stdout.contains("format:        SHELF-1"),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout.contains("size:          40 bytes"),
        "{}",
        run.stdout
    );
    assert!(run.stdout.contains("objects:       0 "), "{}", run.stdout);
    assert!(run.stdout.contains("none (no records)"), "{}", run.stdout);

    let json = durus_on(&["info", "--json"], &fx.path).json();
    assert_eq!(json["format"], "SHELF-1");
    assert_eq!(json["file_size"], 40);
    assert_eq!(json["objects"], 0);
    assert_eq!(json["base_records"], 0);
    assert_eq!(json["transactions"], 0);
    assert_eq!(json["oid_range"], Value::Null);
    assert_eq!(json["damaged_tail"], Value::Null);
}

#[test]
fn info_counts_objects_transactions_and_the_oid_range() {
    let fx = sample();
    let run = durus_on(&["info"], &fx.path);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(run.stdout.contains("objects:       5 "), "{}", run.stdout);
    assert!(
        run.stdout.contains("transactions:  3 since the last pack"),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout.contains("oid range:     0 ..= 4"),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout.contains("tail:          intact"),
        "{}",
        run.stdout
    );

    let json = durus_on(&["info", "--json"], &fx.path).json();
    assert_eq!(json["file_size"], fx.ends[2]);
    assert_eq!(json["objects"], 5);
    assert_eq!(json["base_records"], 0);
    assert_eq!(json["transactions"], 3);
    assert_eq!(json["oid_range"]["min"], 0);
    assert_eq!(json["oid_range"]["max"], 4);
}

#[test]
fn info_mentions_a_damaged_tail_without_touching_it() {
    let (fx, torn_at) = torn_sample();
    let before = fs::read(&fx.path).expect("read");
    let run = durus_on(&["info"], &fx.path);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let bytes = before.len() as u64 - torn_at;
    assert!(
        run.stdout
            .contains(&format!("damaged tail:  {bytes} bytes at offset {torn_at}")),
        "{}",
        run.stdout
    );
    let json = durus_on(&["info", "--json"], &fx.path).json();
    assert_eq!(json["transactions"], 2);
    assert_eq!(json["objects"], 4);
    assert_eq!(json["file_size"], before.len() as u64);
    assert_eq!(json["damaged_tail"]["offset"], torn_at);
    assert_eq!(json["damaged_tail"]["bytes"], bytes);
    assert_eq!(fs::read(&fx.path).expect("read"), before);
}

#[test]
fn info_works_while_a_writer_holds_the_file() {
    let fx = sample();
    let writer = FileStorage::open(&fx.path).expect("writer open");
    let json = durus_on(&["info", "--json"], &fx.path).json();
    assert_eq!(json["objects"], 5);
    assert_eq!(json["transactions"], 3);
    drop(writer);
}

#[test]
fn info_on_a_missing_file_is_an_error_with_status_2() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("absent.durus");
    let run = durus_on(&["info"], &path);
    assert_eq!(run.code, 2);
    assert!(
        run.stderr.starts_with("durus: error: cannot open "),
        "{}",
        run.stderr
    );
    assert!(run.stdout.is_empty());
    assert!(!path.exists());
}

#[test]
fn verify_passes_a_clean_file_with_status_0() {
    let fx = sample();
    let run = durus_on(&["verify"], &fx.path);
    assert_eq!(run.code, 0, "{}{}", run.stdout, run.stderr);
    assert!(
        run.stdout.contains(": OK: 5 records, 3 references"),
        "{}",
        run.stdout
    );
    let json = durus_on(&["verify", "--json"], &fx.path).json();
    assert_eq!(json["ok"], true);
    assert_eq!(json["records"], 5);
    assert_eq!(json["refs"], 3);
    assert_eq!(json["problems"], serde_json::json!([]));
}

#[test]
fn verify_fails_a_torn_tail_with_status_1_and_names_the_offset() {
    let (fx, torn_at) = torn_sample();
    let run = durus_on(&["verify"], &fx.path);
    assert_eq!(run.code, 1, "{}{}", run.stdout, run.stderr);
    assert!(run.stdout.contains("FAILED: 1 problem"), "{}", run.stdout);
    assert!(
        run.stdout
            .contains(&format!("[offset {torn_at}] damaged tail")),
        "{}",
        run.stdout
    );
    let json = durus_on(&["verify", "--json"], &fx.path).json();
    assert_eq!(json["ok"], false);
    assert_eq!(json["problems"][0]["offset"], torn_at);
    assert_eq!(json["problems"][0]["oid"], Value::Null);
}

#[test]
fn verify_reports_the_oid_holding_a_dangling_reference() {
    let fx = fixture(
        2,
        vec![vec![
            rec(0, &cbor("shop.Root"), &[1]),
            rec(1, &cbor("shop.Item"), &[7]),
        ]],
    );
    let run = durus_on(&["verify"], &fx.path);
    assert_eq!(run.code, 1, "{}{}", run.stdout, run.stderr);
    assert!(
        run.stdout
            .contains("[oid 1] oid 1 refers to oid 7, which has no record"),
        "{}",
        run.stdout
    );
    let json = durus_on(&["verify", "--json"], &fx.path).json();
    assert_eq!(json["problems"].as_array().map(Vec::len), Some(1));
    assert_eq!(json["problems"][0]["oid"], 1);
}

#[test]
fn verify_fails_a_file_that_is_not_a_durus_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("notes.txt");
    fs::write(&path, "hello, I am a text file\n").expect("write");
    let run = durus_on(&["verify"], &path);
    assert_eq!(run.code, 1, "{}{}", run.stdout, run.stderr);
    assert!(
        run.stdout.contains("FAILED: the file cannot be opened"),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout
            .contains("not a Durus SHELF-1 file: it starts with \"hello, I\""),
        "{}",
        run.stdout
    );
    let json = durus_on(&["verify", "--json"], &path).json();
    assert_eq!(json["ok"], false);
    assert_eq!(json["opened"], false);
}

#[test]
fn verify_fails_a_corrupt_offset_map_with_its_offset() {
    let fx = sample();
    let mut bytes = fs::read(&fx.path).expect("read");
    // The offset map of an unpacked file starts at 16; its word width is at 24.
    bytes[24..32].copy_from_slice(&9u64.to_be_bytes());
    fs::write(&fx.path, &bytes).expect("write");
    let run = durus_on(&["verify"], &fx.path);
    assert_eq!(run.code, 1, "{}{}", run.stdout, run.stderr);
    assert!(
        run.stdout
            .contains("[offset 16] offset map word width 9 is not 1..=8"),
        "{}",
        run.stdout
    );
}

#[test]
fn repair_truncates_a_torn_tail_and_keeps_every_earlier_record() {
    let (fx, torn_at) = torn_sample();
    let torn_len = file_len(&fx.path);
    let run = durus_on(&["repair"], &fx.path);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(
        run.stdout.contains(&format!(
            "repaired: truncated {} bytes from offset {torn_at} (file {torn_len} -> {torn_at} bytes)",
            torn_len - torn_at
        )),
        "{}",
        run.stdout
    );
    assert_eq!(file_len(&fx.path), torn_at);
    assert_eq!(durus_on(&["verify"], &fx.path).code, 0);

    let mut storage = FileStorage::options()
        .readonly(true)
        .open(&fx.path)
        .expect("open");
    for (oid, bytes) in fx.records.iter().filter(|(oid, _)| *oid != 4) {
        assert_eq!(&storage.load(Oid(*oid)).expect("load"), bytes, "oid {oid}");
    }
    assert!(matches!(
        storage.load(Oid(4)),
        Err(Error::KeyNotFound(Oid(4)))
    ));
}

#[test]
fn repair_of_an_intact_file_says_so_and_changes_nothing() {
    let fx = sample();
    let before = fs::read(&fx.path).expect("read");
    let run = durus_on(&["repair"], &fx.path);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(
        run.stdout.contains("tail intact, nothing to truncate"),
        "{}",
        run.stdout
    );
    let json = durus_on(&["repair", "--json"], &fx.path).json();
    assert_eq!(json["damaged"], false);
    assert_eq!(json["truncated_bytes"], 0);
    assert_eq!(fs::read(&fx.path).expect("read"), before);
}

#[test]
fn repair_dry_run_reports_the_damage_without_changing_the_file() {
    let (fx, torn_at) = torn_sample();
    let before = fs::read(&fx.path).expect("read");
    let bytes = before.len() as u64 - torn_at;
    let run = durus_on(&["repair", "--dry-run"], &fx.path);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(
        run.stdout.contains(&format!(
            "would truncate {bytes} bytes from offset {torn_at}"
        )),
        "{}",
        run.stdout
    );
    let json = durus_on(&["repair", "--dry-run", "--json"], &fx.path).json();
    assert_eq!(json["dry_run"], true);
    assert_eq!(json["damaged"], true);
    assert_eq!(json["offset"], torn_at);
    assert_eq!(json["truncated_bytes"], bytes);
    assert_eq!(fs::read(&fx.path).expect("read"), before);
}

#[test]
fn repair_of_a_missing_file_fails_without_creating_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("absent.durus");
    let run = durus_on(&["repair"], &path);
    assert_eq!(run.code, 2);
    assert!(
        run.stderr.starts_with("durus: error: cannot open "),
        "{}",
        run.stderr
    );
    assert!(!path.exists());
}

#[test]
fn pack_removes_garbage_and_reports_removed_oids_and_sizes() {
    let fx = sample();
    let size_before = file_len(&fx.path);
    let run = durus_on(&["pack", "--json"], &fx.path);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(
        run.stderr.is_empty(),
        "no progress bar off a terminal: {}",
        run.stderr
    );
    let json = run.json();
    assert_eq!(json["kept"], 4);
    assert_eq!(json["removed_count"], 1);
    assert_eq!(json["removed"], serde_json::json!([4]));
    assert_eq!(json["size_before"], size_before);
    assert_eq!(json["size_after"], file_len(&fx.path));
    assert!(file_len(&fx.path) < size_before);

    let mut prepack = fx.path.clone().into_os_string();
    prepack.push(".prepack");
    assert_eq!(json["prepack"], prepack.to_str().expect("UTF-8"));
    assert_eq!(file_len(Path::new(&prepack)), size_before);

    let mut storage = FileStorage::options()
        .readonly(true)
        .open(&fx.path)
        .expect("open packed");
    for (oid, bytes) in fx.records.iter().filter(|(oid, _)| *oid != 4) {
        assert_eq!(&storage.load(Oid(*oid)).expect("load"), bytes, "oid {oid}");
    }
    assert!(matches!(
        storage.load(Oid(4)),
        Err(Error::KeyNotFound(Oid(4)))
    ));
    drop(storage);

    let info = durus_on(&["info", "--json"], &fx.path).json();
    assert_eq!(info["base_records"], 4);
    assert_eq!(info["transactions"], 0);
    assert_eq!(durus_on(&["verify"], &fx.path).code, 0);
}

#[test]
fn pack_prints_sizes_and_removed_oids_as_text() {
    let fx = sample();
    let size_before = file_len(&fx.path);
    let run = durus_on(&["pack"], &fx.path);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let size_after = file_len(&fx.path);
    for line in [
        format!("  size before:  {size_before} bytes"),
        format!("  size after:   {size_after} bytes"),
        "  kept:         4 records".to_string(),
        "  removed:      1 object (oids 4)".to_string(),
    ] {
        assert!(run.stdout.contains(&line), "{line:?} in\n{}", run.stdout);
    }
}

#[test]
fn pack_refuses_a_file_another_writer_holds() {
    let fx = sample();
    let before = fs::read(&fx.path).expect("read");
    let writer = FileStorage::open(&fx.path).expect("writer open");
    let run = durus_on(&["pack"], &fx.path);
    assert_eq!(run.code, 2);
    assert!(run.stderr.starts_with("durus: error: "), "{}", run.stderr);
    assert!(
        run.stderr.contains("locked by another writer"),
        "{}",
        run.stderr
    );
    drop(writer);
    assert_eq!(fs::read(&fx.path).expect("read"), before);
}

#[test]
fn pack_refuses_a_torn_file_and_points_at_repair() {
    let (fx, torn_at) = torn_sample();
    let run = durus_on(&["pack"], &fx.path);
    assert_eq!(run.code, 2);
    assert!(
        run.stderr
            .contains(&format!("damaged tail at offset {torn_at}")),
        "{}",
        run.stderr
    );
    assert!(run.stderr.contains("durus repair"), "{}", run.stderr);
}

#[test]
fn census_counts_cbor_and_pickled_class_names() {
    let fx = fixture(
        6,
        vec![vec![
            rec(0, PICKLED_DICT, &[1, 2, 3, 4, 5]),
            rec(1, &cbor("shop.Item"), &[]),
            rec(2, &cbor("shop.Item"), &[]),
            rec(3, &cbor("shop.Item"), &[]),
            rec(4, &cbor("shop.Tag"), &[]),
            rec(5, PICKLED_DICT, &[]),
        ]],
    );
    let run = durus_on(&["census"], &fx.path);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(
        run.stdout,
        "3  shop.Item\n2  PersistentDict\n1  shop.Tag\n--------\n6  total (3 classes)\n"
    );
    let json = durus_on(&["census", "--json"], &fx.path).json();
    assert_eq!(
        json,
        serde_json::json!({"PersistentDict": 2, "shop.Item": 3, "shop.Tag": 1})
    );
}

#[test]
fn census_breaks_count_ties_by_name() {
    let fx = fixture(
        3,
        vec![vec![
            rec(0, &cbor("z.Root"), &[1, 2]),
            rec(1, &cbor("b.Thing"), &[]),
            rec(2, &cbor("a.Thing"), &[]),
        ]],
    );
    let run = durus_on(&["census"], &fx.path);
    assert_eq!(
        run.stdout,
        "1  a.Thing\n1  b.Thing\n1  z.Root\n--------\n3  total (3 classes)\n"
    );
}

#[test]
fn verify_names_the_offset_of_a_corrupt_record_in_the_packed_base() {
    let fx = sample();
    assert_eq!(durus_on(&["pack"], &fx.path).code, 0);
    let mut bytes = fs::read(&fx.path).expect("read");
    // The base's first shelf record (the root) is at 16: length, name, then
    // the record's own oid, which no longer matches the name.
    bytes[16 + 16..16 + 24].copy_from_slice(&9u64.to_be_bytes());
    fs::write(&fx.path, &bytes).expect("write");
    let run = durus_on(&["verify"], &fx.path);
    assert_eq!(run.code, 1, "{}{}", run.stdout, run.stderr);
    assert!(
        run.stdout
            .contains("[oid 0, offset 16] oid 0 does not load: record for oid 9 (shelf name 0) found where oid 0 was expected"),
        "{}",
        run.stdout
    );
    let json = durus_on(&["verify", "--json"], &fx.path).json();
    assert_eq!(json["problems"][0]["offset"], 16);
    assert_eq!(json["records"], 3);
}
