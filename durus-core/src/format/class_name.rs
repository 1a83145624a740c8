//! The class name at the head of a record's data, readable without the
//! Rust types (for census, server logs and packing tools).
//!
//! Two encodings live side by side in one database:
//!
//! * **Python Durus** writes a class pickle then the (zlib) state pickle. Its
//!   `extract_class_name` splits the data on `\n` and takes the second
//!   piece: for `80 02 63 "durus.persistent_dict\nPersistentDict\n" ...`
//!   that is `PersistentDict`. We extract it the same way.
//! * **durus for Rust** writes CBOR: the self-describe tag 55799
//!   (`D9 D9 F7`, which no pickle starts with: protocol 2 pickles start with
//!   `80`), then the class name as one CBOR text string, then the state as
//!   one CBOR data item:
//!
//! ```text
//! D9 D9 F7 | text(class name, e.g. "bank.Account") | state (CBOR)
//! ```
//! A text string is `0x60 + len` for len < 24, `0x78 len8`, `0x79 len16`
//! or `0x7A len32` followed by UTF-8 bytes, so the name is found with a
//! few byte reads and no CBOR library.

use crate::error::{Error, Result};

/// CBOR tag of a typed reference inside a state (a `PRef<T>`): the oid
/// alone, the field's type fixing the class.
pub const TAG_REF: u64 = 0x6475_7272;

/// CBOR tag of an untyped reference inside a state (a `PObject`):
/// `[oid, class name]`.
pub const TAG_OBJ: u64 = 0x6475_726F;

/// The CBOR self-describe tag 55799 that opens every Rust-written data.
pub const CBOR_MAGIC: [u8; 3] = [0xD9, 0xD9, 0xF7];

/// How a record's data names its class.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClassName<'a> {
    /// Rust-written (CBOR) data: the full registered name.
    Cbor(&'a str),
    /// Python-written (pickle) data: the second `\n`-separated piece, as
    /// Durus's `extract_class_name` returns it (bytes, shown lossily).
    Pickle(&'a [u8]),
    /// Neither encoding could be recognised (Durus shows `?`).
    Unknown,
}

impl ClassName<'_> {
    /// The name as census and logs show it (`?` when unknown).
    pub fn display(&self) -> String {
        match self {
            ClassName::Cbor(s) => (*s).to_string(),
            ClassName::Pickle(b) => String::from_utf8_lossy(b).into_owned(),
            ClassName::Unknown => "?".to_string(),
        }
    }
}

/// Reads the class name at the head of record data (either encoding).
pub fn extract(data: &[u8]) -> ClassName<'_> {
    if data.starts_with(&CBOR_MAGIC) {
        return match split_cbor(data) {
            Ok((name, _)) => ClassName::Cbor(name),
            Err(_) => ClassName::Unknown,
        };
    }
    let mut pieces = data.split(|&b| b == b'\n');
    pieces.next();
    match pieces.next() {
        Some(second) => ClassName::Pickle(second),
        None => ClassName::Unknown,
    }
}

/// Appends the CBOR data header (magic and class name) to `out`; the
/// CBOR state follows it.
pub fn write_cbor_header(out: &mut Vec<u8>, class_name: &str) {
    out.extend_from_slice(&CBOR_MAGIC);
    let len = class_name.len();
    match len {
        0..=23 => out.push(0x60 | len as u8),
        24..=0xFF => out.extend_from_slice(&[0x78, len as u8]),
        0x100..=0xFFFF => {
            out.push(0x79);
            out.extend_from_slice(&(len as u16).to_be_bytes());
        }
        _ => {
            out.push(0x7A);
            out.extend_from_slice(&(len as u32).to_be_bytes());
        }
    }
    out.extend_from_slice(class_name.as_bytes());
}

/// Splits Rust-written data into its class name and its CBOR state bytes.
pub fn split_cbor(data: &[u8]) -> Result<(&str, &[u8])> {
    let bad = |detail: &str| Error::malformed(None, format!("CBOR record data: {detail}"));
    let rest = data
        .strip_prefix(&CBOR_MAGIC)
        .ok_or_else(|| bad("missing the D9 D9 F7 self-describe tag"))?;
    let (&head, rest) = rest.split_first().ok_or_else(|| bad("no class name"))?;
    if head & 0xE0 != 0x60 {
        return Err(bad("the class name is not a text string"));
    }
    let (len, rest) = match head & 0x1F {
        n @ 0..=23 => Some((n as usize, rest)),
        24 => take_len(rest, 1),
        25 => take_len(rest, 2),
        26 => take_len(rest, 4),
        _ => return Err(bad("unsupported class name length encoding")),
    }
    .ok_or_else(|| bad("truncated class name length"))?;
    if rest.len() < len {
        return Err(bad("truncated class name"));
    }
    let (name, state) = rest.split_at(len);
    let name = std::str::from_utf8(name).map_err(|_| bad("class name is not UTF-8"))?;
    Ok((name, state))
}

fn take_len(bytes: &[u8], n: usize) -> Option<(usize, &[u8])> {
    if bytes.len() < n {
        return None;
    }
    let (len, rest) = bytes.split_at(n);
    Some((
        len.iter().fold(0usize, |acc, &b| (acc << 8) | b as usize),
        rest,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn pickle_class_name_is_the_second_newline_piece() {
        let data = b"\x80\x02cdurus.persistent_dict\nPersistentDict\nq\x00.x\x9c";
        assert_eq!(extract(data), ClassName::Pickle(b"PersistentDict"));
        assert_eq!(extract(data).display(), "PersistentDict");
    }

    #[test]
    fn data_without_newline_is_unknown() {
        assert_eq!(extract(b"\x80\x02}q"), ClassName::Unknown);
        assert_eq!(extract(b"").display(), "?");
    }

    #[test]
    fn cbor_header_names_the_class() {
        let mut data = Vec::new();
        write_cbor_header(&mut data, "bank.Account");
        data.extend_from_slice(&[0xA0]); // the empty map as state
        assert_eq!(&data[..4], &[0xD9, 0xD9, 0xF7, 0x6C]);
        assert_eq!(extract(&data), ClassName::Cbor("bank.Account"));
        assert_eq!(split_cbor(&data).unwrap(), ("bank.Account", &[0xA0][..]));
    }

    #[test]
    fn truncated_cbor_header_is_an_error() {
        let mut data = Vec::new();
        write_cbor_header(&mut data, "a.rather.long.module.path.Type");
        assert!(split_cbor(&data[..6]).is_err());
        assert_eq!(extract(&data[..6]), ClassName::Unknown);
    }

    proptest! {
        #[test]
        fn cbor_header_round_trips(name in ".{0,300}", state: Vec<u8>) {
            let mut data = Vec::new();
            write_cbor_header(&mut data, &name);
            data.extend_from_slice(&state);
            let (n, s) = split_cbor(&data).unwrap();
            prop_assert_eq!(n, name.as_str());
            prop_assert_eq!(s, &state[..]);
        }

        #[test]
        fn extract_never_panics(data: Vec<u8>) {
            let _ = extract(&data);
        }
    }
}
