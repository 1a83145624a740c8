// A persistent type's state is its serde serialization: without the serde
// derives the errors point at the type name and name both traits.
use durus::Persistent;
use serde::{Deserialize, Serialize};

#[derive(Persistent, Serialize, Deserialize)]
struct Order {
    qty: u32,
}

#[derive(Persistent)]
#[durus(name = "shop.Item")]
struct Item {
    qty: u32,
}

fn main() {}
