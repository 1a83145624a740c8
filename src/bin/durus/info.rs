//! `durus info FILE`: what a database file holds, read without writing.

use std::fmt::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;

use durus::{FileStorage, Result};
use serde::Serialize;

use crate::output;

/// Show a file's format, size, object count, transactions and oid range.
///
/// The file is opened read-only and without the write lock, so `info` works
/// while a server or program has the database open. A damaged tail (which
/// may also be a commit in progress) is reported, not repaired.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The database file.
    pub file: PathBuf,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

/// What `info` reports.
#[derive(Debug, Serialize)]
struct Info {
    path: String,
    format: &'static str,
    file_size: u64,
    /// Distinct oids with a record, unreachable ones included.
    objects: u64,
    /// Records in the base transaction written by the last pack.
    base_records: u64,
    /// Transactions appended since the last pack.
    transactions: u64,
    oid_range: Option<OidRange>,
    damaged_tail: Option<DamagedTail>,
}

#[derive(Debug, Serialize)]
struct OidRange {
    min: u64,
    max: u64,
}

/// A damaged tail left in place by a read-only open.
#[derive(Debug, Serialize)]
struct DamagedTail {
    offset: u64,
    bytes: u64,
    detail: String,
}

impl DamagedTail {
    fn of(storage: &FileStorage) -> Option<DamagedTail> {
        storage.tail_damage().map(|d| DamagedTail {
            offset: d.offset,
            bytes: d.bytes(),
            detail: d.detail.clone(),
        })
    }
}

pub fn run(args: &Args) -> Result<ExitCode> {
    let storage = FileStorage::options().readonly(true).open(&args.file)?;
    let stats = storage.stats()?;
    let damaged_tail = DamagedTail::of(&storage);
    let info = Info {
        path: args.file.display().to_string(),
        format: "SHELF-1",
        // A read-only open stops at the damage; the file goes on past it.
        file_size: storage
            .tail_damage()
            .map_or(stats.file_size, |d| d.file_len),
        objects: stats.records,
        base_records: stats.base_records,
        transactions: stats.transactions,
        oid_range: stats.oid_range.map(|(lo, hi)| OidRange {
            min: lo.get(),
            max: hi.get(),
        }),
        damaged_tail,
    };
    if args.json {
        output::emit_json(&info)?;
    } else {
        output::emit(&render(&info))?;
    }
    Ok(ExitCode::SUCCESS)
}

fn render(info: &Info) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "file:          {}", info.path);
    let _ = writeln!(s, "format:        {}", info.format);
    let _ = writeln!(s, "size:          {}", output::size(info.file_size));
    let _ = writeln!(
        s,
        "objects:       {} (stored records, unreachable ones included until a pack)",
        info.objects
    );
    let _ = writeln!(s, "packed base:   {} records", info.base_records);
    let _ = writeln!(
        s,
        "transactions:  {} since the last pack",
        info.transactions
    );
    match &info.oid_range {
        Some(r) => {
            let _ = writeln!(s, "oid range:     {} ..= {}", r.min, r.max);
        }
        None => {
            let _ = writeln!(s, "oid range:     none (no records)");
        }
    }
    match &info.damaged_tail {
        Some(d) => {
            let _ = writeln!(
                s,
                "damaged tail:  {} bytes at offset {}: {} (ignored here; `durus repair` truncates it)",
                d.bytes, d.offset, d.detail
            );
        }
        None => {
            let _ = writeln!(s, "tail:          intact");
        }
    }
    s
}
