//! The code `#[derive(Persistent)]` generates: the `Persistent` impl and
//! the accessor trait on `PRef<T>` (see the crate docs for its shape).

use proc_macro2::{Span, TokenStream};
use quote::{format_ident, quote, quote_spanned, ToTokens};
use syn::ext::IdentExt;
use syn::spanned::Spanned;
use syn::visit_mut::VisitMut;
use syn::{Data, DeriveInput, Fields, Ident, Member, Type};

use crate::attrs::{self, ContainerAttrs, Errors};

/// Getter names that a `PRef<T>` handle already answers to. Its own
/// methods win over any trait method, so a getter of that name would
/// never be called.
const INHERENT: &[&str] = &["new", "read", "write", "oid", "is_ghost", "same_object"];

/// Methods of traits that every handle implements and that are in scope
/// everywhere or commonly imported: a getter of that name would make
/// `handle.name()` ambiguous (error E0034), for the getter and for the
/// trait's own method alike.
const TRAIT_METHODS: &[(&str, &str)] = &[
    ("clone", "Clone::clone"),
    ("clone_from", "Clone::clone_from"),
    ("to_owned", "ToOwned::to_owned"),
    ("clone_into", "ToOwned::clone_into"),
    ("eq", "PartialEq::eq"),
    ("ne", "PartialEq::ne"),
    ("into", "Into::into"),
    ("try_into", "TryInto::try_into"),
    ("fmt", "Debug::fmt"),
    ("serialize", "Serialize::serialize"),
    ("borrow", "Borrow::borrow"),
    ("borrow_mut", "BorrowMut::borrow_mut"),
    ("type_id", "Any::type_id"),
];

/// Why a getter named `name` would not work on a `PRef<ty>`, if it would not.
fn reserved(name: &str, ty: &Ident) -> Option<String> {
    let why = if INHERENT.contains(&name) {
        format!("the handle's own method `PRef::{name}` would shadow it")
    } else {
        let (_, method) = TRAIT_METHODS.iter().find(|(n, _)| *n == name)?;
        format!("`PRef<{ty}>` implements `{method}`, so `handle.{name}()` would be ambiguous")
    };
    Some(format!(
        "field `{name}` cannot have a generated getter `{name}()`: {why}; \
         mark the field `#[durus(skip)]` (no accessors: use `handle.read(..)` and `handle.write(..)`), \
         or rename it"
    ))
}

/// One field that gets accessors.
struct Accessor {
    /// How the struct names the field (`qty`, or `0` in a tuple struct).
    member: Member,
    /// The field's type, `Self` replaced by the struct's name.
    ty: Type,
    getter: Ident,
    /// `None` for a `readonly` field.
    setter: Option<Ident>,
    /// The field's own doc comments, repeated on the getter.
    docs: Vec<syn::Attribute>,
    /// Where the field is declared, for errors about it.
    span: Span,
}

