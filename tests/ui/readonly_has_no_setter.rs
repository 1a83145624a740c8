use durus::prelude::*;
use serde::{Deserialize, Serialize};

#[derive(Persistent, Serialize, Deserialize)]
struct Account {
    #[durus(readonly)]
    opened: u32,
}

fn main() {
    let account = PRef::new(Account { opened: 2024 });
    let _ = account.opened();
    let _ = account.set_opened(2025);
}
