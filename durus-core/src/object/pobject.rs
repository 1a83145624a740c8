//! `PObject`: a reference to a persistent object of any type.

use std::fmt;
use std::rc::Rc;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::error::{Error, Result};
use crate::format::Oid;
use crate::object::cell::ObjectCell;
use crate::object::{codec, registry, PRef, Persistent};

/// A reference to a persistent object whose type is known only at run
/// time (Durus's "any object", e.g. the values of the root dictionary).
/// [`PObject::downcast`] turns it into a typed [`PRef`].
#[derive(Clone)]
pub struct PObject {
    cell: Rc<ObjectCell>,
}

impl PObject {
    pub(crate) fn from_cell(cell: Rc<ObjectCell>) -> Self {
        PObject { cell }
    }

    pub(crate) fn cell(&self) -> &Rc<ObjectCell> {
        &self.cell
    }

    /// The class name: of the loaded type once the object is loaded, else
    /// as the reference to it (or its record) names it, which may be an
    /// old name until the referring object is rewritten.
    pub fn class_name(&self) -> String {
        self.cell.class_name().to_string()
    }

    /// The oid, once stored.
    pub fn oid(&self) -> Option<Oid> {
        self.cell.oid.get()
    }

    /// True if the object is of type `T` (by name, alias or rename).
    pub fn is<T: Persistent>(&self) -> bool {
        registry::accepts::<T>(self.cell.class_name())
    }

    /// The typed handle, or an error naming both types.
    pub fn downcast<T: Persistent>(&self) -> Result<PRef<T>> {
        registry::register::<T>();
        let class = self.cell.class_name();
        if !registry::accepts::<T>(class) {
            let oid = self.oid().unwrap_or_default();
            return Err(match registry::current_name(class) {
                Some(_) => Error::TypeMismatch {
                    oid,
                    expected: T::CLASS_NAME,
                    found: class.to_string(),
                },
                None => Error::UnknownClass {
                    name: class.to_string(),
                    oid,
                },
            });
        }
        Ok(PRef::from_cell(self.cell.clone()))
    }

    /// True if both are the same object.
    pub fn same_object(&self, other: &PObject) -> bool {
        Rc::ptr_eq(&self.cell, &other.cell)
    }
}

impl<T: Persistent> From<PRef<T>> for PObject {
    fn from(r: PRef<T>) -> Self {
        PObject::from_cell(r.cell().clone())
    }
}

impl PartialEq for PObject {
    fn eq(&self, other: &Self) -> bool {
        self.same_object(other)
    }
}

impl Eq for PObject {}

impl fmt::Debug for PObject {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.oid() {
            Some(oid) => write!(f, "<{} {oid}>", self.cell.class_name()),
            None => write!(f, "<{} new>", self.cell.class_name()),
        }
    }
}

impl Serialize for PObject {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        codec::serialize_obj(&self.cell, s)
    }
}

impl<'de> Deserialize<'de> for PObject {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        codec::deserialize_obj(d).map(PObject::from_cell)
    }
}
