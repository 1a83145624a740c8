use durus::Persistent;
use serde::{Deserialize, Serialize};

#[derive(Persistent, Serialize, Deserialize)]
#[durus(skip)]
struct Item {
    qty: u32,
}

#[derive(Persistent, Serialize, Deserialize)]
struct Order {
    #[durus(name = "order.qty")]
    qty: u32,
}

fn main() {}
