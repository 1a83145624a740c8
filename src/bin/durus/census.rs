//! `durus census FILE`: instance counts per class name.

use std::fmt::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;

use durus::tools::census::census;
use durus::{FileStorage, Result};

use crate::output;

/// Count the stored instances of each class, most numerous first.
///
/// Reads every record's class name: the CBOR header of records written by
/// durus for Rust, the pickled class of records written by Python Durus
/// (shown as Durus shows it, e.g. `PersistentDict`), `?` when neither is
/// recognised. Records not yet removed by a pack are counted too. The
/// file is opened read-only.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The database file.
    pub file: PathBuf,
    /// Print a JSON object mapping class name to count.
    #[arg(long)]
    pub json: bool,
}

pub fn run(args: &Args) -> Result<ExitCode> {
    let mut storage = FileStorage::options().readonly(true).open(&args.file)?;
    if let Some(d) = storage.tail_damage() {
        output::warn(&format!(
            "{}: damaged tail of {} bytes at offset {} not counted: {}",
            args.file.display(),
            d.bytes(),
            d.offset,
            d.detail
        ));
    }
    let counts = census(&mut storage)?;
    if args.json {
        output::emit_json(&counts)?;
        return Ok(ExitCode::SUCCESS);
    }
    let mut rows: Vec<(&String, u64)> = counts.iter().map(|(k, &v)| (k, v)).collect();
    rows.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(b.0)));
    let total: u64 = rows.iter().map(|r| r.1).sum();
    let width = rows
        .iter()
        .map(|r| r.1.to_string().len())
        .chain([total.to_string().len()])
        .max()
        .unwrap_or(1);
    let mut s = String::new();
    for (name, count) in &rows {
        let _ = writeln!(s, "{count:>width$}  {name}");
    }
    let _ = writeln!(s, "{}", "-".repeat(width + 7));
    let _ = writeln!(s, "{total:>width$}  total ({} classes)", rows.len());
    output::emit(&s)?;
    Ok(ExitCode::SUCCESS)
}
