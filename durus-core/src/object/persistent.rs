//! The trait every persistent type implements (through `#[derive(Persistent)]`).

use std::any::Any;

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::error::{Error, Result};
use crate::format::class_name;

/// A type whose values can be stored as objects in a durus database.
///
/// `#[derive(Persistent)]` implements it; by hand it is two constants.
/// The state is the type's serde serialization, written as CBOR.
pub trait Persistent: Serialize + DeserializeOwned + 'static {
    /// The class name written in records, e.g. `"bank.Account"`.
    const CLASS_NAME: &'static str;
    /// Earlier class names whose records decode as this type (renames).
    const ALIASES: &'static [&'static str] = &[];
}

/// A persistent value with its type erased, as the cache holds it.
pub(crate) trait State: Any {
    /// Appends the record data (class name header and CBOR state).
    fn encode_data(&self, out: &mut Vec<u8>) -> Result<()>;
    fn class(&self) -> &'static str;
}

impl<T: Persistent> State for T {
    fn encode_data(&self, out: &mut Vec<u8>) -> Result<()> {
        class_name::write_cbor_header(out, T::CLASS_NAME);
        ciborium::into_writer(self, &mut *out).map_err(|e| Error::State {
            action: "encode",
            class: T::CLASS_NAME.to_string(),
            oid: None,
            detail: match e {
                ciborium::ser::Error::Io(e) => e.to_string(),
                ciborium::ser::Error::Value(msg) => msg,
            },
        })
    }

    fn class(&self) -> &'static str {
        T::CLASS_NAME
    }
}
