use durus::Persistent;
use serde::{Deserialize, Serialize};

#[derive(Persistent, Serialize, Deserialize)]
struct Wrapper<T> {
    value: T,
}

fn main() {}
