//! A tour of the storage layer: records in a SHELF-1 file, transactions,
//! reopening, packing. Run with `cargo run --example storage_tour [FILE]`
//! (default: `storage_tour.durus` in a temporary directory).
//!
//! Objects here are raw records (oid, data, refs); the object layer builds
//! `#[derive(Persistent)]` structs on top of exactly these calls.

use durus::format::{class_name, record, Record};
use durus::prelude::*;

fn data(class: &str, state: &str) -> Vec<u8> {
    let mut data = Vec::new();
    class_name::write_cbor_header(&mut data, class);
    // A CBOR text string as the state, to keep the example dependency-free.
    data.push(0x60 | state.len() as u8);
    data.extend_from_slice(state.as_bytes());
    data
}

fn main() -> durus::Result<()> {
    let dir = tempfile::tempdir().map_err(|e| Error::io("cannot create a temp dir", e))?;
    let path = std::env::args()
        .nth(1)
        .map(Into::into)
        .unwrap_or_else(|| dir.path().join("storage_tour.durus"));

    let mut storage = FileStorage::open(&path)?;
    let root = storage.new_oid()?;
    let alice = storage.new_oid()?;
    let bob = storage.new_oid()?;
    storage.commit_records([
        record::encode(root, &data("tour.Root", "people"), &[alice, bob])?,
        record::encode(alice, &data("tour.Person", "Alice"), &[])?,
        record::encode(bob, &data("tour.Person", "Bob"), &[])?,
    ])?;
    // Bob leaves: the root no longer refers to him, so a pack drops him.
    storage.commit_records([record::encode(
        root,
        &data("tour.Root", "people"),
        &[alice],
    )?])?;
    println!("before pack: {:?}", storage.stats()?);
    let report = storage.pack()?;
    println!("pack kept {} and removed {:?}", report.kept, report.removed);
    drop(storage);

    let mut storage = FileStorage::open(&path)?;
    for item in storage.walk(Oid::ROOT) {
        let (oid, bytes) = item?;
        let rec = Record::decode(&bytes)?;
        println!(
            "oid {oid}: class {}",
            class_name::extract(rec.data).display()
        );
    }
    Ok(())
}
