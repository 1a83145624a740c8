//! CBOR to serde, from a slice: the deserializer for the object states
//! [`ciborium`] writes.
//!
//! It reads the input in place: definite-length text and byte strings are
//! handed to visitors borrowed from the slice (`visit_borrowed_str`,
//! `visit_borrowed_bytes`), so a struct's field names are matched without a
//! copy and a `String` field is copied once. Only indefinite-length strings,
//! which must be joined, are collected into an owned buffer.
//!
//! It accepts what `ciborium::de::from_reader` accepts and gives visitors
//! the same values, method by method:
//! - integers of every width, and bignums (tags 2 and 3 around at most 16
//!   significant bytes) where a 128-bit or any integer is asked for;
//! - half, single and double floats, all widened to `f64` as ciborium does
//!   (`f32` fields too: serde narrows them);
//! - null and undefined as `None` and `()`;
//! - strings, arrays and maps of definite or indefinite length (segments of
//!   a string may themselves be indefinite, as ciborium allows);
//! - a tag where none is asked for is skipped to its content, and
//!   `deserialize_any` presents one as an enum, so serde can ignore it;
//! - the tag protocol of `ciborium::tag::{Required, Accepted, Captured}`:
//!   they ask for the enum `@@TAG@@`, whose variant is `@@TAGGED@@` (a
//!   sequence of the tag number and the content) or `@@UNTAGGED@@` (the
//!   content alone);
//! - enums as ciborium writes them: a unit variant as its name, the others
//!   as a one-entry map from the name to the content. Like ciborium, a
//!   variant name may also be followed directly by its content, and the
//!   content of a unit variant in a map is left unread;
//! - structs as maps only (as ciborium; not arrays), tuples as arrays (or a
//!   byte string, one `u8` per byte).
//!
//! Deliberate differences, all in what is accepted: strings, byte strings
//! and identifiers of any length and of indefinite length wherever ciborium
//! limits them to its 4 KiB scratch buffer, and borrowed `&str`/`&[u8]`
//! targets. Like ciborium, bytes after the first complete value are not
//! read (a state is a single value; the record frame delimits it).
//!
//! Hostile input is an [`Error`], never a panic or an allocation beyond
//! the input's size: lengths are checked against the bytes left before
//! anything is sliced, and serde's size hints are capped by them. Nesting
//! is limited to [`RECURSION_LIMIT`] arrays, maps and tags (ciborium's
//! limit); `Some` and newtype wrappers, which read nothing and so could
//! recurse forever on a self-referential type, have a limit of their own
//! between two containers.

use std::borrow::Cow;
use std::fmt;

use serde::de::{self, DeserializeSeed, IntoDeserializer, Unexpected, Visitor};
use serde::forward_to_deserialize_any;

/// How deeply arrays, maps and tags may nest (ciborium's limit).
pub(crate) const RECURSION_LIMIT: usize = 256;

/// How many `Some` and newtype wrappers may nest without a container
/// between them.
const WRAP_LIMIT: usize = 256;

/// Tag of a positive bignum (RFC 8949 3.4.3).
const TAG_BIGPOS: u64 = 2;
/// Tag of a negative bignum.
const TAG_BIGNEG: u64 = 3;

const SIMPLE_FALSE: u64 = 20;
const SIMPLE_TRUE: u64 = 21;
const SIMPLE_NULL: u64 = 22;
const SIMPLE_UNDEFINED: u64 = 23;

/// The enum name through which ciborium's tag types ask for a tag.
const TAG_ENUM: &str = "@@TAG@@";
/// The variant of [`TAG_ENUM`] for a tagged item: (tag, content).
const TAGGED: &str = "@@TAGGED@@";
/// The variant of [`TAG_ENUM`] for an untagged item: its content.
const UNTAGGED: &str = "@@UNTAGGED@@";

/// Decodes one value of type `T` from the start of `bytes`; bytes after it
/// are ignored, as `ciborium::from_reader` ignores them.
pub(crate) fn from_slice<'de, T: de::Deserialize<'de>>(bytes: &'de [u8]) -> Result<T> {
    let mut de = Deserializer {
        input: bytes,
        pos: 0,
        depth: RECURSION_LIMIT,
        wraps: WRAP_LIMIT,
    };
    // An error raised after the whole value was read is about all of it.
    T::deserialize(&mut de).map_err(|e| e.at(0))
}

/// Why a state did not decode, and where.
///
/// Boxed, so that the results passed up through every level of a decode
/// stay one word wider than their values.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Error(Box<ErrorInner>);

