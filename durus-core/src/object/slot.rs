//! The loaded state of an object with its type erased, and a downcast
//! that costs one comparison.
//!
//! `dyn Any::downcast_ref` asks the value's vtable for its `TypeId`: an
//! indirect call behind two dependent loads, on every field read. A warm
//! read of a large graph is bound by exactly such chains (measured: a
//! third of the per-field read rate), so a slot keeps the `TypeId` beside
//! the box and compares that instead.
//!
//! This is the crate's only `unsafe` code. Its soundness rests on one
//! invariant, kept by construction: `type_id` is `TypeId::of` the concrete
//! type inside `value`. [`Slot::new`] is the only constructor, both fields
//! are private, and neither is ever reassigned.
#![allow(unsafe_code)]

use std::any::TypeId;

use crate::object::persistent::State;
use crate::object::Persistent;

pub(crate) struct Slot {
    type_id: TypeId,
    value: Box<dyn State>,
}

impl Slot {
    pub(crate) fn new<T: Persistent>(value: T) -> Slot {
        Slot {
            type_id: TypeId::of::<T>(),
            value: Box::new(value),
        }
    }

    pub(crate) fn state(&self) -> &dyn State {
        &*self.value
    }

    #[inline]
    pub(crate) fn downcast_ref<T: 'static>(&self) -> Option<&T> {
        if self.type_id == TypeId::of::<T>() {
            let ptr = &*self.value as *const dyn State as *const T;
            // SAFETY: `value` holds a `T` (the module invariant: `type_id`
            // is the boxed value's type, and it equals `T`'s), so the data
            // pointer of the box points to a valid `T`, borrowed for as
            // long as `self` is.
            Some(unsafe { &*ptr })
        } else {
            None
        }
    }

    #[inline]
    pub(crate) fn downcast_mut<T: 'static>(&mut self) -> Option<&mut T> {
        if self.type_id == TypeId::of::<T>() {
            let ptr = &mut *self.value as *mut dyn State as *mut T;
            // SAFETY: as in `downcast_ref`, and `&mut self` makes the
            // borrow exclusive.
            Some(unsafe { &mut *ptr })
        } else {
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::{Deserialize, Serialize};

    #[derive(Serialize, Deserialize, Debug, PartialEq)]
    struct A(u32);
    impl Persistent for A {
        const CLASS_NAME: &'static str = "slot.A";
    }

    #[derive(Serialize, Deserialize, Debug, PartialEq)]
    struct B(u32);
    impl Persistent for B {
        const CLASS_NAME: &'static str = "slot.B";
    }

    #[test]
    fn a_slot_downcasts_to_its_own_type_only() {
        let mut slot = Slot::new(A(7));
        assert_eq!(slot.downcast_ref::<A>(), Some(&A(7)));
        assert_eq!(slot.downcast_ref::<B>(), None);
        assert_eq!(slot.downcast_mut::<B>(), None);
        slot.downcast_mut::<A>().unwrap().0 += 1;
        assert_eq!(slot.downcast_ref::<A>(), Some(&A(8)));
        assert_eq!(slot.state().class(), "slot.A");
    }
}
