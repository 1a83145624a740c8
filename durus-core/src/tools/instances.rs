//! Finding and rewriting objects by class name: Durus's
//! `gen_every_instance` and `touch_every_reference` (spec 9.8, FAQ
//! "rename a class").

use crate::error::Result;
use crate::format::{class_name, Oid, Record};
use crate::object::{registry, Connection, PRef, Persistent};

/// Oids of every stored record (garbage included, for a file storage)
/// whose data satisfies `keep`.
fn matching_oids(conn: &Connection, mut keep: impl FnMut(&[u8]) -> bool) -> Result<Vec<Oid>> {
    conn.with_storage(|storage| {
        let mut oids = Vec::new();
        for item in storage.records()? {
            let (oid, bytes) = item?;
            if keep(Record::decode(&bytes)?.data) {
                oids.push(oid);
            }
        }
        Ok(oids)
    })
}

/// Every stored instance of `T`, including records stored under its
/// aliases and run-time renames. The storage is scanned once, up front;
/// objects load as they are used.
pub fn gen_every_instance<T: Persistent>(
    conn: &Connection,
) -> impl Iterator<Item = Result<PRef<T>>> + '_ {
    registry::register::<T>();
    let oids = matching_oids(conn, |data| match class_name::extract(data) {
        class_name::ClassName::Cbor(name) => registry::accepts::<T>(name),
        _ => false,
    });
    let (oids, error) = match oids {
        Ok(oids) => (oids, None),
        Err(e) => (Vec::new(), Some(e)),
    };
    error
        .into_iter()
        .map(Err)
        .chain(oids.into_iter().filter_map(move |oid| match conn.get(oid) {
            Ok(Some(obj)) => Some(obj.downcast::<T>()),
            Ok(None) => None, // packed away since the scan
            Err(e) => Some(Err(e)),
        }))
}

/// Marks changed every stored object whose record data contains any of
/// `names` (old class names, as bytes), so that the next commit rewrites
/// it under its type's current name and with current references. Returns
/// how many objects were touched. Their types must be registered (by use,
/// or with [`registry::register`]).
pub fn touch_every_reference(conn: &Connection, names: &[&str]) -> Result<usize> {
    let oids = matching_oids(conn, |data| {
        names.iter().any(|n| contains(data, n.as_bytes()))
    })?;
    for &oid in &oids {
        conn.touch(oid)?;
    }
    Ok(oids.len())
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && haystack.windows(needle.len()).any(|w| w == needle)
}