#[derive(Debug, Clone, PartialEq, Eq)]
struct ErrorInner {
    message: String,
    offset: Option<usize>,
}

impl Error {
    #[cold]
    fn new(offset: usize, message: impl Into<String>) -> Self {
        Error(Box::new(ErrorInner {
            message: message.into(),
            offset: Some(offset),
        }))
    }

    #[cold]
    fn syntax(offset: usize) -> Self {
        Error::new(offset, "malformed CBOR")
    }

    #[cold]
    fn eof(offset: usize) -> Self {
        Error::new(offset, "unexpected end of the state")
    }

    /// Places an error raised by a visitor at `offset`, the start of the
    /// item it was visiting (the innermost placement wins).
    #[cold]
    fn at(mut self, offset: usize) -> Self {
        self.0.offset.get_or_insert(offset);
        self
    }

    /// What went wrong, without the offset.
    pub(crate) fn message(&self) -> &str {
        &self.0.message
    }

    /// The byte offset in the state of the item that failed (known for
    /// every error [`from_slice`] returns).
    #[cfg_attr(not(test), allow(dead_code))]
    pub(crate) fn offset(&self) -> Option<usize> {
        self.0.offset
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0.offset {
            Some(offset) => write!(f, "{} (at byte {offset})", self.0.message),
            None => f.write_str(&self.0.message),
        }
    }
}

impl std::error::Error for Error {}

impl de::Error for Error {
    #[cold]
    fn custom<T: fmt::Display>(msg: T) -> Self {
        Error(Box::new(ErrorInner {
            message: msg.to_string(),
            offset: None,
        }))
    }
}

type Result<T> = std::result::Result<T, Error>;

/// Places a visitor's error at the item that started at `start`.
#[inline]
fn at<T>(result: Result<T>, start: usize) -> Result<T> {
    result.map_err(|e| e.at(start))
}

/// The head of a data item (RFC 8949 3): its major type and argument.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Header {
    Positive(u64),
    /// `-1 - n`.
    Negative(u64),
    Bytes(Option<usize>),
    Text(Option<usize>),
    Array(Option<usize>),
    Map(Option<usize>),
    Tag(u64),
    /// A simple value, 0 to 255. As wide as the other arguments, so all
    /// share one aligned slot: a byte beside the discriminant made every
    /// copy of a header stall on store forwarding.
    Simple(u64),
    Float(f64),
    Break,
}

impl Header {
    /// The error for this item where a `kind` was expected, worded as
    /// ciborium words it.
    fn expected(self, kind: &'static str, offset: usize) -> Error {
        let unexpected = match self {
            Header::Positive(x) => Unexpected::Unsigned(x),
            Header::Negative(x) => Unexpected::Signed(x as i64 ^ !0),
            Header::Bytes(..) => Unexpected::Other("bytes"),
            Header::Text(..) => Unexpected::Other("string"),
            Header::Array(..) => Unexpected::Seq,
            Header::Map(..) => Unexpected::Map,
            Header::Tag(..) => Unexpected::Other("tag"),
            Header::Simple(SIMPLE_FALSE) => Unexpected::Bool(false),
            Header::Simple(SIMPLE_TRUE) => Unexpected::Bool(true),
            Header::Simple(SIMPLE_NULL) => Unexpected::Other("null"),
            Header::Simple(SIMPLE_UNDEFINED) => Unexpected::Other("undefined"),
            Header::Simple(..) => Unexpected::Other("simple"),
            Header::Float(x) => Unexpected::Float(x),
            Header::Break => Unexpected::Other("break"),
        };
        <Error as de::Error>::invalid_type(unexpected, &kind).at(offset)
    }
}

/// A half-precision float widened to `f64` exactly (NaNs keep their
/// payload and become quiet, as the `half` crate ciborium uses does).
fn f16_to_f64(bits: u16) -> f64 {
    let negative = bits & 0x8000 != 0;
    let exp = (bits >> 10) & 0x1f;
    let man = bits & 0x3ff;
    if exp == 0x1f {
        if man == 0 {
            return if negative {
                f64::NEG_INFINITY
            } else {
                f64::INFINITY
            };
        }
        let sign = u64::from(bits & 0x8000) << 48;
        return f64::from_bits(sign | 0x7ff8_0000_0000_0000 | (u64::from(man) << 42));
    }
    // 2^k for the k below (-24 to 5): a normal f64, built from its bits.
    let pow2 = |k: i32| f64::from_bits(((1023 + k) as u64) << 52);
    // Exact: at most 11 significant bits, exponents well inside f64's.
    let magnitude = if exp == 0 {
        f64::from(man) * pow2(-24)
    } else {
        f64::from(man | 0x400) * pow2(i32::from(exp) - 25)
    };
    if negative {
        -magnitude
    } else {
        magnitude
    }
}

