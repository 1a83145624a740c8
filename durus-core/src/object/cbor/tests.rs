//! The slice deserializer against ciborium's: the same input gives the
//! same values (or, where ciborium fails, a clean error), and hostile
//! input never panics, overflows the stack or allocates beyond its size.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Debug;

use ciborium::tag::{Accepted, Captured, Required};
use ciborium::Value;
use proptest::collection::{btree_map, hash_map, vec};
use proptest::prelude::*;
use serde::de::{DeserializeOwned, IgnoredAny, SeqAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::{from_slice, Error, RECURSION_LIMIT};

fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    let mut out = Vec::new();
    ciborium::into_writer(value, &mut out).expect("ciborium encodes");
    out
}

/// ciborium's decode, its error as the message our errors compare with.
fn theirs<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, String> {
    ciborium::from_reader(bytes).map_err(|e| match e {
        ciborium::de::Error::Semantic(_, msg) => msg,
        other => format!("{other:?}"),
    })
}

fn ours<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, Error> {
    from_slice(bytes)
}

/// Decodes `bytes` as `T` with both; whenever ciborium succeeds, ours must
/// succeed with a value `same` as ciborium's. Ours runs (and must not
/// panic) either way.
fn agree_by<T: DeserializeOwned + Debug>(bytes: &[u8], same: impl Fn(&T, &T) -> bool) {
    let mine = ours::<T>(bytes);
    if let Ok(expected) = theirs::<T>(bytes) {
        match mine {
            Ok(got) => assert!(
                same(&got, &expected),
                "{bytes:02x?}: ours {got:?}, ciborium {expected:?}"
            ),
            Err(e) => panic!("{bytes:02x?}: ciborium decodes {expected:?}, ours fails: {e}"),
        }
    }
}

fn agree<T: DeserializeOwned + Debug + PartialEq>(bytes: &[u8]) {
    agree_by::<T>(bytes, |a, b| a == b);
}

/// `Value`s compared by their encodings (NaN-aware, order-preserving).
fn agree_value(bytes: &[u8]) {
    agree_by::<Value>(bytes, |a, b| encode(a) == encode(b));
}

// ---------------------------------------------------------------- types

/// An `f32` compared by its bits (NaN-aware); read exactly as an `f32`.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
#[serde(transparent)]
struct F32(f32);

impl PartialEq for F32 {
    fn eq(&self, other: &Self) -> bool {
        self.0.to_bits() == other.0.to_bits()
    }
}

/// An `f64` compared by its bits (NaN-aware); read exactly as an `f64`.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
#[serde(transparent)]
struct F64(f64);

impl PartialEq for F64 {
    fn eq(&self, other: &Self) -> bool {
        self.0.to_bits() == other.0.to_bits()
    }
}

/// A byte string (what `serde_bytes::ByteBuf` does).
#[derive(Debug, Clone, PartialEq)]
struct Bytes(Vec<u8>);

impl Serialize for Bytes {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(&self.0)
    }
}

impl<'de> Deserialize<'de> for Bytes {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Bytes;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("bytes")
            }
            fn visit_bytes<E>(self, v: &[u8]) -> Result<Bytes, E> {
                Ok(Bytes(v.to_vec()))
            }
            fn visit_byte_buf<E>(self, v: Vec<u8>) -> Result<Bytes, E> {
                Ok(Bytes(v))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Bytes, A::Error> {
                let mut out = Vec::new();
                while let Some(b) = seq.next_element()? {
                    out.push(b);
                }
                Ok(Bytes(out))
            }
        }
        d.deserialize_byte_buf(V)
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Newtype(u32);

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Marker;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
enum Kind {
    Unit,
    Newtype(i64),
    Tuple(u8, String),
    Struct { a: Option<u16>, b: Vec<bool> },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
enum Tree {
    Leaf(i32),
    Node(Vec<Tree>),
    Named { name: String, child: Box<Tree> },
}

/// Internally tagged: serde buffers it through `deserialize_any`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind")]
enum Internal {
    A { x: i32 },
    B { s: String, f: F64 },
}

/// Untagged: serde buffers it through `deserialize_any`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
enum Loose {
    Int(i64),
    Text(String),
    List(Vec<u16>),
    Rec { a: bool },
}

/// A flattened map: serde buffers it through `deserialize_any`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Flat {
    id: u32,
    #[serde(flatten)]
    rest: BTreeMap<String, i64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Inner {
    name: String,
    score: F64,
    tags: Vec<String>,
}

/// Every shape an object state can take.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Rich {
    small: (u8, u16, u32),
    big: u64,
    wide: u128,
    signed: (i8, i16, i32, i64),
    wide_signed: i128,
    f32s: Vec<F32>,
    f64s: Vec<F64>,
    flag: bool,
    nothing: (),
    text: String,
    letter: char,
    bytes: Bytes,
    maybe: Option<Inner>,
    inners: Vec<Inner>,
    by_name: BTreeMap<String, Option<i32>>,
    by_id: HashMap<i64, Vec<i8>>,
    triple: (u8, String, Option<F64>),
    id: Newtype,
    marker: Marker,
    kinds: Vec<Kind>,
    tree: Tree,
    internal: Vec<Internal>,
    loose: Vec<Loose>,
    flat: Flat,
}

