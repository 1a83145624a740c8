//! Class names read from records, interned for the life of the process.
//!
//! Every cell names its class. Most names are a Rust type's
//! `CLASS_NAME`, already `&'static str`; the others come from records
//! and `PObject` references. Interning those lets a cell hold a plain
//! `&'static str` (no allocation per object, and a smaller cell: warm
//! reads are bound by the cache lines a cell spans). The cost is that each
//! distinct name read stays allocated until the process exits: a few bytes
//! per class a database uses.

use std::collections::HashSet;
use std::sync::{LazyLock, Mutex};

static NAMES: LazyLock<Mutex<HashSet<&'static str>>> = LazyLock::new(Default::default);

/// The interned copy of `name`.
pub(crate) fn intern(name: &str) -> &'static str {
    let mut names = NAMES
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    match names.get(name) {
        Some(&interned) => interned,
        None => {
            let interned: &'static str = Box::leak(name.into());
            names.insert(interned);
            interned
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interning_returns_one_copy_per_name() {
        let a = intern(&String::from("class.test.A"));
        let b = intern(&String::from("class.test.A"));
        assert!(std::ptr::eq(a, b));
        assert_eq!(a, "class.test.A");
        assert_ne!(intern("class.test.B"), a);
    }
}
