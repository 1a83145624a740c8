//! Records as readable trees, without the Rust types (`durus dump`).
//!
//! Rust-written record data is self-describing CBOR (see docs/FORMAT.md):
//! the `D9 D9 F7` marker, the class name, then one CBOR item for the
//! state. [`describe`] decodes that item into a [`Node`] tree, turning the
//! two reference tags ([`TAG_REF`] around an oid, [`TAG_OBJ`] around
//! `[oid, class]`) into [`Node::Ref`]. Python-written (pickled) data is not
//! decoded: it is shown by class name, size and refs.
//!
//! ```
//! use durus_core::format::{class_name, record, Oid};
//! use durus_core::tools::dump::{describe, Encoding};
//!
//! let mut data = Vec::new();
//! class_name::write_cbor_header(&mut data, "shop.Item");
//! // {"sku": "A1", "tags": tag 0x64757272 (2)}
//! data.extend_from_slice(b"\xA2\x63sku\x62A1\x64tags\xDA\x64\x75\x72\x72\x02");
//! let bytes = record::encode(Oid(1), &data, &[Oid(2)])?;
//!
//! let mut dumped = describe(&bytes)?;
//! assert_eq!(dumped.encoding, Encoding::Cbor);
//! dumped.resolve(&mut |oid| (oid == Oid(2)).then(|| "shop.Tags".to_string()));
//! assert_eq!(
//!     dumped.to_string(),
//!     "oid 1  shop.Item  (52 bytes, refs: 1)\n  sku: \"A1\"\n  tags: -> oid 2 (shop.Tags)\n"
//! );
//! # Ok::<(), durus_core::Error>(())
//! ```

use std::fmt::{self, Write as _};

use ciborium::value::Value;

use crate::error::{Error, Result};
use crate::format::class_name::{self, ClassName, CBOR_MAGIC};
use crate::format::{Oid, Record};

pub use crate::format::class_name::{TAG_OBJ, TAG_REF};

/// How a record's data is encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    /// Written by durus for Rust: CBOR, decoded into a [`Node`] tree.
    Cbor,
    /// Written by Python Durus: pickles, not decoded.
    Pickle,
    /// Neither encoding was recognised.
    Unknown,
}

impl Encoding {
    /// `cbor`, `pickle` or `unknown`.
    pub fn as_str(self) -> &'static str {
        match self {
            Encoding::Cbor => "cbor",
            Encoding::Pickle => "pickle",
            Encoding::Unknown => "unknown",
        }
    }
}

impl fmt::Display for Encoding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A reference to another persistent object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ref {
    /// The referenced oid.
    pub oid: Oid,
    /// Its class name: written in the data for a `PObject` reference,
    /// otherwise `None` until [`Dumped::resolve`] looks it up.
    pub class: Option<String>,
}

impl fmt::Display for Ref {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "-> oid {}", self.oid)?;
        match &self.class {
            Some(class) => write!(f, " ({class})"),
            None => Ok(()),
        }
    }
}

/// One value of a decoded CBOR state.
#[derive(Debug, Clone, PartialEq)]
pub enum Node {
    /// CBOR null (and undefined): `Option::None`, `()`.
    Null,
    /// A boolean.
    Bool(bool),
    /// Any CBOR integer (they range over -2^64 ..= 2^64 - 1).
    Integer(i128),
    /// A float.
    Float(f64),
    /// A text string.
    Text(String),
    /// A byte string.
    Bytes(Vec<u8>),
    /// An array: a `Vec`, a tuple, a sequence container's contents.
    Array(Vec<Node>),
    /// A map in stored order: a struct's fields, a map's entries.
    Map(Vec<(Node, Node)>),
    /// A reference to another persistent object (either reference tag).
    Ref(Ref),
    /// Any other CBOR tag around a value.
    Tag(u64, Box<Node>),
}

