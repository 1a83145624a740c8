// One connection per thread: a connection cannot move to another one.
use durus::prelude::*;

fn main() {
    let conn = Connection::new(MemoryStorage::new()).unwrap();
    std::thread::spawn(move || {
        let _ = conn.commit();
    });
}