// ----------------------------------------------------------- strategies

fn f64s() -> impl Strategy<Value = F64> {
    prop_oneof![
        any::<f64>(),
        Just(f64::NAN),
        Just(-f64::NAN),
        Just(f64::from_bits(0x7ff0_0000_0000_0001)), // signalling NaN
        Just(f64::from_bits(0x7ff8_0000_dead_beef)), // NaN with a payload
        Just(f64::INFINITY),
        Just(f64::NEG_INFINITY),
        Just(-0.0),
        Just(0.0),
        Just(5e-324),                   // smallest subnormal
        Just(f64::MIN_POSITIVE / 2.0),  // subnormal
        Just(65504.0),                  // largest half
        Just(5.960_464_477_539_063e-8), // smallest half subnormal
        Just(f64::from(0.1f32)),        // exact in single
        Just(1.5),
        Just(f64::MAX),
    ]
    .prop_map(F64)
}

fn f32s() -> impl Strategy<Value = F32> {
    prop_oneof![
        any::<f32>(),
        Just(f32::NAN),
        Just(f32::INFINITY),
        Just(f32::NEG_INFINITY),
        Just(-0.0f32),
        Just(1e-45f32), // smallest subnormal
        Just(f32::MIN_POSITIVE / 2.0),
        Just(0.1f32),
        Just(f32::MAX),
    ]
    // A signalling NaN is quieted by the widening to f64 that ciborium
    // writes; keep the originals comparable.
    .prop_map(|v| {
        F32(if v.is_nan() {
            f32::from_bits(v.to_bits() | 0x0040_0000)
        } else {
            v
        })
    })
}

fn inners() -> impl Strategy<Value = Inner> {
    (any::<String>(), f64s(), vec(any::<String>(), 0..3)).prop_map(|(name, score, tags)| Inner {
        name,
        score,
        tags,
    })
}

fn kinds() -> impl Strategy<Value = Kind> {
    prop_oneof![
        Just(Kind::Unit),
        any::<i64>().prop_map(Kind::Newtype),
        (any::<u8>(), any::<String>()).prop_map(|(a, b)| Kind::Tuple(a, b)),
        (any::<Option<u16>>(), vec(any::<bool>(), 0..4)).prop_map(|(a, b)| Kind::Struct { a, b }),
    ]
}

fn trees() -> impl Strategy<Value = Tree> {
    any::<i32>()
        .prop_map(Tree::Leaf)
        .prop_recursive(4, 24, 4, |inner| {
            prop_oneof![
                vec(inner.clone(), 0..4).prop_map(Tree::Node),
                ("[a-z]{0,6}", inner).prop_map(|(name, child)| Tree::Named {
                    name,
                    child: Box::new(child)
                }),
            ]
        })
}

fn internals() -> impl Strategy<Value = Internal> {
    prop_oneof![
        any::<i32>().prop_map(|x| Internal::A { x }),
        (any::<String>(), f64s()).prop_map(|(s, f)| Internal::B { s, f }),
    ]
}

fn looses() -> impl Strategy<Value = Loose> {
    prop_oneof![
        any::<i64>().prop_map(Loose::Int),
        any::<String>().prop_map(Loose::Text),
        vec(any::<u16>(), 0..4).prop_map(Loose::List),
        any::<bool>().prop_map(|a| Loose::Rec { a }),
    ]
}

fn richs() -> impl Strategy<Value = Rich> {
    let numbers = (
        any::<(u8, u16, u32)>(),
        prop_oneof![any::<u64>(), Just(u64::MAX), Just(0)],
        prop_oneof![
            any::<u128>(),
            Just(u128::MAX),
            Just(u128::from(u64::MAX) + 1)
        ],
        any::<(i8, i16, i32, i64)>(),
        prop_oneof![
            any::<i128>(),
            Just(i128::MIN),
            Just(i128::MAX),
            Just(i128::from(i64::MIN) - 1)
        ],
        vec(f32s(), 0..4),
        vec(f64s(), 0..4),
        any::<bool>(),
    );
    let texts = (
        any::<String>(),
        any::<char>(),
        vec(any::<u8>(), 0..16).prop_map(Bytes),
        proptest::option::of(inners()),
        vec(inners(), 0..3),
        btree_map(any::<String>(), any::<Option<i32>>(), 0..4),
        hash_map(any::<i64>(), vec(any::<i8>(), 0..4), 0..4),
        (any::<u8>(), any::<String>(), proptest::option::of(f64s())),
    );
    let shapes = (
        any::<u32>().prop_map(Newtype),
        vec(kinds(), 0..5),
        trees(),
        vec(internals(), 0..3),
        vec(looses(), 0..3),
        (any::<u32>(), btree_map("[a-h]{1,3}", any::<i64>(), 0..4))
            .prop_map(|(id, rest)| Flat { id, rest }),
    );
    (numbers, texts, shapes).prop_map(
        |(
            (small, big, wide, signed, wide_signed, f32s, f64s, flag),
            (text, letter, bytes, maybe, inners, by_name, by_id, triple),
            (id, kinds, tree, internal, loose, flat),
        )| Rich {
            small,
            big,
            wide,
            signed,
            wide_signed,
            f32s,
            f64s,
            flag,
            nothing: (),
            text,
            letter,
            bytes,
            maybe,
            inners,
            by_name,
            by_id,
            triple,
            id,
            marker: Marker,
            kinds,
            tree,
            internal,
            loose,
            flat,
        },
    )
}

