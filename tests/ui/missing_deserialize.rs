use durus::Persistent;
use serde::Serialize;

#[derive(Persistent, Serialize)]
struct Item {
    qty: u32,
}

fn main() {}
