//! `durus dump`, run as a real process: files written through the object
//! layer (CBOR records) and a pickled record as Python Durus writes it.

use std::path::{Path, PathBuf};

use durus::format::class_name::write_cbor_header;
use durus::format::record;
use durus::{Connection, FileStorage, Oid, PObject, PRef, PersistentList, Storage, StorageExt};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

mod common;
use common::{durus, Run};

#[derive(Serialize, Deserialize)]
struct Item {
    sku: String,
    qty: u32,
    note: Option<String>,
    tags: PRef<PersistentList<String>>,
}

impl durus::Persistent for Item {
    const CLASS_NAME: &'static str = "shop.Item";
}

fn dump(path: &Path, args: &[&str]) -> Run {
    let path = path.to_str().expect("UTF-8 temp path");
    let mut all = vec!["dump", path];
    all.extend_from_slice(args);
    durus(&all)
}

/// Root (0) → "a1": Item (1) → tags list (2). Item "B2" (3) was in the
/// root once and is now garbage (reachable from nothing, not packed).
fn shop() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("shop.durus");
    let conn = Connection::open(&path).expect("open");
    let root = conn.root();
    let tags = PRef::new(PersistentList::new());
    tags.push("red".to_string()).unwrap();
    tags.push("blue".to_string()).unwrap();
    let item = PRef::new(Item {
        sku: "A1".into(),
        qty: 4,
        note: None,
        tags: tags.clone(),
    });
    root.insert("a1".into(), PObject::from(item.clone()))
        .unwrap();
    conn.commit().unwrap();
    let old = PRef::new(Item {
        sku: "B2".into(),
        qty: 1,
        note: Some("gone".into()),
        tags,
    });
    root.insert("b2".into(), PObject::from(old.clone()))
        .unwrap();
    conn.commit().unwrap();
    assert_eq!(old.oid(), Some(Oid(3)));
    root.remove(&"b2".to_string()).unwrap();
    conn.commit().unwrap();
    drop(conn);
    (dir, path)
}

fn rec(oid: u64, data: &[u8], refs: &[u64]) -> Vec<u8> {
    let refs: Vec<Oid> = refs.iter().map(|&r| Oid(r)).collect();
    record::encode(Oid(oid), data, &refs).expect("encodable record")
}

fn cbor(class: &str, state: &[u8]) -> Vec<u8> {
    let mut data = Vec::new();
    write_cbor_header(&mut data, class);
    data.extend_from_slice(state);
    data
}

/// A class pickle and the start of a zlib-compressed state pickle, as
/// Python Durus writes a PersistentDict (the state is not decoded).
const PICKLED_DICT: &[u8] =
    b"\x80\x02cdurus.persistent_dict\nPersistentDict\nq\x00.x\x9c\xcb\xe0\x9a\x00\x00";

/// A file written at the storage level: `records` committed in one
/// transaction after allocating oids 0..oids.
fn raw_file(oids: u64, records: Vec<Vec<u8>>) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("raw.durus");
    let mut storage = FileStorage::options()
        .fsync(false)
        .open(&path)
        .expect("create");
    for _ in 0..oids {
        storage.new_oid().expect("new oid");
    }
    if !records.is_empty() {
        storage.commit_records(records).expect("commit");
    }
    drop(storage);
    (dir, path)
}

#[test]
fn dump_shows_fields_values_and_references_in_walk_order() {
    let (_dir, path) = shop();
    let run = dump(&path, &[]);
    assert_eq!(run.code, 0, "stderr: {}", run.stderr);
    let headers = run.headers();
    assert_eq!(headers.len(), 3, "{}", run.stdout);
    assert!(headers[0].starts_with("oid 0  durus.persistent_dict.PersistentDict  ("));
    assert!(headers[1].starts_with("oid 1  shop.Item  ("));
    assert!(headers[1].ends_with(" bytes, refs: 1)"), "{}", headers[1]);
    assert!(headers[2].starts_with("oid 2  durus.persistent_list.PersistentList  ("));
    for line in [
        "  data: {a1: -> oid 1 (shop.Item)}\n",
        "  sku: \"A1\"\n  qty: 4\n  note: null\n",
        "  tags: -> oid 2 (durus.persistent_list.PersistentList)\n",
        "  data: [\"red\", \"blue\"]\n",
    ] {
        assert!(
            run.stdout.contains(line),
            "missing {line:?} in\n{}",
            run.stdout
        );
    }
    assert!(!run.stdout.contains("B2"), "garbage is not reachable");
}