/// One change to an encoding.
#[derive(Debug, Clone)]
enum Mutation {
    Set(usize, u8),
    Insert(usize, u8),
    Remove(usize),
    Truncate(usize),
}

fn mutate(mut bytes: Vec<u8>, mutations: &[Mutation]) -> Vec<u8> {
    for m in mutations {
        let len = bytes.len().max(1);
        match *m {
            Mutation::Set(i, b) if !bytes.is_empty() => bytes[i % len] = b,
            Mutation::Insert(i, b) => bytes.insert(i % (len + 1).min(bytes.len() + 1), b),
            Mutation::Remove(i) if !bytes.is_empty() => {
                bytes.remove(i % len);
            }
            Mutation::Truncate(i) => bytes.truncate(i % (len + 1)),
            _ => {}
        }
    }
    bytes
}

fn mutations() -> impl Strategy<Value = Vec<Mutation>> {
    let one = prop_oneof![
        4 => (any::<usize>(), any::<u8>()).prop_map(|(i, b)| Mutation::Set(i, b)),
        2 => (any::<usize>(), any::<u8>()).prop_map(|(i, b)| Mutation::Insert(i, b)),
        2 => any::<usize>().prop_map(Mutation::Remove),
        1 => any::<usize>().prop_map(Mutation::Truncate),
    ];
    vec(one, 1..4)
}

// ------------------------------------------------------------ proptests

proptest! {
    // Damaged and arbitrary input mostly fails; more cases find the few
    // that ciborium still decodes.
    #![proptest_config(ProptestConfig::with_cases(1024))]

    #[test]
    fn rich_values_decode_to_what_was_written_and_to_what_ciborium_decodes(rich in richs()) {
        let bytes = encode(&rich);
        let mine: Rich = ours(&bytes).map_err(|e| TestCaseError::fail(e.to_string()))?;
        let expected: Rich = theirs(&bytes).map_err(TestCaseError::fail)?;
        prop_assert_eq!(&mine, &expected);
        prop_assert_eq!(&mine, &rich);
    }

    #[test]
    fn rich_values_decode_as_ciborium_values_alike(rich in richs()) {
        agree_value(&encode(&rich));
    }

    #[test]
    fn damaged_encodings_decode_as_ciborium_decodes_them_or_fail_cleanly(
        rich in richs(),
        changes in mutations(),
    ) {
        let bytes = mutate(encode(&rich), &changes);
        agree::<Rich>(&bytes);
        agree_value(&bytes);
        agree::<IgnoredAny>(&bytes);
    }

    #[test]
    fn damaged_small_encodings_decode_as_ciborium_decodes_them_or_fail_cleanly(
        kinds in vec(kinds(), 0..4),
        tree in trees(),
        loose in vec(looses(), 0..3),
        changes in mutations(),
    ) {
        let bytes = mutate(encode(&kinds), &changes);
        agree::<Vec<Kind>>(&bytes);
        agree_value(&bytes);
        let bytes = mutate(encode(&tree), &changes);
        agree::<Tree>(&bytes);
        let bytes = mutate(encode(&loose), &changes);
        agree::<Vec<Loose>>(&bytes);
        agree_value(&bytes);
    }

    #[test]
    fn arbitrary_bytes_never_panic_and_decode_as_ciborium_decodes_them(
        bytes in vec(any::<u8>(), 0..48),
    ) {
        agree_value(&bytes);
        agree::<IgnoredAny>(&bytes);
        agree::<Rich>(&bytes);
        agree::<Tree>(&bytes);
        agree::<Vec<Kind>>(&bytes);
        agree::<Vec<Loose>>(&bytes);
        agree::<Vec<Internal>>(&bytes);
        agree::<Flat>(&bytes);
        agree::<(u64, String)>(&bytes);
        agree::<Option<i128>>(&bytes);
        agree::<Option<u128>>(&bytes);
        agree::<Vec<Option<i64>>>(&bytes);
        agree::<Vec<F32>>(&bytes);
        agree::<Vec<F64>>(&bytes);
        agree::<Bytes>(&bytes);
        agree::<Vec<u8>>(&bytes);
        agree::<String>(&bytes);
        agree::<char>(&bytes);
        agree::<bool>(&bytes);
        agree::<()>(&bytes);
        agree::<HashMap<i64, String>>(&bytes);
        agree::<Required<u64, 26>>(&bytes);
        agree::<Required<(u64, String), 27>>(&bytes);
        agree::<Captured<Vec<u8>>>(&bytes);
        agree::<Accepted<i32, 1>>(&bytes);
    }

    #[test]
    fn arbitrary_bytes_after_a_tag_or_header_decode_as_ciborium_decodes_them(
        head in prop_oneof![Just(vec![0xc2]), Just(vec![0xc3]), Just(vec![0xd8, 26]),
                            Just(vec![0x9f]), Just(vec![0xbf]), Just(vec![0x7f]), Just(vec![0x5f]),
                            Just(vec![0xa1]), Just(vec![0x82])],
        tail in vec(any::<u8>(), 0..24),
    ) {
        let bytes = [head, tail].concat();
        agree_value(&bytes);
        agree::<IgnoredAny>(&bytes);
        agree::<Option<i128>>(&bytes);
        agree::<Vec<u8>>(&bytes);
        agree::<Bytes>(&bytes);
        agree::<String>(&bytes);
        agree::<Vec<Kind>>(&bytes);
        agree::<Kind>(&bytes);
        agree::<Required<u64, 26>>(&bytes);
        agree::<BTreeMap<String, u8>>(&bytes);
    }
}

