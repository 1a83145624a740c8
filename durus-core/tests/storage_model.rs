//! Model-based test: any sequence of commits, packs and reopens on a
//! FileStorage (and a MemoryStorage) gives the same records as a simple
//! map, and a pack keeps exactly what the root reaches.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use durus_core::format::{record, Record};
use durus_core::{FileStorage, MemoryStorage, Oid, Storage, StorageExt};
use proptest::prelude::*;

#[derive(Debug, Clone)]
enum Op {
    /// Writes: (pick an existing oid or allocate, picks for refs, body size).
    Commit(Vec<(Option<u8>, Vec<u8>, u8)>),
    Pack,
    Reopen,
}

fn op() -> impl Strategy<Value = Op> {
    let write = (
        proptest::option::of(any::<u8>()),
        proptest::collection::vec(any::<u8>(), 0..4),
        any::<u8>(),
    );
    prop_oneof![
        6 => proptest::collection::vec(write, 1..6).prop_map(Op::Commit),
        1 => Just(Op::Pack),
        1 => Just(Op::Reopen),
    ]
}

fn reachable(model: &BTreeMap<Oid, Vec<u8>>) -> BTreeSet<Oid> {
    let mut seen = BTreeSet::new();
    let mut queue = VecDeque::new();
    if model.contains_key(&Oid::ROOT) {
        seen.insert(Oid::ROOT);
        queue.push_back(Oid::ROOT);
    }
    while let Some(oid) = queue.pop_front() {
        for r in Record::decode(&model[&oid]).unwrap().refs() {
            if model.contains_key(&r) && seen.insert(r) {
                queue.push_back(r);
            }
        }
    }
    seen
}

/// Applies `ops` to `storage` and the model; `reopen` rebuilds the storage.
fn run(ops: &[Op], storage: &mut Box<dyn Storage>, reopen: &mut dyn FnMut() -> Box<dyn Storage>) {
    let mut model: BTreeMap<Oid, Vec<u8>> = BTreeMap::new();
    let mut serial = 0u32;
    for op in ops {
        match op {
            Op::Commit(writes) => {
                storage.begin().unwrap();
                let mut staged = BTreeMap::new();
                for (pick, ref_picks, size) in writes {
                    let known: Vec<Oid> = model.keys().copied().collect();
                    let oid = match pick {
                        Some(p) if !known.is_empty() => known[*p as usize % known.len()],
                        _ if !model.contains_key(&Oid::ROOT)
                            && !staged.contains_key(&Oid::ROOT) =>
                        {
                            let oid = storage.new_oid().unwrap();
                            if oid != Oid::ROOT {
                                Oid::ROOT
                            } else {
                                oid
                            }
                        }
                        _ => storage.new_oid().unwrap(),
                    };
                    let mut refs: Vec<Oid> = ref_picks
                        .iter()
                        .filter(|_| !known.is_empty())
                        .map(|p| known[*p as usize % known.len()])
                        .filter(|&r| r != oid)
                        .collect();
                    refs.sort_unstable();
                    refs.dedup();
                    serial += 1;
                    let body = format!("{serial}:{}", "b".repeat(*size as usize));
                    let rec = record::encode(oid, body.as_bytes(), &refs).unwrap();
                    storage.store(oid, rec.clone()).unwrap();
                    staged.insert(oid, rec);
                }
                storage.end(&mut |_| Ok(())).unwrap();
                model.extend(staged);
            }
            Op::Pack => {
                let live = reachable(&model);
                let report = storage.pack().unwrap();
                let removed: BTreeSet<Oid> = model
                    .keys()
                    .filter(|o| !live.contains(o))
                    .copied()
                    .collect();
                assert_eq!(
                    report.removed.iter().copied().collect::<BTreeSet<_>>(),
                    removed
                );
                model.retain(|oid, _| live.contains(oid));
                storage.sync().unwrap();
            }
            Op::Reopen => {
                storage.close().unwrap();
                *storage = reopen();
            }
        }
        for (oid, rec) in &model {
            assert_eq!(&storage.load(*oid).unwrap(), rec, "oid {oid}");
        }
        let stored: BTreeSet<Oid> = storage.records().unwrap().map(|r| r.unwrap().0).collect();
        assert_eq!(stored, model.keys().copied().collect());
        if model.contains_key(&Oid::ROOT) {
            let walked: BTreeSet<Oid> = storage.walk(Oid::ROOT).map(|r| r.unwrap().0).collect();
            assert_eq!(walked, reachable(&model));
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn file_storage_matches_the_model(ops in proptest::collection::vec(op(), 1..25)) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("model.durus");
        let open = || -> Box<dyn Storage> {
            Box::new(FileStorage::options().fsync(false).open(&path).unwrap())
        };
        let mut storage = open();
        run(&ops, &mut storage, &mut { open });
    }

    #[test]
    fn memory_storage_matches_the_model(ops in proptest::collection::vec(op(), 1..25)) {
        let ops: Vec<Op> = ops.into_iter().filter(|o| !matches!(o, Op::Reopen)).collect();
        let mut storage: Box<dyn Storage> = Box::new(MemoryStorage::new());
        run(&ops, &mut storage, &mut || unreachable!("no reopen for memory"));
    }
}