/// The deserializer: the input, a cursor, and the nesting budgets left.
struct Deserializer<'de> {
    input: &'de [u8],
    pos: usize,
    /// Arrays, maps and tags that may still be entered.
    depth: usize,
    /// `Some`/newtype wrappers that may still be entered before the next
    /// container.
    wraps: usize,
}

impl<'de> Deserializer<'de> {
    /// Bytes left after the cursor.
    #[inline]
    fn remaining(&self) -> usize {
        self.input.len() - self.pos
    }

    /// The next `n` bytes, consumed.
    #[inline]
    fn take(&mut self, n: usize) -> Result<&'de [u8]> {
        if n > self.remaining() {
            return Err(Error::eof(self.input.len()));
        }
        let bytes = &self.input[self.pos..self.pos + n];
        self.pos += n;
        Ok(bytes)
    }

    #[inline]
    fn take_array<const N: usize>(&mut self) -> Result<[u8; N]> {
        let bytes = self.take(N)?;
        let mut out = [0; N];
        out.copy_from_slice(bytes);
        Ok(out)
    }

    /// Reads the next header.
    #[inline(always)]
    fn header(&mut self) -> Result<Header> {
        // The common case: the argument in the initial byte.
        if let Some(&initial) = self.input.get(self.pos) {
            let info = initial & 0x1f;
            if info < 24 {
                self.pos += 1;
                let (n, len) = (u64::from(info), Some(usize::from(info)));
                return Ok(match initial >> 5 {
                    0 => Header::Positive(n),
                    1 => Header::Negative(n),
                    2 => Header::Bytes(len),
                    3 => Header::Text(len),
                    4 => Header::Array(len),
                    5 => Header::Map(len),
                    6 => Header::Tag(n),
                    _ => Header::Simple(n),
                });
            }
        }
        self.long_header()
    }

    /// Reads a header whose argument follows its initial byte (or is
    /// missing, or malformed).
    #[inline(never)]
    fn long_header(&mut self) -> Result<Header> {
        let start = self.pos;
        let Some(&initial) = self.input.get(start) else {
            return Err(Error::eof(start));
        };
        self.pos += 1;
        let major = initial >> 5;
        let info = initial & 0x1f;
        let arg: Option<u64> = match info {
            0..=23 => Some(u64::from(info)),
            24 => Some(u64::from(self.take_array::<1>()?[0])),
            25 => {
                let b = self.take_array::<2>()?;
                if major == 7 {
                    return Ok(Header::Float(f16_to_f64(u16::from_be_bytes(b))));
                }
                Some(u64::from(u16::from_be_bytes(b)))
            }
            26 => {
                let b = self.take_array::<4>()?;
                if major == 7 {
                    return Ok(Header::Float(f64::from(f32::from_be_bytes(b))));
                }
                Some(u64::from(u32::from_be_bytes(b)))
            }
            27 => {
                let b = self.take_array::<8>()?;
                if major == 7 {
                    return Ok(Header::Float(f64::from_be_bytes(b)));
                }
                Some(u64::from_be_bytes(b))
            }
            31 => None,
            _ => return Err(Error::syntax(start)),
        };
        let len = |arg: Option<u64>| match arg {
            Some(n) => usize::try_from(n)
                .map(Some)
                .map_err(|_| Error::syntax(start)),
            None => Ok(None),
        };
        Ok(match (major, arg) {
            (0, Some(n)) => Header::Positive(n),
            (1, Some(n)) => Header::Negative(n),
            (2, arg) => Header::Bytes(len(arg)?),
            (3, arg) => Header::Text(len(arg)?),
            (4, arg) => Header::Array(len(arg)?),
            (5, arg) => Header::Map(len(arg)?),
            (6, Some(n)) => Header::Tag(n),
            // Argument of 1 byte or less: a simple value (floats returned above).
            (7, Some(n)) => Header::Simple(n),
            (7, None) => Header::Break,
            _ => return Err(Error::syntax(start)),
        })
    }

    /// Reads the next header after any tags, with its offset.
    #[inline]
    fn untagged_header(&mut self) -> Result<(usize, Header)> {
        loop {
            let start = self.pos;
            match self.header()? {
                Header::Tag(_) => continue,
                header => return Ok((start, header)),
            }
        }
    }

    /// Whether the next item is a break (which is then consumed).
    #[inline]
    fn at_break(&mut self) -> Result<bool> {
        match self.input.get(self.pos) {
            Some(0xff) => {
                self.pos += 1;
                Ok(true)
            }
            Some(_) => Ok(false),
            None => Err(Error::eof(self.pos)),
        }
    }

    /// Runs `f` one array, map or tag deeper.
    #[inline]
    fn recurse<V>(&mut self, f: impl FnOnce(&mut Self) -> Result<V>) -> Result<V> {
        if self.depth == 0 {
            return Err(Error::new(self.pos, "recursion limit exceeded"));
        }
        self.depth -= 1;
        let wraps = std::mem::replace(&mut self.wraps, WRAP_LIMIT);
        let result = f(self);
        self.wraps = wraps;
        self.depth += 1;
        result
    }

    /// Runs `f` inside one more `Some` or newtype wrapper.
    #[inline]
    fn wrap<V>(&mut self, f: impl FnOnce(&mut Self) -> Result<V>) -> Result<V> {
        if self.wraps == 0 {
            return Err(Error::new(self.pos, "recursion limit exceeded"));
        }
        self.wraps -= 1;
        let result = f(self);
        self.wraps += 1;
        result
    }

    /// The content of a byte (`text` false) or text string whose header
    /// gave `len`: borrowed if definite, joined if segmented.
    /// Segments of a text string must each be valid UTF-8, as ciborium
    /// requires; a definite one is checked by [`Self::visit_text`].
    fn string_bytes(&mut self, text: bool, len: Option<usize>) -> Result<Cow<'de, [u8]>> {
        if let Some(n) = len {
            return self.take(n).map(Cow::Borrowed);
        }
        let mut joined = Vec::new();
        // Indefinite segments inside are flattened, as ciborium does.
        let mut nested = 1usize;
        loop {
            let at = self.pos;
            match (self.header()?, text) {
                (Header::Break, _) => {
                    nested -= 1;
                    if nested == 0 {
                        return Ok(Cow::Owned(joined));
                    }
                }
                (Header::Text(None), true) | (Header::Bytes(None), false) => nested += 1,
                (Header::Text(Some(n)), true) | (Header::Bytes(Some(n)), false) => {
                    let segment = self.take(n)?;
                    if text && std::str::from_utf8(segment).is_err() {
                        return Err(Error::new(at, "invalid UTF-8 in a text string"));
                    }
                    joined.extend_from_slice(segment);
                }
                _ => return Err(Error::syntax(at)),
            }
        }
    }

    /// Visits the text string whose header at `start` gave `len`:
    /// borrowed if definite, joined if segmented.
    #[inline]
    fn visit_text<V: Visitor<'de>>(
        &mut self,
        len: Option<usize>,
        start: usize,
        visitor: V,
    ) -> Result<V::Value> {
        let invalid = |_| Error::new(start, "invalid UTF-8 in a text string");
        match len {
            Some(n) => {
                let s = std::str::from_utf8(self.take(n)?).map_err(invalid)?;
                at(visitor.visit_borrowed_str(s), start)
            }
            None => {
                let joined = self.string_bytes(true, None)?.into_owned();
                // Each segment was checked, so this cannot fail.
                let s = String::from_utf8(joined).map_err(|e| invalid(e.utf8_error()))?;
                at(visitor.visit_string(s), start)
            }
        }
    }

    /// Visits the byte string whose header at `start` gave `len`.
    fn visit_bytes<V: Visitor<'de>>(
        &mut self,
        len: Option<usize>,
        start: usize,
        visitor: V,
    ) -> Result<V::Value> {
        match self.string_bytes(false, len)? {
            Cow::Borrowed(b) => at(visitor.visit_borrowed_bytes(b), start),
            Cow::Owned(b) => at(visitor.visit_byte_buf(b), start),
        }
    }

    /// The content of a bignum whose tag was just read: at most 16
    /// significant bytes (ciborium's limit).
    fn bignum(&mut self) -> Result<u128> {
        let start = self.pos;
        let len = match self.header()? {
            Header::Bytes(len) => len,
            header => return Err(header.expected("bytes", start)),
        };
        let digits = self.string_bytes(false, len)?;
        let digits = match digits.iter().position(|&b| b != 0) {
            Some(first) => &digits[first..],
            None => &[],
        };
        if digits.len() > 16 {
            return Err(Error::new(start, "bigint too large"));
        }
        Ok(digits
            .iter()
            .fold(0u128, |acc, &b| acc << 8 | u128::from(b)))
    }

    /// An integer, after any tags: its offset, its sign (true for
    /// negative) and its magnitude, `-1 - n` for negatives.
    #[inline(never)]
    fn integer(&mut self) -> Result<(usize, bool, u128)> {
        loop {
            let start = self.pos;
            return match self.header()? {
                Header::Positive(x) => Ok((start, false, x.into())),
                Header::Negative(x) => Ok((start, true, x.into())),
                Header::Tag(TAG_BIGPOS) => Ok((start, false, self.bignum()?)),
                Header::Tag(TAG_BIGNEG) => Ok((start, true, self.bignum()?)),
                Header::Tag(_) => continue,
                header => Err(header.expected("integer", start)),
            };
        }
    }

    /// Visits a sequence of `len` items (or up to a break).
    fn visit_seq<V: Visitor<'de>>(
        &mut self,
        len: Option<usize>,
        start: usize,
        visitor: V,
    ) -> Result<V::Value> {
        self.recurse(|de| at(visitor.visit_seq(Access { de, len }), start))
    }

    /// Visits a map of `len` entries (or up to a break).
    fn visit_map<V: Visitor<'de>>(
        &mut self,
        len: Option<usize>,
        start: usize,
        visitor: V,
    ) -> Result<V::Value> {
        self.recurse(|de| at(visitor.visit_map(Access { de, len }), start))
    }

    /// Visits a tag's content through ciborium's tag protocol.
    fn visit_tag<V: Visitor<'de>>(
        &mut self,
        tag: Option<u64>,
        start: usize,
        visitor: V,
    ) -> Result<V::Value> {
        self.recurse(|de| {
            let access = TagAccess {
                parent: Some(de),
                state: 0,
                tag,
            };
            at(visitor.visit_enum(access), start)
        })
    }
}

