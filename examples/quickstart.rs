//! Quickstart: annotate a struct, commit, reopen, read back.
//!
//! `cargo run --example quickstart [FILE]` (default: a file in a temporary
//! directory). Run it twice on the same FILE to see the data persist.

use durus::prelude::*;
use serde::{Deserialize, Serialize};

/// A domain type: serde gives the state, the derive gives the class name
/// and the change-tracking accessors (`qty()`, `set_qty()`, ...) on
/// `PRef<Item>` through the generated `ItemFields` trait.
#[derive(Persistent, Serialize, Deserialize)]
#[durus(name = "shop.Item")]
struct Item {
    sku: String,
    qty: u32,
    tags: PRef<PersistentList<String>>,
}

fn main() -> durus::Result<()> {
    let dir = tempfile::tempdir().map_err(|e| Error::io("cannot create a temp dir", e))?;
    let path = std::env::args()
        .nth(1)
        .map(Into::into)
        .unwrap_or_else(|| dir.path().join("quickstart.durus"));

    {
        let conn = Connection::open(&path)?;
        let root = conn.root();
        let item = match root.get(&"a1".to_string())? {
            Some(found) => found.downcast::<Item>()?,
            None => {
                let tags = PRef::new(PersistentList::new());
                let item = PRef::new(Item {
                    sku: "A1".into(),
                    qty: 3,
                    tags,
                });
                root.insert("a1".to_string(), PObject::from(item.clone()))?;
                println!("created item A1 with 3 in stock");
                item
            }
        };
        item.set_qty(item.qty()? + 1)?; // a setter marks the object changed
        item.tags()?.push(format!("restocked to {}", item.qty()?))?;
        conn.commit()?;
        println!("committed: qty is now {}", item.qty()?);
    }

    // A new connection: objects load from the file as they are used.
    let conn = Connection::open(&path)?;
    let item: PRef<Item> = conn
        .root()
        .get(&"a1".to_string())?
        .ok_or(Error::KeyNotFound(Oid::ROOT))?
        .downcast()?;
    println!(
        "reopened: {} has qty {} (oid {:?})",
        item.sku()?,
        item.qty()?,
        item.oid()
    );
    for tag in item.tags()?.iter()? {
        println!("  tag: {tag}");
    }
    Ok(())
}
