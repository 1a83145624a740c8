//! `durus dump FILE`: objects as readable trees.

use std::collections::{HashMap, HashSet, VecDeque};
use std::path::PathBuf;
use std::process::ExitCode;

use durus::format::{class_name, Record};
use durus::tools::dump::{self, Dumped, Node};
use durus::{Error, FileStorage, Oid, Result, Storage};
use serde::ser::{SerializeMap, SerializeSeq};
use serde::{Serialize, Serializer};

use crate::output;

/// Print stored objects as readable trees, without their Rust types.
///
/// Records written by durus for Rust are self-describing CBOR: each is
/// shown as its oid, class name, size and reference count, then its state
/// one field a line, with references as `-> oid N (class)`. Records
/// pickled by Python Durus are shown by class name, size and refs only.
///
/// By default every object reachable from the root (oid 0) is dumped in
/// walk order (breadth first); `--all` dumps every stored record in oid
/// order, unreachable ones included; `--oid N` dumps only the objects
/// named. The file is opened read-only. Exits 1 when a record's state does
/// not decode or a reference has no record (the rest is still dumped), 2
/// when an `--oid` has no record.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The database file.
    pub file: PathBuf,
    /// Dump only the object with this oid (repeat for several).
    #[arg(long = "oid", value_name = "N", conflicts_with = "all")]
    pub oids: Vec<u64>,
    /// Dump every stored record, not only those reachable from the root.
    #[arg(long)]
    pub all: bool,
    /// Print a JSON array of {oid, class, encoding, size, refs, state}.
    #[arg(long)]
    pub json: bool,
}

/// One object of the output: described, or what went wrong with it.
struct Entry {
    oid: Oid,
    dumped: Option<Dumped>,
    error: Option<String>,
}

pub fn run(args: &Args) -> Result<ExitCode> {
    let mut storage = FileStorage::options().readonly(true).open(&args.file)?;
    if let Some(d) = storage.tail_damage() {
        output::warn(&format!(
            "{}: damaged tail of {} bytes at offset {} not dumped: {}",
            args.file.display(),
            d.bytes(),
            d.offset,
            d.detail
        ));
    }
    let mut dumper = Dumper {
        storage: &mut storage,
        classes: HashMap::new(),
    };
    let mut json = Vec::new();
    let mut problems = 0usize;
    let mut first = true;
    let mut show = |entry: Entry| -> Result<()> {
        problems += usize::from(entry.error.is_some());
        if args.json {
            json.push(entry);
            return Ok(());
        }
        let mut text = if first { String::new() } else { "\n".into() };
        first = false;
        text.push_str(&render(&entry));
        output::emit(&text)
    };
    if !args.oids.is_empty() {
        // Every oid must exist before anything is printed.
        let mut records = Vec::new();
        for &n in &args.oids {
            records.push(dumper.storage.load(Oid(n))?);
        }
        for bytes in records {
            show(dumper.entry(&bytes)?)?;
        }
    } else if args.all {
        let mut oids = dumper.storage.oids()?;
        oids.sort_unstable();
        oids.dedup();
        for oid in oids {
            let bytes = dumper.storage.load(oid)?;
            show(dumper.entry(&bytes)?)?;
        }
    } else {
        dumper.walk(&args.file, &mut show)?;
    }
    if args.json {
        let entries: Vec<JsonEntry<'_>> = json.iter().map(JsonEntry).collect();
        output::emit_json(&entries)?;
    }
    if problems > 0 {
        output::warn(&format!(
            "{problems} object(s) could not be shown in full (see the `!` lines or \"error\" fields)"
        ));
        return Ok(ExitCode::from(output::EXIT_PROBLEMS));
    }
    Ok(ExitCode::SUCCESS)
}

/// Describes records, looking up the classes of the objects they refer to.
struct Dumper<'s> {
    storage: &'s mut FileStorage,
    /// Class names already known (`None`: no record, or no class).
    classes: HashMap<Oid, Option<String>>,
}

