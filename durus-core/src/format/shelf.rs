//! The SHELF-1 file layout of Durus's FileStorage (spec section 4).
//!
//! ```text
//! "SHELF-1\n" | T0 (int8) | base transaction body (T0 bytes) | offset map | transactions...
//! transaction  = body length (int8) | shelf records
//! shelf record = R (int8) | oid (8) | Durus record (R - 8 bytes, starting with the oid again)
//! offset map   = bytes (int8) | W (int8) | N (int8) | N words of W bytes, big-endian
//! ```
//! The offset map indexes the base transaction (written by a pack): word i
//! is the offset of oid i's shelf record when below S (the map's own
//! offset), else a hole whose value minus S links to the next lower hole.

use crate::error::{Error, Result};
use crate::format::Oid;

/// The 8-byte magic at the start of every SHELF-1 file.
pub const MAGIC: &[u8; 8] = b"SHELF-1\n";

/// Offset of the base transaction's length field.
pub const BASE_LEN_OFFSET: u64 = 8;

/// Offset of the base transaction's first shelf record.
pub const BASE_BODY_OFFSET: u64 = 16;

/// Length of the offset map header (bytes, W, N).
pub const MAP_HEADER_LEN: u64 = 24;

/// Smallest shelf record: R, the name, and a record header with no data.
pub const MIN_SHELF_RECORD_LEN: u64 = 8 + 8 + 12;

/// The 40 bytes of a brand-new, empty shelf: magic, T0 = 0 and an empty map.
pub fn empty_file() -> Vec<u8> {
    let mut out = Vec::with_capacity(40);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&0u64.to_be_bytes());
    OffsetMap::build(BASE_BODY_OFFSET, &[]).encode_into(&mut out);
    out
}

/// Appends one shelf record (length, name, record) to `out`.
pub fn push_shelf_record(out: &mut Vec<u8>, oid: Oid, record: &[u8]) {
    out.extend_from_slice(&(8 + record.len() as u64).to_be_bytes());
    out.extend_from_slice(&oid.to_bytes());
    out.extend_from_slice(record);
}

/// Reads a big-endian int8 from the first 8 bytes of `bytes`.
pub fn read_u64(bytes: &[u8]) -> u64 {
    let mut word = [0u8; 8];
    word.copy_from_slice(&bytes[..8]);
    u64::from_be_bytes(word)
}

/// Bytes needed to write `value` big-endian with leading zeros stripped
/// (at least 1).
fn bytes_needed(value: u64) -> u64 {
    (8 - (value.leading_zeros() / 8) as u64).max(1)
}

/// Decodes one offset-map word: W big-endian bytes (W = `bytes.len()`,
/// 1..=8). `None` for a blank word (all bytes `0xFF`), which holds nothing.
pub fn decode_word(bytes: &[u8]) -> Option<u64> {
    if bytes.iter().all(|&b| b == 0xFF) {
        return None;
    }
    Some(bytes.iter().fold(0u64, |acc, &b| (acc << 8) | b as u64))
}

/// Word `j` of `words`, a run of W-byte words: `None` when it is blank or
/// lies outside `words`.
pub fn word_in(words: &[u8], width: u64, j: u64) -> Option<u64> {
    let at = usize::try_from(j.checked_mul(width)?).ok()?;
    let bytes = words.get(at..at.checked_add(width as usize)?)?;
    decode_word(bytes)
}

/// The offset map's header: where the map is (S), its word width (W) and
/// word count (N). It says what every word means; the words themselves are
/// held by an [`OffsetMap`] (all of them, in memory) or read from the file
/// as needed by the storage layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MapHeader {
    /// S: where the map starts in the file (= 16 + T0).
    start: u64,
    /// W: bytes per word, 1..=8.
    width: u64,
    /// N: number of words (max base oid + 2, or 0 for an empty base).
    count: u64,
}