// ------------------------------------------------------ numbers, floats

#[test]
fn integers_of_every_width_decode_at_their_limits() {
    assert_eq!(ours::<u64>(&encode(&u64::MAX)).unwrap(), u64::MAX);
    assert_eq!(ours::<i64>(&encode(&i64::MIN)).unwrap(), i64::MIN);
    assert_eq!(ours::<i64>(&encode(&i64::MAX)).unwrap(), i64::MAX);
    assert_eq!(ours::<u8>(&encode(&255u8)).unwrap(), 255);
    assert_eq!(ours::<i8>(&encode(&-128i8)).unwrap(), -128);
    assert_eq!(ours::<u128>(&encode(&u128::MAX)).unwrap(), u128::MAX);
    assert_eq!(ours::<i128>(&encode(&i128::MIN)).unwrap(), i128::MIN);
    assert_eq!(ours::<i128>(&encode(&i128::MAX)).unwrap(), i128::MAX);
    // Below i64::MIN, CBOR's negative integers reach -2^64.
    let lowest = [0x3b, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff];
    assert_eq!(ours::<i128>(&lowest).unwrap(), -(1i128 << 64));
    assert_eq!(
        ours::<i64>(&lowest).unwrap_err().message(),
        "integer too large"
    );
    assert_eq!(theirs::<i64>(&lowest).unwrap_err(), "integer too large");
    // Out of range for the field: serde's own checks, as with ciborium.
    let big = encode(&300u16);
    assert_eq!(
        ours::<u8>(&big).unwrap_err().message(),
        theirs::<u8>(&big).unwrap_err()
    );
    let negative = encode(&-1i8);
    assert_eq!(
        ours::<u64>(&negative).unwrap_err().message(),
        "unexpected negative integer"
    );
    assert_eq!(
        theirs::<u64>(&negative).unwrap_err(),
        "unexpected negative integer"
    );
    // Through `deserialize_any`: u64, i64, then i128 below i64::MIN.
    assert_eq!(
        ours::<Value>(&lowest).unwrap(),
        Value::Integer((-(1i128 << 64)).try_into().unwrap())
    );
}

#[test]
fn bignums_decode_as_integers_and_more_than_16_significant_bytes_fail() {
    // Leading zeros do not count (ciborium skips them).
    let padded = [&[0xc2, 0x51, 0][..], &[0xff; 16][..]].concat();
    assert_eq!(ours::<u128>(&padded).unwrap(), u128::MAX);
    assert_eq!(theirs::<u128>(&padded).unwrap(), u128::MAX);
    // A small bignum is read for any integer field.
    assert_eq!(ours::<u8>(&[0xc2, 0x41, 7]).unwrap(), 7);
    assert_eq!(ours::<i32>(&[0xc3, 0x41, 7]).unwrap(), -8);
    let long = [&[0xc2, 0x51][..], &[0xff; 17][..]].concat();
    assert_eq!(
        ours::<u128>(&long).unwrap_err().message(),
        "bigint too large"
    );
    assert_eq!(theirs::<u128>(&long).unwrap_err(), "bigint too large");
    // A negative bignum below i128::MIN.
    let below = [&[0xc3, 0x50][..], &[0xff; 16][..]].concat();
    assert_eq!(
        ours::<i128>(&below).unwrap_err().message(),
        "integer too large"
    );
    assert_eq!(
        ours::<Value>(&below).unwrap_err().message(),
        "integer too large"
    );
    assert_eq!(theirs::<Value>(&below).unwrap_err(), "integer too large");
    // In `deserialize_any`, a bignum longer than 16 bytes is a tag.
    agree_value(&long);
    assert!(matches!(ours::<Value>(&long).unwrap(), Value::Tag(2, _)));
}