impl<'de> de::Deserializer<'de> for &mut Deserializer<'de> {
    type Error = Error;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        let start = self.pos;
        match self.header()? {
            Header::Positive(x) => at(visitor.visit_u64(x), start),
            Header::Negative(x) => match i64::try_from(x) {
                Ok(x) => at(visitor.visit_i64(x ^ !0), start),
                Err(_) => at(visitor.visit_i128(i128::from(x) ^ !0), start),
            },
            Header::Bytes(len) => self.visit_bytes(len, start, visitor),
            Header::Text(len) => self.visit_text(len, start, visitor),
            Header::Array(len) => self.visit_seq(len, start, visitor),
            Header::Map(len) => self.visit_map(len, start, visitor),
            Header::Tag(tag) => {
                let content = self.pos;
                let next = self.header()?;
                self.pos = content;
                match (tag, next) {
                    (TAG_BIGPOS | TAG_BIGNEG, Header::Bytes(Some(len))) if len <= 16 => {
                        let raw = self.bignum()?;
                        if tag == TAG_BIGPOS {
                            at(visitor.visit_u128(raw), start)
                        } else {
                            match i128::try_from(raw) {
                                Ok(x) => at(visitor.visit_i128(x ^ !0), start),
                                Err(_) => Err(Error::new(start, "integer too large")),
                            }
                        }
                    }
                    _ => self.visit_tag(Some(tag), start, visitor),
                }
            }
            Header::Float(x) => at(visitor.visit_f64(x), start),
            Header::Simple(SIMPLE_FALSE) => at(visitor.visit_bool(false), start),
            Header::Simple(SIMPLE_TRUE) => at(visitor.visit_bool(true), start),
            Header::Simple(SIMPLE_NULL | SIMPLE_UNDEFINED) => at(visitor.visit_none(), start),
            header @ Header::Simple(_) => Err(header.expected("known simple value", start)),
            Header::Break => Err(Header::Break.expected("non-break", start)),
        }
    }

    fn deserialize_bool<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        match self.untagged_header()? {
            (start, Header::Simple(SIMPLE_FALSE)) => at(visitor.visit_bool(false), start),
            (start, Header::Simple(SIMPLE_TRUE)) => at(visitor.visit_bool(true), start),
            (start, _) => Err(Error::new(start, "expected bool")),
        }
    }

    fn deserialize_f32<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        self.deserialize_f64(visitor)
    }

    fn deserialize_f64<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        match self.untagged_header()? {
            (start, Header::Float(x)) => at(visitor.visit_f64(x), start),
            (start, header) => Err(header.expected("float", start)),
        }
    }

    fn deserialize_i8<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        self.deserialize_i64(visitor)
    }

    fn deserialize_i16<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        self.deserialize_i64(visitor)
    }

    fn deserialize_i32<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        self.deserialize_i64(visitor)
    }

    fn deserialize_i64<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        // The common case first: no tag, no bignum, in range.
        let start = self.pos;
        let small = match self.header()? {
            Header::Positive(x) => i64::try_from(x).ok(),
            Header::Negative(x) => i64::try_from(x).ok().map(|x| x ^ !0),
            _ => None,
        };
        if let Some(x) = small {
            return at(visitor.visit_i64(x), start);
        }
        self.pos = start;
        let (start, negative, raw) = self.integer()?;
        match i64::try_from(raw) {
            Ok(x) => at(visitor.visit_i64(if negative { x ^ !0 } else { x }), start),
            Err(_) => Err(Error::new(start, "integer too large")),
        }
    }

    fn deserialize_i128<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        let (start, negative, raw) = self.integer()?;
        match i128::try_from(raw) {
            Ok(x) => at(visitor.visit_i128(if negative { x ^ !0 } else { x }), start),
            Err(_) => Err(Error::new(start, "integer too large")),
        }
    }

    fn deserialize_u8<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        self.deserialize_u64(visitor)
    }

    fn deserialize_u16<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        self.deserialize_u64(visitor)
    }

    fn deserialize_u32<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        self.deserialize_u64(visitor)
    }

    fn deserialize_u64<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        // The common case first: no tag, no bignum.
        let start = self.pos;
        match self.header()? {
            Header::Positive(x) => return at(visitor.visit_u64(x), start),
            _ => self.pos = start,
        }
        match self.integer()? {
            (start, true, _) => Err(Error::new(start, "unexpected negative integer")),
            (start, false, raw) => match u64::try_from(raw) {
                Ok(x) => at(visitor.visit_u64(x), start),
                Err(_) => Err(Error::new(start, "integer too large")),
            },
        }
    }

    fn deserialize_u128<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        match self.integer()? {
            (start, true, _) => Err(Error::new(start, "unexpected negative integer")),
            (start, false, raw) => at(visitor.visit_u128(raw), start),
        }
    }

    fn deserialize_char<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        match self.untagged_header()? {
            (start, header @ Header::Text(Some(len))) if len <= 4 => {
                let bytes = self.take(len)?;
                let s = std::str::from_utf8(bytes)
                    .map_err(|_| Error::new(start, "invalid UTF-8 in a text string"))?;
                let mut chars = s.chars();
                match (chars.next(), chars.next()) {
                    (Some(c), None) => at(visitor.visit_char(c), start),
                    _ => Err(header.expected("char", start)),
                }
            }
            (start, header) => Err(header.expected("char", start)),
        }
    }

    fn deserialize_str<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        match self.untagged_header()? {
            (start, Header::Text(len)) => self.visit_text(len, start, visitor),
            (start, header) => Err(header.expected("str", start)),
        }
    }

    fn deserialize_string<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        match self.untagged_header()? {
            (start, Header::Text(len)) => self.visit_text(len, start, visitor),
            (start, header) => Err(header.expected("string", start)),
        }
    }

    fn deserialize_bytes<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        match self.untagged_header()? {
            (start, Header::Bytes(len)) => self.visit_bytes(len, start, visitor),
            (start, Header::Array(len)) => self.visit_seq(len, start, visitor),
            (start, header) => Err(header.expected("bytes", start)),
        }
    }

    fn deserialize_byte_buf<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        match self.untagged_header()? {
            (start, Header::Bytes(len)) => self.visit_bytes(len, start, visitor),
            (start, Header::Array(len)) => self.visit_seq(len, start, visitor),
            (start, header) => Err(header.expected("byte buffer", start)),
        }
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        // No tags skipped here, as in ciborium: a tagged null is `Some`.
        let start = self.pos;
        match self.header()? {
            Header::Simple(SIMPLE_NULL | SIMPLE_UNDEFINED) => at(visitor.visit_none(), start),
            _ => {
                self.pos = start;
                self.wrap(|de| at(visitor.visit_some(de), start))
            }
        }
    }

    fn deserialize_unit<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        match self.untagged_header()? {
            (start, Header::Simple(SIMPLE_NULL | SIMPLE_UNDEFINED)) => {
                at(visitor.visit_unit(), start)
            }
            (start, header) => Err(header.expected("unit", start)),
        }
    }

    fn deserialize_unit_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value> {
        self.deserialize_unit(visitor)
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value> {
        let start = self.pos;
        self.wrap(|de| at(visitor.visit_newtype_struct(de), start))
    }

    fn deserialize_seq<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        match self.untagged_header()? {
            (start, Header::Array(len)) => self.visit_seq(len, start, visitor),
            (start, Header::Bytes(len)) => {
                let bytes = self.string_bytes(false, len)?;
                at(
                    visitor.visit_seq(ByteAccess {
                        bytes: &bytes,
                        next: 0,
                    }),
                    start,
                )
            }
            (start, header) => Err(header.expected("array", start)),
        }
    }

    fn deserialize_tuple<V: Visitor<'de>>(self, _len: usize, visitor: V) -> Result<V::Value> {
        self.deserialize_seq(visitor)
    }

    fn deserialize_tuple_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _len: usize,
        visitor: V,
    ) -> Result<V::Value> {
        self.deserialize_seq(visitor)
    }

    fn deserialize_map<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        match self.untagged_header()? {
            (start, Header::Map(len)) => self.visit_map(len, start, visitor),
            (start, header) => Err(header.expected("map", start)),
        }
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value> {
        self.deserialize_map(visitor)
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        name: &'static str,
        _variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value> {
        let start = self.pos;
        if name == TAG_ENUM {
            let tag = match self.header()? {
                Header::Tag(tag) => Some(tag),
                _ => {
                    self.pos = start;
                    None
                }
            };
            return self.visit_tag(tag, start, visitor);
        }
        match self.untagged_header()? {
            (_, Header::Map(Some(1))) => {}
            (at_text, Header::Text(_)) => self.pos = at_text,
            (start, header) => return Err(header.expected("enum", start)),
        }
        self.recurse(|de| at(visitor.visit_enum(Access { de, len: Some(0) }), start))
    }

    fn deserialize_identifier<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        match self.untagged_header()? {
            (start, Header::Text(len)) => self.visit_text(len, start, visitor),
            (start, Header::Bytes(len)) => self.visit_bytes(len, start, visitor),
            (start, header) => Err(header.expected("str or bytes", start)),
        }
    }

    fn deserialize_ignored_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        self.deserialize_any(visitor)
    }

    fn is_human_readable(&self) -> bool {
        false
    }
}