impl Node {
    /// Converts a decoded CBOR value, recognising the reference tags. A
    /// reference tag around anything but its documented content is kept
    /// as a plain [`Node::Tag`], so that a dump shows what is there.
    fn from_value(value: Value) -> Node {
        match value {
            Value::Null => Node::Null,
            Value::Bool(b) => Node::Bool(b),
            Value::Integer(i) => Node::Integer(i.into()),
            Value::Float(f) => Node::Float(f),
            Value::Text(s) => Node::Text(s),
            Value::Bytes(b) => Node::Bytes(b),
            Value::Array(items) => Node::Array(items.into_iter().map(Node::from_value).collect()),
            Value::Map(entries) => Node::Map(
                entries
                    .into_iter()
                    .map(|(k, v)| (Node::from_value(k), Node::from_value(v)))
                    .collect(),
            ),
            Value::Tag(tag, inner) => match (tag, *inner) {
                (TAG_REF, Value::Integer(i)) if u64::try_from(i).is_ok() => Node::Ref(Ref {
                    oid: Oid(u64::try_from(i).unwrap_or_default()),
                    class: None,
                }),
                (TAG_OBJ, Value::Array(pair)) if is_obj_pair(&pair) => {
                    let mut pair = pair.into_iter();
                    match (pair.next(), pair.next()) {
                        (Some(Value::Integer(i)), Some(Value::Text(class))) => Node::Ref(Ref {
                            oid: Oid(u64::try_from(i).unwrap_or_default()),
                            class: Some(class),
                        }),
                        // is_obj_pair checked the shape.
                        _ => Node::Null,
                    }
                }
                (tag, inner) => Node::Tag(tag, Box::new(Node::from_value(inner))),
            },
            // `Value` is non-exhaustive; ciborium 0.2 has no other variant.
            _ => Node::Null,
        }
    }

    /// True for a value written on one line in every context.
    fn is_scalar(&self) -> bool {
        match self {
            Node::Array(items) => items.is_empty(),
            Node::Map(entries) => entries.is_empty(),
            Node::Tag(_, inner) => inner.is_scalar(),
            _ => true,
        }
    }

    fn visit_refs_mut(&mut self, f: &mut dyn FnMut(&mut Ref)) {
        match self {
            Node::Ref(r) => f(r),
            Node::Array(items) => items.iter_mut().for_each(|n| n.visit_refs_mut(f)),
            Node::Map(entries) => entries.iter_mut().for_each(|(k, v)| {
                k.visit_refs_mut(f);
                v.visit_refs_mut(f);
            }),
            Node::Tag(_, inner) => inner.visit_refs_mut(f),
            _ => {}
        }
    }
}

/// The one-line form: CBOR diagnostic notation, near enough (`"text"`,
/// `h'00ff'`, `[1, 2]`, `{name: 1}`, `tag 1(5)`), references as
/// `-> oid N (class)`.
impl fmt::Display for Node {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&inline(self))
    }
}

fn is_obj_pair(pair: &[Value]) -> bool {
    matches!(pair, [Value::Integer(i), Value::Text(_)] if u64::try_from(*i).is_ok())
}

/// One record, described without its Rust type.
#[derive(Debug, Clone, PartialEq)]
pub struct Dumped {
    /// The record's oid.
    pub oid: Oid,
    /// The class name as the tools show it (`?` when unknown; for a pickle
    /// the short name, as Durus's `extract_class_name` returns it).
    pub class: String,
    /// How the data is encoded.
    pub encoding: Encoding,
    /// Size of the whole record in bytes (header, data and refs).
    pub size: usize,
    /// The record's refs, in stored order.
    pub refs: Vec<Ref>,
    /// The decoded state of CBOR data; `None` for other encodings (and
    /// from [`summarize`]).
    pub state: Option<Node>,
}