#[test]
fn every_half_float_widens_to_the_f64_ciborium_gives() {
    for bits in 0..=u16::MAX {
        let [hi, lo] = bits.to_be_bytes();
        let bytes = [0xf9, hi, lo];
        let mine: f64 = ours(&bytes).unwrap();
        let expected: f64 = theirs(&bytes).unwrap();
        assert_eq!(mine.to_bits(), expected.to_bits(), "half {bits:#06x}");
        let mine: f32 = ours(&bytes).unwrap();
        let expected: f32 = theirs(&bytes).unwrap();
        assert_eq!(
            mine.to_bits(),
            expected.to_bits(),
            "half {bits:#06x} as f32"
        );
    }
}

#[test]
fn floats_written_at_their_shortest_width_read_back_bit_for_bit() {
    let values = [
        0.0,
        -0.0,
        1.5,
        65504.0,
        5.960_464_477_539_063e-8,
        f64::from(0.1f32),
        0.1,
        5e-324,
        f64::INFINITY,
        f64::NEG_INFINITY,
        f64::NAN,
        f64::from_bits(0x7ff8_0000_dead_beef),
        f64::from_bits(0xfff4_0000_0000_0000),
    ];
    for v in values {
        let bytes = encode(&v);
        let mine: f64 = ours(&bytes).unwrap();
        assert_eq!(mine.to_bits(), v.to_bits(), "{v} from {bytes:02x?}");
    }
    // Half (3 bytes) and single (5 bytes) widths appear for f64 fields.
    assert_eq!(encode(&1.5f64).len(), 3);
    assert_eq!(encode(&f64::from(0.1f32)).len(), 5);
    // An integer is not a float, as in ciborium.
    assert!(ours::<f64>(&[0x01]).is_err() && theirs::<f64>(&[0x01]).is_err());
}

// ------------------------------------------------- strings, containers

#[test]
fn indefinite_strings_arrays_and_maps_decode_as_ciborium_decodes_them() {
    let text = [0x7f, 0x61, b'a', 0x62, b'b', b'c', 0xff];
    assert_eq!(ours::<String>(&text).unwrap(), "abc");
    agree::<String>(&text);
    agree_value(&text);
    // Segments nested in segments are flattened, as ciborium does.
    let nested = [0x7f, 0x7f, 0x61, b'a', 0xff, 0x61, b'b', 0xff];
    assert_eq!(ours::<String>(&nested).unwrap(), "ab");
    agree::<String>(&nested);
    let bytes = [0x5f, 0x41, 1, 0x42, 2, 3, 0xff];
    assert_eq!(ours::<Bytes>(&bytes).unwrap(), Bytes(vec![1, 2, 3]));
    assert_eq!(ours::<Vec<u8>>(&bytes).unwrap(), vec![1, 2, 3]);
    agree::<Bytes>(&bytes);
    agree::<Vec<u8>>(&bytes);
    let array = [0x9f, 0x01, 0x9f, 0xff, 0x02, 0xff];
    agree_value(&array);
    assert_eq!(ours::<(u8, Vec<u8>, u8)>(&array).unwrap(), (1, vec![], 2));
    let map = [0xbf, 0x61, b'k', 0x01, 0xff];
    assert_eq!(
        ours::<BTreeMap<String, u8>>(&map).unwrap(),
        BTreeMap::from([("k".to_string(), 1)])
    );
    agree::<BTreeMap<String, u8>>(&map);
    // A segment of another type is malformed.
    let mixed = [0x7f, 0x41, b'a', 0xff];
    assert!(ours::<String>(&mixed).is_err() && theirs::<String>(&mixed).is_err());
}

#[test]
fn text_segments_must_each_be_valid_utf8() {
    // "é" split across two segments: each segment must stand alone.
    let split = [0x7f, 0x61, 0xc3, 0x61, 0xa9, 0xff];
    assert_eq!(
        ours::<String>(&split).unwrap_err().message(),
        "invalid UTF-8 in a text string"
    );
    assert!(theirs::<String>(&split).is_err());
    let invalid = [0x62, 0xc3, 0x28];
    assert_eq!(ours::<String>(&invalid).unwrap_err().offset(), Some(0));
    assert!(theirs::<String>(&invalid).is_err());
}