/// The items of an array, the entries of a map, or an enum's variant.
struct Access<'a, 'de> {
    de: &'a mut Deserializer<'de>,
    /// Items (entries) left, or `None` up to a break.
    len: Option<usize>,
}

impl Access<'_, '_> {
    /// Whether another item follows (consuming it from the count).
    #[inline]
    fn more(&mut self) -> Result<bool> {
        match self.len {
            Some(0) => Ok(false),
            Some(n) => {
                self.len = Some(n - 1);
                Ok(true)
            }
            None => Ok(!self.de.at_break()?),
        }
    }

    /// A size hint no larger than the input can hold, at `min_size` bytes
    /// an item: lengths from the input are not trusted for allocation.
    fn hint(&self, min_size: usize) -> Option<usize> {
        self.len.map(|n| n.min(self.de.remaining() / min_size))
    }
}

impl<'de> de::SeqAccess<'de> for Access<'_, 'de> {
    type Error = Error;

    #[inline]
    fn next_element_seed<T: DeserializeSeed<'de>>(&mut self, seed: T) -> Result<Option<T::Value>> {
        if !self.more()? {
            return Ok(None);
        }
        let start = self.de.pos;
        at(seed.deserialize(&mut *self.de), start).map(Some)
    }

    fn size_hint(&self) -> Option<usize> {
        self.hint(1)
    }
}