impl MapHeader {
    /// Parses the 24-byte map header found at `start`, checking that W is
    /// 1..=8, that its byte count agrees with W * N, and that the words fit
    /// in a file of `file_len` bytes (so nothing is allocated on the word
    /// of a damaged header).
    pub fn parse(start: u64, header: &[u8; 24], file_len: u64) -> Result<MapHeader> {
        let corrupt = |detail: String| Error::Corrupt {
            path: Default::default(),
            offset: start,
            detail,
        };
        let bytes = read_u64(&header[0..8]);
        let width = read_u64(&header[8..16]);
        let count = read_u64(&header[16..24]);
        if !(1..=8).contains(&width) {
            return Err(corrupt(format!(
                "offset map word width {width} is not 1..=8"
            )));
        }
        let words_len = width
            .checked_mul(count)
            .filter(|&n| n.checked_add(16) == Some(bytes))
            .ok_or_else(|| {
                corrupt(format!(
                    "offset map size {bytes} does not match {count} words of {width} bytes"
                ))
            })?;
        let end = start
            .checked_add(MAP_HEADER_LEN)
            .and_then(|s| s.checked_add(words_len));
        if end.is_none_or(|end| end > file_len) {
            return Err(corrupt(format!(
                "offset map of {words_len} bytes runs past the end of the file ({file_len} bytes)"
            )));
        }
        Ok(MapHeader {
            start,
            width,
            count,
        })
    }

    /// The header of the map [`OffsetMap::build`] makes for a base whose
    /// map starts at `start` and whose highest oid is `max_oid`: N =
    /// max + 2 (0 for an empty base), and W the bytes needed for S + N + 1.
    fn for_max_oid(start: u64, max_oid: Option<u64>) -> MapHeader {
        let count = max_oid.map_or(0, |m| m + 2);
        MapHeader {
            start,
            width: bytes_needed(start + count + 1),
            count,
        }
    }

    /// S, the map's file offset (also the end of the base transaction).
    pub fn start(&self) -> u64 {
        self.start
    }

    /// W, the bytes per word.
    pub fn width(&self) -> u64 {
        self.width
    }

    /// N, the number of words.
    pub fn count(&self) -> u64 {
        self.count
    }

    /// File offset of the first word.
    pub fn words_offset(&self) -> u64 {
        self.start + MAP_HEADER_LEN
    }

    /// W * N, the bytes of all the words.
    pub fn words_len(&self) -> u64 {
        self.width * self.count
    }

    /// Where the map ends in the file: the first transaction after the
    /// base starts here.
    pub fn end(&self) -> u64 {
        self.words_offset() + self.words_len()
    }

    /// The map's total size on disk, header included.
    pub fn encoded_len(&self) -> u64 {
        MAP_HEADER_LEN + self.words_len()
    }

    /// File offset of word `i`.
    pub fn word_offset(&self, i: u64) -> u64 {
        self.words_offset() + i * self.width
    }

    /// What word `i`'s (decoded) value says about oid `i`: the offset of
    /// its base shelf record when the value is below S; `None` for a hole
    /// or a blank word.
    pub fn record_offset(&self, value: Option<u64>) -> Option<u64> {
        value.filter(|&v| v < self.start)
    }

    /// Oids present in the base, ascending from `first`, with their
    /// offsets: `words` holds the words from index `first` on.
    pub fn entries_in<'a>(
        &'a self,
        first: u64,
        words: &'a [u8],
    ) -> impl Iterator<Item = (Oid, u64)> + 'a {
        let n = (words.len() as u64 / self.width).min(self.count.saturating_sub(first));
        (0..n).filter_map(move |j| {
            self.record_offset(word_in(words, self.width, j))
                .map(|off| (Oid(first + j), off))
        })
    }

    /// The hole chain in Durus's `gen_holes` order: descending from the
    /// highest hole below N-1, then N-1 itself; `word(i)` gives word i's
    /// value (`None` when blank). A chain link that is not a hole, or a
    /// cycle that does not return to N-1, is corruption.
    pub fn holes(&self, mut word: impl FnMut(u64) -> Result<Option<u64>>) -> Result<Vec<Oid>> {
        let mut holes = Vec::new();
        if self.count == 0 {
            return Ok(holes);
        }
        let top = self.count - 1;
        let mut cur = top;
        loop {
            let link = match word(cur)? {
                Some(v) if v >= self.start && v - self.start < self.count => v - self.start,
                other => {
                    return Err(Error::Corrupt {
                        path: Default::default(),
                        offset: self.word_offset(cur),
                        detail: format!("offset map word {cur} = {other:?} breaks the hole chain"),
                    })
                }
            };
            holes.push(Oid(link));
            if link == top {
                return Ok(holes);
            }
            if holes.len() as u64 > self.count {
                return Err(Error::Corrupt {
                    path: Default::default(),
                    offset: self.start,
                    detail: "offset map hole chain does not return to its last word".into(),
                });
            }
            cur = link;
        }
    }

    /// Appends the 24-byte header (bytes, W, N) to `out`.
    pub fn encode_into(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&(16 + self.words_len()).to_be_bytes());
        out.extend_from_slice(&self.width.to_be_bytes());
        out.extend_from_slice(&self.count.to_be_bytes());
    }
}

