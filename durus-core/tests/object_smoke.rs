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
