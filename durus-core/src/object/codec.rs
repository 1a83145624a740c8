//! Objects to records and back: the CBOR state with references captured.
//!
//! A reference to another persistent object inside a state is written as a
//! CBOR tag around its oid: [`TAG_REF`] around the oid alone for a `PRef<T>`
//! (the static type fixes the class), [`TAG_OBJ`] around `[oid, class name]`
//! for a `PObject` (any class). Every referenced oid goes into the record's
//! refs, which is all that packing needs.
//!
//! serde gives `Serialize`/`Deserialize` impls no context, so the
//! connection being written or read is passed through a thread-local for
//! the duration of one encode or decode.
//!
//! States are written by ciborium and read by our own slice deserializer
//! ([`cbor`]), which takes the same input to the same values without
//! ciborium's per-byte reads and string copies, and follows ciborium's tag
//! protocol, so `ciborium::tag::Required` reads the reference tags.
//!
//! serde buffers the input of internally tagged and untagged enums and of
//! `#[serde(flatten)]` fields in a form that cannot hold CBOR tags, so a
//! reference there fails to decode directly. A state that fails is decoded
//! again through a [`ciborium::Value`] whose reference tags are rewritten
//! as one-entry maps ([`REF_KEY`], [`OBJ_KEY`]), which references accept
//! during that second decode. The stored bytes are the same either way.

use std::cell::{Cell, RefCell};
use std::collections::BTreeSet;
use std::rc::Rc;

use ciborium::tag::Required;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::error::{Error, Result};
use crate::format::{record, Oid};
use crate::object::cbor;
use crate::object::cell::ObjectCell;
use crate::object::class;
use crate::object::connection::ConnInner;

use crate::format::class_name::{TAG_OBJ, TAG_REF};

struct WriteCtx {
    conn: Rc<ConnInner>,
    refs: BTreeSet<Oid>,
    /// New objects reached while encoding: they get oids and are written
    /// in the same commit.
    found: Vec<Rc<ObjectCell>>,
}

/// The map key standing for [`TAG_REF`] in a state decoded through a value.
const REF_KEY: &str = "\u{0}durus.ref";
/// The map key standing for [`TAG_OBJ`] in a state decoded through a value.
const OBJ_KEY: &str = "\u{0}durus.obj";

thread_local! {
    static WRITER: RefCell<Option<WriteCtx>> = const { RefCell::new(None) };
    static READER: RefCell<Option<Rc<ConnInner>>> = const { RefCell::new(None) };
    /// True while decoding a state whose reference tags became maps.
    static UNTAGGED: Cell<bool> = const { Cell::new(false) };
}

/// A `PRef` reference with its tag rewritten as a map.
#[derive(Deserialize)]
struct RefMap {
    #[serde(rename = "\u{0}durus.ref")]
    oid: u64,
}

/// A `PObject` reference with its tag rewritten as a map.
#[derive(Deserialize)]
struct ObjMap {
    #[serde(rename = "\u{0}durus.obj")]
    obj: (u64, String),
}

/// Encodes the object in `cell` (which has an oid) as a record; returns it
/// and the new objects it references.
pub(crate) fn encode_object(
    conn: &Rc<ConnInner>,
    cell: &Rc<ObjectCell>,
) -> Result<(Vec<u8>, Vec<Rc<ObjectCell>>)> {
    let oid = cell
        .oid
        .get()
        .ok_or_else(|| Error::InvalidState("encoding an object without an oid".into()))?;
    let previous = WRITER.with(|w| {
        w.borrow_mut().replace(WriteCtx {
            conn: conn.clone(),
            refs: BTreeSet::new(),
            found: Vec::new(),
        })
    });
    let mut data = Vec::new();
    let encoded = match cell.state.try_borrow() {
        Ok(state) => match state.as_ref() {
            Some(slot) => slot.state().encode_data(&mut data),
            None => Err(Error::InvalidState(format!(
                "oid {oid} is a ghost and cannot be written"
            ))),
        },
        Err(_) => Err(Error::InvalidState(format!(
            "oid {oid} is borrowed while being committed"
        ))),
    };
    let ctx = WRITER
        .with(|w| std::mem::replace(&mut *w.borrow_mut(), previous))
        .expect("set above");
    if let Err(e) = encoded {
        // The found objects got oids; the caller undoes them with the rest.
        conn.forget_new(&ctx.found);
        return Err(match e {
            Error::State {
                action,
                class,
                detail,
                ..
            } => Error::State {
                action,
                class,
                oid: Some(oid),
                detail,
            },
            other => other,
        });
    }
    let refs: Vec<Oid> = ctx.refs.into_iter().filter(|&r| r != oid).collect();
    Ok((record::encode(oid, &data, &refs)?, ctx.found))
}

/// Decodes a state of type `T` for `conn` (references become ghosts).
pub(crate) fn decode_state<T: DeserializeOwned>(
    conn: &Rc<ConnInner>,
    bytes: &[u8],
) -> std::result::Result<T, String> {
    let previous = READER.with(|r| r.borrow_mut().replace(conn.clone()));
    let result = decode_direct(bytes).or_else(|first| {
        decode_untagged(bytes).map_err(|second| {
            if second == first.message() {
                first.to_string()
            } else {
                format!("{first}; decoded through a value: {second}")
            }
        })
    });
    READER.with(|r| *r.borrow_mut() = previous);
    result
}

