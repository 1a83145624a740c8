//! Helpers shared by the integration tests.
#![allow(dead_code)]

use durus_core::format::record;
use durus_core::{Oid, Storage};

/// A record for `oid` with `refs` and a recognisable body.
pub fn rec(oid: u64, body: &str, refs: &[u64]) -> Vec<u8> {
    let refs: Vec<Oid> = refs.iter().map(|&r| Oid(r)).collect();
    record::encode(Oid(oid), body.as_bytes(), &refs).unwrap()
}

/// Commits `records` as one transaction.
pub fn commit(storage: &mut dyn Storage, records: Vec<Vec<u8>>) {
    storage.begin().unwrap();
    for r in records {
        let oid = record::oid_of(&r).unwrap();
        storage.store(oid, r).unwrap();
    }
    storage.end(&mut |_| Ok(())).unwrap();
}

/// Allocates `n` oids.
pub fn new_oids(storage: &mut dyn Storage, n: usize) -> Vec<u64> {
    (0..n).map(|_| storage.new_oid().unwrap().0).collect()
}
