//! States round-trip through CBOR records (DESIGN "Data"; docs/FORMAT.md):
//! structs with nested Vec/Option/HashMap/String/f64 fields and references
//! to other persistent objects are committed, read back in a fresh
//! connection, and equal what was written, shared references included.

mod object_support;

use std::collections::HashMap;

use durus_core::format::{class_name, record};
use durus_core::{Connection, Oid, PObject, PRef, Persistent, PersistentList};
use object_support::{Backend, Counter};
use proptest::prelude::*;
use serde::{Deserialize, Serialize};

/// A small persistent object the document refers to.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Leaf {
    name: String,
    weight: f64,
}

impl Persistent for Leaf {
    const CLASS_NAME: &'static str = "codec.Leaf";
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
enum Shape {
    Empty,
    Circle(f64),
    Rect { w: u32, h: u32 },
    Path(Vec<(i16, i16)>),
}

/// The persistent document under test.
#[derive(Debug, Serialize, Deserialize)]
struct Doc {
    title: String,
    score: f64,
    count: u64,
    delta: i64,
    flag: bool,
    letter: char,
    tags: Vec<String>,
    maybe: Option<Vec<Option<i32>>>,
    table: HashMap<String, Vec<f64>>,
    nested: Vec<HashMap<u16, Option<String>>>,
    shape: Shape,
    bytes: Vec<u8>,
    pair: (u8, String),
    /// Indexes into `leaves` below: references to other objects.
    first: Option<PRef<Leaf>>,
    kids: Vec<PRef<Leaf>>,
    by_name: HashMap<String, PRef<Leaf>>,
    any: Option<PObject>,
}

impl Persistent for Doc {
    const CLASS_NAME: &'static str = "codec.Doc";
}

/// `Doc` with references replaced by leaf indexes, comparable by value.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Model {
    title: String,
    score: f64,
    count: u64,
    delta: i64,
    flag: bool,
    letter: char,
    tags: Vec<String>,
    maybe: Option<Vec<Option<i32>>>,
    table: HashMap<String, Vec<f64>>,
    nested: Vec<HashMap<u16, Option<String>>>,
    shape: Shape,
    bytes: Vec<u8>,
    pair: (u8, String),
    leaves: Vec<Leaf>,
    first: Option<usize>,
    kids: Vec<usize>,
    by_name: HashMap<String, usize>,
    any: Option<usize>,
}

/// Floats compare by bits (so -0.0 and NaN payloads must survive), except
/// that any NaN equals any NaN.
fn same_f64(a: f64, b: f64) -> bool {
    (a.is_nan() && b.is_nan()) || a.to_bits() == b.to_bits()
}

fn same_vec_f64(a: &[f64], b: &[f64]) -> bool {
    a.len() == b.len() && a.iter().zip(b).all(|(x, y)| same_f64(*x, *y))
}

fn same_shape(a: &Shape, b: &Shape) -> bool {
    match (a, b) {
        (Shape::Circle(x), Shape::Circle(y)) => same_f64(*x, *y),
        _ => a == b,
    }
}

fn same_model(a: &Model, b: &Model) -> bool {
    a.title == b.title
        && same_f64(a.score, b.score)
        && a.count == b.count
        && a.delta == b.delta
        && a.flag == b.flag
        && a.letter == b.letter
        && a.tags == b.tags
        && a.maybe == b.maybe
        && a.table.len() == b.table.len()
        && a.table
            .iter()
            .all(|(k, v)| b.table.get(k).is_some_and(|w| same_vec_f64(v, w)))
        && a.nested == b.nested
        && same_shape(&a.shape, &b.shape)
        && a.bytes == b.bytes
        && a.pair == b.pair
        && a.leaves.len() == b.leaves.len()
        && a.leaves
            .iter()
            .zip(&b.leaves)
            .all(|(x, y)| x.name == y.name && same_f64(x.weight, y.weight))
        && a.first == b.first
        && a.kids == b.kids
        && a.by_name == b.by_name
        && a.any == b.any
}