impl<'de> de::MapAccess<'de> for Access<'_, 'de> {
    type Error = Error;

    #[inline]
    fn next_key_seed<K: DeserializeSeed<'de>>(&mut self, seed: K) -> Result<Option<K::Value>> {
        if !self.more()? {
            return Ok(None);
        }
        let start = self.de.pos;
        at(seed.deserialize(&mut *self.de), start).map(Some)
    }

    #[inline]
    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value> {
        let start = self.de.pos;
        at(seed.deserialize(&mut *self.de), start)
    }

    fn size_hint(&self) -> Option<usize> {
        self.hint(2)
    }
}

impl<'de> de::EnumAccess<'de> for Access<'_, 'de> {
    type Error = Error;
    type Variant = Self;

    fn variant_seed<V: DeserializeSeed<'de>>(self, seed: V) -> Result<(V::Value, Self)> {
        let variant = seed.deserialize(&mut *self.de)?;
        Ok((variant, self))
    }
}

impl<'de> de::VariantAccess<'de> for Access<'_, 'de> {
    type Error = Error;

    fn unit_variant(self) -> Result<()> {
        Ok(())
    }

    fn newtype_variant_seed<T: DeserializeSeed<'de>>(self, seed: T) -> Result<T::Value> {
        seed.deserialize(self.de)
    }

    fn tuple_variant<V: Visitor<'de>>(self, _len: usize, visitor: V) -> Result<V::Value> {
        de::Deserializer::deserialize_any(self.de, visitor)
    }

    fn struct_variant<V: Visitor<'de>>(
        self,
        _fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value> {
        de::Deserializer::deserialize_any(self.de, visitor)
    }
}

