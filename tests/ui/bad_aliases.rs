use durus::Persistent;
use serde::{Deserialize, Serialize};

#[derive(Persistent, Serialize, Deserialize)]
#[durus(aliases = "shop.OldItem")]
struct Item {
    qty: u32,
}

#[derive(Persistent, Serialize, Deserialize)]
#[durus(aliases("shop.OldOrder", order))]
struct Order {
    qty: u32,
}

#[derive(Persistent, Serialize, Deserialize)]
#[durus(name = "shop.Cart", aliases("shop.Cart"))]
struct Cart {
    qty: u32,
}

fn main() {}