fn build(model: &Model) -> PRef<Doc> {
    let leaves: Vec<PRef<Leaf>> = model.leaves.iter().cloned().map(PRef::new).collect();
    PRef::new(Doc {
        title: model.title.clone(),
        score: model.score,
        count: model.count,
        delta: model.delta,
        flag: model.flag,
        letter: model.letter,
        tags: model.tags.clone(),
        maybe: model.maybe.clone(),
        table: model.table.clone(),
        nested: model.nested.clone(),
        shape: model.shape.clone(),
        bytes: model.bytes.clone(),
        pair: model.pair.clone(),
        first: model.first.map(|i| leaves[i].clone()),
        kids: model.kids.iter().map(|&i| leaves[i].clone()).collect(),
        by_name: model
            .by_name
            .iter()
            .map(|(k, &i)| (k.clone(), leaves[i].clone()))
            .collect(),
        any: model.any.map(|i| PObject::from(leaves[i].clone())),
    })
}

/// Reads `doc` back into a model. Leaves are numbered by first
/// appearance in the order `build` could have used; identity decides
/// which references share a leaf.
fn unbuild(doc: &PRef<Doc>, leaf_order: &[PRef<Leaf>]) -> Model {
    let index = |r: &PRef<Leaf>| -> usize {
        leaf_order
            .iter()
            .position(|l| l.same_object(r))
            .expect("every reference is to a known leaf")
    };
    doc.read(|d| Model {
        title: d.title.clone(),
        score: d.score,
        count: d.count,
        delta: d.delta,
        flag: d.flag,
        letter: d.letter,
        tags: d.tags.clone(),
        maybe: d.maybe.clone(),
        table: d.table.clone(),
        nested: d.nested.clone(),
        shape: d.shape.clone(),
        bytes: d.bytes.clone(),
        pair: d.pair.clone(),
        leaves: leaf_order
            .iter()
            .map(|l| l.read(Leaf::clone).unwrap())
            .collect(),
        first: d.first.as_ref().map(index),
        kids: d.kids.iter().map(index).collect(),
        by_name: d
            .by_name
            .iter()
            .map(|(k, r)| (k.clone(), index(r)))
            .collect(),
        any: d
            .any
            .as_ref()
            .map(|o| index(&o.downcast::<Leaf>().unwrap())),
    })
    .unwrap()
}

fn float() -> impl Strategy<Value = f64> {
    prop_oneof![
        4 => any::<f64>(),
        1 => Just(-0.0),
        1 => Just(f64::NAN),
        1 => Just(f64::INFINITY),
        1 => Just(f64::MIN_POSITIVE),
        1 => Just(1.5),
    ]
}

fn shape() -> impl Strategy<Value = Shape> {
    prop_oneof![
        Just(Shape::Empty),
        float().prop_map(Shape::Circle),
        (any::<u32>(), any::<u32>()).prop_map(|(w, h)| Shape::Rect { w, h }),
        proptest::collection::vec(any::<(i16, i16)>(), 0..4).prop_map(Shape::Path),
    ]
}

fn model() -> impl Strategy<Value = Model> {
    let text = "\\PC{0,12}";
    let leaves = proptest::collection::vec(
        (text, float()).prop_map(|(name, weight)| Leaf { name, weight }),
        1..5,
    );
    let scalars = (
        text,
        float(),
        any::<u64>(),
        any::<i64>(),
        any::<bool>(),
        any::<char>(),
        proptest::collection::vec(text, 0..4),
        proptest::option::of(proptest::collection::vec(
            proptest::option::of(any::<i32>()),
            0..4,
        )),
    );
    let compound = (
        proptest::collection::hash_map(text, proptest::collection::vec(float(), 0..3), 0..3),
        proptest::collection::vec(
            proptest::collection::hash_map(any::<u16>(), proptest::option::of(text), 0..3),
            0..3,
        ),
        shape(),
        proptest::collection::vec(any::<u8>(), 0..16),
        (any::<u8>(), text),
    );
    (scalars, compound, leaves).prop_flat_map(|(scalars, compound, leaves)| {
        let n = leaves.len();
        let refs = (
            proptest::option::of(0..n),
            proptest::collection::vec(0..n, 0..5),
            proptest::collection::hash_map("[a-z]{1,3}", 0..n, 0..3),
            proptest::option::of(0..n),
        );
        (Just((scalars, compound, leaves)), refs).prop_map(
            |((s, c, leaves), (first, kids, by_name, any))| Model {
                title: s.0,
                score: s.1,
                count: s.2,
                delta: s.3,
                flag: s.4,
                letter: s.5,
                tags: s.6,
                maybe: s.7,
                table: c.0,
                nested: c.1,
                shape: c.2,
                bytes: c.3,
                pair: c.4,
                leaves,
                first,
                kids,
                by_name,
                any,
            },
        )
    })
}

