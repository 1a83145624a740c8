//! The object layer end to end on a real file: new objects reached from the
//! root are stored by commit, load back as ghosts in a new connection, and
//! changes through `write` are committed.

use durus_core::{Connection, PObject, PRef, Persistent, PersistentList};
use serde::{Deserialize, Serialize};

#[derive(Debug, Serialize, Deserialize)]
struct Item {
    sku: String,
    qty: u32,
    tags: PRef<PersistentList<String>>,
}

impl Persistent for Item {
    const CLASS_NAME: &'static str = "shop.Item";
    const ALIASES: &'static [&'static str] = &["shop.OldItem"];
}

#[test]
fn objects_reached_from_the_root_survive_reopening() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("shop.durus");
    {
        let conn = Connection::open(&path).unwrap();
        let root = conn.root();
        let tags = PRef::new(PersistentList::new());
        tags.push("new".to_string()).unwrap();
        let item = PRef::new(Item {
            sku: "A1".into(),
            qty: 3,
            tags,
        });
        root.insert("a1".into(), PObject::from(item.clone()))
            .unwrap();
        conn.commit().unwrap();
        assert_eq!(item.oid().map(|o| o.0), Some(1));
        item.write(|it| it.qty += 1).unwrap();
        conn.commit().unwrap();
    }
    let conn = Connection::open(&path).unwrap();
    let root = conn.root();
    let obj = root.get(&"a1".to_string()).unwrap().unwrap();
    assert_eq!(obj.class_name(), "shop.Item");
    let item: PRef<Item> = obj.downcast().unwrap();
    assert!(item.is_ghost());
    assert_eq!(item.read(|it| it.qty).unwrap(), 4);
    let tags = item.read(|it| it.tags.clone()).unwrap();
    assert_eq!(
        tags.iter().unwrap().collect::<Vec<_>>(),
        vec!["new".to_string()]
    );
    assert_eq!(conn.load_count(), 3); // root, item, tags
}

/// docs/FORMAT.md's example record, byte for byte.
#[test]
fn record_layout_matches_the_documented_example() {
    use durus_core::Oid;
    let conn = Connection::new(durus_core::MemoryStorage::new()).unwrap();
    let tags = PRef::new(PersistentList::<String>::new());
    let item = PRef::new(Item {
        sku: "A1".into(),
        qty: 4,
        tags,
    });
    conn.root()
        .insert("a1".into(), PObject::from(item))
        .unwrap();
    conn.commit().unwrap();
    let record = conn.with_storage(|s| s.load(Oid(1))).unwrap();
    let mut expected = vec![
        0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0x25, 0xD9, 0xD9, 0xF7, 0x69,
    ];
    expected.extend_from_slice(b"shop.Item");
    expected.push(0xA3);
    expected.extend_from_slice(b"\x63sku\x62A1\x63qty\x04\x64tags\xDA\x64\x75\x72\x72\x02");
    expected.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0, 2]);
    assert_eq!(record, expected);
}