#[test]
fn definite_strings_and_bytes_are_borrowed_from_the_input() {
    #[derive(Deserialize)]
    struct View<'a> {
        name: &'a str,
        data: &'a [u8],
    }
    #[derive(Serialize)]
    struct Owned {
        name: String,
        #[serde(with = "as_bytes")]
        data: Vec<u8>,
    }
    mod as_bytes {
        pub fn serialize<S: serde::Serializer>(v: &[u8], s: S) -> Result<S::Ok, S::Error> {
            s.serialize_bytes(v)
        }
    }
    let bytes = encode(&Owned {
        name: "héllo".into(),
        data: vec![1, 2, 3],
    });
    let view: View = from_slice(&bytes).unwrap();
    assert_eq!((view.name, view.data), ("héllo", &[1u8, 2, 3][..]));
    let range = bytes.as_ptr_range();
    assert!(range.contains(&view.name.as_ptr()) && range.contains(&view.data.as_ptr()));
}

#[test]
fn tuples_read_from_arrays_or_byte_strings_and_structs_only_from_maps() {
    assert_eq!(ours::<(u8, u8)>(&[0x42, 7, 9]).unwrap(), (7, 9));
    agree::<(u8, u8)>(&[0x42, 7, 9]);
    #[derive(Debug, PartialEq, Deserialize)]
    struct Point {
        x: u8,
        y: u8,
    }
    let array = [0x82, 1, 2];
    assert_eq!(
        ours::<Point>(&array).unwrap_err().message(),
        theirs::<Point>(&array).unwrap_err()
    );
    let map = [0xa2, 0x61, b'x', 1, 0x61, b'y', 2];
    assert_eq!(ours::<Point>(&map).unwrap(), Point { x: 1, y: 2 });
    // Byte-string field names are accepted for identifiers, as by ciborium.
    let byte_keys = [0xa2, 0x41, b'x', 1, 0x41, b'y', 2];
    assert_eq!(ours::<Point>(&byte_keys).unwrap(), Point { x: 1, y: 2 });
    agree::<Point>(&byte_keys);
}

// ------------------------------------------------------------ enums

#[test]
fn enums_decode_in_every_form_ciborium_accepts() {
    for kind in [
        Kind::Unit,
        Kind::Newtype(-5),
        Kind::Tuple(3, "t".into()),
        Kind::Struct {
            a: Some(9),
            b: vec![true],
        },
    ] {
        assert_eq!(ours::<Kind>(&encode(&kind)).unwrap(), kind);
    }
    // ciborium writes a unit variant as its name, the others as a map.
    assert_eq!(encode(&Kind::Unit), [0x64, b'U', b'n', b'i', b't']);
    // ciborium also takes a name followed directly by the content...
    let bare = [&encode(&"Newtype")[..], &[0x05]].concat();
    assert_eq!(ours::<Kind>(&bare).unwrap(), Kind::Newtype(5));
    agree::<Kind>(&bare);
    // ...and a unit variant in a map, whose content it leaves unread.
    let mapped = [&[0xa1][..], &encode(&"Unit"), &[0xf6]].concat();
    assert_eq!(ours::<Kind>(&mapped).unwrap(), Kind::Unit);
    agree::<Kind>(&mapped);
    // Not an array, not a map of two entries.
    let array = [&[0x82][..], &encode(&"Newtype"), &[0x05]].concat();
    assert!(ours::<Kind>(&array).is_err() && theirs::<Kind>(&array).is_err());
    let unknown = encode(&"Nope");
    assert_eq!(
        ours::<Kind>(&unknown).unwrap_err().message(),
        theirs::<Kind>(&unknown).unwrap_err()
    );
}

#[test]
fn buffered_enums_and_flattened_fields_decode_through_deserialize_any() {
    let internal = vec![
        Internal::A { x: -3 },
        Internal::B {
            s: "s".into(),
            f: F64(0.5),
        },
    ];
    assert_eq!(ours::<Vec<Internal>>(&encode(&internal)).unwrap(), internal);
    let loose = vec![
        Loose::Int(-7),
        Loose::Text("t".into()),
        Loose::List(vec![1]),
        Loose::Rec { a: true },
    ];
    assert_eq!(ours::<Vec<Loose>>(&encode(&loose)).unwrap(), loose);
    let flat = Flat {
        id: 4,
        rest: BTreeMap::from([("a".to_string(), 1), ("b".to_string(), -2)]),
    };
    assert_eq!(ours::<Flat>(&encode(&flat)).unwrap(), flat);
}

// ------------------------------------------------------------- tags

#[test]
fn required_tags_read_as_ciborium_reads_them() {
    let bytes = encode(&Required::<u64, 26>(7));
    assert_eq!(bytes, [0xd8, 26, 7]);
    assert_eq!(ours::<Required<u64, 26>>(&bytes).unwrap(), Required(7));
    let obj = encode(&Required::<(u64, &str), 27>((9, "shop.Item")));
    assert_eq!(
        ours::<Required<(u64, String), 27>>(&obj).unwrap(),
        Required((9, "shop.Item".to_string()))
    );
    // Inside a struct, next to other fields.
    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct Holder {
        first: Option<Required<u64, 26>>,
        all: Vec<Required<u64, 26>>,
        n: u8,
    }
    let holder = Holder {
        first: Some(Required(1)),
        all: vec![Required(2), Required(3)],
        n: 4,
    };
    assert_eq!(ours::<Holder>(&encode(&holder)).unwrap(), holder);
}