#[test]
fn dump_all_includes_unreachable_records_in_oid_order() {
    let (_dir, path) = shop();
    let run = dump(&path, &["--all"]);
    assert_eq!(run.code, 0, "stderr: {}", run.stderr);
    let oids: Vec<&str> = run
        .headers()
        .iter()
        .map(|h| h.split("  ").next().unwrap())
        .collect();
    assert_eq!(oids, ["oid 0", "oid 1", "oid 2", "oid 3"]);
    assert!(run
        .stdout
        .contains("  sku: \"B2\"\n  qty: 1\n  note: \"gone\"\n"));
}

#[test]
fn dump_json_maps_state_and_references() {
    let (_dir, path) = shop();
    let run = dump(&path, &["--json"]);
    assert_eq!(run.code, 0, "stderr: {}", run.stderr);
    let all = run.json();
    let all = all.as_array().expect("an array");
    assert_eq!(all.len(), 3);
    assert_eq!(
        all[0]["state"],
        json!({"data": {"a1": {"$ref": 1, "class": "shop.Item"}}})
    );
    let item = &all[1];
    assert_eq!(item["oid"], 1);
    assert_eq!(item["class"], "shop.Item");
    assert_eq!(item["encoding"], "cbor");
    assert_eq!(item["refs"], json!([2]));
    assert!(item["size"].as_u64().unwrap() > 12);
    assert_eq!(
        item["state"],
        json!({
            "sku": "A1",
            "qty": 4,
            "note": null,
            "tags": {"$ref": 2, "class": "durus.persistent_list.PersistentList"}
        })
    );
    assert_eq!(all[2]["state"], json!({"data": ["red", "blue"]}));
}

#[test]
fn dump_oid_selects_one_object() {
    let (_dir, path) = shop();
    let run = dump(&path, &["--oid", "3"]);
    assert_eq!(run.code, 0, "stderr: {}", run.stderr);
    assert_eq!(run.headers().len(), 1, "{}", run.stdout);
    assert!(run.stdout.starts_with("oid 3  shop.Item  ("));
    // The referenced list's class is looked up although it is not dumped.
    assert!(run
        .stdout
        .contains("  tags: -> oid 2 (durus.persistent_list.PersistentList)\n"));

    let json = dump(&path, &["--oid", "2", "--json"]).json();
    assert_eq!(json.as_array().unwrap().len(), 1);
    assert_eq!(json[0]["oid"], 2);
    assert_eq!(json[0]["state"]["data"], json!(["red", "blue"]));
}

#[test]
fn dump_of_a_missing_oid_exits_2_with_a_clear_error() {
    let (_dir, path) = shop();
    let run = dump(&path, &["--oid", "1", "--oid", "99"]);
    assert_eq!(run.code, 2);
    assert_eq!(run.stdout, "", "nothing is printed before the error");
    assert!(
        run.stderr.contains("durus: error: no record for oid 99"),
        "{}",
        run.stderr
    );
}

#[test]
fn dump_shows_pickled_records_by_class_name_size_and_refs() {
    let item = cbor("shop.Item", b"\xA1\x63sku\x62A1");
    let root = rec(0, PICKLED_DICT, &[1]);
    let root_size = root.len();
    let (_dir, path) = raw_file(2, vec![root, rec(1, &item, &[])]);

    let run = dump(&path, &[]);
    assert_eq!(run.code, 0, "stderr: {}", run.stderr);
    let expected = format!(
        "oid 0  PersistentDict  (pickle, {root_size} bytes, refs: 1)\n\
         \x20 (pickled state of {} bytes not decoded)\n\
         \x20 -> oid 1 (shop.Item)\n\
         \n\
         oid 1  shop.Item  (",
        PICKLED_DICT.len()
    );
    assert!(run.stdout.starts_with(&expected), "{}", run.stdout);
    assert!(run.stdout.ends_with("  sku: \"A1\"\n"), "{}", run.stdout);

    let json = dump(&path, &["--json"]).json();
    assert_eq!(
        json[0],
        json!({
            "oid": 0,
            "class": "PersistentDict",
            "encoding": "pickle",
            "size": root_size,
            "refs": [1],
            "state": null
        })
    );
    assert_eq!(json[1]["state"], json!({"sku": "A1"}));
}

