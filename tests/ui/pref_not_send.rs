// A handle belongs to its connection's thread.
use durus::prelude::*;
use serde::{Deserialize, Serialize};

#[derive(Persistent, Serialize, Deserialize)]
struct Item {
    qty: u32,
}

fn main() {
    let item = PRef::new(Item { qty: 1 });
    std::thread::spawn(move || {
        let _ = item.qty();
    });
}