#[test]
fn a_wrong_or_missing_tag_fails_as_it_does_with_ciborium() {
    let wrong = encode(&Required::<u64, 27>(7));
    let mine = ours::<Required<u64, 26>>(&wrong).unwrap_err();
    assert_eq!(mine.message(), "required tag not found");
    assert_eq!(
        theirs::<Required<u64, 26>>(&wrong).unwrap_err(),
        "required tag not found"
    );
    assert_eq!(mine.offset(), Some(0));
    let missing = encode(&7u64);
    assert_eq!(
        ours::<Required<u64, 26>>(&missing).unwrap_err().message(),
        "required tag not found"
    );
    assert_eq!(
        theirs::<Required<u64, 26>>(&missing).unwrap_err(),
        "required tag not found"
    );
    // The content must still have the right type.
    let text = encode(&Required::<&str, 26>("x"));
    assert_eq!(
        ours::<Required<u64, 26>>(&text).unwrap_err().message(),
        theirs::<Required<u64, 26>>(&text).unwrap_err()
    );
}

#[test]
fn captured_and_accepted_tags_read_as_ciborium_reads_them() {
    let tagged = encode(&Captured(Some(40), 5u8));
    assert_eq!(
        ours::<Captured<u8>>(&tagged).unwrap(),
        Captured(Some(40), 5)
    );
    let untagged = encode(&5u8);
    assert_eq!(ours::<Captured<u8>>(&untagged).unwrap(), Captured(None, 5));
    assert_eq!(ours::<Accepted<u8, 40>>(&tagged).unwrap(), Accepted(5));
    assert_eq!(ours::<Accepted<u8, 40>>(&untagged).unwrap(), Accepted(5));
    assert!(ours::<Accepted<u8, 41>>(&tagged).is_err());
    // Only the outer tag is captured; the content skips the inner one.
    let twice = [0xd8, 40, 0xd8, 41, 5];
    assert_eq!(ours::<Captured<u8>>(&twice).unwrap(), Captured(Some(40), 5));
    agree::<Captured<u8>>(&twice);
}

#[test]
fn a_tag_where_none_is_asked_for_is_skipped_to_its_content() {
    assert_eq!(ours::<u64>(&[0xd8, 26, 0xd8, 30, 7]).unwrap(), 7);
    assert_eq!(ours::<String>(&[0xc0, 0x61, b'a']).unwrap(), "a");
    assert_eq!(
        ours::<Vec<bool>>(&[0xd9, 0x01, 0x00, 0x81, 0xf5]).unwrap(),
        vec![true]
    );
    // `Option` looks at the item itself: a tagged null is `Some`.
    assert!(ours::<Option<()>>(&[0xc0, 0xf6]).unwrap().is_some());
    agree::<Option<()>>(&[0xc0, 0xf6]);
    // An unknown field holding a tagged value is skipped whole.
    #[derive(Debug, PartialEq, Deserialize)]
    struct One {
        a: u8,
    }
    let bytes = [
        &[0xa2, 0x61, b'z', 0xd8, 26, 0x82, 1, 2][..],
        &[0x61, b'a', 3],
    ]
    .concat();
    assert_eq!(ours::<One>(&bytes).unwrap(), One { a: 3 });
    agree::<One>(&bytes);
    // `deserialize_any` shows a tag as ciborium's tag enum.
    assert_eq!(
        ours::<Value>(&[0xd8, 26, 7]).unwrap(),
        Value::Tag(26, Box::new(Value::from(7)))
    );
}

// ----------------------------------------------- hostile input, errors

fn nested_arrays(depth: usize) -> Vec<u8> {
    [vec![0x81; depth], vec![0x00]].concat()
}