impl Dumped {
    /// Fills in the class of every reference (in the state and in
    /// [`refs`](Dumped::refs)) that does not name one, asking `lookup`
    /// (typically: load the referenced record and read its class name;
    /// `None` leaves the class unknown).
    pub fn resolve(&mut self, lookup: &mut dyn FnMut(Oid) -> Option<String>) {
        let mut fill = |r: &mut Ref| {
            if r.class.is_none() {
                r.class = lookup(r.oid);
            }
        };
        self.refs.iter_mut().for_each(&mut fill);
        if let Some(state) = &mut self.state {
            state.visit_refs_mut(&mut fill);
        }
    }
}

/// Describes a record: frame, class name and, for CBOR data, the decoded
/// state. A malformed record frame, or CBOR data whose header or state
/// does not decode (or is followed by stray bytes), is an error.
pub fn describe(record: &[u8]) -> Result<Dumped> {
    let mut dumped = summarize(record)?;
    let data = Record::decode(record)?.data;
    if dumped.encoding == Encoding::Cbor {
        let bad = |detail: String| Error::malformed(Some(dumped.oid), detail);
        let (_, state) = class_name::split_cbor(data).map_err(|e| bad(e.to_string()))?;
        dumped.state = Some(decode_state(state).map_err(bad)?);
    }
    Ok(dumped)
}

/// Like [`describe`] but without decoding the state (`state` is `None`):
/// only a malformed record frame is an error. For showing what is known
/// of a record whose state does not decode.
pub fn summarize(record: &[u8]) -> Result<Dumped> {
    let rec = Record::decode(record)?;
    let (class, encoding) = if rec.data.starts_with(&CBOR_MAGIC) {
        let class = match class_name::extract(rec.data) {
            ClassName::Cbor(name) => name.to_string(),
            _ => "?".to_string(),
        };
        (class, Encoding::Cbor)
    } else {
        match class_name::extract(rec.data) {
            name @ ClassName::Pickle(_) => (name.display(), Encoding::Pickle),
            other => (other.display(), Encoding::Unknown),
        }
    };
    Ok(Dumped {
        oid: rec.oid,
        class,
        encoding,
        size: record.len(),
        refs: rec.refs().map(|oid| Ref { oid, class: None }).collect(),
        state: None,
    })
}

/// Decodes exactly one CBOR item filling `bytes`.
fn decode_state(bytes: &[u8]) -> std::result::Result<Node, String> {
    let mut rest = bytes;
    let value: Value =
        ciborium::from_reader(&mut rest).map_err(|e| format!("CBOR state does not decode: {e}"))?;
    if !rest.is_empty() {
        return Err(format!("{} stray bytes after the CBOR state", rest.len()));
    }
    Ok(Node::from_value(value))
}

/// Longest inline rendering of a container before it is split over lines.
const INLINE_WIDTH: usize = 72;

/// The human rendering: a header line, then the state one field a line,
/// nested containers indented (see `durus dump --help`).
impl fmt::Display for Dumped {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let data_len = self.size.saturating_sub(12 + 8 * self.refs.len());
        let kind = match self.encoding {
            Encoding::Cbor => String::new(),
            other => format!("{other}, "),
        };
        writeln!(
            f,
            "oid {}  {}  ({kind}{} bytes, refs: {})",
            self.oid,
            self.class,
            self.size,
            self.refs.len()
        )?;
        let mut out = String::new();
        match &self.state {
            Some(state) => block(&mut out, state, 1),
            None => {
                let what = match self.encoding {
                    Encoding::Pickle => "pickled state",
                    _ => "data",
                };
                let _ = writeln!(out, "  ({what} of {data_len} bytes not decoded)");
                for r in &self.refs {
                    let _ = writeln!(out, "  {r}");
                }
            }
        }
        f.write_str(&out)
    }
}

/// Writes a node's contents as indented lines: the entries of a map or an
/// array, or the value itself on one line.
fn block(out: &mut String, node: &Node, depth: usize) {
    let pad = "  ".repeat(depth);
    match node {
        Node::Map(entries) if !entries.is_empty() => {
            for (k, v) in entries {
                entry(out, &pad, &key(k), v, depth);
            }
        }
        Node::Array(items) if !items.is_empty() => {
            for (i, v) in items.iter().enumerate() {
                entry(out, &pad, &format!("[{i}]"), v, depth);
            }
        }
        Node::Tag(tag, inner) if !inner.is_scalar() => {
            let _ = writeln!(out, "{pad}tag {tag}:");
            block(out, inner, depth + 1);
        }
        other => {
            let _ = writeln!(out, "{pad}{}", inline(other));
        }
    }
}

