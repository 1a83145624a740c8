//! The object cache (spec 9.7): oid → cell, weakly; recently accessed
//! objects strongly; least recently used saved objects ghosted when the
//! cache holds more than its size. Also the buffer of records fetched
//! ahead of their loads ([`Prefetched`]).
//!
//! Durus shrinks only at the end of a transaction, so one transaction that
//! reads a million objects keeps a million states in memory. Here a load
//! also shrinks once the loads since the last shrink exceed the cache
//! size ([`Cache::note_load`]); such a mid-transaction shrink may ghost
//! objects the transaction has read, and remembers their oids so that
//! conflicts are detected exactly as if they were still cached
//! ([`Cache::read_and_evicted`]).

use std::collections::{HashSet, VecDeque};
use std::hash::BuildHasherDefault;
use std::rc::{Rc, Weak};

use crate::format::oid::{OidHashMap, OidHasher};
use crate::format::Oid;
use crate::object::cell::{ObjectCell, Status};

/// A set of oids hashed with [`OidHasher`].
pub(crate) type OidSet = HashSet<Oid, BuildHasherDefault<OidHasher>>;

/// Dead weak entries are purged once the map has grown to twice its live
/// size at the last purge, and never below this many entries: each purge
/// costs O(entries) and is paid for by as many insertions.
const PURGE_FLOOR: usize = 1024;

pub(crate) struct Cache {
    objects: OidHashMap<Weak<ObjectCell>>,
    /// Cells alive in this cache's connection, kept exact by the cells
    /// (shared with the connection's [`Link`](crate::object::cell::Link)).
    live: Rc<std::cell::Cell<usize>>,
    /// Live entries of `objects` at the last purge of dead ones.
    live_at_purge: usize,
    /// Live cells (estimated) after the last shrink.
    live_at_shrink: usize,
    /// Accessed objects with the serial of the access, kept alive until
    /// the cache shrinks past them. A cell is pushed once per transaction
    /// that accesses it; entries whose serial is no longer the cell's are
    /// stale and dropped when the list is compacted. Serials never
    /// decrease along the list: the front is the least recently used.
    recent: Vec<(u64, Rc<ObjectCell>)>,
    size: usize,
    /// States loaded since the last shrink.
    loads: usize,
    /// Oids of objects accessed in the current transaction and then
    /// ghosted by a mid-transaction shrink: still "accessed" for conflicts.
    read_evicted: OidSet,
}

impl Cache {
    pub(crate) fn new(size: usize) -> Self {
        Cache {
            objects: OidHashMap::default(),
            live: Rc::new(std::cell::Cell::new(0)),
            live_at_purge: 0,
            live_at_shrink: 0,
            recent: Vec::new(),
            size: size.max(1),
            loads: 0,
            read_evicted: OidSet::default(),
        }
    }

    pub(crate) fn size(&self) -> usize {
        self.size
    }

    pub(crate) fn set_size(&mut self, size: usize) {
        self.size = size.max(1);
    }

    pub(crate) fn get(&self, oid: Oid) -> Option<Rc<ObjectCell>> {
        self.objects.get(&oid).and_then(Weak::upgrade)
    }

    pub(crate) fn insert(&mut self, oid: Oid, cell: &Rc<ObjectCell>) {
        self.objects.insert(oid, Rc::downgrade(cell));
        self.purge_if_grown();
    }

    /// The live cell for `oid`, or a new one from `make`, cached (one hash
    /// lookup: every reference decoded comes through here).
    pub(crate) fn get_or_insert_with(
        &mut self,
        oid: Oid,
        make: impl FnOnce() -> Rc<ObjectCell>,
    ) -> Rc<ObjectCell> {
        let slot = self.objects.entry(oid).or_default();
        if let Some(cell) = slot.upgrade() {
            return cell;
        }
        let cell = make();
        *slot = Rc::downgrade(&cell);
        self.purge_if_grown();
        cell
    }

