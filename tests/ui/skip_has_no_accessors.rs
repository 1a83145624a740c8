use durus::prelude::*;
use serde::{Deserialize, Serialize};

#[derive(Persistent, Serialize, Deserialize)]
struct Session {
    user: String,
    #[durus(skip)]
    secret: String,
}

fn main() {
    let session = PRef::new(Session {
        user: "ann".into(),
        secret: "x".into(),
    });
    let _ = session.user();
    let _ = session.secret();
    let _ = session.set_secret("y".to_string());
}