/// Commits `model` as a `Doc` (with its referenced leaves in a list, so
/// unreferenced leaves are stored too and can be numbered), reopens, and
/// reads it back.
fn round_trip(backend: &Backend, model: &Model) -> Result<Model, TestCaseError> {
    let doc_oid;
    {
        let conn = backend.connect();
        let doc = build(model);
        // The leaves in model order, found through the doc by identity.
        let order: Vec<PRef<Leaf>> = rebuild_order(&doc, model);
        let list: PRef<PersistentList<PRef<Leaf>>> = PRef::new(order.iter().cloned().collect());
        conn.root()
            .insert("doc".into(), PObject::from(doc.clone()))
            .unwrap();
        conn.root()
            .insert("leaves".into(), PObject::from(list))
            .unwrap();
        conn.commit().unwrap();
        doc_oid = doc.oid().unwrap();
        prop_assert!(order.iter().all(|l| l.oid().is_some()));
        // Read back in the same connection: nothing was disturbed.
        prop_assert!(same_model(&unbuild(&doc, &order), model));
    }
    let conn = backend.connect();
    let doc = conn
        .get(doc_oid)
        .unwrap()
        .unwrap()
        .downcast::<Doc>()
        .unwrap();
    prop_assert!(doc.is_ghost());
    let leaves = conn
        .root()
        .get(&"leaves".to_string())
        .unwrap()
        .unwrap()
        .downcast::<PersistentList<PRef<Leaf>>>()
        .unwrap();
    let order: Vec<PRef<Leaf>> = leaves.iter().unwrap().collect();
    Ok(unbuild(&doc, &order))
}

/// The doc's leaves in the model's numbering: for each model leaf index,
/// the handle the doc holds for it (or a stand-in for unreferenced ones).
fn rebuild_order(doc: &PRef<Doc>, model: &Model) -> Vec<PRef<Leaf>> {
    let mut order: Vec<Option<PRef<Leaf>>> = vec![None; model.leaves.len()];
    doc.read(|d| {
        if let (Some(i), Some(r)) = (model.first, &d.first) {
            order[i] = Some(r.clone());
        }
        for (&i, r) in model.kids.iter().zip(&d.kids) {
            order[i] = Some(r.clone());
        }
        for (k, &i) in &model.by_name {
            order[i] = Some(d.by_name[k].clone());
        }
        if let (Some(i), Some(o)) = (model.any, &d.any) {
            order[i] = Some(o.downcast::<Leaf>().unwrap());
        }
    })
    .unwrap();
    order
        .into_iter()
        .zip(&model.leaves)
        .map(|(r, leaf)| r.unwrap_or_else(|| PRef::new(leaf.clone())))
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    /// Every state comes back equal from a fresh connection, with shared
    /// references to one leaf still one object.
    #[test]
    fn states_round_trip_through_a_reopen(model in model()) {
        let back = round_trip(&Backend::memory(), &model)?;
        prop_assert!(same_model(&back, &model), "wrote {:?}\nread {:?}", model, back);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(16))]

    #[test]
    fn states_round_trip_through_a_file(model in model()) {
        let back = round_trip(&Backend::file(), &model)?;
        prop_assert!(same_model(&back, &model), "wrote {:?}\nread {:?}", model, back);
    }
}