    /// A dead entry still holds its cell's allocation: purge them as the
    /// map grows, not only when someone counts.
    fn purge_if_grown(&mut self) {
        if self.objects.len() >= 2 * self.live_at_purge.max(PURGE_FLOOR) {
            self.purge();
        }
    }

    /// Forgets the cell cached for `oid` (it stays alive in `recent` until
    /// the next shrink; nothing finds it by oid any more).
    pub(crate) fn remove(&mut self, oid: Oid) {
        self.objects.remove(&oid);
    }

    /// Notes the first access of `cell` in the transaction `serial`.
    pub(crate) fn note_access(&mut self, serial: u64, cell: &Rc<ObjectCell>) {
        self.recent.push((serial, cell.clone()));
    }

    /// Notes that a state is about to be loaded; true when a
    /// mid-transaction shrink is due. That is after more loads than the
    /// cache size, or than the live cells at the last shrink if those are
    /// more: a shrink costs O(live cells), so it runs at most once per as
    /// many loads.
    pub(crate) fn note_load(&mut self) -> bool {
        self.loads += 1;
        self.loads > self.size.max(self.live_at_shrink)
    }

    /// Whether `oid` was accessed in the current transaction and then
    /// ghosted by a mid-transaction shrink.
    pub(crate) fn read_and_evicted(&self, oid: Oid) -> bool {
        self.read_evicted.contains(&oid)
    }

    /// Forgets the transaction's evicted reads (at its commit or abort).
    pub(crate) fn end_transaction(&mut self) {
        self.read_evicted = OidSet::default();
    }

    /// Live cells (ghosts included), after dropping dead entries.
    pub(crate) fn count(&self) -> usize {
        self.live.get()
    }

    /// The counter the connection's cells keep.
    pub(crate) fn live_counter(&self) -> Rc<std::cell::Cell<usize>> {
        self.live.clone()
    }

    fn purge(&mut self) {
        self.objects.retain(|_, w| w.strong_count() > 0);
        self.live_at_purge = self.objects.len();
    }

    /// Ghosts least recently used saved objects not accessed in the current
    /// transaction until about `size` cells are live (Durus's shrink, run
    /// at the end of a transaction).
    pub(crate) fn shrink(&mut self, current_serial: u64) {
        self.evict(current_serial, false)
    }

    /// Like [`Cache::shrink`], but also ghosts objects accessed in the
    /// current transaction, when that is safe: saved (a changed object
    /// keeps its change) and not borrowed right now (a `read` or `write`
    /// closure may be running on it). Their oids are remembered until the
    /// transaction ends.
    pub(crate) fn shrink_within(&mut self, current_serial: u64) {
        self.evict(current_serial, true)
    }

    fn evict(&mut self, current_serial: u64, within: bool) {
        self.loads = 0;
        self.compact();
        if self.count() > self.size {
            self.evict_until_size(current_serial, within);
        }
        self.live_at_shrink = self.count();
    }

    /// Ghosts least recently used objects that may go, dropping our
    /// references to them, until no more than `size` cells are alive (the
    /// count falls as cells are freed, those a ghosted state held
    /// included).
    fn evict_until_size(&mut self, current_serial: u64, within: bool) {
        let mut entries = std::mem::take(&mut self.recent).into_iter();
        let mut kept = Vec::new();
        while self.live.get() > self.size {
            let Some((serial, cell)) = entries.next() else {
                break;
            };
            if cell.serial.get() != serial {
                continue; // stale: the cell has a later entry
            }
            if serial == current_serial {
                if !within || cell.status.get() == Status::Unsaved || !cell.ghostify() {
                    // In use: changed, or borrowed (tried again next time).
                    kept.push((serial, cell));
                    continue;
                }
                if let Some(oid) = cell.oid.get() {
                    self.read_evicted.insert(oid);
                }
                // Not accessed any more as far as the cell knows (the set
                // above says it was): a new access pushes it again, so it
                // can be evicted again.
                cell.serial.set(0);
            } else if cell.status.get() == Status::Saved {
                cell.ghostify();
            }
            // `cell` goes here: freed unless a handle or a state holds it.
        }
        kept.extend(entries);
        self.recent = kept;
    }