#[test]
fn nesting_beyond_the_recursion_limit_fails_without_overflowing_the_stack() {
    #[derive(Debug, Deserialize)]
    struct Nest(#[allow(dead_code)] Vec<Nest>);
    let deep = nested_arrays(100_000);
    for result in [
        ours::<Value>(&deep).map(drop),
        ours::<IgnoredAny>(&deep).map(drop),
        ours::<Nest>(&deep).map(drop),
        ours::<Vec<Loose>>(&deep).map(drop),
    ] {
        assert_eq!(result.unwrap_err().message(), "recursion limit exceeded");
    }
    let tags = [vec![0xc0; 100_000], vec![0x00]].concat();
    assert_eq!(ours::<u8>(&tags).unwrap(), 0);
    assert_eq!(
        ours::<Value>(&tags).unwrap_err().message(),
        "recursion limit exceeded"
    );
    // The limit is ciborium's, to the level.
    for depth in [RECURSION_LIMIT - 1, RECURSION_LIMIT, RECURSION_LIMIT + 1] {
        let bytes = nested_arrays(depth);
        assert_eq!(
            ours::<IgnoredAny>(&bytes).is_ok(),
            theirs::<IgnoredAny>(&bytes).is_ok(),
            "{depth}"
        );
        assert_eq!(
            ours::<IgnoredAny>(&bytes).is_ok(),
            depth <= RECURSION_LIMIT,
            "{depth}"
        );
    }
}

#[test]
fn self_referential_wrappers_fail_instead_of_recursing_forever() {
    #[derive(Debug, Deserialize)]
    struct Loop(#[allow(dead_code)] Option<Box<Loop>>);
    assert_eq!(
        ours::<Loop>(&[0x05]).unwrap_err().message(),
        "recursion limit exceeded"
    );
    assert!(ours::<Loop>(&[0xf6]).is_ok());
    // Wrappers between containers each get their own budget.
    #[derive(Debug, Deserialize)]
    struct Chain(#[allow(dead_code)] Vec<Option<Box<Chain>>>);
    assert!(ours::<Chain>(&nested_arrays_of_empty(200)).is_ok());
}

/// `[[[...[]...]]]`, `depth` arrays.
fn nested_arrays_of_empty(depth: usize) -> Vec<u8> {
    [vec![0x81; depth - 1], vec![0x80]].concat()
}

#[test]
fn lengths_beyond_the_input_fail_and_size_hints_are_capped_by_it() {
    let huge = [0x9b, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01];
    assert!(ours::<Vec<u64>>(&huge).is_err());
    let bytes = [0x5b, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01];
    assert_eq!(
        ours::<Bytes>(&bytes).unwrap_err().message(),
        "unexpected end of the state"
    );
    let text = [0x7a, 0xff, 0xff, 0xff, 0xff, b'a'];
    assert_eq!(
        ours::<String>(&text).unwrap_err().offset(),
        Some(text.len())
    );
    // What a visitor sees as the length of a claimed (2^32 - 1)-item array.
    struct Hint;
    impl<'de> Deserialize<'de> for Hint {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            struct V;
            impl<'de> Visitor<'de> for V {
                type Value = Hint;
                fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                    f.write_str("a sequence")
                }
                fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Hint, A::Error> {
                    assert_eq!(seq.size_hint(), Some(3));
                    Ok(Hint)
                }
            }
            d.deserialize_seq(V)
        }
    }
    assert!(ours::<Hint>(&[0x9a, 0xff, 0xff, 0xff, 0xff, 1, 2, 3]).is_ok());
}

#[test]
fn errors_carry_the_offset_of_the_item_that_failed() {
    // [1, "x"] as Vec<u32>: the text at byte 2.
    let e = ours::<Vec<u32>>(&[0x82, 0x01, 0x61, b'x']).unwrap_err();
    assert_eq!(e.offset(), Some(2));
    assert_eq!(
        e.to_string(),
        "invalid type: string, expected integer (at byte 2)"
    );
    // A reserved additional-information value is malformed where it is.
    let e = ours::<Vec<u32>>(&[0x82, 0x01, 0x1c]).unwrap_err();
    assert_eq!((e.message(), e.offset()), ("malformed CBOR", Some(2)));
    // A missing field: at the map that lacks it.
    #[derive(Debug, Deserialize)]
    struct Two {
        #[allow(dead_code)]
        a: u8,
        #[allow(dead_code)]
        b: u8,
    }
    let e = ours::<Vec<Two>>(&[0x81, 0xa1, 0x61, b'a', 1]).unwrap_err();
    assert_eq!((e.message(), e.offset()), ("missing field `b`", Some(1)));
    // Truncated: at the end.
    let e = ours::<(u8, u8)>(&[0x82, 0x01]).unwrap_err();
    assert_eq!(
        (e.message(), e.offset()),
        ("unexpected end of the state", Some(2))
    );
}

#[test]
fn bytes_after_the_value_are_ignored_as_ciborium_ignores_them() {
    assert_eq!(ours::<u8>(&[0x01, 0x02, 0xff]).unwrap(), 1);
    assert_eq!(theirs::<u8>(&[0x01, 0x02, 0xff]).unwrap(), 1);
}

#[test]
fn unknown_simple_values_and_breaks_are_errors() {
    for bytes in [&[0xe0][..], &[0xf8, 0x20], &[0xff]] {
        assert!(ours::<IgnoredAny>(bytes).is_err(), "{bytes:02x?}");
        assert!(theirs::<IgnoredAny>(bytes).is_err(), "{bytes:02x?}");
    }
    // A two-byte simple value below 32 reads as the short one (as ciborium).
    assert!(ours::<bool>(&[0xf8, 0x15]).unwrap());
    agree::<bool>(&[0xf8, 0x15]);
}
