//! The base transaction's offset map, read from the file by pages on
//! demand.
//!
//! Durus keeps the map on disk and reads one word per lookup (spec 4.4,
//! 4.5), so opening a packed file costs the same whatever its size. So
//! does opening one here: the open reads only the map's header. A lookup
//! reads the page of words holding its oid the first time (one `pread` of
//! [`PAGE_BYTES`]) and keeps it; a map never looked up costs no memory. A
//! walk over every entry (stats, a pack) reads the missing pages in runs
//! of [`RUN_BYTES`]. What the words mean (decoding, the hole chain) is the
//! format layer's ([`MapHeader`]); this module only decides what to read
//! when.
//!
//! The pages are filled through `&self` (`OnceLock` per page), so lookups
//! that only read the storage need no `&mut`, and a pack running on
//! another thread shares the pages it reads with the storage it packs.

use std::path::Path;
use std::sync::OnceLock;

use crate::error::{Error, Result};
use crate::format::shelf::{word_in, MapHeader, OffsetMap};
use crate::format::Oid;
use crate::storage::file_io::FileIo;

/// Bytes of words a lookup reads at once. Measured on a 3 MiB map (1M
/// records, W = 3) in the OS cache: a `pread` of 4 KiB takes 0.6 µs, of
/// 8 KiB 0.7, of 16 KiB 1.0, of 64 KiB 2.6; so 8 KiB costs a first lookup
/// about what 4 KiB does, and reads a whole map in half as many calls
/// (0.27 ms against 0.5). Random loads on a freshly opened 1M-record file
/// (`cargo bench --bench storage -- --only load`) do not tell 4-64 KiB
/// apart: the record reads dominate.
pub(super) const PAGE_BYTES: u64 = 8 << 10;

/// Most bytes a walk over every entry reads at once (runs of missing pages).
const RUN_BYTES: u64 = 1 << 20;

/// One page of words, once read.
type Page = OnceLock<Box<[u8]>>;

/// The offset map of an open file's base transaction.
pub(super) struct BaseMap {
    header: MapHeader,
    /// Words per page (a page never splits a word).
    page_words: u64,
    /// One slot per page, allocated by the first lookup.
    pages: OnceLock<Box<[Page]>>,
}

impl std::fmt::Debug for BaseMap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BaseMap")
            .field("header", &self.header)
            .field("page_words", &self.page_words)
            .field("pages_read", &self.pages_read())
            .finish()
    }
}

impl BaseMap {
    /// The map whose `header` was read from the file: no word read yet.
    pub(super) fn on_disk(header: MapHeader) -> BaseMap {
        BaseMap::with_page_bytes(header, PAGE_BYTES)
    }

    /// As [`on_disk`](Self::on_disk) with pages of about `page_bytes`
    /// (at least one word).
    pub(super) fn with_page_bytes(header: MapHeader, page_bytes: u64) -> BaseMap {
        BaseMap {
            header,
            page_words: (page_bytes / header.width()).max(1),
            pages: OnceLock::new(),
        }
    }

    /// A map already in memory (one a pack just wrote): every page is
    /// filled, so lookups never read.
    pub(super) fn in_memory(map: OffsetMap) -> BaseMap {
        let (header, words) = map.into_parts();
        let base = BaseMap::on_disk(header);
        let page_len = (base.page_words * header.width()) as usize;
        let pages = words
            .chunks(page_len)
            .map(|chunk| OnceLock::from(Box::from(chunk)))
            .collect();
        // A fresh map's slots are unset: this cannot fail.
        let _ = base.pages.set(pages);
        base
    }

    /// An empty map (that of a new file; a closed storage's).
    pub(super) fn empty() -> BaseMap {
        BaseMap::in_memory(OffsetMap::build(
            crate::format::shelf::BASE_BODY_OFFSET,
            &[],
        ))
    }

    /// N, the number of words.
    pub(super) fn count(&self) -> u64 {
        self.header.count()
    }