    /// Drops stale entries of `recent` once they are as many as the live
    /// ones (amortised: each entry is looked at O(1) times).
    fn compact(&mut self) {
        if self.recent.len() < PURGE_FLOOR || self.recent.len() < 2 * self.objects.len() {
            return;
        }
        self.recent
            .retain(|(serial, cell)| cell.serial.get() == *serial);
    }
}

/// Records fetched ahead of their loads by one bulk load
/// ([`crate::PRef::prefetch`], [`crate::Connection::crawl`]); a load takes
/// its record from here instead of asking the storage. At most `capacity`
/// records are kept, the oldest dropped first.
///
/// A buffered record is as good as a state loaded when it was fetched: the
/// connection drops the records of oids the storage reports changed
/// (invalidations), and all of them when the transaction ends.
#[derive(Default)]
pub(crate) struct Prefetched {
    /// oid → (insertion number, record).
    records: OidHashMap<(u64, Vec<u8>)>,
    /// Insertion order; entries whose number is no longer the record's
    /// (taken, or inserted again) are skipped.
    order: VecDeque<(u64, Oid)>,
    inserted: u64,
}

impl Prefetched {
    pub(crate) fn contains(&self, oid: Oid) -> bool {
        self.records.contains_key(&oid)
    }

    pub(crate) fn peek(&self, oid: Oid) -> Option<&[u8]> {
        self.records.get(&oid).map(|(_, r)| r.as_slice())
    }

    pub(crate) fn take(&mut self, oid: Oid) -> Option<Vec<u8>> {
        self.records.remove(&oid).map(|(_, r)| r)
    }

    /// Buffers `record`, dropping the oldest records beyond `capacity`.
    pub(crate) fn insert(&mut self, oid: Oid, record: Vec<u8>, capacity: usize) {
        self.inserted += 1;
        self.records.insert(oid, (self.inserted, record));
        self.order.push_back((self.inserted, oid));
        while self.records.len() > capacity.max(1) {
            let Some((n, oid)) = self.order.pop_front() else {
                break;
            };
            if self.records.get(&oid).is_some_and(|(m, _)| *m == n) {
                self.records.remove(&oid);
            }
        }
        // Taken records leave their entries behind: compact, amortised.
        if self.order.len() > 2 * self.records.len() + PURGE_FLOOR {
            let records = &self.records;
            self.order
                .retain(|(n, oid)| records.get(oid).is_some_and(|(m, _)| m == n));
        }
    }

    /// Drops the records of `oids` (changed since they were fetched).
    pub(crate) fn forget(&mut self, oids: &[Oid]) {
        if self.records.is_empty() {
            return;
        }
        for oid in oids {
            self.records.remove(oid);
        }
    }

