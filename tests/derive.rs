//! `#[derive(Persistent)]`: the class name and aliases it declares, and the
//! change-tracking accessors it generates on `PRef<T>`, end to end through
//! commits and reopened files. (Its compile errors: tests/compile_fail.rs.)

use std::path::Path;

use durus::prelude::*;
use serde::{Deserialize, Serialize};

/// Types declared in a module, to pin the default class name and the
/// accessor trait's import from elsewhere.
mod shop {
    use durus::prelude::*;
    use serde::{Deserialize, Serialize};

    /// The DESIGN.md example type.
    #[derive(Persistent, Serialize, Deserialize)]
    #[durus(name = "shop.Item", aliases("shop.OldItem"))]
    pub struct Item {
        pub sku: String,
        /// How many are in stock.
        pub qty: u32,
        pub tags: PRef<PersistentList<String>>,
    }

    /// No `name`: the class name is the module path and the type name.
    #[derive(Persistent, Serialize, Deserialize, Default)]
    pub struct Unnamed {
        pub note: String,
    }
}

use shop::{Item, ItemFields};

/// A field that is not `Clone`.
#[derive(Debug, PartialEq, Serialize, Deserialize)]
struct Counter(u64);

#[derive(Persistent, Serialize, Deserialize)]
#[durus(name = "test.Account", aliases("test.OldAccount", "test.OlderAccount"))]
struct Account {
    owner: String,
    #[durus(readonly)]
    opened: u32,
    #[durus(skip)]
    counter: Counter,
    /// `load` is a private method of `PRef`: it does not get in the way.
    load: u8,
    /// A raw identifier: getter `r#type()`, setter `set_type()`.
    r#type: String,
}

/// `Self` in a field type is the struct, also in the accessors.
#[derive(Persistent, Serialize, Deserialize)]
#[durus(name = "test.Node")]
struct Node {
    value: i32,
    next: Option<PRef<Self>>,
}

#[derive(Persistent, Serialize, Deserialize)]
#[durus(name = "test.Point")]
struct Point(i64, #[durus(readonly)] i64);

#[derive(Persistent, Serialize, Deserialize, Default)]
#[durus(name = "test.Marker")]
struct Marker;

#[derive(Persistent, Serialize, Deserialize)]
#[durus(name = "test.Renamed", fields_trait = "RenamedAccess")]
struct Renamed {
    label: String,
}

/// `durus` reached through another path.
mod reexport {
    pub use ::durus as durus_again;
}

#[derive(Persistent, Serialize, Deserialize)]
#[durus(crate = "crate::reexport::durus_again", name = "test.Elsewhere")]
struct Elsewhere {
    n: u8,
}

fn new_item(sku: &str, qty: u32) -> PRef<Item> {
    PRef::new(Item {
        sku: sku.into(),
        qty,
        tags: PRef::new(PersistentList::new()),
    })
}

fn account() -> PRef<Account> {
    PRef::new(Account {
        owner: "ann".into(),
        opened: 2024,
        counter: Counter(7),
        load: 1,
        r#type: "savings".into(),
    })
}

/// Stores `value` under `key` in the root of the file at `path`.
fn store<T: Persistent>(path: &Path, key: &str, value: &PRef<T>) {
    let conn = Connection::open(path).unwrap();
    conn.root()
        .insert(key.to_string(), PObject::from(value.clone()))
        .unwrap();
    conn.commit().unwrap();
}

/// The object under `key` in the root, as a `T`.
fn fetch<T: Persistent>(conn: &Connection, key: &str) -> PRef<T> {
    conn.root()
        .get(&key.to_string())
        .unwrap()
        .unwrap_or_else(|| panic!("no {key} in the root"))
        .downcast::<T>()
        .unwrap()
}

#[test]
fn default_class_name_is_the_module_path_and_the_type_name() {
    assert_eq!(shop::Unnamed::CLASS_NAME, "derive::shop::Unnamed");
    assert_eq!(shop::Unnamed::ALIASES, &[] as &[&str]);
}

#[test]
fn name_attribute_sets_the_class_name() {
    assert_eq!(Item::CLASS_NAME, "shop.Item");
    assert_eq!(Account::CLASS_NAME, "test.Account");
    assert_eq!(Point::CLASS_NAME, "test.Point");
}

#[test]
fn aliases_attribute_lists_the_earlier_names_in_order() {
    assert_eq!(Item::ALIASES, ["shop.OldItem"]);
    assert_eq!(Account::ALIASES, ["test.OldAccount", "test.OlderAccount"]);
    assert_eq!(Node::ALIASES, &[] as &[&str]);
}

#[test]
fn design_example_setter_then_getter() {
    let conn = Connection::new(MemoryStorage::new()).unwrap();
    let root = conn.root();
    let item = new_item("A1", 3);
    root.insert("a1".to_string(), PObject::from(item.clone()))
        .unwrap();
    item.set_qty(4).unwrap();
    assert_eq!(item.qty().unwrap(), 4);
    item.write(|it| it.qty += 1).unwrap();
    assert_eq!(item.qty().unwrap(), 5);
    assert_eq!(item.read(|it| it.sku.len()).unwrap(), 2);
    assert_eq!(item.sku().unwrap(), "A1");
    conn.commit().unwrap();
    let again: PRef<Item> = root
        .get(&"a1".to_string())
        .unwrap()
        .unwrap()
        .downcast::<Item>()
        .unwrap();
    assert!(again.same_object(&item));
    assert_eq!(again.qty().unwrap(), 5);
}

#[test]
fn getters_return_clones_that_do_not_alias_the_state() {
    let item = new_item("A1", 3);
    let mut sku = item.sku().unwrap();
    sku.push_str("-changed");
    assert_eq!(item.sku().unwrap(), "A1");
    // A getter of a reference field returns another handle to the same object.
    let tags = item.tags().unwrap();
    tags.push("red".to_string()).unwrap();
    assert!(tags.same_object(&item.tags().unwrap()));
    assert_eq!(
        item.tags().unwrap().iter().unwrap().collect::<Vec<_>>(),
        vec!["red".to_string()]
    );
}

#[test]
fn setter_values_survive_commit_and_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("shop.durus");
    let item = new_item("A1", 3);
    store(&path, "a1", &item);
    drop(item);
    {
        let conn = Connection::open(&path).unwrap();
        let item: PRef<Item> = fetch(&conn, "a1");
        assert!(item.is_ghost());
        assert_eq!(item.qty().unwrap(), 3); // the getter loads the ghost
        assert!(!item.is_ghost());
        item.set_qty(9).unwrap();
        item.set_sku("B2".to_string()).unwrap();
        conn.commit().unwrap();
    }
    let conn = Connection::open(&path).unwrap();
    let item: PRef<Item> = fetch(&conn, "a1");
    assert_eq!(item.qty().unwrap(), 9);
    assert_eq!(item.sku().unwrap(), "B2");
}

