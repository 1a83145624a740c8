//! The reference's object graph (`../shared/interop/bench_durus.py`):
//! `Item`s (an int id, a short name, a float value) in a BTree keyed by id
//! under `root["items"]`, shared by the object, BTree and server benches.

use durus_core::{BTree, Connection, PObject, PRef, Persistent};
use serde::{Deserialize, Serialize};

use super::AnyResult;

/// The benchmark object, the reference's `peer_models.Item`.
#[derive(Debug, Serialize, Deserialize)]
pub struct Item {
    pub id: i64,
    pub name: String,
    pub value: f64,
}

impl Persistent for Item {
    const CLASS_NAME: &'static str = "bench.Item";
}

/// The tree of items.
pub type Items = BTree<i64, PRef<Item>>;

/// Its key in the root dict.
pub const ITEMS_KEY: &str = "items";

/// Puts `tree` under the root (not committed).
pub fn store_items(conn: &Connection, tree: Items) -> AnyResult<PRef<Items>> {
    let tree = PRef::new(tree);
    conn.root()
        .insert(ITEMS_KEY.to_string(), PObject::from(tree.clone()))?;
    Ok(tree)
}

/// The tree under the root.
pub fn items_of(conn: &Connection) -> AnyResult<PRef<Items>> {
    let obj = conn
        .root()
        .get(&ITEMS_KEY.to_string())?
        .ok_or("the root has no item tree")?;
    Ok(obj.downcast::<Items>()?)
}
