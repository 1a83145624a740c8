use durus::Persistent;
use serde::{Deserialize, Serialize};

#[derive(Persistent, Serialize, Deserialize)]
enum Color {
    Red,
    Green,
}

fn main() {}
