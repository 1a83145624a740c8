//! Parsing of the `#[durus(...)]` attributes, on the struct and on its
//! fields. Every mistake becomes a `syn::Error` spanned on the offending
//! tokens, with the accepted forms in its message.

use syn::parse::ParseStream;
use syn::punctuated::Punctuated;
use syn::{Attribute, Ident, LitStr, Path, Token};

/// The keys accepted on the struct, for error messages.
const CONTAINER_KEYS: &str =
    "`name = \"...\"`, `aliases(\"...\", ...)`, `fields_trait = \"...\"` or `crate = \"...\"`";

/// The keys accepted on a field, for error messages.
const FIELD_KEYS: &str = "`skip` or `readonly`";

/// What `#[durus(...)]` on the struct says.
#[derive(Default)]
pub(crate) struct ContainerAttrs {
    /// `name = "bank.Account"`: the class name (default: module path and
    /// type name).
    pub name: Option<LitStr>,
    /// `aliases("old.Account", ...)`: earlier class names.
    pub aliases: Option<Vec<LitStr>>,
    /// `fields_trait = "AccountProps"`: the accessor trait's name
    /// (default: the type name followed by `Fields`).
    pub fields_trait: Option<Ident>,
    /// `crate = "::my_durus"`: the path of the `durus` crate.
    pub krate: Option<Path>,
}

/// What `#[durus(...)]` on a field says.
#[derive(Default)]
pub(crate) struct FieldAttrs {
    /// `skip`: no accessors for this field.
    pub skip: bool,
    /// `readonly`: a getter but no setter.
    pub readonly: bool,
}

/// Parses every `#[durus(...)]` among the struct's attributes.
pub(crate) fn container(attrs: &[Attribute]) -> syn::Result<ContainerAttrs> {
    let mut out = ContainerAttrs::default();
    let mut errors = Errors::default();
    for attr in attrs.iter().filter(|a| a.path().is_ident("durus")) {
        let parsed = attr.parse_nested_meta(|meta| {
            let key = key_name(&meta.path);
            match key.as_str() {
                "name" => {
                    let lit = string_value(&meta, "name", "bank.Account")?;
                    if lit.value().is_empty() {
                        return Err(syn::Error::new(lit.span(), "the class name must not be empty"));
                    }
                    set_once(&mut out.name, lit, &meta.path)
                }
                "aliases" => {
                    let list = string_list(&meta, "aliases", "old.Account")?;
                    set_once(&mut out.aliases, list, &meta.path)
                }
                "fields_trait" => {
                    let lit = string_value(&meta, "fields_trait", "AccountProps")?;
                    let ident = lit.parse::<Ident>().map_err(|_| {
                        syn::Error::new(
                            lit.span(),
                            "`fields_trait` names the accessor trait: a plain identifier such as \"AccountProps\"",
                        )
                    })?;
                    set_once(&mut out.fields_trait, ident, &meta.path)
                }
                "crate" => {
                    let lit = string_value(&meta, "crate", "::durus")?;
                    let path = lit.parse::<Path>().map_err(|_| {
                        syn::Error::new(
                            lit.span(),
                            "`crate` is the path of the durus crate, such as \"::durus\"",
                        )
                    })?;
                    set_once(&mut out.krate, path, &meta.path)
                }
                "skip" | "readonly" => Err(meta.error(format!(
                    "`{key}` goes on a field, not on the struct; the struct takes {CONTAINER_KEYS}"
                ))),
                _ => Err(meta.error(format!(
                    "unknown durus attribute `{key}`; the struct takes {CONTAINER_KEYS}"
                ))),
            }
        });
        errors.push(parsed);
    }
    if let (Some(name), Some(aliases)) = (&out.name, &out.aliases) {
        for alias in aliases.iter().filter(|a| a.value() == name.value()) {
            errors.push(Err(syn::Error::new(
                alias.span(),
                "this alias is the class name itself; aliases list earlier names only",
            )));
        }
    }
    errors.finish(out)
}