/// The record's refs are exactly the referenced objects' oids, sorted and
/// unique, whatever field holds them.
#[test]
fn record_refs_list_every_referenced_object_once() {
    let conn = Connection::new(durus_core::MemoryStorage::new()).unwrap();
    let a = PRef::new(Leaf {
        name: "a".into(),
        weight: 1.0,
    });
    let b = PRef::new(Leaf {
        name: "b".into(),
        weight: 2.0,
    });
    let doc = PRef::new(Doc {
        title: String::new(),
        score: 0.0,
        count: 0,
        delta: 0,
        flag: false,
        letter: 'x',
        tags: vec![],
        maybe: None,
        table: HashMap::new(),
        nested: vec![],
        shape: Shape::Empty,
        bytes: vec![],
        pair: (0, String::new()),
        first: Some(b.clone()),
        kids: vec![a.clone(), b.clone(), a.clone()],
        by_name: [("z".to_string(), a.clone())].into_iter().collect(),
        any: Some(PObject::from(PRef::new(Counter::new(1)))),
    });
    conn.root()
        .insert("doc".into(), PObject::from(doc.clone()))
        .unwrap();
    conn.commit().unwrap();
    let rec = conn.with_storage(|s| s.load(doc.oid().unwrap())).unwrap();
    let decoded = record::Record::decode(&rec).unwrap();
    let mut expected = vec![a.oid().unwrap(), b.oid().unwrap()];
    expected.push(Oid(4)); // the counter, found last
    expected.sort();
    assert_eq!(decoded.refs().collect::<Vec<_>>(), expected);
    assert_eq!(
        class_name::extract(decoded.data),
        class_name::ClassName::Cbor("codec.Doc")
    );
}

/// A state that cannot be decoded as its type (the type changed
/// incompatibly) is an `Error::State` naming the class and oid, not a
/// panic; the object stays a ghost.
#[test]
fn an_undecodable_state_is_a_state_error() {
    #[derive(Serialize, Deserialize)]
    struct Strict {
        must: Vec<u8>,
    }
    impl Persistent for Strict {
        const CLASS_NAME: &'static str = "codec.Strict";
    }
    let server = object_support::Server::new();
    let conn = server.connect();
    let oid = conn.with_storage(|s| s.new_oid()).unwrap();
    let mut data = Vec::new();
    class_name::write_cbor_header(&mut data, "codec.Strict");
    ciborium::into_writer(
        &Leaf {
            name: "x".into(),
            weight: 1.0,
        },
        &mut data,
    )
    .unwrap();
    server.inject(vec![record::encode(oid, &data, &[]).unwrap()]);
    conn.abort();
    let strict = conn
        .get(oid)
        .unwrap()
        .unwrap()
        .downcast::<Strict>()
        .unwrap();
    let err = strict.read(|s| s.must.len()).unwrap_err();
    assert!(
        matches!(
            err,
            durus_core::Error::State {
                action: "decode",
                ..
            }
        ),
        "{err:?}"
    );
    let text = err.to_string();
    assert!(
        text.contains("codec.Strict") && text.contains(&oid.to_string()),
        "{text}"
    );
    assert!(strict.is_ghost());
}

// ---- references inside serde-buffered shapes ---------------------------

/// An internally tagged enum: serde buffers its content before choosing
/// the variant.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "kind")]
enum Part {
    Leaf { leaf: PRef<Leaf>, note: String },
    Any { obj: PObject },
    Plain { n: i64, f: f64 },
}

/// An untagged enum: serde tries each variant on buffered content.
#[derive(Debug, Serialize, Deserialize)]
#[serde(untagged)]
enum Either {
    Ref(PRef<Leaf>),
    Text(String),
}

#[derive(Debug, Serialize, Deserialize)]
struct Meta {
    owner: Option<PRef<Leaf>>,
    labels: HashMap<String, PRef<Leaf>>,
}

