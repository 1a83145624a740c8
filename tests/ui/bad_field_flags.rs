use durus::Persistent;
use serde::{Deserialize, Serialize};

#[derive(Persistent, Serialize, Deserialize)]
struct Item {
    #[durus(skip = true)]
    qty: u32,
    #[durus(skip, readonly)]
    sku: String,
}

fn main() {}
