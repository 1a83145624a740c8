//! gen_every_instance and touch_every_reference (spec 9.8; FAQ "rename a
//! class"), on a real file.

use durus_core::format::{class_name, Record};
use durus_core::tools::instances::{gen_every_instance, touch_every_reference};
use durus_core::{Connection, Oid, PObject, PRef, Persistent};
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize)]
struct OldItem {
    qty: u32,
}
impl Persistent for OldItem {
    const CLASS_NAME: &'static str = "inst.OldItem";
}

/// The same state under a new name, remembering the old one.
#[derive(Serialize, Deserialize)]
struct Item {
    qty: u32,
}
impl Persistent for Item {
    const CLASS_NAME: &'static str = "inst.Item";
    const ALIASES: &'static [&'static str] = &["inst.OldItem"];
}

#[derive(Serialize, Deserialize)]
struct Other {
    note: String,
}
impl Persistent for Other {
    const CLASS_NAME: &'static str = "inst.Other";
}

fn class_of(conn: &Connection, oid: Oid) -> String {
    let record = conn.with_storage(|s| s.load(oid)).unwrap();
    class_name::extract(Record::decode(&record).unwrap().data).display()
}

#[test]
fn renamed_class_is_found_by_alias_and_rewritten_under_its_new_name() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("rename.durus");
    {
        let conn = Connection::open(&path).unwrap();
        let root = conn.root();
        for i in 0..3 {
            root.insert(
                format!("item{i}"),
                PObject::from(PRef::new(OldItem { qty: i })),
            )
            .unwrap();
        }
        root.insert(
            "other".into(),
            PObject::from(PRef::new(Other { note: "x".into() })),
        )
        .unwrap();
        conn.commit().unwrap();
    }
    let conn = Connection::open(&path).unwrap();
    let mut qtys: Vec<u32> = gen_every_instance::<Item>(&conn)
        .map(|it| it.unwrap().read(|i| i.qty).unwrap())
        .collect();
    qtys.sort_unstable();
    assert_eq!(qtys, vec![0, 1, 2]);
    assert_eq!(gen_every_instance::<Other>(&conn).count(), 1);
    let item1 = conn.root().get(&"item1".to_string()).unwrap().unwrap();
    assert_eq!(class_of(&conn, item1.oid().unwrap()), "inst.OldItem");

    // The three items, and the root, whose references name their class.
    assert_eq!(touch_every_reference(&conn, &["inst.OldItem"]).unwrap(), 4);
    conn.commit().unwrap();
    assert_eq!(class_of(&conn, item1.oid().unwrap()), "inst.Item");
    // Nothing mentions the old name any more.
    assert_eq!(touch_every_reference(&conn, &["inst.OldItem"]).unwrap(), 0);
    assert_eq!(
        item1.downcast::<Item>().unwrap().read(|i| i.qty).unwrap(),
        1
    );
    assert_eq!(item1.class_name(), "inst.Item");
}

#[test]
fn touching_an_unregistered_class_is_an_unknown_class_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("unknown.durus");
    {
        #[derive(Serialize, Deserialize)]
        struct Ephemeral {
            n: u8,
        }
        impl Persistent for Ephemeral {
            const CLASS_NAME: &'static str = "inst.NeverRegisteredElsewhere";
        }
        let conn = Connection::open(&path).unwrap();
        conn.root()
            .insert("e".into(), PObject::from(PRef::new(Ephemeral { n: 1 })))
            .unwrap();
        conn.commit().unwrap();
    }
    // The type registered itself above; a rename to a name no type has
    // leaves the record without a loader.
    durus_core::object::registry::rename_class("inst.NeverRegisteredElsewhere", "inst.Gone");
    let conn = Connection::open(&path).unwrap();
    let err = touch_every_reference(&conn, &["inst.NeverRegisteredElsewhere"]).unwrap_err();
    assert!(
        matches!(err, durus_core::Error::UnknownClass { .. }),
        "{err}"
    );
    assert!(
        err.to_string().contains("inst.NeverRegisteredElsewhere"),
        "{err}"
    );
}