/// One `label: value` line, or `label:` followed by the value's block.
fn entry(out: &mut String, pad: &str, label: &str, value: &Node, depth: usize) {
    if let Some(text) = short(value) {
        let _ = writeln!(out, "{pad}{label}: {text}");
        return;
    }
    match value {
        Node::Tag(tag, inner) => {
            let _ = writeln!(out, "{pad}{label}: tag {tag}");
            block(out, inner, depth + 1);
        }
        _ => {
            let _ = writeln!(out, "{pad}{label}:");
            block(out, value, depth + 1);
        }
    }
}

/// The one-line form of a scalar, or of a container of scalars that fits
/// in [`INLINE_WIDTH`].
fn short(node: &Node) -> Option<String> {
    if node.is_scalar() {
        return Some(inline(node));
    }
    let flat = match node {
        Node::Array(items) => items.iter().all(Node::is_scalar),
        Node::Map(entries) => entries.iter().all(|(k, v)| k.is_scalar() && v.is_scalar()),
        _ => false,
    };
    let text = inline(node);
    (flat && text.len() <= INLINE_WIDTH).then_some(text)
}

/// A map key: a text key that reads as a name is written bare, any other
/// key in its inline form (so the text "4" and the integer 4 differ).
fn key(node: &Node) -> String {
    match node {
        Node::Text(s) if is_name(s) => s.clone(),
        other => inline(other),
    }
}

fn is_name(s: &str) -> bool {
    let mut chars = s.chars();
    chars.next().is_some_and(|c| c.is_alphabetic() || c == '_')
        && chars.all(|c| c.is_alphanumeric() || c == '_' || c == '.')
}

/// The one-line form of any node (CBOR diagnostic notation, near enough).
fn inline(node: &Node) -> String {
    let mut s = String::new();
    write_inline(&mut s, node);
    s
}

fn write_inline(s: &mut String, node: &Node) {
    match node {
        Node::Null => s.push_str("null"),
        Node::Bool(b) => {
            let _ = write!(s, "{b}");
        }
        Node::Integer(i) => {
            let _ = write!(s, "{i}");
        }
        Node::Float(x) => {
            let _ = write!(s, "{x:?}");
        }
        Node::Text(t) => {
            let _ = write!(s, "{t:?}");
        }
        Node::Bytes(b) => {
            s.push_str("h'");
            s.push_str(&hex(b));
            s.push('\'');
        }
        Node::Array(items) => {
            s.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    s.push_str(", ");
                }
                write_inline(s, item);
            }
            s.push(']');
        }
        Node::Map(entries) => {
            s.push('{');
            for (i, (k, v)) in entries.iter().enumerate() {
                if i > 0 {
                    s.push_str(", ");
                }
                s.push_str(&key(k));
                s.push_str(": ");
                write_inline(s, v);
            }
            s.push('}');
        }
        Node::Ref(r) => {
            let _ = write!(s, "{r}");
        }
        Node::Tag(tag, inner) => {
            let _ = write!(s, "tag {tag}(");
            write_inline(s, inner);
            s.push(')');
        }
    }
}