#[test]
fn dump_json_writes_bytes_as_hex_and_stringifies_keys() {
    // {1: h'00ff', "t": tag 1(5), "o": tag 0x6475726F [1, "x.Y"]}
    let state = b"\xA3\x01\x42\x00\xff\x61t\xC1\x05\x61o\xDA\x64\x75\x72\x6F\x82\x01\x63x.Y";
    let (_dir, path) = raw_file(2, vec![rec(0, &cbor("t.Odd", state), &[1])]);
    let json = dump(&path, &["--oid", "0", "--json"]).json();
    assert_eq!(
        json[0]["state"],
        json!({"1": "00ff", "t": {"$tag": 1, "value": 5}, "o": {"$ref": 1, "class": "x.Y"}})
    );
    let text = dump(&path, &["--oid", "0"]).stdout;
    assert!(
        text.contains("  1: h'00ff'\n  t: tag 1(5)\n  o: -> oid 1 (x.Y)\n"),
        "{text}"
    );
}

#[test]
fn undecodable_state_and_dangling_refs_are_reported_and_exit_1() {
    // oid 1's state is cut short; oid 0 refers to oid 2, which has no record.
    let (_dir, path) = raw_file(
        3,
        vec![
            rec(0, &cbor("t.Root", b"\xA0"), &[1, 2]),
            rec(1, &cbor("t.Broken", b"\xA2\x61a"), &[]),
        ],
    );
    let run = dump(&path, &[]);
    assert_eq!(run.code, 1, "stderr: {}", run.stderr);
    assert!(run.stdout.contains("oid 1  t.Broken  ("), "{}", run.stdout);
    assert!(run
        .stdout
        .contains("  ! malformed record (oid 1): CBOR state does not decode"));
    assert!(run
        .stdout
        .contains("oid 2  (no record)\n  ! oid 2 is referenced but has no record\n"));
    assert!(
        run.stderr
            .contains("2 object(s) could not be shown in full"),
        "{}",
        run.stderr
    );

    let json = dump(&path, &["--json"]).json();
    assert_eq!(json.as_array().unwrap().len(), 3);
    assert_eq!(json[1]["class"], "t.Broken");
    assert_eq!(json[1]["state"], Value::Null);
    assert!(json[1]["error"]
        .as_str()
        .unwrap()
        .contains("does not decode"));
    assert_eq!(
        json[2],
        json!({"oid": 2, "error": "oid 2 is referenced but has no record"})
    );
}

#[test]
fn dump_of_an_empty_file_prints_nothing() {
    let (_dir, path) = raw_file(0, vec![]);
    let run = dump(&path, &[]);
    assert_eq!((run.code, run.stdout.as_str()), (0, ""), "{}", run.stderr);
    assert_eq!(dump(&path, &["--json"]).json(), json!([]));
}

#[test]
fn dump_without_a_root_points_at_all() {
    let (_dir, path) = raw_file(2, vec![rec(1, &cbor("t.Orphan", b"\xA0"), &[])]);
    let run = dump(&path, &[]);
    assert_eq!(run.code, 2);
    assert!(
        run.stderr.contains("no root object (oid 0); --all"),
        "{}",
        run.stderr
    );
    assert!(dump(&path, &["--all"])
        .stdout
        .starts_with("oid 1  t.Orphan  ("));
}

#[test]
fn dump_oid_and_all_conflict() {
    let (_dir, path) = shop();
    let run = dump(&path, &["--all", "--oid", "1"]);
    assert_eq!(run.code, 2);
    assert!(run.stderr.contains("cannot be used with"), "{}", run.stderr);
}

#[test]
fn dump_opens_read_only_while_a_writer_holds_the_file() {
    let (_dir, path) = shop();
    let _writer = FileStorage::open(&path).expect("read-write open");
    let run = dump(&path, &["--oid", "1"]);
    assert_eq!(run.code, 0, "stderr: {}", run.stderr);
    assert!(run.stdout.contains("  qty: 4\n"));
}