/// Parses every `#[durus(...)]` among a field's attributes.
pub(crate) fn field(attrs: &[Attribute]) -> syn::Result<FieldAttrs> {
    let mut out = FieldAttrs::default();
    let mut errors = Errors::default();
    for attr in attrs.iter().filter(|a| a.path().is_ident("durus")) {
        let parsed = attr.parse_nested_meta(|meta| {
            let key = key_name(&meta.path);
            let flag = match key.as_str() {
                "skip" => &mut out.skip,
                "readonly" => &mut out.readonly,
                "name" | "aliases" | "fields_trait" | "crate" => {
                    return Err(meta.error(format!(
                        "`{key}` goes on the struct, not on a field; a field takes {FIELD_KEYS}"
                    )))
                }
                _ => {
                    return Err(meta.error(format!(
                        "unknown durus field attribute `{key}`; a field takes {FIELD_KEYS}"
                    )))
                }
            };
            if !meta.input.is_empty() && !meta.input.peek(Token![,]) {
                return Err(meta.error(format!("`{key}` takes no value: write `#[durus({key})]`")));
            }
            if *flag {
                return Err(meta.error(format!("`{key}` is given twice")));
            }
            *flag = true;
            Ok(())
        });
        errors.push(parsed);
    }
    if out.skip && out.readonly {
        errors.push(Err(syn::Error::new_spanned(
            attrs.iter().find(|a| a.path().is_ident("durus")),
            "`skip` (no accessors) and `readonly` (a getter only) contradict each other: keep one",
        )));
    }
    errors.finish(out)
}

/// The key as written, `crate` included.
fn key_name(path: &Path) -> String {
    path.get_ident().map(Ident::to_string).unwrap_or_else(|| {
        quote::ToTokens::to_token_stream(path)
            .to_string()
            .replace(' ', "")
    })
}

/// Parses `= "string"` after a key.
fn string_value(
    meta: &syn::meta::ParseNestedMeta<'_>,
    key: &str,
    example: &str,
) -> syn::Result<LitStr> {
    let usage = format!("expected `{key} = \"{example}\"`");
    if !meta.input.peek(Token![=]) {
        return Err(meta.error(usage));
    }
    let value = meta.value()?;
    parse_string(value, &format!("`{key}` takes a string literal: {usage}"))
}

/// Parses `("a", "b", ...)` after a key.
fn string_list(
    meta: &syn::meta::ParseNestedMeta<'_>,
    key: &str,
    example: &str,
) -> syn::Result<Vec<LitStr>> {
    let usage = format!("expected `{key}(\"{example}\", ...)`: a parenthesized list of strings");
    if !meta.input.peek(syn::token::Paren) {
        return Err(meta.error(usage));
    }
    let content;
    syn::parenthesized!(content in meta.input);
    let items = Punctuated::<syn::Expr, Token![,]>::parse_terminated(&content)?;
    let mut list = Vec::new();
    for item in items {
        match item {
            syn::Expr::Lit(syn::ExprLit {
                lit: syn::Lit::Str(lit),
                ..
            }) if !lit.value().is_empty() => list.push(lit),
            other => {
                return Err(syn::Error::new_spanned(
                    other,
                    format!("every `{key}` entry must be a non-empty string literal: {usage}"),
                ))
            }
        }
    }
    if list.is_empty() {
        return Err(meta.error(format!("`{key}()` is empty: {usage}")));
    }
    Ok(list)
}

/// Parses one string literal, or fails with `message` at whatever stands
/// there instead.
fn parse_string(input: ParseStream<'_>, message: &str) -> syn::Result<LitStr> {
    if input.peek(LitStr) {
        return input.parse();
    }
    match input.parse::<syn::Expr>() {
        Ok(expr) => Err(syn::Error::new_spanned(expr, message)),
        Err(_) => Err(input.error(message)),
    }
}

/// Stores a key's value, refusing a second one.
fn set_once<T>(slot: &mut Option<T>, value: T, key: &Path) -> syn::Result<()> {
    if slot.is_some() {
        return Err(syn::Error::new_spanned(
            key,
            format!("`{}` is given twice", key_name(key)),
        ));
    }
    *slot = Some(value);
    Ok(())
}

/// Collects errors so that one compile reports every mistake.
#[derive(Default)]
pub(crate) struct Errors(Option<syn::Error>);

impl Errors {
    pub(crate) fn push(&mut self, result: syn::Result<()>) {
        if let Err(e) = result {
            match &mut self.0 {
                Some(all) => all.combine(e),
                None => self.0 = Some(e),
            }
        }
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.0.is_none()
    }

    pub(crate) fn finish<T>(self, value: T) -> syn::Result<T> {
        match self.0 {
            Some(e) => Err(e),
            None => Ok(value),
        }
    }
}
