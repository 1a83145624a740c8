//! Durus wire protocol 1 (spec section 7): command and status bytes, and
//! the frames both ends build and parse. Pure byte handling: the server
//! and `ClientStorage` do the I/O.
//!
//! Every integer is big-endian; a count or length is an `int4` (u32), an
//! oid is 8 bytes. A length read from a peer is never trusted for an
//! allocation: [`read_frame`] grows its buffer only as bytes arrive.

use std::io::{self, Read};

use crate::error::{Error, Result};
use crate::format::{record, Oid};

/// The protocol version both ends exchange with `V`.
pub const PROTOCOL_VERSION: u32 = 1;
/// Durus's default server port.
pub const DEFAULT_PORT: u16 = 2972;
/// Durus's default server host.
pub const DEFAULT_HOST: &str = "127.0.0.1";

/// Handshake: int4 protocol version, answered with the server's.
pub const CMD_VERSION: u8 = b'V';
/// One new oid.
pub const CMD_NEW_OID: u8 = b'N';
/// A byte count c, answered with c new oids.
pub const CMD_NEW_OIDS: u8 = b'M';
/// An oid, answered with a load response.
pub const CMD_LOAD: u8 = b'L';
/// int4 n and n oids, answered with n load responses.
pub const CMD_BULK_LOAD: u8 = b'B';
/// The commit exchange (spec 7.4).
pub const CMD_COMMIT: u8 = b'C';
/// Answered with this client's invalidations (int4 n, n oids).
pub const CMD_SYNC: u8 = b'S';
/// Starts a pack, answered with `O`.
pub const CMD_PACK: u8 = b'P';
/// Stops the server.
pub const CMD_QUIT: u8 = b'Q';
/// What a closing client sends: not a command, the server drops it.
pub const CMD_GOODBYE: u8 = b'.';

/// A load found the record / a commit was applied / a pack started.
pub const STATUS_OKAY: u8 = b'O';
/// A load found no record for the oid.
pub const STATUS_KEYERROR: u8 = b'K';
/// A load of an oid the client must not see yet (a read conflict); a
/// commit refused.
pub const STATUS_INVALID: u8 = b'I';

/// Appends an int4.
pub fn put_u32(out: &mut Vec<u8>, n: u32) {
    out.extend_from_slice(&n.to_be_bytes());
}

/// An int4 count followed by the oids.
pub fn encode_oid_list(oids: &[Oid]) -> Vec<u8> {
    let mut out = Vec::with_capacity(4 + 8 * oids.len());
    put_u32(&mut out, oids.len() as u32);
    for oid in oids {
        out.extend_from_slice(&oid.to_bytes());
    }
    out
}

/// Splits `bytes` (a whole number of 8-byte oids) into oids.
pub fn parse_oids(bytes: &[u8]) -> Result<Vec<Oid>> {
    if !bytes.len().is_multiple_of(8) {
        return Err(Error::malformed(
            None,
            format!("{} bytes is not a whole number of oids", bytes.len()),
        ));
    }
    Ok(bytes
        .chunks_exact(8)
        .map(|c| Oid::from_bytes(c.try_into().expect("8 bytes")))
        .collect())
}

/// A successful load response: `O`, int4 length, the record.
pub fn encode_load_ok(out: &mut Vec<u8>, record: &[u8]) {
    out.push(STATUS_OKAY);
    put_u32(out, record.len() as u32);
    out.extend_from_slice(record);
}

/// The transaction data of a commit (spec 7.4 step 3): for each record,
/// int4 (8 + record length), the oid, the record.
pub fn encode_transaction<'a>(records: impl IntoIterator<Item = &'a [u8]>) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    for rec in records {
        let oid = record::oid_of(rec)?;
        let len = u32::try_from(8 + rec.len()).map_err(|_| {
            Error::malformed(
                Some(oid),
                "a record over 4 GiB cannot be sent in protocol 1",
            )
        })?;
        put_u32(&mut out, len);
        out.extend_from_slice(&oid.to_bytes());
        out.extend_from_slice(rec);
    }
    Ok(out)
}

/// Parses transaction data into `(oid, record)` pairs, checking what
/// Durus does not (spec 7.4): the entries fill the data exactly, each
/// record is well formed and carries the entry's oid.
pub fn parse_transaction(data: &[u8]) -> Result<Vec<(Oid, &[u8])>> {
    let mut entries = Vec::new();
    let mut rest = data;
    while !rest.is_empty() {
        let at = data.len() - rest.len();
        let bad = |detail: String| {
            Error::malformed(None, format!("transaction data at byte {at}: {detail}"))
        };
        if rest.len() < 4 {
            return Err(bad(format!(
                "{} bytes cannot hold an entry length",
                rest.len()
            )));
        }
        let len = u32::from_be_bytes(rest[..4].try_into().expect("4 bytes")) as usize;
        rest = &rest[4..];
        if len < 8 + record::HEADER_LEN || len > rest.len() {
            return Err(bad(format!(
                "entry length {len} does not fit ({} bytes remain, a record needs {})",
                rest.len(),
                8 + record::HEADER_LEN
            )));
        }
        let oid = Oid::from_slice(&rest[..8])?;
        let rec = &rest[8..len];
        record::check_stored_as(oid, rec).map_err(|e| bad(e.to_string()))?;
        entries.push((oid, rec));
        rest = &rest[len..];
    }
    Ok(entries)
}