    pub(crate) fn clear(&mut self) {
        self.records = OidHashMap::default();
        self.order = VecDeque::new();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::object::cell::Link;
    use crate::object::slot::Slot;
    use crate::object::Persistent;
    use std::cell::Cell;

    #[derive(serde::Serialize, serde::Deserialize)]
    struct Thing(u32);
    impl Persistent for Thing {
        const CLASS_NAME: &'static str = "cache.Thing";
    }

    fn link(cache: &Cache, serial: u64) -> Rc<Link> {
        Rc::new(Link {
            conn: Weak::new(),
            serial: Cell::new(serial),
            live: cache.live_counter(),
        })
    }

    /// A loaded cell for `oid`, accessed in transaction `serial`.
    fn loaded(cache: &mut Cache, oid: u64, status: Status, serial: u64) -> Rc<ObjectCell> {
        let cell = ObjectCell::new_ghost(Oid(oid), link(cache, serial), Thing::CLASS_NAME);
        *cell.state.borrow_mut() = Some(Slot::new(Thing(oid as u32)));
        cell.status.set(status);
        cell.serial.set(serial);
        cache.insert(Oid(oid), &cell);
        cache.note_access(serial, &cell);
        cell
    }

    #[test]
    fn dead_entries_are_purged_as_the_map_grows_not_only_when_counted() {
        let mut cache = Cache::new(10);
        let link = link(&cache, 1);
        for n in 0..100_000 {
            let cell = ObjectCell::new_ghost(Oid(n), link.clone(), Thing::CLASS_NAME);
            cache.insert(Oid(n), &cell);
        }
        assert!(
            cache.objects.len() < 2 * PURGE_FLOOR,
            "{}",
            cache.objects.len()
        );
    }

    #[test]
    fn a_shrink_within_a_transaction_spares_changed_and_borrowed_objects() {
        let mut cache = Cache::new(1);
        let saved = loaded(&mut cache, 1, Status::Saved, 5);
        let changed = loaded(&mut cache, 2, Status::Unsaved, 5);
        let borrowed = loaded(&mut cache, 3, Status::Saved, 5);
        let reading = borrowed.state.borrow();
        // Durus's shrink never touches what the transaction accessed.
        cache.shrink(5);
        assert_eq!(saved.status.get(), Status::Saved);
        assert!(!cache.read_and_evicted(Oid(1)));

        cache.shrink_within(5);
        assert_eq!(saved.status.get(), Status::Ghost);
        assert!(saved.state.borrow().is_none());
        assert!(cache.read_and_evicted(Oid(1)));
        assert_eq!(saved.serial.get(), 0, "a new access notes it again");
        assert_eq!(changed.status.get(), Status::Unsaved);
        assert!(changed.state.borrow().is_some());
        assert_eq!(borrowed.status.get(), Status::Saved);
        assert!(!cache.read_and_evicted(Oid(2)) && !cache.read_and_evicted(Oid(3)));

        // Once no longer borrowed, the next shrink evicts it.
        drop(reading);
        cache.shrink_within(5);
        assert_eq!(borrowed.status.get(), Status::Ghost);
        assert!(cache.read_and_evicted(Oid(3)));
        cache.end_transaction();
        assert!(!cache.read_and_evicted(Oid(1)));
    }

    #[test]
    fn a_mid_transaction_shrink_is_due_after_more_loads_than_the_cache_size() {
        let mut cache = Cache::new(3);
        assert!(!cache.note_load() && !cache.note_load() && !cache.note_load());
        assert!(cache.note_load());
        cache.shrink_within(1);
        assert!(!cache.note_load());
    }

    #[test]
    fn the_prefetch_buffer_drops_its_oldest_records_beyond_its_capacity() {
        let mut buffer = Prefetched::default();
        for n in 0..5 {
            buffer.insert(Oid(n), vec![n as u8], 3);
        }
        assert!(!buffer.contains(Oid(0)) && !buffer.contains(Oid(1)));
        assert_eq!(buffer.peek(Oid(2)), Some(&[2u8][..]));
        assert_eq!(buffer.take(Oid(3)), Some(vec![3]));
        assert_eq!(buffer.take(Oid(3)), None);
        // Inserting oid 2 again makes it the newest: oid 4 goes first.
        buffer.insert(Oid(2), vec![22], 3);
        buffer.insert(Oid(5), vec![5], 3);
        buffer.insert(Oid(6), vec![6], 3);
        assert_eq!(buffer.peek(Oid(2)), Some(&[22u8][..]));
        assert!(!buffer.contains(Oid(4)));
        buffer.forget(&[Oid(2), Oid(9)]);
        assert!(!buffer.contains(Oid(2)) && buffer.contains(Oid(5)));
    }

    #[test]
    fn the_prefetch_buffer_order_queue_stays_bounded_when_records_are_taken() {
        let mut buffer = Prefetched::default();
        for n in 0..100_000u64 {
            buffer.insert(Oid(n), Vec::new(), 10);
            buffer.take(Oid(n));
        }
        assert!(buffer.order.len() <= 2 * PURGE_FLOOR + 1);
    }
}