/// References inside every serde shape that buffers its input.
#[derive(Debug, Serialize, Deserialize)]
struct Assembly {
    parts: Vec<Part>,
    either: Vec<Either>,
    #[serde(flatten)]
    meta: Meta,
}

impl Persistent for Assembly {
    const CLASS_NAME: &'static str = "codec.Assembly";
}

#[derive(Debug, Clone)]
enum PartModel {
    Leaf(usize, String),
    Any(usize),
    Plain(i64, f64),
}

#[derive(Debug, Clone)]
enum EitherModel {
    Ref(usize),
    Text(String),
}

#[derive(Debug, Clone)]
struct AssemblyModel {
    leaves: Vec<Leaf>,
    parts: Vec<PartModel>,
    either: Vec<EitherModel>,
    owner: Option<usize>,
    labels: HashMap<String, usize>,
}

fn same_assembly(a: &AssemblyModel, b: &AssemblyModel) -> bool {
    let part = |x: &PartModel, y: &PartModel| match (x, y) {
        (PartModel::Leaf(i, s), PartModel::Leaf(j, t)) => i == j && s == t,
        (PartModel::Any(i), PartModel::Any(j)) => i == j,
        (PartModel::Plain(m, f), PartModel::Plain(n, g)) => m == n && same_f64(*f, *g),
        _ => false,
    };
    let either = |x: &EitherModel, y: &EitherModel| match (x, y) {
        (EitherModel::Ref(i), EitherModel::Ref(j)) => i == j,
        (EitherModel::Text(s), EitherModel::Text(t)) => s == t,
        _ => false,
    };
    a.leaves.len() == b.leaves.len()
        && a.leaves
            .iter()
            .zip(&b.leaves)
            .all(|(x, y)| x.name == y.name && same_f64(x.weight, y.weight))
        && a.parts.len() == b.parts.len()
        && a.parts.iter().zip(&b.parts).all(|(x, y)| part(x, y))
        && a.either.len() == b.either.len()
        && a.either.iter().zip(&b.either).all(|(x, y)| either(x, y))
        && a.owner == b.owner
        && a.labels == b.labels
}

fn assembly_model() -> impl Strategy<Value = AssemblyModel> {
    let leaves = proptest::collection::vec(
        ("\\PC{0,8}", float()).prop_map(|(name, weight)| Leaf { name, weight }),
        1..4,
    );
    leaves.prop_flat_map(|leaves| {
        let n = leaves.len();
        let part = prop_oneof![
            (0..n, "\\PC{0,6}").prop_map(|(i, s)| PartModel::Leaf(i, s)),
            (0..n).prop_map(PartModel::Any),
            (any::<i64>(), float()).prop_map(|(i, f)| PartModel::Plain(i, f)),
        ];
        let either = prop_oneof![
            (0..n).prop_map(EitherModel::Ref),
            "\\PC{0,6}".prop_map(EitherModel::Text),
        ];
        (
            Just(leaves),
            proptest::collection::vec(part, 0..5),
            proptest::collection::vec(either, 0..4),
            proptest::option::of(0..n),
            proptest::collection::hash_map("[a-z]{1,3}", 0..n, 0..3),
        )
            .prop_map(|(leaves, parts, either, owner, labels)| AssemblyModel {
                leaves,
                parts,
                either,
                owner,
                labels,
            })
    })
}

fn build_assembly(model: &AssemblyModel, leaves: &[PRef<Leaf>]) -> PRef<Assembly> {
    PRef::new(Assembly {
        parts: model
            .parts
            .iter()
            .map(|p| match p {
                PartModel::Leaf(i, note) => Part::Leaf {
                    leaf: leaves[*i].clone(),
                    note: note.clone(),
                },
                PartModel::Any(i) => Part::Any {
                    obj: PObject::from(leaves[*i].clone()),
                },
                PartModel::Plain(n, f) => Part::Plain { n: *n, f: *f },
            })
            .collect(),
        either: model
            .either
            .iter()
            .map(|e| match e {
                EitherModel::Ref(i) => Either::Ref(leaves[*i].clone()),
                EitherModel::Text(s) => Either::Text(s.clone()),
            })
            .collect(),
        meta: Meta {
            owner: model.owner.map(|i| leaves[i].clone()),
            labels: model
                .labels
                .iter()
                .map(|(k, &i)| (k.clone(), leaves[i].clone()))
                .collect(),
        },
    })
}

