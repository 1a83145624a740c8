//! `#[derive(Persistent)]` for durus for Rust.
//!
//! Use it through the `durus` crate (`use durus::prelude::*;` brings both
//! the trait and this derive); see [`macro@Persistent`] for what it
//! generates.

mod attrs;
mod expand;

use proc_macro::TokenStream;

/// Makes a struct a persistent class: implements `durus::Persistent` and
/// generates change-tracking field accessors on its handle `PRef<T>`.
///
/// The struct must also derive (or implement) serde's `Serialize` and
/// `Deserialize`: its state is its serde serialization.
///
/// ```
/// use durus::prelude::*;
/// use serde::{Deserialize, Serialize};
///
/// #[derive(Persistent, Serialize, Deserialize)]
/// #[durus(name = "shop.Item", aliases("shop.OldItem"))]
/// struct Item {
///     sku: String,
///     qty: u32,
/// }
///
/// let item = PRef::new(Item { sku: "A1".into(), qty: 3 });
/// item.set_qty(4)?; // marks the object changed
/// assert_eq!(item.qty()?, 4); // a clone of the field
/// assert_eq!(Item::CLASS_NAME, "shop.Item");
/// assert_eq!(Item::ALIASES, ["shop.OldItem"]);
/// # Ok::<(), durus::Error>(())
/// ```
///
/// # What it generates
///
/// For the `Item` above (with `::durus` paths spelled out):
///
/// ```text
/// impl ::durus::Persistent for Item {
///     const CLASS_NAME: &'static str = "shop.Item";
///     const ALIASES: &'static [&'static str] = &["shop.OldItem"];
/// }
///
/// /// Field accessors of [`Item`] on its handle `PRef<Item>`, ...
/// trait ItemFields {                  // same visibility as `Item`
///     fn sku(&self) -> ::durus::Result<String>;
///     fn set_sku(&self, value: String) -> ::durus::Result<()>;
///     fn qty(&self) -> ::durus::Result<u32>;
///     fn set_qty(&self, value: u32) -> ::durus::Result<()>;
/// }
///
/// impl ItemFields for ::durus::PRef<Item> {
///     fn qty(&self) -> ::durus::Result<u32> {
///         ::durus::PRef::read(self, |object| object.qty.clone())
///     }
///     fn set_qty(&self, value: u32) -> ::durus::Result<()> {
///         ::durus::PRef::write(self, |object| { object.qty = value; })
///     }
///     // ... and likewise for `sku`
/// }
/// ```
///
/// * **The class name** is written in every record of the type. By
///   default it is the module path and the type name,
///   `concat!(module_path!(), "::", "Item")` (e.g. `"shop::models::Item"`);
///   since moving the type would then change it, name stored classes
///   explicitly with `#[durus(name = "...")]`.
/// * **The accessor trait** is named after the type with `Fields`
///   appended (`ItemFields`), has the struct's visibility and is always
///   generated, even when empty. It is implemented for `PRef<Item>`
///   (a foreign type, hence a trait): to call the accessors from another
///   module, import it (`use crate::shop::ItemFields;`). For each named
///   field `f: F` it declares `fn f(&self) -> durus::Result<F>` (loads a
///   ghost, returns `f.clone()`) and `fn set_f(&self, value: F) ->
///   durus::Result<()>` (assigns through `PRef::write`, which marks the
///   object changed: the next commit writes it). The field's doc
///   comments are repeated on its getter. Tuple struct fields get
///   `get_0`/`set_0`, `get_1`/`set_1`, ...; `Self` in a field type means
///   the struct. Getters need the field type to be `Clone`.
///
/// # Attributes
///
/// On the struct:
/// * `#[durus(name = "bank.Account")]`: the class name.
/// * `#[durus(aliases("old.Account", "older.Account"))]`: earlier class
///   names; records written under them load as this type.
/// * `#[durus(fields_trait = "AccountProps")]`: another name for the
///   accessor trait (if `AccountFields` is taken).
/// * `#[durus(crate = "::my_durus")]`: the path of the `durus` crate, if
///   it is not `::durus`.
///
/// On a field:
/// * `#[durus(skip)]`: no accessors (a field that is not `Clone`, or one
///   to keep behind methods of your own); it is still stored.
/// * `#[durus(readonly)]`: a getter and no setter.
///
/// # Compile errors
///
/// Enums, unions and generic structs are refused (a class has one name,
/// so implement `durus::Persistent` by hand for each concrete type), as
/// are unknown or malformed `#[durus(...)]` attributes. A field whose
/// getter a handle would not reach is refused too, with a suggestion of
/// `#[durus(skip)]`: `PRef`'s own methods `new`, `read`, `write`, `oid`,
/// `is_ghost` and `same_object` would shadow it, and `clone`,
/// `clone_from`, `to_owned`, `clone_into`, `eq`, `ne`, `into`,
/// `try_into`, `fmt`, `serialize`, `borrow`, `borrow_mut` and `type_id`
/// belong to traits every handle implements, so calls would be ambiguous.
#[proc_macro_derive(Persistent, attributes(durus))]
pub fn derive_persistent(input: TokenStream) -> TokenStream {
    let input = syn::parse_macro_input!(input as syn::DeriveInput);
    expand::derive(input)
        .unwrap_or_else(syn::Error::into_compile_error)
        .into()
}
