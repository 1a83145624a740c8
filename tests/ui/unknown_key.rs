use durus::Persistent;
use serde::{Deserialize, Serialize};

#[derive(Persistent, Serialize, Deserialize)]
#[durus(nmae = "shop.Item")]
struct Item {
    qty: u32,
}

#[derive(Persistent, Serialize, Deserialize)]
struct Order {
    #[durus(skipp)]
    qty: u32,
}

fn main() {}