#[test]
fn setter_marks_a_loaded_object_changed_so_commit_writes_it() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("mark.durus");
    store(&path, "a1", &new_item("A1", 3));
    {
        let conn = Connection::open(&path).unwrap();
        let item: PRef<Item> = fetch(&conn, "a1");
        assert_eq!(item.qty().unwrap(), 3); // loaded and unchanged
        let before = std::fs::metadata(&path).unwrap().len();
        item.set_qty(4).unwrap(); // the only change: nothing else marks it
        conn.commit().unwrap();
        assert!(std::fs::metadata(&path).unwrap().len() > before);
    }
    let conn = Connection::open(&path).unwrap();
    assert_eq!(fetch::<Item>(&conn, "a1").qty().unwrap(), 4);
}

#[test]
fn getter_does_not_mark_the_object_changed() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("read.durus");
    store(&path, "a1", &new_item("A1", 3));
    let conn = Connection::open(&path).unwrap();
    let item: PRef<Item> = fetch(&conn, "a1");
    let before = std::fs::metadata(&path).unwrap().len();
    assert_eq!(item.qty().unwrap(), 3);
    assert_eq!(item.sku().unwrap(), "A1");
    conn.commit().unwrap();
    assert_eq!(std::fs::metadata(&path).unwrap().len(), before);
}

#[test]
fn changes_through_setters_are_undone_by_abort() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("abort.durus");
    store(&path, "a1", &new_item("A1", 3));
    let conn = Connection::open(&path).unwrap();
    let item: PRef<Item> = fetch(&conn, "a1");
    item.set_qty(100).unwrap();
    conn.abort();
    assert_eq!(item.qty().unwrap(), 3);
}

#[test]
fn skipped_field_has_no_accessors_but_is_still_stored() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("skip.durus");
    store(&path, "acct", &account());
    let conn = Connection::open(&path).unwrap();
    let acct: PRef<Account> = fetch(&conn, "acct");
    // `acct.counter()` does not exist (tests/ui/skip_has_no_accessors.rs).
    assert_eq!(acct.read(|a| a.counter.0).unwrap(), 7);
    acct.write(|a| a.counter.0 += 1).unwrap();
    conn.commit().unwrap();
    drop(conn);
    let conn = Connection::open(&path).unwrap();
    assert_eq!(
        fetch::<Account>(&conn, "acct")
            .read(|a| a.counter.0)
            .unwrap(),
        8
    );
}

