//! `Connection::crawl`: every object reachable from a start, breadth
//! first, fetched in batches (Durus's `Connection.get_crawler`, spec 9.3).

use std::collections::VecDeque;
use std::rc::Rc;

use crate::error::Result;
use crate::format::{Oid, Record};
use crate::object::cache::OidSet;
use crate::object::cell::Status;
use crate::object::connection::{class_of, ConnInner};
use crate::object::{Connection, PObject};

/// The objects reachable from a start oid, breadth first, each once; see
/// [`Connection::crawl`]. It borrows the connection: a crawl cannot
/// outlive it (nor keep its storage open).
pub struct Crawler<'c> {
    conn: &'c Rc<ConnInner>,
    /// Oids found and not fetched yet, in breadth-first order.
    queue: VecDeque<Oid>,
    /// Every oid ever queued: each is fetched and yielded once.
    seen: OidSet,
    /// The fetched batch, not yielded yet.
    ready: VecDeque<PObject>,
    batch_size: usize,
    /// Set after an error: the walk cannot go on without the records.
    failed: bool,
}

impl Connection {
    /// Walks the object graph breadth first from `start`, following the
    /// references each stored record lists, and yields every object
    /// reached, once, `start` first. Records are fetched `batch_size` at a
    /// time (at most the cache size) with one bulk load each, a round trip
    /// to a server per batch rather than per object; a yielded object's
    /// state then loads from the fetched record when it is first used
    /// (until the transaction ends).
    ///
    /// Memory stays bounded by a batch of records plus the set of oids
    /// seen. The graph is the stored one: changes not committed yet are
    /// not followed. An error (a missing record, a conflict) ends the walk.
    ///
    /// ```
    /// use durus_core::{Connection, MemoryStorage, Oid, PObject, PRef, PersistentList};
    /// let conn = Connection::new(MemoryStorage::new())?;
    /// let list = PRef::new(PersistentList::from_iter([1u32, 2]));
    /// conn.root().insert("list".into(), PObject::from(list))?;
    /// conn.commit()?;
    /// let oids: Vec<Oid> = conn
    ///     .crawl(Oid::ROOT, 100)
    ///     .map(|obj| obj.map(|o| o.oid().unwrap()))
    ///     .collect::<durus_core::Result<_>>()?;
    /// assert_eq!(oids, [Oid::ROOT, Oid(1)]);
    /// # Ok::<(), durus_core::Error>(())
    /// ```
    pub fn crawl(&self, start: Oid, batch_size: usize) -> Crawler<'_> {
        Crawler {
            conn: self.inner(),
            queue: VecDeque::from([start]),
            seen: OidSet::from_iter([start]),
            ready: VecDeque::new(),
            batch_size,
            failed: false,
        }
    }
}

impl Crawler<'_> {
    /// Fetches the next batch of queued oids into `ready`, queueing the
    /// oids their records refer to.
    fn fetch_batch(&mut self) -> Result<()> {
        // The prefetch buffer keeps at most the cache size: a larger batch
        // would push out its own first records before they are used.
        let n = self.batch_size.min(self.conn.prefetch_capacity()).max(1);
        let batch: Vec<Oid> = self.queue.drain(..n.min(self.queue.len())).collect();
        let records = self.conn.fetch_records(&batch)?;
        for (oid, record) in batch.into_iter().zip(records) {
            let rec = Record::decode(&record)?;
            for r in rec.refs() {
                if self.seen.insert(r) {
                    self.queue.push_back(r);
                }
            }
            let cell = self.conn.cell_for(oid, class_of(&rec));
            if cell.status.get() == Status::Ghost {
                self.conn.buffer_record(oid, record);
            }
            self.ready.push_back(PObject::from_cell(cell));
        }
        Ok(())
    }
}

impl Iterator for Crawler<'_> {
    type Item = Result<PObject>;

    fn next(&mut self) -> Option<Result<PObject>> {
        if self.ready.is_empty() && !self.queue.is_empty() && !self.failed {
            if let Err(e) = self.fetch_batch() {
                self.failed = true;
                self.ready.clear();
                return Some(Err(e));
            }
        }
        self.ready.pop_front().map(Ok)
    }
}