/// A byte string read as a sequence of `u8`.
struct ByteAccess<'b> {
    bytes: &'b [u8],
    next: usize,
}

impl<'de> de::SeqAccess<'de> for ByteAccess<'_> {
    type Error = Error;

    fn next_element_seed<T: DeserializeSeed<'de>>(&mut self, seed: T) -> Result<Option<T::Value>> {
        match self.bytes.get(self.next) {
            Some(&byte) => {
                self.next += 1;
                seed.deserialize(byte.into_deserializer()).map(Some)
            }
            None => Ok(None),
        }
    }

    fn size_hint(&self) -> Option<usize> {
        Some(self.bytes.len() - self.next)
    }
}

/// ciborium's tag protocol: the enum [`TAG_ENUM`] whose variant names
/// whether a tag was there, then (for [`TAGGED`]) a sequence of the tag
/// number and the content, or (for [`UNTAGGED`]) the content.
struct TagAccess<'a, 'de> {
    /// The deserializer, until the content is read from it.
    parent: Option<&'a mut Deserializer<'de>>,
    /// How many of the variant name and the tag number were read.
    state: usize,
    tag: Option<u64>,
}

impl TagAccess<'_, '_> {
    fn error(&self, message: &str) -> Error {
        let error = <Error as de::Error>::custom(message);
        match &self.parent {
            Some(de) => error.at(de.pos),
            None => error,
        }
    }
}

