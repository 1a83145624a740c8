//! Object states (CBOR, object/codec.rs and object/cbor.rs) from arbitrary
//! bytes, decoded into typed objects: a derived struct with nested
//! containers, enums and references, and the containers (dict, list, set,
//! BTree nodes). Every access returns a value or an `Error`, never a
//! panic; and a state that decodes is written back by a commit and reads
//! the same again.
//!
//! Input: byte 0 picks which record of a real database gets the other
//! bytes as its state (its class name and refs are kept).
#![no_main]

use std::collections::BTreeMap;
use std::sync::LazyLock;

use durus::format::class_name::{split_cbor, write_cbor_header};
use durus::format::record::{self, Record};
use durus::prelude::*;
use libfuzzer_sys::fuzz_target;
use serde::{Deserialize, Serialize};

#[derive(Persistent, Serialize, Deserialize, Debug)]
#[durus(name = "fuzz.Item", aliases("fuzz.OldItem"))]
struct Item {
    sku: String,
    qty: u32,
    price: f64,
    kind: Kind,
    notes: BTreeMap<String, Vec<i64>>,
    tags: PRef<PersistentList<String>>,
    #[serde(default)]
    extra: Option<PObject>,
    blob: Vec<u8>,
    pair: (i8, Option<char>),
}

#[derive(Serialize, Deserialize, Debug, Clone)]
enum Kind {
    Plain,
    Sized(u16, u16),
    Named {
        label: String,
        parent: Option<PRef<Item>>,
    },
}

type Tree = BTree<u64, String>;

/// The records of a database holding one of each kind of object (the
/// BTree with enough entries for several nodes).
static BASE: LazyLock<Vec<Vec<u8>>> = LazyLock::new(|| {
    let conn = Connection::new(MemoryStorage::new()).unwrap();
    let root = conn.root();
    let tags = PRef::new(PersistentList::new());
    tags.push("red".to_string()).unwrap();
    let item = PRef::new(Item {
        sku: "A1".into(),
        qty: 3,
        price: 2.5,
        kind: Kind::Sized(2, 3),
        notes: BTreeMap::from([("n".to_string(), vec![1, -2])]),
        tags,
        extra: None,
        blob: vec![0, 255],
        pair: (-1, Some('x')),
    });
    let other = PRef::new(Item {
        kind: Kind::Named {
            label: "child".into(),
            parent: Some(item.clone()),
        },
        extra: Some(PObject::from(item.clone())),
        ..item
            .read(|it| Item {
                sku: it.sku.clone(),
                qty: 0,
                price: -0.0,
                kind: Kind::Plain,
                notes: BTreeMap::new(),
                tags: it.tags.clone(),
                extra: None,
                blob: Vec::new(),
                pair: (0, None),
            })
            .unwrap()
    });
    let tree: PRef<Tree> = PRef::new(BTree::with_node_size(4));
    tree.extend((0..40).map(|k| (k, format!("v{k}")))).unwrap();
    let set = PRef::new(PersistentSet::new());
    set.insert(7i32).unwrap();
    root.insert("item".into(), PObject::from(item)).unwrap();
    root.insert("other".into(), PObject::from(other)).unwrap();
    root.insert("tree".into(), PObject::from(tree)).unwrap();
    root.insert("set".into(), PObject::from(set)).unwrap();
    conn.commit().unwrap();
    let mut records = conn.with_storage(|s| {
        s.records()
            .unwrap()
            .map(|r| r.unwrap().1)
            .collect::<Vec<_>>()
    });
    // In oid order (a record starts with its oid), so that byte 0 of an
    // input always picks the same record.
    records.sort();
    records
});

/// Reads everything reachable, as text: `Err` at the first failure.
fn read_all(conn: &Connection) -> Result<String> {
    let root = conn.root();
    let mut out = String::new();
    for (key, obj) in root.iter()? {
        out += &format!("{key}: {}\n", obj.class_name());
        if obj.is::<Item>() {
            let item = obj.downcast::<Item>()?;
            out += &item.read(|it| format!("{it:?}"))?;
            let tags = item.read(|it| it.tags.clone())?;
            out += &format!("{:?}", tags.iter()?.collect::<Vec<_>>());
            if let Kind::Named {
                parent: Some(p), ..
            } = item.kind()?
            {
                out += &p.sku()?;
            }
        } else if obj.is::<Tree>() {
            let tree = obj.downcast::<Tree>()?;
            for entry in tree.iter()? {
                out += &format!("{:?}", entry?);
            }
            out += &format!("{:?}{:?}", tree.range(5..=9)?.count(), tree.get(&17)?);
            tree.verify()?;
        } else if obj.is::<PersistentSet<i32>>() {
            let set = obj.downcast::<PersistentSet<i32>>()?;
            out += &format!("{:?}", set.iter()?.collect::<Vec<_>>());
        }
    }
    Ok(out)
}

/// A connection over `records` (which loads the root: an error when its
/// state does not decode).
fn connect(records: Vec<Vec<u8>>) -> Result<Connection> {
    let mut storage = MemoryStorage::new();
    for _ in 0..records.len() {
        storage.new_oid().unwrap();
    }
    storage.commit_records(records).unwrap();
    Connection::new(storage)
}

fuzz_target!(
    init: {
        // DURUS_FUZZ_SEEDS=seeds/object_state writes the intact states as
        // seeds (how the checked-in ones were made).
        if let Some(dir) = std::env::var_os("DURUS_FUZZ_SEEDS") {
            for (i, rec) in BASE.iter().enumerate() {
                let data = Record::decode(rec).unwrap().data;
                let state = split_cbor(data).unwrap().1;
                let seed = [&[i as u8][..], state].concat();
                std::fs::write(std::path::Path::new(&dir).join(format!("record_{i}")), seed).unwrap();
            }
        }
    },
    |data: &[u8]| {
    let Some((&pick, state)) = data.split_first() else {
        return;
    };
    let mut records = BASE.clone();
    let i = pick as usize % records.len();
    let rec = Record::decode(&records[i]).unwrap();
    let (class, _) = split_cbor(rec.data).unwrap();
    let mut new_data = Vec::new();
    write_cbor_header(&mut new_data, class);
    new_data.extend_from_slice(state);
    let refs: Vec<_> = rec.refs().collect();
    records[i] = record::encode(rec.oid, &new_data, &refs).unwrap();

    let Ok(conn) = connect(records) else {
        return;
    };
    // Read twice: a reference's class name is a hint (spec 3.2, persistent_load), replaced by
    // the record's own once the object is loaded, maybe through another
    // reference read later in the first pass.
    if read_all(&conn).is_err() {
        return;
    }
    let first = read_all(&conn).expect("a second read of what read once");
    // Everything decoded: written back (each object marked changed), it
    // decodes to the same values.
    let root = conn.root();
    root.write(|_| ()).unwrap();
    for (_, obj) in root.iter().unwrap() {
        if obj.is::<Item>() {
            obj.downcast::<Item>().unwrap().write(|_| ()).unwrap();
        }
    }
    conn.commit().expect("a decoded state encodes again");
    let again = connect(conn.with_storage(|s| {
        s.records()
            .unwrap()
            .map(|r| r.unwrap().1)
            .collect::<Vec<_>>()
    }))
    .expect("a rewritten root decodes");
    assert_eq!(read_all(&again).expect("a rewritten state decodes"), first);

});