    /// How many pages of words have been read (or were given).
    pub(super) fn pages_read(&self) -> usize {
        self.pages
            .get()
            .map_or(0, |p| p.iter().filter(|s| s.get().is_some()).count())
    }

    /// Offset of the base shelf record for `oid`, if the base holds it,
    /// reading its page from `file` the first time.
    pub(super) fn get(&self, file: &dyn FileIo, path: &Path, oid: Oid) -> Result<Option<u64>> {
        if oid.0 >= self.header.count() {
            return Ok(None);
        }
        Ok(self.header.record_offset(self.word(file, path, oid.0)?))
    }

    /// Oids present in the base, ascending, with their offsets. Reads
    /// every page not read yet first.
    pub(super) fn entries(
        &self,
        file: &dyn FileIo,
        path: &Path,
    ) -> Result<impl Iterator<Item = (Oid, u64)> + '_> {
        let pages = self.all_pages(file, path)?;
        let page_words = self.page_words;
        Ok(pages
            .into_iter()
            .enumerate()
            .flat_map(move |(p, words)| self.header.entries_in(p as u64 * page_words, words)))
    }

    /// The hole chain in Durus's `gen_holes` order (see
    /// [`MapHeader::holes`]), reading the pages it passes through.
    pub(super) fn holes(&self, file: &dyn FileIo, path: &Path) -> Result<Vec<Oid>> {
        self.header
            .holes(|i| self.word(file, path, i))
            .map_err(|e| e.in_file(path))
    }

    /// Word `i` (< N), `None` when blank.
    fn word(&self, file: &dyn FileIo, path: &Path, i: u64) -> Result<Option<u64>> {
        let page = self.page(file, path, i / self.page_words)?;
        Ok(word_in(page, self.header.width(), i % self.page_words))
    }

    fn page_count(&self) -> u64 {
        self.header.count().div_ceil(self.page_words)
    }

    fn slots(&self) -> &[Page] {
        self.pages
            .get_or_init(|| (0..self.page_count()).map(|_| OnceLock::new()).collect())
    }

    /// Page `p`'s words, read from `file` unless already there.
    fn page(&self, file: &dyn FileIo, path: &Path, p: u64) -> Result<&[u8]> {
        let slot = self.slots().get(p as usize).ok_or_else(|| Error::Corrupt {
            path: path.into(),
            offset: self.header.start(),
            detail: format!("offset map page {p} is past its {} words", self.count()),
        })?;
        if let Some(words) = slot.get() {
            return Ok(words);
        }
        let words = self.read_run(file, path, p, 1)?;
        Ok(slot.get_or_init(|| words.into_boxed_slice()))
    }

    /// Every page, reading the missing ones in runs of up to
    /// [`RUN_BYTES`].
    fn all_pages(&self, file: &dyn FileIo, path: &Path) -> Result<Vec<&[u8]>> {
        let slots = self.slots();
        let page_len = (self.page_words * self.header.width()) as usize;
        let run_pages = (RUN_BYTES as usize / page_len).max(1);
        let mut p = 0;
        while p < slots.len() {
            if slots[p].get().is_some() {
                p += 1;
                continue;
            }
            let run = slots[p..]
                .iter()
                .take(run_pages)
                .take_while(|s| s.get().is_none())
                .count();
            let words = self.read_run(file, path, p as u64, run as u64)?;
            for (slot, chunk) in slots[p..p + run].iter().zip(words.chunks(page_len)) {
                // Set by a concurrent lookup meanwhile: the same bytes.
                let _ = slot.set(Box::from(chunk));
            }
            p += run;
        }
        slots
            .iter()
            .enumerate()
            .map(|(p, slot)| {
                slot.get().map(|w| &w[..]).ok_or_else(|| Error::Corrupt {
                    path: path.into(),
                    offset: self.header.start(),
                    detail: format!("offset map page {p} was not read"),
                })
            })
            .collect()
    }

    /// The words of pages `first..first + n` (the last page of the map is
    /// shorter), in one read. A file that ends before them is corrupt: the
    /// open checked that the map fits, so it was truncated since.
    fn read_run(&self, file: &dyn FileIo, path: &Path, first: u64, n: u64) -> Result<Vec<u8>> {
        let first_word = first * self.page_words;
        let words = (n * self.page_words).min(self.count().saturating_sub(first_word));
        let offset = self.header.word_offset(first_word);
        let mut buf = vec![0u8; (words * self.header.width()) as usize];
        let got = file.read_up_to(&mut buf, offset).map_err(|e| {
            Error::io(
                format!(
                    "cannot read the offset map words at offset {offset} of {}",
                    path.display()
                ),
                e,
            )
        })?;
        if got < buf.len() {
            return Err(Error::Corrupt {
                path: path.into(),
                offset,
                detail: format!(
                    "the file ends {got} bytes into the {} bytes of offset map words here",
                    buf.len()
                ),
            });
        }
        Ok(buf)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::shelf::MAP_HEADER_LEN;
    use proptest::prelude::*;
    use std::cell::{Cell, RefCell};
    use std::io;

    /// The map of `offsets` as a file holds it at `start`, without the
    /// bytes before it (S may be huge), counting reads; reads at or past
    /// `fail_from` fail.
    struct MapFile {
        start: u64,
        bytes: Vec<u8>,
        reads: Cell<usize>,
        fail_from: Cell<u64>,
        asked: RefCell<Vec<(u64, usize)>>,
    }

    impl MapFile {
        fn new(map: &OffsetMap) -> MapFile {
            let mut bytes = Vec::new();
            map.encode_into(&mut bytes);
            MapFile {
                start: map.start(),
                bytes,
                reads: Cell::new(0),
                fail_from: Cell::new(u64::MAX),
                asked: RefCell::new(Vec::new()),
            }
        }

        fn len(&self) -> u64 {
            self.start + self.bytes.len() as u64
        }

        /// The header as an open reads and checks it.
        fn header(&self) -> MapHeader {
            let header: [u8; 24] = self.bytes[..24].try_into().unwrap();
            MapHeader::parse(self.start, &header, self.len()).unwrap()
        }
    }

    impl FileIo for MapFile {
        fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
            self.reads.set(self.reads.get() + 1);
            self.asked.borrow_mut().push((offset, buf.len()));
            if offset >= self.fail_from.get() {
                return Err(io::Error::from_raw_os_error(5)); // EIO
            }
            let from = (offset - self.start) as usize;
            let from = from.min(self.bytes.len());
            let n = buf.len().min(self.bytes.len() - from);
            buf[..n].copy_from_slice(&self.bytes[from..from + n]);
            Ok(n)
        }
        fn write_all_at(&mut self, _: &[u8], _: u64) -> io::Result<()> {
            unreachable!("the map only reads")
        }
        fn size(&self) -> io::Result<u64> {
            Ok(self.len())
        }
        fn set_len(&mut self, _: u64) -> io::Result<()> {
            unreachable!("the map only reads")
        }
        fn sync_data(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    fn path() -> &'static Path {
        Path::new("map.durus")
    }

    /// oids 0..=9 present at 16 + 100 * oid, except 3 and 7; S = 2000
    /// (W = 2), so 8-byte pages hold 4 words.
    fn small() -> (OffsetMap, MapFile) {
        let offsets: Vec<Option<u64>> = (0..10u64)
            .map(|i| (i != 3 && i != 7).then_some(16 + 100 * i))
            .collect();
        let map = OffsetMap::build(2000, &offsets);
        let file = MapFile::new(&map);
        (map, file)
    }

    #[test]
    fn a_lookup_reads_its_page_once_and_only_its_page() {
        let (_, file) = small();
        let lazy = BaseMap::with_page_bytes(file.header(), 8);
        assert_eq!((lazy.count(), lazy.pages_read()), (11, 0));
        assert_eq!(lazy.get(&file, path(), Oid(5)).unwrap(), Some(516));
        assert_eq!(file.reads.get(), 1);
        // Words 4..8 are page 1: 8 bytes after the header and page 0.
        assert_eq!(
            file.asked.borrow()[0],
            (2000 + MAP_HEADER_LEN + 8, 8),
            "one page, at its offset"
        );
        assert_eq!(lazy.get(&file, path(), Oid(4)).unwrap(), Some(416));
        assert_eq!(lazy.get(&file, path(), Oid(7)).unwrap(), None);
        assert_eq!(file.reads.get(), 1, "the page is kept");
        // Past N: no read at all.
        assert_eq!(lazy.get(&file, path(), Oid(11)).unwrap(), None);
        assert_eq!(lazy.get(&file, path(), Oid(u64::MAX)).unwrap(), None);
        assert_eq!(file.reads.get(), 1);
        // The last page is short: words 8..11, 6 bytes.
        assert_eq!(lazy.get(&file, path(), Oid(9)).unwrap(), Some(916));
        assert_eq!(file.asked.borrow()[1], (2000 + MAP_HEADER_LEN + 16, 6));
        assert_eq!(lazy.pages_read(), 2);
    }

    #[test]
    fn a_walk_over_every_entry_reads_the_missing_pages_in_one_run() {
        let (eager, file) = small();
        let lazy = BaseMap::with_page_bytes(file.header(), 8);
        lazy.get(&file, path(), Oid(0)).unwrap();
        let entries: Vec<(Oid, u64)> = lazy.entries(&file, path()).unwrap().collect();
        assert_eq!(entries, eager.entries().collect::<Vec<_>>());
        // Page 0 by the lookup, pages 1 and 2 together by the walk.
        assert_eq!(
            *file.asked.borrow(),
            [(2000 + MAP_HEADER_LEN, 8), (2000 + MAP_HEADER_LEN + 8, 14)]
        );
        assert_eq!(lazy.pages_read(), 3);
        lazy.entries(&file, path()).unwrap().count();
        assert_eq!(file.reads.get(), 2, "nothing read twice");
    }

    #[test]
    fn a_map_in_memory_never_reads() {
        let (eager, file) = small();
        let lazy = BaseMap::in_memory(eager.clone());
        file.fail_from.set(0);
        assert_eq!(lazy.get(&file, path(), Oid(9)).unwrap(), Some(916));
        assert_eq!(lazy.holes(&file, path()).unwrap(), eager.holes().unwrap());
        assert_eq!(lazy.entries(&file, path()).unwrap().count(), 8);
        assert_eq!(file.reads.get(), 0);
        let empty = BaseMap::empty();
        assert_eq!(empty.count(), 0);
        assert_eq!(empty.entries(&file, path()).unwrap().count(), 0);
        assert_eq!(empty.holes(&file, path()).unwrap(), vec![]);
    }

    #[test]
    fn a_failed_page_read_is_an_io_error_with_file_and_offset_and_is_retried() {
        let (_, file) = small();
        let lazy = BaseMap::with_page_bytes(file.header(), 8);
        file.fail_from.set(0);
        let page_1 = 2000 + MAP_HEADER_LEN + 8;
        let err = lazy.get(&file, path(), Oid(5)).unwrap_err();
        match &err {
            Error::Io { context, .. } => {
                assert!(context.contains(&format!("offset {page_1}")), "{context}");
                assert!(context.contains("map.durus"), "{context}");
            }
            other => panic!("expected an I/O error, got {other:?}"),
        }
        assert!(lazy.entries(&file, path()).is_err());
        assert!(lazy.holes(&file, path()).is_err());
        assert_eq!(lazy.pages_read(), 0, "a failed read keeps nothing");
        file.fail_from.set(u64::MAX);
        assert_eq!(lazy.get(&file, path(), Oid(5)).unwrap(), Some(516));
    }

    #[test]
    fn words_cut_off_after_the_open_are_corrupt_at_the_page_offset() {
        let (eager, mut file) = small();
        let header = file.header();
        // The file loses its last 4 bytes after the open checked it.
        file.bytes.truncate(file.bytes.len() - 4);
        let lazy = BaseMap::with_page_bytes(header, 8);
        // Pages 0 and 1 are whole still.
        assert_eq!(lazy.get(&file, path(), Oid(2)).unwrap(), eager.get(Oid(2)));
        assert_eq!(lazy.get(&file, path(), Oid(6)).unwrap(), eager.get(Oid(6)));
        let page_2 = 2000 + MAP_HEADER_LEN + 16;
        for err in [
            lazy.get(&file, path(), Oid(8)).unwrap_err(),
            lazy.entries(&file, path()).map(|_| ()).unwrap_err(),
            // The chain starts at N-1, in the cut page.
            lazy.holes(&file, path()).unwrap_err(),
        ] {
            match err {
                Error::Corrupt {
                    path,
                    offset,
                    detail,
                } => {
                    assert_eq!(path, Path::new("map.durus"));
                    assert_eq!(offset, page_2);
                    assert!(detail.contains("ends 2 bytes into the 6 bytes"), "{detail}");
                }
                other => panic!("expected corruption, got {other:?}"),
            }
        }
    }

    /// Offsets of present oids (below S) and absent ones, S (wide enough
    /// for W from 1 to 8) and a page size of 1 to 40 bytes (a few words).
    fn map_cases() -> impl Strategy<Value = (u64, Vec<Option<u64>>, u64)> {
        let start = prop_oneof![
            16u64..200,
            200u64..70_000,
            (1u64 << 20)..(1 << 40),
            (1u64 << 40)..(1 << 62),
        ];
        (
            start,
            prop::collection::vec(prop::option::weighted(0.7, any::<u64>()), 0..200),
            1u64..40,
        )
            .prop_map(|(start, raw, page)| {
                let offsets = raw.into_iter().map(|o| o.map(|v| v % start)).collect();
                (start, offsets, page)
            })
    }

    proptest! {
        #[test]
        fn lazy_lookups_agree_with_the_eager_map(
            (start, offsets, page) in map_cases(),
            probe in prop::collection::vec(any::<u16>(), 0..50),
        ) {
            let eager = OffsetMap::build(start, &offsets);
            let file = MapFile::new(&eager);
            let n = eager.count();

            // Lookups in random order first, then the walks.
            let lazy = BaseMap::with_page_bytes(file.header(), page);
            for p in probe {
                let oid = Oid(u64::from(p) % (n + 3));
                prop_assert_eq!(lazy.get(&file, path(), oid).unwrap(), eager.get(oid));
            }
            for i in 0..n + 3 {
                prop_assert_eq!(lazy.get(&file, path(), Oid(i)).unwrap(), eager.get(Oid(i)));
            }
            let entries: Vec<_> = lazy.entries(&file, path()).unwrap().collect();
            prop_assert_eq!(entries, eager.entries().collect::<Vec<_>>());
            prop_assert_eq!(lazy.holes(&file, path()).unwrap(), eager.holes().unwrap());

            // The walks first, on a map with nothing read.
            let fresh = BaseMap::with_page_bytes(file.header(), page);
            prop_assert_eq!(fresh.holes(&file, path()).unwrap(), eager.holes().unwrap());
            let entries: Vec<_> = fresh.entries(&file, path()).unwrap().collect();
            prop_assert_eq!(entries, eager.entries().collect::<Vec<_>>());
            let pages = n.div_ceil((page / eager.width()).max(1)) as usize;
            prop_assert_eq!(fresh.pages_read(), pages);

            // And the map a pack hands over, already in memory.
            let given = BaseMap::in_memory(eager.clone());
            let entries: Vec<_> = given.entries(&file, path()).unwrap().collect();
            prop_assert_eq!(entries, eager.entries().collect::<Vec<_>>());
            prop_assert_eq!(given.holes(&file, path()).unwrap(), eager.holes().unwrap());
        }
    }
}