impl Dumper<'_> {
    /// Describes one record, with the classes of its references resolved.
    /// A record whose state does not decode is shown as far as its frame
    /// goes, with the error.
    fn entry(&mut self, bytes: &[u8]) -> Result<Entry> {
        let (mut dumped, error) = match dump::describe(bytes) {
            Ok(d) => (d, None),
            Err(e) => (dump::summarize(bytes)?, Some(e.to_string())),
        };
        self.classes
            .insert(dumped.oid, Some(dumped.class.clone()).filter(|c| c != "?"));
        let storage = &mut *self.storage;
        let classes = &mut self.classes;
        dumped.resolve(&mut |oid| {
            classes
                .entry(oid)
                .or_insert_with(|| class_of(storage, oid))
                .clone()
        });
        Ok(Entry {
            oid: dumped.oid,
            dumped: Some(dumped),
            error,
        })
    }

    /// Every object reachable from the root, breadth first, each once,
    /// following the records' refs. A reference without a record is shown
    /// as an error entry and the walk goes on.
    fn walk(
        &mut self,
        file: &std::path::Path,
        show: &mut dyn FnMut(Entry) -> Result<()>,
    ) -> Result<()> {
        if self.storage.oids()?.is_empty() {
            return Ok(());
        }
        let mut queue = VecDeque::from([Oid::ROOT]);
        let mut seen = HashSet::from([Oid::ROOT]);
        while let Some(oid) = queue.pop_front() {
            let bytes = match self.storage.load(oid) {
                Ok(bytes) => bytes,
                Err(Error::KeyNotFound(_)) if oid == Oid::ROOT => {
                    return Err(Error::InvalidState(format!(
                        "{}: no root object (oid 0); --all dumps every stored record",
                        file.display()
                    )));
                }
                Err(Error::KeyNotFound(_)) => {
                    show(Entry {
                        oid,
                        dumped: None,
                        error: Some(format!("oid {oid} is referenced but has no record")),
                    })?;
                    continue;
                }
                Err(e) => return Err(e),
            };
            for r in Record::decode(&bytes)?.refs() {
                if seen.insert(r) {
                    queue.push_back(r);
                }
            }
            show(self.entry(&bytes)?)?;
        }
        Ok(())
    }
}

/// The class name of the record stored under `oid`, if there is one.
fn class_of(storage: &mut FileStorage, oid: Oid) -> Option<String> {
    let bytes = storage.load(oid).ok()?;
    let record = Record::decode(&bytes).ok()?;
    match class_name::extract(record.data) {
        class_name::ClassName::Unknown => None,
        name => Some(name.display()),
    }
}

/// The human form: the core's rendering, then any error on a `!` line.
fn render(entry: &Entry) -> String {
    let mut text = match &entry.dumped {
        Some(d) => d.to_string(),
        None => format!("oid {}  (no record)\n", entry.oid),
    };
    if let Some(e) = &entry.error {
        text.push_str(&format!("  ! {e}\n"));
    }
    text
}

/// An entry as JSON: `{oid, class, encoding, size, refs, state}`, plus
/// `error` when something went wrong.
struct JsonEntry<'a>(&'a Entry);

impl Serialize for JsonEntry<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        let entry = self.0;
        let mut map = s.serialize_map(None)?;
        map.serialize_entry("oid", &entry.oid.get())?;
        if let Some(d) = &entry.dumped {
            map.serialize_entry("class", &d.class)?;
            map.serialize_entry("encoding", d.encoding.as_str())?;
            map.serialize_entry("size", &d.size)?;
            let refs: Vec<u64> = d.refs.iter().map(|r| r.oid.get()).collect();
            map.serialize_entry("refs", &refs)?;
            map.serialize_entry("state", &d.state.as_ref().map(JsonNode))?;
        }
        if let Some(e) = &entry.error {
            map.serialize_entry("error", e)?;
        }
        map.end()
    }
}

/// A state node as JSON, in stored order: references become
/// `{"$ref": oid, "class": name}`, other tags `{"$tag": n, "value": v}`,
/// bytes hex strings, non-string map keys their inline text form, and
/// floats JSON cannot hold (NaN, infinities) strings.
struct JsonNode<'a>(&'a Node);

impl Serialize for JsonNode<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        match self.0 {
            Node::Null => s.serialize_unit(),
            Node::Bool(b) => s.serialize_bool(*b),
            Node::Integer(i) => match i64::try_from(*i) {
                Ok(i) => s.serialize_i64(i),
                Err(_) => s.serialize_i128(*i),
            },
            Node::Float(x) if x.is_finite() => s.serialize_f64(*x),
            Node::Float(x) => s.serialize_str(&format!("{x:?}")),
            Node::Text(t) => s.serialize_str(t),
            Node::Bytes(b) => s.serialize_str(&dump::hex(b)),
            Node::Array(items) => {
                let mut seq = s.serialize_seq(Some(items.len()))?;
                for item in items {
                    seq.serialize_element(&JsonNode(item))?;
                }
                seq.end()
            }
            Node::Map(entries) => {
                let mut map = s.serialize_map(Some(entries.len()))?;
                for (k, v) in entries {
                    map.serialize_entry(&json_key(k), &JsonNode(v))?;
                }
                map.end()
            }
            Node::Ref(r) => {
                let mut map = s.serialize_map(Some(2))?;
                map.serialize_entry("$ref", &r.oid.get())?;
                map.serialize_entry("class", &r.class)?;
                map.end()
            }
            Node::Tag(tag, inner) => {
                let mut map = s.serialize_map(Some(2))?;
                map.serialize_entry("$tag", tag)?;
                map.serialize_entry("value", &JsonNode(inner))?;
                map.end()
            }
        }
    }
}

/// A JSON object key: text as is, anything else in its inline form
/// (`4`, `h'00ff'`, `-> oid 3`, ...).
fn json_key(node: &Node) -> String {
    match node {
        Node::Text(t) => t.clone(),
        Node::Bytes(b) => dump::hex(b),
        other => other.to_string(),
    }
}