/// The whole offset map in memory: what a pack builds and writes. (An
/// opened file's map is read from the file by pages as lookups need them:
/// `storage::base_map`.)
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OffsetMap {
    header: MapHeader,
    /// The N words, W bytes each, as stored.
    words: Vec<u8>,
}

impl OffsetMap {
    /// Builds the map for a base transaction whose map starts at `start`,
    /// from `offsets[oid]` (`None` for absent oids), stitching the hole
    /// chain as Durus does: each hole links to the previous hole, the
    /// lowest to N-1.
    pub fn build(start: u64, offsets: &[Option<u64>]) -> OffsetMap {
        let last_present = offsets.iter().rposition(Option::is_some);
        let header = MapHeader::for_max_oid(start, last_present.map(|m| m as u64));
        let mut map = OffsetMap {
            header,
            words: vec![0; header.words_len() as usize],
        };
        let mut last = header.count.saturating_sub(1);
        for i in 0..header.count {
            let value = match offsets.get(i as usize).copied().flatten() {
                Some(offset) => offset,
                None => {
                    let link = start + last;
                    last = i;
                    link
                }
            };
            map.set_word(i, value);
        }
        map
    }

    /// The map's header.
    pub fn header(&self) -> &MapHeader {
        &self.header
    }

    /// Splits the map into its header and its W * N bytes of words.
    pub fn into_parts(self) -> (MapHeader, Vec<u8>) {
        (self.header, self.words)
    }

    /// S, the map's file offset (also the end of the base transaction).
    pub fn start(&self) -> u64 {
        self.header.start
    }

    /// N, the number of words.
    pub fn count(&self) -> u64 {
        self.header.count
    }

    /// W, the bytes per word.
    pub fn width(&self) -> u64 {
        self.header.width
    }

    /// The map's total size on disk, header included.
    pub fn encoded_len(&self) -> u64 {
        self.header.encoded_len()
    }

    /// Offset of the base shelf record for `oid`, if the base holds it.
    pub fn get(&self, oid: Oid) -> Option<u64> {
        self.header.record_offset(self.word(oid.0))
    }

    /// The raw word for index i (None when out of range or blank).
    fn word(&self, i: u64) -> Option<u64> {
        if i >= self.header.count {
            return None;
        }
        word_in(&self.words, self.header.width, i)
    }

    fn set_word(&mut self, i: u64, value: u64) {
        let w = self.header.width as usize;
        let at = i as usize * w;
        let be = value.to_be_bytes();
        self.words[at..at + w].copy_from_slice(&be[8 - w..]);
    }