fn unbuild_assembly(asm: &PRef<Assembly>, leaves: &[PRef<Leaf>]) -> AssemblyModel {
    let index = |r: &PRef<Leaf>| -> usize {
        leaves
            .iter()
            .position(|l| l.same_object(r))
            .expect("every reference is to a known leaf")
    };
    asm.read(|a| AssemblyModel {
        leaves: leaves
            .iter()
            .map(|l| l.read(Leaf::clone).unwrap())
            .collect(),
        parts: a
            .parts
            .iter()
            .map(|p| match p {
                Part::Leaf { leaf, note } => PartModel::Leaf(index(leaf), note.clone()),
                Part::Any { obj } => PartModel::Any(index(&obj.downcast::<Leaf>().unwrap())),
                Part::Plain { n, f } => PartModel::Plain(*n, *f),
            })
            .collect(),
        either: a
            .either
            .iter()
            .map(|e| match e {
                Either::Ref(r) => EitherModel::Ref(index(r)),
                Either::Text(s) => EitherModel::Text(s.clone()),
            })
            .collect(),
        owner: a.meta.owner.as_ref().map(index),
        labels: a
            .meta
            .labels
            .iter()
            .map(|(k, r)| (k.clone(), index(r)))
            .collect(),
    })
    .unwrap()
}

/// Commits an assembly (and a list of all its leaves, for numbering),
/// reopens, and reads it back.
fn assembly_round_trip(model: &AssemblyModel) -> AssemblyModel {
    let backend = Backend::memory();
    {
        let conn = backend.connect();
        let leaves: Vec<PRef<Leaf>> = model.leaves.iter().cloned().map(PRef::new).collect();
        let asm = build_assembly(model, &leaves);
        let list: PRef<PersistentList<PRef<Leaf>>> = PRef::new(leaves.iter().cloned().collect());
        conn.root()
            .insert("asm".into(), PObject::from(asm))
            .unwrap();
        conn.root()
            .insert("leaves".into(), PObject::from(list))
            .unwrap();
        conn.commit().unwrap();
    }
    let conn = backend.connect();
    let get = |k: &str| conn.root().get(&k.to_string()).unwrap().unwrap();
    let asm = get("asm").downcast::<Assembly>().unwrap();
    let leaves: Vec<PRef<Leaf>> = get("leaves")
        .downcast::<PersistentList<PRef<Leaf>>>()
        .unwrap()
        .iter()
        .unwrap()
        .collect();
    unbuild_assembly(&asm, &leaves)
}

/// References inside internally tagged and untagged enums and flattened
/// fields, which serde decodes from a buffer that cannot hold CBOR tags,
/// still read back (they used to commit fine and then fail to load).
#[test]
fn references_inside_tagged_untagged_and_flattened_shapes_read_back() {
    let model = AssemblyModel {
        leaves: vec![
            Leaf {
                name: "a".into(),
                weight: 1.0,
            },
            Leaf {
                name: "b".into(),
                weight: -0.0,
            },
        ],
        parts: vec![
            PartModel::Leaf(1, "first".into()),
            PartModel::Any(0),
            PartModel::Plain(-7, 2.5),
        ],
        either: vec![EitherModel::Ref(1), EitherModel::Text("t".into())],
        owner: Some(0),
        labels: [("x".to_string(), 1)].into_iter().collect(),
    };
    let back = assembly_round_trip(&model);
    assert!(
        same_assembly(&back, &model),
        "wrote {model:?}\nread {back:?}"
    );
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn buffered_shapes_round_trip_through_a_reopen(model in assembly_model()) {
        let back = assembly_round_trip(&model);
        prop_assert!(same_assembly(&back, &model), "wrote {:?}\nread {:?}", model, back);
    }
}
