//! Maps and sets keyed by oid. Durus allocates oids densely from 0, so a
//! plain vector indexed by oid beats a hash table (no hashing, no probing,
//! half the memory); oids far above the dense range (a damaged or
//! hand-made file) go to a hash map so one huge oid cannot allocate
//! gigabytes.

use std::collections::HashMap;

use crate::format::Oid;

const ABSENT: u64 = u64::MAX;

/// The dense range always covers at least this many oids.
const MIN_DENSE: u64 = 1 << 16;

/// Oid → u64 (any value but `u64::MAX`).
#[derive(Debug, Default, Clone)]
pub(crate) struct OidMap {
    dense: Vec<u64>,
    sparse: HashMap<u64, u64>,
    len: usize,
}

impl OidMap {
    pub(crate) fn new() -> Self {
        Self::default()
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    pub(crate) fn get(&self, oid: Oid) -> Option<u64> {
        match self.dense.get(oid.0 as usize) {
            Some(&v) => (v != ABSENT).then_some(v),
            None => self.sparse.get(&oid.0).copied(),
        }
    }

    pub(crate) fn contains(&self, oid: Oid) -> bool {
        self.get(oid).is_some()
    }

    /// Sets `oid`'s value, returning the previous one.
    pub(crate) fn insert(&mut self, oid: Oid, value: u64) -> Option<u64> {
        debug_assert_ne!(value, ABSENT, "u64::MAX marks absence");
        let i = oid.0;
        if i >= self.dense.len() as u64 && i < self.dense_limit() {
            self.grow(i);
        }
        let old = match self.dense.get_mut(i as usize) {
            Some(slot) => Some(std::mem::replace(slot, value)).filter(|&v| v != ABSENT),
            None => self.sparse.insert(i, value),
        };
        if old.is_none() {
            self.len += 1;
        }
        old
    }

    pub(crate) fn remove(&mut self, oid: Oid) -> Option<u64> {
        let old = match self.dense.get_mut(oid.0 as usize) {
            Some(slot) => Some(std::mem::replace(slot, ABSENT)).filter(|&v| v != ABSENT),
            None => self.sparse.remove(&oid.0),
        };
        if old.is_some() {
            self.len -= 1;
        }
        old
    }

    /// Entries: the dense range in oid order, then the sparse ones.
    pub(crate) fn iter(&self) -> impl Iterator<Item = (Oid, u64)> + '_ {
        let dense = self
            .dense
            .iter()
            .enumerate()
            .filter(|(_, &v)| v != ABSENT)
            .map(|(i, &v)| (Oid(i as u64), v));
        dense.chain(self.sparse.iter().map(|(&k, &v)| (Oid(k), v)))
    }

    pub(crate) fn clear(&mut self) {
        *self = Self::default();
    }

    /// Oids below this may extend the vector: it stays within a constant
    /// factor of the number of entries.
    fn dense_limit(&self) -> u64 {
        MIN_DENSE.max(4 * (self.len as u64 + 1))
    }

    fn grow(&mut self, i: u64) {
        let new_len = (i + 1)
            .max(2 * self.dense.len() as u64)
            .min(self.dense_limit().max(i + 1));
        self.dense.resize(new_len as usize, ABSENT);
        if !self.sparse.is_empty() {
            let moved: Vec<(u64, u64)> = self
                .sparse
                .iter()
                .filter(|(&k, _)| k < new_len)
                .map(|(&k, &v)| (k, v))
                .collect();
            for (k, v) in moved {
                self.sparse.remove(&k);
                self.dense[k as usize] = v;
            }
        }
    }
}

/// A set of oids.
#[derive(Debug, Default, Clone)]
pub(crate) struct OidSet(OidMap);

impl OidSet {
    pub(crate) fn new() -> Self {
        Self::default()
    }

    pub(crate) fn contains(&self, oid: Oid) -> bool {
        self.0.contains(oid)
    }

    /// Adds `oid`; false if it was there already.
    pub(crate) fn insert(&mut self, oid: Oid) -> bool {
        self.0.insert(oid, 0).is_none()
    }

    pub(crate) fn remove(&mut self, oid: Oid) -> bool {
        self.0.remove(oid).is_some()
    }

    /// Empties the set, returning its oids in ascending order.
    pub(crate) fn take_sorted(&mut self) -> Vec<Oid> {
        let mut oids: Vec<Oid> = self.0.iter().map(|(oid, _)| oid).collect();
        oids.sort_unstable();
        self.0.clear();
        oids
    }
}

impl Extend<Oid> for OidSet {
    fn extend<I: IntoIterator<Item = Oid>>(&mut self, iter: I) {
        for oid in iter {
            self.insert(oid);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn huge_oids_stay_sparse_and_move_dense_when_the_range_grows() {
        let mut m = OidMap::new();
        m.insert(Oid(1 << 40), 7);
        assert!(m.dense.len() < 1 << 20);
        assert_eq!(m.get(Oid(1 << 40)), Some(7));
        m.insert(Oid(100_000), 1);
        assert_eq!(m.sparse.len(), 2);
        for i in 0..50_000 {
            m.insert(Oid(i), i);
        }
        assert_eq!(m.get(Oid(100_000)), Some(1));
        assert_eq!(m.len(), 50_002);
    }

    proptest! {
        #[test]
        fn oid_map_behaves_like_a_hash_map(ops: Vec<(bool, u32, u32)>) {
            let mut m = OidMap::new();
            let mut model = HashMap::new();
            for (insert, key, value) in ops {
                // Mix dense and far-out keys.
                let key = if key % 7 == 0 { u64::from(key) << 20 } else { u64::from(key % 100_000) };
                if insert {
                    prop_assert_eq!(m.insert(Oid(key), u64::from(value)), model.insert(key, u64::from(value)));
                } else {
                    prop_assert_eq!(m.remove(Oid(key)), model.remove(&key));
                }
                prop_assert_eq!(m.len(), model.len());
            }
            let mut got: Vec<(u64, u64)> = m.iter().map(|(o, v)| (o.0, v)).collect();
            let mut want: Vec<(u64, u64)> = model.into_iter().collect();
            got.sort_unstable();
            want.sort_unstable();
            prop_assert_eq!(got, want);
        }
    }
}