/// Lower-case hex digits of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(2 * bytes.len());
    for b in bytes {
        let _ = write!(s, "{b:02x}");
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::record;
    use proptest::prelude::*;

    /// Record data: the CBOR header for `class`, then `state` as given.
    fn cbor_data(class: &str, state: &[u8]) -> Vec<u8> {
        let mut data = Vec::new();
        class_name::write_cbor_header(&mut data, class);
        data.extend_from_slice(state);
        data
    }

    fn cbor_record(oid: u64, class: &str, state: &[u8], refs: &[u64]) -> Vec<u8> {
        let refs: Vec<Oid> = refs.iter().map(|&r| Oid(r)).collect();
        record::encode(Oid(oid), &cbor_data(class, state), &refs).unwrap()
    }

    /// The state of docs/FORMAT.md's example: sku "A1", qty 4, tags -> 2.
    const ITEM_STATE: &[u8] = b"\xA3\x63sku\x62A1\x63qty\x04\x64tags\xDA\x64\x75\x72\x72\x02";

    fn text(s: &str) -> Node {
        Node::Text(s.to_string())
    }

    #[test]
    fn cbor_record_decodes_into_a_tree_with_typed_refs() {
        let d = describe(&cbor_record(1, "shop.Item", ITEM_STATE, &[2])).unwrap();
        assert_eq!(d.oid, Oid(1));
        assert_eq!(d.class, "shop.Item");
        assert_eq!(d.encoding, Encoding::Cbor);
        assert_eq!(d.size, 12 + 37 + 8);
        assert_eq!(
            d.refs,
            vec![Ref {
                oid: Oid(2),
                class: None
            }]
        );
        assert_eq!(
            d.state,
            Some(Node::Map(vec![
                (text("sku"), text("A1")),
                (text("qty"), Node::Integer(4)),
                (
                    text("tags"),
                    Node::Ref(Ref {
                        oid: Oid(2),
                        class: None
                    })
                ),
            ]))
        );
    }

    #[test]
    fn untyped_ref_carries_its_class() {
        // {"data": {"a1": tag 0x6475726F [1, "shop.Item"]}}
        let state = b"\xA1\x64data\xA1\x62a1\xDA\x64\x75\x72\x6F\x82\x01\x69shop.Item";
        let d = describe(&cbor_record(
            0,
            "durus.persistent_dict.PersistentDict",
            state,
            &[1],
        ))
        .unwrap();
        let expected = Node::Map(vec![(
            text("data"),
            Node::Map(vec![(
                text("a1"),
                Node::Ref(Ref {
                    oid: Oid(1),
                    class: Some("shop.Item".into()),
                }),
            )]),
        )]);
        assert_eq!(d.state, Some(expected));
    }

    #[test]
    fn human_rendering_matches_the_documented_shape() {
        let mut d = describe(&cbor_record(1, "shop.Item", ITEM_STATE, &[2])).unwrap();
        d.resolve(&mut |oid| {
            assert_eq!(oid, Oid(2));
            Some("durus.persistent_list.PersistentList".into())
        });
        assert_eq!(
            d.to_string(),
            "oid 1  shop.Item  (57 bytes, refs: 1)\n\
             \x20 sku: \"A1\"\n\
             \x20 qty: 4\n\
             \x20 tags: -> oid 2 (durus.persistent_list.PersistentList)\n"
        );
    }

    #[test]
    fn resolve_keeps_written_classes_and_fills_missing_ones() {
        let state = b"\x82\xDA\x64\x75\x72\x72\x03\xDA\x64\x75\x72\x6F\x82\x04\x61X";
        let mut d = describe(&cbor_record(1, "t.Pair", state, &[3, 4])).unwrap();
        d.resolve(&mut |oid| Some(format!("looked.up{}", oid.0)));
        let classes: Vec<_> = d.refs.iter().map(|r| r.class.clone().unwrap()).collect();
        assert_eq!(classes, ["looked.up3", "looked.up4"]);
        let Some(Node::Array(items)) = &d.state else {
            panic!("{:?}", d.state)
        };
        assert_eq!(inline(&items[0]), "-> oid 3 (looked.up3)");
        assert_eq!(inline(&items[1]), "-> oid 4 (X)");
    }

    #[test]
    fn nested_containers_are_indented_and_small_ones_inline() {
        // {"name": "n", "rows": [{"k": 1}, [1, 2]], "empty": [], 7: h'00ff', "odd key": null}
        let state = b"\xA5\x64name\x61n\x64rows\x82\xA1\x61k\x01\x82\x01\x02\x65empty\x80\x07\x42\x00\xff\x67odd key\xF6";
        let d = describe(&cbor_record(9, "t.Nested", state, &[])).unwrap();
        assert_eq!(
            d.to_string(),
            "oid 9  t.Nested  (65 bytes, refs: 0)\n\
             \x20 name: \"n\"\n\
             \x20 rows:\n\
             \x20   [0]: {k: 1}\n\
             \x20   [1]: [1, 2]\n\
             \x20 empty: []\n\
             \x20 7: h'00ff'\n\
             \x20 \"odd key\": null\n"
        );
    }

    #[test]
    fn long_containers_are_split_over_lines() {
        let mut state = vec![0x98, 40]; // array of 40
        state.extend(std::iter::repeat_n(0x18, 40).flat_map(|b| [b, 100]));
        let d = describe(&cbor_record(2, "t.Long", &state, &[])).unwrap();
        let text = d.to_string();
        assert_eq!(text.lines().count(), 41, "{text}");
        assert!(text.contains("\n  [39]: 100\n"), "{text}");
    }

    #[test]
    fn other_tags_and_scalars_render_in_diagnostic_form() {
        // [tag 1(5), -3, 1.5, true, tag 0x64757272("not an oid")]
        let state = b"\x85\xC1\x05\x22\xF9\x3E\x00\xF5\xDA\x64\x75\x72\x72\x6Anot an oid";
        let d = describe(&cbor_record(3, "t.Misc", state, &[])).unwrap();
        let Some(state) = &d.state else { panic!() };
        assert_eq!(
            inline(state),
            "[tag 1(5), -3, 1.5, true, tag 1685418610(\"not an oid\")]"
        );
    }

    #[test]
    fn pickled_record_is_class_name_size_and_refs() {
        let data = b"\x80\x02cdurus.persistent_dict\nPersistentDict\nq\x00.x\x9c\x01\x02\x03";
        let bytes = record::encode(Oid(0), data, &[Oid(1), Oid(5)]).unwrap();
        let mut d = describe(&bytes).unwrap();
        assert_eq!(d.class, "PersistentDict");
        assert_eq!(d.encoding, Encoding::Pickle);
        assert_eq!(d.size, bytes.len());
        assert_eq!(d.state, None);
        d.resolve(&mut |oid| (oid == Oid(1)).then(|| "shop.Item".to_string()));
        assert_eq!(
            d.to_string(),
            format!(
                "oid 0  PersistentDict  (pickle, {} bytes, refs: 2)\n\
                 \x20 (pickled state of {} bytes not decoded)\n\
                 \x20 -> oid 1 (shop.Item)\n\
                 \x20 -> oid 5\n",
                bytes.len(),
                data.len()
            )
        );
    }

    #[test]
    fn unrecognised_data_is_unknown() {
        let d = describe(&record::encode(Oid(4), b"junk", &[]).unwrap()).unwrap();
        assert_eq!(d.class, "?");
        assert_eq!(d.encoding, Encoding::Unknown);
        assert_eq!(
            d.to_string(),
            "oid 4  ?  (unknown, 16 bytes, refs: 0)\n  (data of 4 bytes not decoded)\n"
        );
    }

    #[test]
    fn truncated_cbor_state_is_an_error_naming_the_oid() {
        let bytes = cbor_record(7, "shop.Item", &ITEM_STATE[..10], &[]);
        let err = describe(&bytes).unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("oid 7"), "{msg}");
        assert!(msg.contains("CBOR state does not decode"), "{msg}");
        // The frame is still described.
        let d = summarize(&bytes).unwrap();
        assert_eq!(
            (d.class.as_str(), d.encoding),
            ("shop.Item", Encoding::Cbor)
        );
    }

    #[test]
    fn stray_bytes_after_the_state_are_an_error() {
        let err = describe(&cbor_record(7, "t.X", b"\x01\x02", &[])).unwrap_err();
        assert!(err.to_string().contains("1 stray bytes"), "{err}");
    }

    #[test]
    fn broken_cbor_header_is_an_error() {
        let data = [0xD9, 0xD9, 0xF7, 0x6F, b'a'];
        let err = describe(&record::encode(Oid(3), &data, &[]).unwrap()).unwrap_err();
        assert!(err.to_string().contains("oid 3"), "{err}");
        assert_eq!(
            summarize(&record::encode(Oid(3), &data, &[]).unwrap())
                .unwrap()
                .class,
            "?"
        );
    }

    #[test]
    fn deep_nesting_is_an_error_not_a_stack_overflow() {
        let mut state = vec![0x81; 100_000];
        state.push(0x00);
        assert!(describe(&cbor_record(1, "t.Deep", &state, &[])).is_err());
    }

    #[test]
    fn malformed_frame_is_an_error() {
        assert!(describe(&[0; 5]).is_err());
        assert!(summarize(&[0; 5]).is_err());
    }

    /// The tags above are the ones the object layer writes: a `PRef` field
    /// and `PObject` dict values come back as references.
    #[test]
    fn records_written_by_a_connection_show_their_references() {
        use crate::{Connection, MemoryStorage, PObject, PRef, Persistent, PersistentList};

        #[derive(serde::Serialize, serde::Deserialize)]
        struct Item {
            sku: String,
            tags: PRef<PersistentList<String>>,
        }
        impl Persistent for Item {
            const CLASS_NAME: &'static str = "shop.Item";
        }

        let conn = Connection::new(MemoryStorage::new()).unwrap();
        let tags = PRef::new(PersistentList::new());
        tags.push("red".to_string()).unwrap();
        let item = PRef::new(Item {
            sku: "A1".into(),
            tags,
        });
        conn.root()
            .insert("a1".to_string(), PObject::from(item))
            .unwrap();
        conn.commit().unwrap();
        let load = |oid: u64| conn.with_storage(|s| s.load(Oid(oid))).unwrap();

        let root = describe(&load(0)).unwrap();
        assert_eq!(root.class, "durus.persistent_dict.PersistentDict");
        let Some(state) = &root.state else { panic!() };
        assert_eq!(inline(state), "{data: {a1: -> oid 1 (shop.Item)}}");

        let item = describe(&load(1)).unwrap();
        let Some(state) = &item.state else { panic!() };
        assert_eq!(inline(state), "{sku: \"A1\", tags: -> oid 2}");
        let list = describe(&load(2)).unwrap();
        assert_eq!(list.class, "durus.persistent_list.PersistentList");
        let Some(state) = &list.state else { panic!() };
        assert_eq!(inline(state), "{data: [\"red\"]}");
    }

    proptest! {
        #[test]
        fn arbitrary_records_never_panic(bytes: Vec<u8>) {
            if let Ok(d) = describe(&bytes) {
                let _ = d.to_string();
            }
            let _ = summarize(&bytes);
        }

        #[test]
        fn arbitrary_cbor_states_never_panic(state: Vec<u8>, refs: Vec<u64>) {
            let bytes = cbor_record(1, "t.Any", &state, &refs);
            if let Ok(mut d) = describe(&bytes) {
                d.resolve(&mut |_| None);
                let _ = d.to_string();
            }
        }

        #[test]
        fn states_written_by_serde_decode_to_matching_trees(
            xs in proptest::collection::vec(any::<i64>(), 0..20),
            s in ".{0,40}",
        ) {
            let mut state = Vec::new();
            ciborium::into_writer(&(xs.clone(), s.clone()), &mut state).unwrap();
            let d = describe(&cbor_record(1, "t.Pair", &state, &[])).unwrap();
            let expected = Node::Array(vec![
                Node::Array(xs.iter().map(|&x| Node::Integer(x.into())).collect()),
                Node::Text(s),
            ]);
            prop_assert_eq!(d.state, Some(expected));
        }
    }
}