/// Expands the derive, or returns every error found.
pub(crate) fn derive(input: DeriveInput) -> syn::Result<TokenStream> {
    let mut errors = Errors::default();
    let fields = match &input.data {
        Data::Struct(data) => &data.fields,
        Data::Enum(data) => {
            return Err(syn::Error::new(
                data.enum_token.span,
                "#[derive(Persistent)] supports structs only, not enums; \
                 keep the enum as a field of a persistent struct, \
                 or implement `durus::Persistent` for it by hand (two constants: CLASS_NAME and ALIASES)",
            ))
        }
        Data::Union(data) => {
            return Err(syn::Error::new(
                data.union_token.span,
                "#[derive(Persistent)] supports structs only, not unions",
            ))
        }
    };
    if !input.generics.params.is_empty() || input.generics.where_clause.is_some() {
        errors.push(Err(syn::Error::new_spanned(
            &input.generics,
            format!(
                "#[derive(Persistent)] does not support generic structs: a class has one name in the database, \
                 but each `{ty}<..>` would need its own; implement `durus::Persistent` by hand for each concrete type \
                 (e.g. `impl durus::Persistent for {ty}<u32>` with CLASS_NAME = \"shop.{ty}[u32]\")",
                ty = input.ident
            ),
        )));
    }
    let container = attrs::container(&input.attrs);
    let accessors = accessors(&input.ident, fields);
    let container = match container {
        Ok(container) if errors.is_empty() => container,
        container => {
            errors.push(container.map(drop));
            errors.push(accessors.map(drop));
            return errors.finish(TokenStream::new());
        }
    };
    let persistent_impl = persistent_impl(&input.ident, &container);
    match accessors {
        Ok(accessors) => {
            let fields = fields_trait(&input, &container, &accessors);
            Ok(quote!(#persistent_impl #fields))
        }
        // The `Persistent` impl is still emitted, so that uses of the type
        // elsewhere do not pile further errors onto the real one.
        Err(e) => {
            let e = e.to_compile_error();
            Ok(quote!(#persistent_impl #e))
        }
    }
}

/// The fields that get accessors, with their names checked.
fn accessors(ty: &Ident, fields: &Fields) -> syn::Result<Vec<Accessor>> {
    let mut errors = Errors::default();
    let mut out = Vec::new();
    for (index, field) in fields.iter().enumerate() {
        let attrs = match attrs::field(&field.attrs) {
            Ok(attrs) => attrs,
            Err(e) => {
                errors.push(Err(e));
                continue;
            }
        };
        if attrs.skip {
            continue;
        }
        let (member, getter, setter) = match &field.ident {
            Some(ident) => {
                let name = ident.unraw().to_string();
                (
                    Member::Named(ident.clone()),
                    ident.clone(),
                    format_ident!("set_{}", name, span = ident.span()),
                )
            }
            None => {
                let span = field.ty.span();
                (
                    Member::Unnamed(syn::Index {
                        index: index as u32,
                        span,
                    }),
                    format_ident!("get_{}", index, span = span),
                    format_ident!("set_{}", index, span = span),
                )
            }
        };
        let getter_name = getter.unraw().to_string();
        if let Some(message) = reserved(&getter_name, ty) {
            errors.push(Err(syn::Error::new(getter.span(), message)));
            continue;
        }
        let mut field_ty = field.ty.clone();
        ReplaceSelf(ty).visit_type_mut(&mut field_ty);
        out.push(Accessor {
            member,
            ty: field_ty,
            getter,
            setter: (!attrs.readonly).then_some(setter),
            docs: field
                .attrs
                .iter()
                .filter(|a| a.path().is_ident("doc"))
                .cloned()
                .collect(),
            span: field.span(),
        });
    }
    // A getter of one field (`set_x`) must not be the setter of another (`x`).
    for a in &out {
        for b in &out {
            if b.setter
                .as_ref()
                .is_some_and(|s| s.unraw() == a.getter.unraw())
            {
                errors.push(Err(syn::Error::new(
                    a.span,
                    format!(
                        "the getter of this field, `{}()`, has the name of the setter of field `{}`; \
                         mark one of them `#[durus(skip)]` or `#[durus(readonly)]`, or rename it",
                        a.getter.unraw(),
                        b.getter.unraw()
                    ),
                )));
            }
        }
    }
    errors.finish(out)
}

/// Replaces `Self` in a field type by the struct's name: accessor
/// signatures live in a trait implemented for `PRef<T>`, where `Self`
/// would mean the handle.
struct ReplaceSelf<'a>(&'a Ident);

impl VisitMut for ReplaceSelf<'_> {
    fn visit_type_path_mut(&mut self, node: &mut syn::TypePath) {
        if node.qself.is_none() {
            if let Some(first) = node.path.segments.first_mut() {
                if first.ident == "Self" && node.path.leading_colon.is_none() {
                    first.ident = Ident::new(&self.0.to_string(), first.ident.span());
                }
            }
        }
        syn::visit_mut::visit_type_path_mut(self, node);
    }
}

/// The path of the `durus` crate in generated code.
fn krate(container: &ContainerAttrs) -> TokenStream {
    container
        .krate
        .as_ref()
        .map(ToTokens::to_token_stream)
        .unwrap_or_else(|| quote!(::durus))
}

/// `impl Persistent for T`: the class name and its aliases.
fn persistent_impl(ty: &Ident, container: &ContainerAttrs) -> TokenStream {
    let krate = krate(container);
    let type_name = ty.unraw().to_string();
    let class_name = match &container.name {
        Some(name) => name.to_token_stream(),
        None => quote!(::core::concat!(::core::module_path!(), "::", #type_name)),
    };
    let aliases = container.aliases.iter().flatten();
    // The self type carries the struct name's span, so an unmet supertrait
    // bound of `Persistent` (Serialize, DeserializeOwned) points at it.
    quote_spanned! {ty.span()=>
        #[automatically_derived]
        impl #krate::Persistent for #ty {
            const CLASS_NAME: &'static str = #class_name;
            const ALIASES: &'static [&'static str] = &[#(#aliases),*];
        }
    }
}

/// The accessor trait, and its impl for `PRef<T>`.
fn fields_trait(
    input: &DeriveInput,
    container: &ContainerAttrs,
    accessors: &[Accessor],
) -> TokenStream {
    let ty = &input.ident;
    let vis = &input.vis;
    let krate = krate(container);
    let type_name = ty.unraw().to_string();
    let fields_trait = container
        .fields_trait
        .clone()
        .unwrap_or_else(|| format_ident!("{}Fields", type_name, span = ty.span()));

    let trait_doc = format!(
        " Field accessors of [`{type_name}`] on its handle `PRef<{type_name}>`, \
         generated by `#[derive(Persistent)]`.\n\n \
         Getters load a ghost and return a clone of the field; setters mark \
         the object changed, so the next commit writes it."
    );
    let mut decls = Vec::new();
    let mut impls = Vec::new();
    for a in accessors {
        let Accessor {
            member,
            ty: field_ty,
            getter,
            setter,
            docs,
            ..
        } = a;
        let shown = match member {
            Member::Named(ident) => ident.unraw().to_string(),
            Member::Unnamed(index) => index.index.to_string(),
        };
        let getter_doc =
            format!(" A clone of field `{shown}` (loading the object if it is a ghost).");
        let separator = if docs.is_empty() {
            quote!()
        } else {
            quote!(#[doc = ""])
        };
        decls.push(quote! {
            #[doc = #getter_doc]
            #separator
            #(#docs)*
            fn #getter(&self) -> #krate::Result<#field_ty>;
        });
        // The clone goes through a helper trait spanned on the field type,
        // so a type that is not `Clone` gets an error naming the field.
        let clone = quote_spanned! {field_ty.span()=>
            __DurusFieldClone::__durus_clone(&object.#member)
        };
        impls.push(quote! {
            #[inline]
            fn #getter(&self) -> #krate::Result<#field_ty> {
                #krate::PRef::read(self, |object| #clone)
            }
        });
        if let Some(setter) = setter {
            let setter_doc = format!(
                " Sets field `{shown}` and marks the object changed (the next commit writes it)."
            );
            decls.push(quote! {
                #[doc = #setter_doc]
                fn #setter(&self, value: #field_ty) -> #krate::Result<()>;
            });
            impls.push(quote! {
                #[inline]
                fn #setter(&self, value: #field_ty) -> #krate::Result<()> {
                    #krate::PRef::write(self, |object| {
                        object.#member = value;
                    })
                }
            });
        }
    }

    let clone_message = format!(
        "field type `{{Self}}` is not `Clone`: the getter that #[derive(Persistent)] generates for this field of `{type_name}` returns a clone"
    );
    quote! {
        #[doc = #trait_doc]
        #[allow(dead_code)]
        #vis trait #fields_trait {
            #(#decls)*
        }

        const _: () = {
            #[diagnostic::on_unimplemented(
                message = #clone_message,
                label = "not `Clone`",
                note = "mark the field `#[durus(skip)]` to generate no accessors for it (use `handle.read(..)` and `handle.write(..)`)"
            )]
            #[allow(dead_code)]
            trait __DurusFieldClone: ::core::marker::Sized {
                fn __durus_clone(&self) -> Self;
            }

            #[diagnostic::do_not_recommend]
            impl<T: ::core::clone::Clone> __DurusFieldClone for T {
                #[inline]
                fn __durus_clone(&self) -> Self {
                    ::core::clone::Clone::clone(self)
                }
            }

            #[automatically_derived]
            impl #fields_trait for #krate::PRef<#ty> {
                #(#impls)*
            }
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn expand(source: &str) -> String {
        derive(syn::parse_str(source).unwrap()).unwrap().to_string()
    }

    #[test]
    fn accessor_trait_is_named_after_the_type_and_has_its_visibility() {
        let out = expand("pub(crate) struct Item { qty: u32 }");
        assert!(out.contains("pub (crate) trait ItemFields"), "{out}");
        assert!(
            out.contains("impl ItemFields for :: durus :: PRef < Item >"),
            "{out}"
        );
        assert!(
            out.contains("fn qty (& self) -> :: durus :: Result < u32 >"),
            "{out}"
        );
        assert!(
            out.contains("fn set_qty (& self , value : u32) -> :: durus :: Result < () >"),
            "{out}"
        );
    }

    #[test]
    fn self_in_field_types_becomes_the_struct_name() {
        let out = expand("struct Node { next: Option<PRef<Self>> }");
        assert!(
            out.contains("fn next (& self) -> :: durus :: Result < Option < PRef < Node > > >"),
            "{out}"
        );
        assert!(!out.contains("Self >"), "{out}");
    }

    #[test]
    fn reserved_getter_names_explain_the_clash() {
        let item = Ident::new("Item", Span::call_site());
        assert!(reserved("read", &item)
            .unwrap()
            .contains("`PRef::read` would shadow it"));
        assert!(reserved("eq", &item)
            .unwrap()
            .contains("`handle.eq()` would be ambiguous"));
        assert_eq!(reserved("qty", &item), None);
        assert_eq!(reserved("set_read", &item), None);
    }

    /// Prints a full expansion (`cargo test -p durus-derive -- --nocapture`).
    #[test]
    fn expansion_is_the_impl_the_trait_and_a_const_block() {
        let out = derive(
            syn::parse_str(
                r#"#[durus(name = "shop.Item", aliases("shop.OldItem"))]
                pub struct Item { sku: String, #[durus(readonly)] qty: u32, #[durus(skip)] cache: Vec<u8> }"#,
            )
            .unwrap(),
        )
        .unwrap();
        let file: syn::File = syn::parse2(out).unwrap();
        assert_eq!(file.items.len(), 3); // impl Persistent, trait, const _
        println!("{}", quote!(#file));
    }
}
