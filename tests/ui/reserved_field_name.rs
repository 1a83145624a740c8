// A getter named like a method every `PRef` already has would never be
// reached (or would make calls ambiguous).
use durus::Persistent;
use serde::{Deserialize, Serialize};

#[derive(Persistent, Serialize, Deserialize)]
struct Document {
    read: bool,
    clone: u32,
    oid: u64,
    #[durus(skip)]
    write: bool,
}

fn main() {}
