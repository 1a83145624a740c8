//! Instance counts per class name (Durus's `get_census`).

use std::collections::BTreeMap;

use crate::error::Result;
use crate::format::{class_name, Record};
use crate::storage::Storage;

/// Class name → number of records, over every record the storage yields
/// (for a file storage that includes garbage not yet packed away).
pub fn census(storage: &mut dyn Storage) -> Result<BTreeMap<String, u64>> {
    let mut counts = BTreeMap::new();
    for item in storage.records()? {
        let (_, bytes) = item?;
        let record = Record::decode(&bytes)?;
        *counts
            .entry(class_name::extract(record.data).display())
            .or_insert(0) += 1;
    }
    Ok(counts)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::{record, Oid};
    use crate::{MemoryStorage, StorageExt};

    #[test]
    fn census_counts_pickled_and_cbor_class_names() {
        let mut s = MemoryStorage::new();
        let mut cbor = Vec::new();
        class_name::write_cbor_header(&mut cbor, "bank.Account");
        let pickle = b"\x80\x02cdurus.persistent_dict\nPersistentDict\nq\x00.".to_vec();
        s.commit_records([
            record::encode(Oid(0), &pickle, &[]).unwrap(),
            record::encode(Oid(1), &cbor, &[]).unwrap(),
            record::encode(Oid(2), &cbor, &[]).unwrap(),
            record::encode(Oid(3), b"junk", &[]).unwrap(),
        ])
        .unwrap();
        let counts = census(&mut s).unwrap();
        let expected: BTreeMap<String, u64> =
            [("PersistentDict", 1), ("bank.Account", 2), ("?", 1)]
                .into_iter()
                .map(|(k, v)| (k.to_string(), v))
                .collect();
        assert_eq!(counts, expected);
    }
}
