//! The Durus object record (spec section 2): the unit every storage keeps
//! and the server sends.
//!
//! ```text
//! oid (8, BE) | data length L (u32 BE) | data (L) | refs (8 bytes per oid)
//! ```
//! No terminator and no checksum: the container (a shelf record, a wire
//! frame) gives the total length.

use crate::error::{Error, Result};
use crate::format::Oid;

/// Bytes before the data: the oid and the data length.
pub const HEADER_LEN: usize = 12;

/// A decoded view of a record's bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Record<'a> {
    /// The object's oid.
    pub oid: Oid,
    /// The class name plus the object state (a pickle from Python, CBOR from
    /// Rust; see [`crate::format::class_name`]).
    pub data: &'a [u8],
    refs: &'a [u8],
}

impl<'a> Record<'a> {
    /// Parses a record. Short input, a data length past the end, or refs
    /// that are not a whole number of oids are errors, never panics.
    pub fn decode(bytes: &'a [u8]) -> Result<Record<'a>> {
        if bytes.len() < HEADER_LEN {
            return Err(Error::malformed(
                None,
                format!(
                    "{} bytes is shorter than the 12-byte record header",
                    bytes.len()
                ),
            ));
        }
        let oid = Oid::from_bytes(bytes[..8].try_into().expect("8 bytes"));
        let len = u32::from_be_bytes(bytes[8..12].try_into().expect("4 bytes")) as usize;
        let rest = &bytes[HEADER_LEN..];
        if len > rest.len() {
            return Err(Error::malformed(
                Some(oid),
                format!(
                    "data length {len} overruns the record ({} bytes follow the header)",
                    rest.len()
                ),
            ));
        }
        let (data, refs) = rest.split_at(len);
        if refs.len() % 8 != 0 {
            return Err(Error::malformed(
                Some(oid),
                format!("refs are {} bytes, not a multiple of 8", refs.len()),
            ));
        }
        Ok(Record { oid, data, refs })
    }

    /// The referenced oids, in stored order.
    pub fn refs(&self) -> impl ExactSizeIterator<Item = Oid> + 'a {
        self.refs
            .chunks_exact(8)
            .map(|c| Oid::from_bytes(c.try_into().expect("chunks of 8")))
    }

    /// The raw refs bytes.
    pub fn refs_bytes(&self) -> &'a [u8] {
        self.refs
    }

    /// Number of referenced oids.
    pub fn ref_count(&self) -> usize {
        self.refs.len() / 8
    }
}

/// Encodes a record. `refs` are written as given; Durus writers keep them
/// sorted, unique and without the record's own oid.
pub fn encode(oid: Oid, data: &[u8], refs: &[Oid]) -> Result<Vec<u8>> {
    let mut out = Vec::with_capacity(HEADER_LEN + data.len() + 8 * refs.len());
    encode_into(&mut out, oid, data, refs)?;
    Ok(out)
}

/// Appends a record's encoding to `out`. Data of 4 GiB or more cannot be
/// expressed by the u32 length field and is refused.
pub fn encode_into(out: &mut Vec<u8>, oid: Oid, data: &[u8], refs: &[Oid]) -> Result<()> {
    let len = u32::try_from(data.len()).map_err(|_| {
        Error::malformed(
            Some(oid),
            format!(
                "data of {} bytes exceeds the 4 GiB record limit",
                data.len()
            ),
        )
    })?;
    out.extend_from_slice(&oid.to_bytes());
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(data);
    for r in refs {
        out.extend_from_slice(&r.to_bytes());
    }
    Ok(())
}

/// Only the oid of an encoded record (checked to be at least a header).
pub fn oid_of(bytes: &[u8]) -> Result<Oid> {
    Record::decode(bytes).map(|r| r.oid)
}

/// Checks that `bytes` is a well-formed record carrying `oid`, as it must
/// be to be stored under `oid`.
pub fn check_stored_as(oid: Oid, bytes: &[u8]) -> Result<()> {
    let carried = oid_of(bytes)?;
    if carried != oid {
        return Err(Error::malformed(
            Some(oid),
            format!("record carries oid {carried}, stored under {oid}"),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn record_layout_is_oid_length_data_refs() {
        let bytes = encode(Oid(1), b"abc", &[Oid(2), Oid(3)]).unwrap();
        let mut expected = vec![0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 3, b'a', b'b', b'c'];
        expected.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0, 3]);
        assert_eq!(bytes, expected);
    }

    #[test]
    fn decode_rejects_short_record() {
        let err = Record::decode(&[0; 11]).unwrap_err();
        assert!(
            err.to_string().contains("shorter than the 12-byte"),
            "{err}"
        );
    }

    #[test]
    fn decode_rejects_data_length_overrun() {
        let mut bytes = encode(Oid(5), b"abcd", &[]).unwrap();
        bytes.truncate(14);
        let err = Record::decode(&bytes).unwrap_err();
        assert!(err.to_string().contains("oid 5"), "{err}");
        assert!(err.to_string().contains("overruns"), "{err}");
    }

    #[test]
    fn decode_rejects_refs_not_multiple_of_eight() {
        let mut bytes = encode(Oid(5), b"x", &[Oid(1)]).unwrap();
        bytes.pop();
        let err = Record::decode(&bytes).unwrap_err();
        assert!(err.to_string().contains("not a multiple of 8"), "{err}");
    }

    proptest! {
        #[test]
        fn record_round_trips(oid: u64, data: Vec<u8>, refs: Vec<u64>) {
            let refs: Vec<Oid> = refs.into_iter().map(Oid).collect();
            let bytes = encode(Oid(oid), &data, &refs).unwrap();
            let rec = Record::decode(&bytes).unwrap();
            prop_assert_eq!(rec.oid, Oid(oid));
            prop_assert_eq!(rec.data, &data[..]);
            prop_assert_eq!(rec.refs().collect::<Vec<_>>(), refs);
        }

        #[test]
        fn decode_never_panics(bytes: Vec<u8>) {
            let _ = Record::decode(&bytes);
        }
    }
}
