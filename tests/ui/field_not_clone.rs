use durus::Persistent;
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize)]
struct Handle(u64);

#[derive(Persistent, Serialize, Deserialize)]
struct Session {
    user: String,
    handle: Handle,
}

fn main() {}
