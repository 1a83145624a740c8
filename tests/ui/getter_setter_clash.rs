use durus::Persistent;
use serde::{Deserialize, Serialize};

#[derive(Persistent, Serialize, Deserialize)]
struct Switch {
    on: bool,
    set_on: bool,
}

fn main() {}