/// The first way to decode a state: straight from its bytes, references
/// read as their tags.
fn decode_direct<T: DeserializeOwned>(bytes: &[u8]) -> std::result::Result<T, cbor::Error> {
    cbor::from_slice(bytes)
}

fn de_message<E: std::fmt::Debug>(e: ciborium::de::Error<E>) -> String {
    match e {
        ciborium::de::Error::Semantic(_, msg) => msg,
        other => other.to_string(),
    }
}

/// The second way to decode a state (see the module docs): through a
/// value whose reference tags are maps.
fn decode_untagged<T: DeserializeOwned>(bytes: &[u8]) -> std::result::Result<T, String> {
    let mut value: ciborium::Value = ciborium::from_reader(bytes).map_err(de_message)?;
    untag(&mut value);
    let previous = UNTAGGED.with(|u| u.replace(true));
    let result = value.deserialized().map_err(|e| e.to_string());
    UNTAGGED.with(|u| u.set(previous));
    result
}

/// Rewrites every reference tag in `value` as a one-entry map.
fn untag(value: &mut ciborium::Value) {
    use ciborium::Value;
    match value {
        Value::Tag(tag, inner) if *tag == TAG_REF || *tag == TAG_OBJ => {
            let key = if *tag == TAG_REF { REF_KEY } else { OBJ_KEY };
            let inner = std::mem::replace(&mut **inner, Value::Null);
            *value = Value::Map(vec![(Value::Text(key.to_string()), inner)]);
        }
        Value::Tag(_, inner) => untag(inner),
        Value::Array(items) => items.iter_mut().for_each(untag),
        Value::Map(entries) => {
            for (k, v) in entries {
                untag(k);
                untag(v);
            }
        }
        _ => {}
    }
}

/// Resolves a reference being written: assigns an oid to a new object,
/// refuses one of another connection, records the ref.
fn note_ref<E: serde::ser::Error>(cell: &Rc<ObjectCell>) -> std::result::Result<Oid, E> {
    WRITER.with(|w| {
        let mut w = w.borrow_mut();
        let ctx = w
            .as_mut()
            .ok_or_else(|| E::custom("a persistent reference can only be serialized by a durus commit"))?;
        let oid = match cell.oid.get() {
            Some(oid) => {
                let same = cell.connection().is_some_and(|c| Rc::ptr_eq(&c, &ctx.conn));
                if !same {
                    return Err(E::custom(format!(
                        "reference to oid {oid} of a different connection (objects cannot refer across databases)"
                    )));
                }
                if !ctx.conn.is_current(cell) {
                    return Err(E::custom(format!(
                        "reference to an object a pack removed (its oid {oid} now names another object)"
                    )));
                }
                oid
            }
            None => {
                let oid = ctx.conn.adopt(cell).map_err(|e| E::custom(e.to_string()))?;
                ctx.found.push(cell.clone());
                oid
            }
        };
        ctx.refs.insert(oid);
        Ok(oid)
    })
}

/// Writes a `PRef<T>`'s reference.
pub(crate) fn serialize_ref<S: Serializer>(
    cell: &Rc<ObjectCell>,
    s: S,
) -> std::result::Result<S::Ok, S::Error> {
    let oid = note_ref::<S::Error>(cell)?;
    Required::<u64, TAG_REF>(oid.0).serialize(s)
}

/// Writes a `PObject`'s reference (with its class name).
pub(crate) fn serialize_obj<S: Serializer>(
    cell: &Rc<ObjectCell>,
    s: S,
) -> std::result::Result<S::Ok, S::Error> {
    let oid = note_ref::<S::Error>(cell)?;
    let class = cell.class_name();
    Required::<(u64, &str), TAG_OBJ>((oid.0, class)).serialize(s)
}

fn reader<E: serde::de::Error>() -> std::result::Result<Rc<ConnInner>, E> {
    READER.with(|r| r.borrow().clone()).ok_or_else(|| {
        E::custom("a persistent reference can only be deserialized by a durus connection")
    })
}

/// Reads a `PRef<T>`'s reference: the cell for its oid (a ghost if new).
pub(crate) fn deserialize_ref<'de, D: Deserializer<'de>>(
    d: D,
    class: &'static str,
) -> std::result::Result<Rc<ObjectCell>, D::Error> {
    let oid = if UNTAGGED.with(Cell::get) {
        RefMap::deserialize(d)?.oid
    } else {
        Required::<u64, TAG_REF>::deserialize(d)?.0
    };
    Ok(reader::<D::Error>()?.cell_for(Oid(oid), class))
}

/// Reads a `PObject`'s reference.
pub(crate) fn deserialize_obj<'de, D: Deserializer<'de>>(
    d: D,
) -> std::result::Result<Rc<ObjectCell>, D::Error> {
    let (oid, class) = if UNTAGGED.with(Cell::get) {
        ObjMap::deserialize(d)?.obj
    } else {
        Required::<(u64, String), TAG_OBJ>::deserialize(d)?.0
    };
    Ok(reader::<D::Error>()?.cell_for(Oid(oid), class::intern(&class)))
}
