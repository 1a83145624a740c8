use durus::Persistent;
use serde::{Deserialize, Serialize};

#[derive(Persistent, Serialize, Deserialize)]
#[durus(name = 5)]
struct Item {
    qty: u32,
}

fn main() {}