#[test]
fn readonly_field_has_a_getter() {
    let acct = account();
    // `acct.set_opened(..)` does not exist (tests/ui/readonly_has_no_setter.rs).
    assert_eq!(acct.opened().unwrap(), 2024);
}

#[test]
fn private_pref_method_names_and_raw_identifiers_get_accessors() {
    let acct = account();
    assert_eq!(acct.load().unwrap(), 1);
    acct.set_load(2).unwrap();
    assert_eq!(acct.load().unwrap(), 2);
    assert_eq!(acct.r#type().unwrap(), "savings");
    acct.set_type("checking".to_string()).unwrap();
    assert_eq!(acct.r#type().unwrap(), "checking");
    acct.set_owner("bob".to_string()).unwrap();
    assert_eq!(acct.owner().unwrap(), "bob");
}

#[test]
fn self_in_a_field_type_means_the_struct() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("nodes.durus");
    let tail = PRef::new(Node {
        value: 2,
        next: None,
    });
    let head = PRef::new(Node {
        value: 1,
        next: None,
    });
    head.set_next(Some(tail.clone())).unwrap();
    store(&path, "head", &head);
    let conn = Connection::open(&path).unwrap();
    let head: PRef<Node> = fetch(&conn, "head");
    let next: Option<PRef<Node>> = head.next().unwrap();
    let next = next.unwrap();
    assert_eq!(next.value().unwrap(), 2);
    assert!(next.next().unwrap().is_none());
}

#[test]
fn tuple_struct_fields_get_numbered_accessors() {
    let p = PRef::new(Point(3, 4));
    assert_eq!(p.get_0().unwrap(), 3);
    assert_eq!(p.get_1().unwrap(), 4);
    p.set_0(-3).unwrap();
    assert_eq!(p.read(|p| (p.0, p.1)).unwrap(), (-3, 4));
}

#[test]
fn unit_struct_is_persistent() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("unit.durus");
    store(&path, "m", &PRef::new(Marker));
    let conn = Connection::open(&path).unwrap();
    let obj = conn.root().get(&"m".to_string()).unwrap().unwrap();
    assert_eq!(obj.class_name(), "test.Marker");
    let marker: PRef<Marker> = obj.downcast().unwrap();
    assert!(marker.read(|_| true).unwrap());
}

#[test]
fn fields_trait_attribute_names_the_accessor_trait() {
    let r = PRef::new(Renamed { label: "x".into() });
    RenamedAccess::set_label(&r, "y".to_string()).unwrap();
    assert_eq!(RenamedAccess::label(&r).unwrap(), "y");
}

#[test]
fn crate_attribute_sets_the_path_of_durus_in_generated_code() {
    assert_eq!(Elsewhere::CLASS_NAME, "test.Elsewhere");
    let e = PRef::new(Elsewhere { n: 1 });
    e.set_n(2).unwrap();
    assert_eq!(e.n().unwrap(), 2);
}

/// Both "versions" of a renamed class; only the alias test uses these names.
mod before_rename {
    use durus::prelude::*;
    use serde::{Deserialize, Serialize};

    #[derive(Persistent, Serialize, Deserialize)]
    #[durus(name = "old.Thing")]
    pub struct Thing {
        pub size: u32,
    }
}

mod after_rename {
    use durus::prelude::*;
    use serde::{Deserialize, Serialize};

    #[derive(Persistent, Serialize, Deserialize)]
    #[durus(name = "new.Thing", aliases("old.Thing"))]
    pub struct Thing {
        pub size: u32,
    }
}

#[test]
fn record_of_an_alias_name_loads_as_the_renamed_type() {
    use after_rename::ThingFields as _;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("rename.durus");
    store(&path, "t", &PRef::new(before_rename::Thing { size: 5 }));
    let conn = Connection::open(&path).unwrap();
    let obj = conn.root().get(&"t".to_string()).unwrap().unwrap();
    assert_eq!(obj.class_name(), "old.Thing");
    assert!(obj.is::<after_rename::Thing>());
    let thing: PRef<after_rename::Thing> = obj.downcast().unwrap();
    assert_eq!(thing.size().unwrap(), 5);
    thing.set_size(6).unwrap();
    conn.commit().unwrap();
    // The object's own record is written back under the current name.
    let oid = thing.oid().unwrap();
    let record = conn.with_storage(|s| s.load(oid)).unwrap();
    let data = durus::format::record::Record::decode(&record).unwrap().data;
    assert_eq!(
        durus::format::class_name::extract(data),
        durus::format::class_name::ClassName::Cbor("new.Thing")
    );
    drop(conn);
    let conn = Connection::open(&path).unwrap();
    let thing: PRef<after_rename::Thing> = fetch(&conn, "t");
    assert_eq!(thing.size().unwrap(), 6);
}