/// Reads exactly `len` bytes, refusing more than `limit`. The buffer grows
/// as the bytes arrive, so a length field that claims gigabytes costs
/// nothing until the peer really sends them.
pub fn read_frame(r: &mut impl Read, len: usize, limit: usize) -> io::Result<Vec<u8>> {
    if len > limit {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("a frame of {len} bytes is over the limit of {limit}"),
        ));
    }
    const CHUNK: usize = 64 << 10;
    let mut buf = Vec::with_capacity(len.min(CHUNK));
    while buf.len() < len {
        let want = (len - buf.len()).min(CHUNK);
        let start = buf.len();
        buf.resize(start + want, 0);
        r.read_exact(&mut buf[start..])?;
    }
    Ok(buf)
}

/// Reads an int4.
pub fn read_u32(r: &mut impl Read) -> io::Result<u32> {
    let mut b = [0; 4];
    r.read_exact(&mut b)?;
    Ok(u32::from_be_bytes(b))
}

/// Reads an oid.
pub fn read_oid(r: &mut impl Read) -> io::Result<Oid> {
    let mut b = [0; 8];
    r.read_exact(&mut b)?;
    Ok(Oid::from_bytes(b))
}

/// Reads one byte.
pub fn read_u8(r: &mut impl Read) -> io::Result<u8> {
    let mut b = [0; 1];
    r.read_exact(&mut b)?;
    Ok(b[0])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(oid: u64, data: &[u8]) -> Vec<u8> {
        record::encode(Oid(oid), data, &[]).unwrap()
    }

    #[test]
    fn transaction_data_round_trips_as_durus_writes_it() {
        let (a, b) = (rec(0, b"root"), rec(5, b"five"));
        let data = encode_transaction([a.as_slice(), b.as_slice()]).unwrap();
        // Spec 7.4: int4 (8 + len), oid, record (which starts with the oid).
        assert_eq!(&data[..4], &(8 + a.len() as u32).to_be_bytes());
        assert_eq!(&data[4..12], &[0; 8]);
        assert_eq!(&data[12..12 + a.len()], a.as_slice());
        let parsed = parse_transaction(&data).unwrap();
        assert_eq!(parsed, vec![(Oid(0), a.as_slice()), (Oid(5), b.as_slice())]);
    }

    #[test]
    fn malformed_transaction_data_is_an_error_naming_the_offset() {
        let good = encode_transaction([rec(1, b"x").as_slice()]).unwrap();
        for (bad, why) in [
            (good[..good.len() - 1].to_vec(), "truncated"),
            ([good.clone(), vec![0, 0]].concat(), "trailing bytes"),
            (
                [&[0xff, 0xff, 0xff, 0xff][..], &good[4..]].concat(),
                "length past the end",
            ),
            (
                [&good[..4], &7u64.to_be_bytes()[..], &good[12..]].concat(),
                "oid differs from the record's",
            ),
        ] {
            let err = parse_transaction(&bad).unwrap_err().to_string();
            assert!(err.contains("transaction data at byte"), "{why}: {err}");
        }
        assert_eq!(parse_transaction(&[]).unwrap(), vec![]);
    }

    #[test]
    fn read_frame_refuses_over_the_limit_and_does_not_trust_the_length() {
        let err = read_frame(&mut &[][..], 1 << 40, 1 << 20).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
        // A claimed length the peer never sends ends in an EOF, after
        // allocating no more than one chunk.
        let err = read_frame(&mut &[1u8, 2, 3][..], 1 << 30, usize::MAX).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof);
        assert_eq!(
            read_frame(&mut &[1u8, 2, 3][..], 2, 10).unwrap(),
            vec![1, 2]
        );
    }

    #[test]
    fn oid_lists_are_a_count_then_oids() {
        let bytes = encode_oid_list(&[Oid(1), Oid(258)]);
        assert_eq!(bytes.len(), 4 + 16);
        assert_eq!(&bytes[..4], &[0, 0, 0, 2]);
        assert_eq!(parse_oids(&bytes[4..]).unwrap(), vec![Oid(1), Oid(258)]);
        assert!(parse_oids(&[0; 7]).is_err());
    }
}
