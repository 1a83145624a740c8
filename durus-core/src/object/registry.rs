//! The type registry: which class names (current, aliases, renames) belong
//! to which persistent type.
//!
//! Types register themselves the first time a handle of theirs is made or
//! asked for, so no manual call is needed. Renames decided at run time
//! (Durus FAQ "rename a class", "rename a module") are added with
//! [`rename_class`] and [`rename_prefix`].

use std::any::TypeId;
use std::collections::{HashMap, HashSet};
use std::sync::{LazyLock, RwLock};

use std::rc::Rc;

use crate::error::Result;
use crate::object::cell::ObjectCell;
use crate::object::connection::ConnInner;
use crate::object::Persistent;

/// Loads a ghost's state as the registered type (type erased).
pub(crate) type Loader = fn(&Rc<ConnInner>, &Rc<ObjectCell>) -> Result<()>;

/// The types registered under one class name: the first one's loader, and
/// all their Rust names.
struct Loaders {
    load: Loader,
    types: Vec<&'static str>,
}

/// What [`loader`] finds for a class name.
pub(crate) enum Lookup {
    /// No registered type has the name.
    Unknown,
    /// Exactly one type: load with this.
    One(Loader),
    /// Several Rust types share the name (e.g. `PersistentDict<String,
    /// PObject>` and `PersistentDict<u32, String>`): the record alone
    /// cannot say which one to decode it as.
    Ambiguous(Vec<&'static str>),
}

#[derive(Default)]
struct Registry {
    /// Every known name (current or alias) → the current name.
    names: HashMap<String, &'static str>,
    /// Every registered type.
    types: HashSet<TypeId>,
    /// Current name → how to load a ghost of the types registered under it
    /// (several for the instantiations of a generic type).
    loaders: HashMap<&'static str, Loaders>,
    /// Old exact name → new name.
    renamed: HashMap<String, String>,
    /// Old prefix → new prefix, tried longest first.
    prefixes: Vec<(String, String)>,
}

static REGISTRY: LazyLock<RwLock<Registry>> = LazyLock::new(Default::default);

fn read() -> std::sync::RwLockReadGuard<'static, Registry> {
    REGISTRY
        .read()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn write() -> std::sync::RwLockWriteGuard<'static, Registry> {
    REGISTRY
        .write()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

thread_local! {
    /// Types this thread has seen registered: every reference decoded
    /// registers its type, and a lock plus a hash lookup per reference
    /// was a tenth of a cold scan.
    static SEEN: std::cell::RefCell<Vec<TypeId>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Registers `T` under its class name and aliases (idempotent, cheap).
pub fn register<T: Persistent>() {
    let id = TypeId::of::<T>();
    if SEEN.with_borrow(|seen| seen.contains(&id)) {
        return;
    }
    register_type::<T>();
    SEEN.with_borrow_mut(|seen| seen.push(id));
}

fn register_type<T: Persistent>() {
    let id = TypeId::of::<T>();
    if read().types.contains(&id) {
        return;
    }
    let mut reg = write();
    if !reg.types.insert(id) {
        return;
    }
    reg.names.insert(T::CLASS_NAME.to_string(), T::CLASS_NAME);
    reg.loaders
        .entry(T::CLASS_NAME)
        .or_insert_with(|| Loaders {
            load: ConnInner::load_state::<T>,
            types: Vec::new(),
        })
        .types
        .push(std::any::type_name::<T>());
    for alias in T::ALIASES {
        // A type's own current name beats another type's alias of it.
        match reg.names.get(*alias) {
            Some(current) if current == alias => {
                tracing::warn!("{} names {alias:?} as an alias, but a type has that name; the alias is ignored", T::CLASS_NAME);
            }
            _ => {
                reg.names.insert((*alias).to_string(), T::CLASS_NAME);
            }
        }
    }
}

/// From now on, records naming class `old` decode as the type named `new`.
pub fn rename_class(old: &str, new: &str) {
    write().renamed.insert(old.to_string(), new.to_string());
}

/// From now on, class names starting with `old_prefix` (a module path such
/// as `"shop.models."`) are read with `new_prefix` instead.
pub fn rename_prefix(old_prefix: &str, new_prefix: &str) {
    let mut reg = write();
    reg.prefixes
        .push((old_prefix.to_string(), new_prefix.to_string()));
    reg.prefixes
        .sort_by_key(|(old, _)| std::cmp::Reverse(old.len()));
}

/// The name `name` stands for after run-time renames.
pub fn renamed(name: &str) -> String {
    let reg = read();
    if let Some(new) = reg.renamed.get(name) {
        return new.clone();
    }
    for (old, new) in &reg.prefixes {
        if let Some(rest) = name.strip_prefix(old.as_str()) {
            return format!("{new}{rest}");
        }
    }
    name.to_string()
}

/// The current class name of a registered type that `name` (possibly an
/// alias or an old name) denotes.
pub fn current_name(name: &str) -> Option<&'static str> {
    let name = renamed(name);
    read().names.get(&name).copied()
}

/// How to load a ghost whose record names class `name`.
pub(crate) fn loader(name: &str) -> Lookup {
    let Some(current) = current_name(name) else {
        return Lookup::Unknown;
    };
    match read().loaders.get(current) {
        None => Lookup::Unknown,
        Some(l) if l.types.len() > 1 => Lookup::Ambiguous(l.types.clone()),
        Some(l) => Lookup::One(l.load),
    }
}

/// Whether a record of class `name` decodes as `T`.
pub fn accepts<T: Persistent>(name: &str) -> bool {
    if name == T::CLASS_NAME || T::ALIASES.contains(&name) {
        return true;
    }
    let name = renamed(name);
    name == T::CLASS_NAME || T::ALIASES.contains(&name.as_str())
}

/// Every name that records of `T` may carry: current name, aliases and
/// run-time renames that lead to it.
pub fn names_of<T: Persistent>() -> Vec<String> {
    let mut names: Vec<String> = std::iter::once(T::CLASS_NAME)
        .chain(T::ALIASES.iter().copied())
        .map(str::to_string)
        .collect();
    let reg = read();
    names.extend(
        reg.renamed
            .iter()
            .filter(|(_, new)| new.as_str() == T::CLASS_NAME || T::ALIASES.contains(&new.as_str()))
            .map(|(old, _)| old.clone()),
    );
    names
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::{Deserialize, Serialize};

    #[derive(Serialize, Deserialize)]
    struct Old;
    impl Persistent for Old {
        const CLASS_NAME: &'static str = "regtest.Thing";
    }

    #[derive(Serialize, Deserialize)]
    struct New;
    impl Persistent for New {
        const CLASS_NAME: &'static str = "regtest.NewThing";
        const ALIASES: &'static [&'static str] = &["regtest.Thing"];
    }

    #[test]
    fn a_types_own_name_wins_over_another_types_alias_in_any_order() {
        register::<New>();
        register::<Old>();
        register::<New>();
        assert_eq!(current_name("regtest.Thing"), Some("regtest.Thing"));
        assert_eq!(current_name("regtest.NewThing"), Some("regtest.NewThing"));
        // New still accepts records stored under its alias.
        assert!(accepts::<New>("regtest.Thing"));
    }

    #[test]
    fn prefix_renames_apply_longest_prefix_first() {
        rename_prefix("regtest.mod.", "regtest.moved.");
        rename_prefix("regtest.mod.sub.", "regtest.sub2.");
        assert_eq!(renamed("regtest.mod.A"), "regtest.moved.A");
        assert_eq!(renamed("regtest.mod.sub.B"), "regtest.sub2.B");
        assert_eq!(renamed("other.C"), "other.C");
    }
}