impl<'de> de::Deserializer<'de> for &mut TagAccess<'_, 'de> {
    type Error = Error;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value> {
        self.state += 1;
        match (self.state, self.tag) {
            (1, Some(_)) => visitor.visit_str(TAGGED),
            (1, None) => visitor.visit_str(UNTAGGED),
            (_, Some(tag)) => visitor.visit_u64(tag),
            (_, None) => Err(self.error("expected tag")),
        }
    }

    forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string
        bytes byte_buf option unit unit_struct newtype_struct seq tuple
        tuple_struct map struct enum identifier ignored_any
    }
}

impl<'de> de::EnumAccess<'de> for TagAccess<'_, 'de> {
    type Error = Error;
    type Variant = Self;

    fn variant_seed<V: DeserializeSeed<'de>>(mut self, seed: V) -> Result<(V::Value, Self)> {
        let variant = seed.deserialize(&mut self)?;
        Ok((variant, self))
    }
}

impl<'de> de::VariantAccess<'de> for TagAccess<'_, 'de> {
    type Error = Error;

    fn unit_variant(self) -> Result<()> {
        Err(self.error("expected tag"))
    }

    fn newtype_variant_seed<T: DeserializeSeed<'de>>(mut self, seed: T) -> Result<T::Value> {
        match self.parent.take() {
            Some(de) => seed.deserialize(de),
            None => Err(self.error("expected tag")),
        }
    }

    fn tuple_variant<V: Visitor<'de>>(self, _len: usize, visitor: V) -> Result<V::Value> {
        visitor.visit_seq(self)
    }

    fn struct_variant<V: Visitor<'de>>(
        self,
        _fields: &'static [&'static str],
        _visitor: V,
    ) -> Result<V::Value> {
        Err(self.error("expected tag"))
    }
}

impl<'de> de::SeqAccess<'de> for TagAccess<'_, 'de> {
    type Error = Error;

    fn next_element_seed<T: DeserializeSeed<'de>>(&mut self, seed: T) -> Result<Option<T::Value>> {
        if self.state < 2 {
            return seed.deserialize(&mut *self).map(Some);
        }
        match self.parent.take() {
            Some(de) => seed.deserialize(de).map(Some),
            None => Ok(None),
        }
    }
}

#[cfg(test)]
mod tests;
