//! A storage in a `HashMap`, for tests and scratch work (spec section 11).

use std::collections::{HashMap, HashSet};

use crate::error::{Error, Result};
use crate::format::{record, Oid};
use crate::storage::{PackReport, RecordIter, Storage, StorageExt};

/// Records in memory; nothing survives the process. Oids count up from 0.
/// Unlike Durus's, it packs (drops what the root cannot reach) and its
/// `load` of a missing oid is the same [`Error::KeyNotFound`] as every
/// other storage.
#[derive(Debug, Default)]
pub struct MemoryStorage {
    records: HashMap<Oid, Vec<u8>>,
    pending: Vec<(Oid, Vec<u8>)>,
    next_oid: u64,
    removed: Vec<Oid>,
    closed: bool,
}

impl MemoryStorage {
    /// An empty storage.
    pub fn new() -> Self {
        Self::default()
    }

    fn check_open(&self) -> Result<()> {
        if self.closed {
            Err(Error::Closed)
        } else {
            Ok(())
        }
    }
}

impl Storage for MemoryStorage {
    fn contains(&mut self, oid: Oid) -> Result<bool> {
        self.check_open()?;
        Ok(self.records.contains_key(&oid))
    }

    fn load(&mut self, oid: Oid) -> Result<Vec<u8>> {
        self.check_open()?;
        self.records
            .get(&oid)
            .cloned()
            .ok_or(Error::KeyNotFound(oid))
    }

    fn begin(&mut self) -> Result<()> {
        self.check_open()?;
        self.pending.clear();
        Ok(())
    }

    fn store(&mut self, oid: Oid, record: Vec<u8>) -> Result<()> {
        self.check_open()?;
        record::check_stored_as(oid, &record)?;
        self.pending.push((oid, record));
        Ok(())
    }

    fn end(&mut self, _invalidations: &mut dyn FnMut(&[Oid]) -> Result<()>) -> Result<()> {
        self.check_open()?;
        self.records.extend(self.pending.drain(..));
        Ok(())
    }

    fn sync(&mut self) -> Result<Vec<Oid>> {
        self.check_open()?;
        Ok(std::mem::take(&mut self.removed))
    }

    fn new_oid(&mut self) -> Result<Oid> {
        self.check_open()?;
        let oid = Oid(self.next_oid);
        self.next_oid += 1;
        Ok(oid)
    }

    fn records(&mut self) -> Result<RecordIter<'_>> {
        self.check_open()?;
        let mut oids: Vec<Oid> = self.records.keys().copied().collect();
        oids.sort_unstable();
        Ok(Box::new(
            oids.into_iter()
                .map(|oid| Ok((oid, self.records[&oid].clone()))),
        ))
    }

    fn pack(&mut self) -> Result<PackReport> {
        self.check_open()?;
        let mut live = HashSet::new();
        if self.records.contains_key(&Oid::ROOT) {
            for item in self.walk(Oid::ROOT) {
                live.insert(item?.0);
            }
        }
        let mut removed: Vec<Oid> = self
            .records
            .keys()
            .filter(|oid| !live.contains(oid))
            .copied()
            .collect();
        removed.sort_unstable();
        for oid in &removed {
            self.records.remove(oid);
        }
        self.removed.extend_from_slice(&removed);
        Ok(PackReport {
            kept: live.len() as u64,
            removed,
            size_before: 0,
            size_after: 0,
            prepack: None,
        })
    }

    fn close(&mut self) -> Result<()> {
        self.closed = true;
        self.records.clear();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::record::encode;

    /// spec 14, utest_storage.py `check_memory_storage`.
    #[test]
    fn memory_storage_hands_out_oids_and_loads_committed_records() {
        let mut s = MemoryStorage::new();
        assert_eq!(s.new_oid().unwrap(), Oid(0));
        assert_eq!(s.new_oid().unwrap(), Oid(1));
        assert_eq!(s.new_oid().unwrap(), Oid(2));
        assert!(matches!(s.load(Oid(0)), Err(Error::KeyNotFound(Oid(0)))));
        let root = encode(Oid(0), b"root", &[Oid(1)]).unwrap();
        let child = encode(Oid(1), b"child", &[]).unwrap();
        let garbage = encode(Oid(2), b"garbage", &[]).unwrap();
        s.commit_records([root.clone(), child.clone(), garbage])
            .unwrap();
        assert_eq!(s.load(Oid(0)).unwrap(), root);
        let reachable: Vec<Oid> = s.walk(Oid(1)).map(|r| r.unwrap().0).collect();
        assert_eq!(reachable, vec![Oid(1)]);
        assert!(matches!(
            s.bulk_load(&[Oid(0), Oid(7)]),
            Err(Error::KeyNotFound(Oid(7)))
        ));
        let report = s.pack().unwrap();
        assert_eq!(report.kept, 2);
        assert_eq!(report.removed, vec![Oid(2)]);
        assert_eq!(s.sync().unwrap(), vec![Oid(2)]);
        assert_eq!(s.records().unwrap().count(), 2);
    }

    #[test]
    fn memory_storage_refuses_a_record_under_another_oid() {
        let mut s = MemoryStorage::new();
        s.begin().unwrap();
        let err = s
            .store(Oid(3), encode(Oid(4), b"", &[]).unwrap())
            .unwrap_err();
        assert!(err.to_string().contains("carries oid 4"), "{err}");
    }
}