    /// Oids present in the base, ascending, with their offsets.
    pub fn entries(&self) -> impl Iterator<Item = (Oid, u64)> + '_ {
        self.header.entries_in(0, &self.words)
    }

    /// The hole chain in Durus's `gen_holes` order (see
    /// [`MapHeader::holes`]).
    pub fn holes(&self) -> Result<Vec<Oid>> {
        self.header.holes(|i| Ok(self.word(i)))
    }

    /// Appends the map (header and words) to `out`.
    pub fn encode_into(&self, out: &mut Vec<u8>) {
        self.header.encode_into(out);
        out.extend_from_slice(&self.words);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_shelf_is_forty_bytes_as_durus_writes_it() {
        // spec 4.9: magic, T0 = 0, map bytes = 16, W = 1, N = 0.
        let mut expected = MAGIC.to_vec();
        for v in [0u64, 16, 1, 0] {
            expected.extend_from_slice(&v.to_be_bytes());
        }
        assert_eq!(empty_file(), expected);
    }

    /// spec 4.2: deleting oids 1, 3, 8, 9 out of 0..10 and packing gives
    /// S = 784, W = 2, N = 12 and these words.
    #[test]
    fn offset_map_matches_durus_hole_stitching_example() {
        let present = [16, 328, 404, 480, 556, 632, 708];
        let live = [0u64, 2, 4, 5, 6, 7, 10];
        let mut offsets = vec![None; 11];
        for (oid, off) in live.iter().zip(present) {
            offsets[*oid as usize] = Some(off);
        }
        let map = OffsetMap::build(784, &offsets);
        assert_eq!((map.width(), map.count()), (2, 12));
        let words: Vec<u64> = (0..12).map(|i| map.word(i).unwrap()).collect();
        assert_eq!(
            words,
            [16, 795, 328, 785, 404, 480, 556, 632, 787, 792, 708, 793]
        );
        let holes: Vec<u64> = map.holes().unwrap().into_iter().map(|o| o.0).collect();
        assert_eq!(holes, [9, 8, 3, 1, 11]);
        assert_eq!(map.get(Oid(2)), Some(328));
        assert_eq!(map.get(Oid(3)), None);
        assert_eq!(map.get(Oid(12)), None);
    }

    /// spec 4.9: after packing root + one object, S = 283, W = 2, N = 3,
    /// words 16, 196, 285.
    #[test]
    fn offset_map_of_packed_worked_example() {
        let map = OffsetMap::build(283, &[Some(16), Some(196)]);
        let mut out = Vec::new();
        map.encode_into(&mut out);
        let mut expected = Vec::new();
        for v in [22u64, 2, 3] {
            expected.extend_from_slice(&v.to_be_bytes());
        }
        expected.extend_from_slice(&[0x00, 0x10, 0x00, 0xC4, 0x01, 0x1D]);
        assert_eq!(out, expected);
        assert_eq!(map.holes().unwrap(), vec![Oid(2)]);
    }

    #[test]
    fn words_decode_big_endian_and_blank_or_missing_words_are_absent() {
        assert_eq!(decode_word(&[0x01, 0x1D]), Some(285));
        assert_eq!(decode_word(&[0xFF, 0xFE]), Some(0xFFFE));
        assert_eq!(decode_word(&[0xFF, 0xFF]), None);
        let words = [0x00, 0x10, 0x00, 0xC4, 0x01];
        assert_eq!(word_in(&words, 2, 0), Some(16));
        assert_eq!(word_in(&words, 2, 1), Some(196));
        // Word 2 would need a byte past the slice; word 2^62 an offset
        // past u64.
        assert_eq!(word_in(&words, 2, 2), None);
        assert_eq!(word_in(&words, 8, 1 << 62), None);
    }

    #[test]
    fn broken_hole_chain_is_corruption_not_a_loop() {
        let mut map = OffsetMap::build(100, &[Some(16), None, Some(40)]);
        map.set_word(3, 16); // N-1 must be a hole: point it at a record
        assert!(map.holes().is_err());
        let mut map = OffsetMap::build(100, &[Some(16), None, None, Some(40)]);
        map.set_word(2, 100 + 2); // a self-loop that never reaches N-1
        assert!(map.holes().is_err());
    }

    #[test]
    fn map_header_claims_are_checked_against_the_file() {
        let mut header = [0u8; 24];
        header[0..8].copy_from_slice(&(16u64 + 2 * 1_000_000).to_be_bytes());
        header[8..16].copy_from_slice(&2u64.to_be_bytes());
        header[16..24].copy_from_slice(&1_000_000u64.to_be_bytes());
        assert!(MapHeader::parse(16, &header, 100).is_err());
        let parsed = MapHeader::parse(16, &header, 3_000_000).unwrap();
        assert_eq!((parsed.width(), parsed.count()), (2, 1_000_000));
        assert_eq!(parsed.end(), 16 + 24 + 2_000_000);
        header[8..16].copy_from_slice(&9u64.to_be_bytes());
        assert!(MapHeader::parse(16, &header, 3_000_000).is_err());
    }
}
