//! `durus repair FILE`: truncate a torn or garbled tail.

use std::fmt::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;

use durus::storage::TailDamage;
use durus::{FileStorage, Result};
use serde::Serialize;

use crate::output;

/// Truncate a damaged tail, keeping every complete transaction before it.
///
/// A crash during a commit can leave a partial transaction at the end of
/// the file; such a file does not open read-write until the tail is cut
/// off. `repair` takes the write lock (it fails if a program has the file
/// open), truncates the file at the start of the first incomplete
/// transaction and fsyncs it. Damage before the tail (a corrupt offset map)
/// cannot be repaired and is reported as an error.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The database file.
    pub file: PathBuf,
    /// Report what would be truncated without changing the file
    /// (opens it read-only).
    #[arg(long)]
    pub dry_run: bool,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Serialize)]
struct Report {
    path: String,
    dry_run: bool,
    /// Whether the file had a damaged tail.
    damaged: bool,
    /// Where the damaged tail starts (the file's length after repair).
    offset: Option<u64>,
    /// Bytes removed (or, with --dry-run, that would be removed).
    truncated_bytes: u64,
    size_before: u64,
    size_after: u64,
    detail: Option<String>,
}

pub fn run(args: &Args) -> Result<ExitCode> {
    let (damage, size) = if args.dry_run {
        let storage = FileStorage::options().readonly(true).open(&args.file)?;
        (storage.tail_damage().cloned(), storage.file_size())
    } else {
        let mut storage = FileStorage::options()
            .repair(true)
            .create(false)
            .open(&args.file)?;
        let found = (storage.repaired().cloned(), storage.file_size());
        durus::Storage::close(&mut storage)?;
        found
    };
    let report = report(args, damage.as_ref(), size);
    if args.json {
        output::emit_json(&report)?;
    } else {
        output::emit(&render(&report))?;
    }
    Ok(ExitCode::SUCCESS)
}

/// `size` is where the usable file ends: the damage offset when damaged.
fn report(args: &Args, damage: Option<&TailDamage>, size: u64) -> Report {
    let size_before = damage.map_or(size, |d| d.file_len);
    Report {
        path: args.file.display().to_string(),
        dry_run: args.dry_run,
        damaged: damage.is_some(),
        offset: damage.map(|d| d.offset),
        truncated_bytes: damage.map_or(0, TailDamage::bytes),
        size_before,
        size_after: if args.dry_run { size_before } else { size },
        detail: damage.map(|d| d.detail.clone()),
    }
}

fn render(r: &Report) -> String {
    let mut s = String::new();
    match (&r.offset, &r.detail) {
        (Some(offset), Some(detail)) if r.dry_run => {
            let _ = writeln!(
                s,
                "{}: damaged tail: would truncate {} bytes from offset {offset} \
                 (file {} -> {offset} bytes); nothing changed (--dry-run)",
                r.path, r.truncated_bytes, r.size_before
            );
            let _ = writeln!(s, "  cause: {detail}");
        }
        (Some(offset), Some(detail)) => {
            let _ = writeln!(
                s,
                "{}: repaired: truncated {} bytes from offset {offset} (file {} -> {} bytes)",
                r.path, r.truncated_bytes, r.size_before, r.size_after
            );
            let _ = writeln!(s, "  cause: {detail}");
        }
        _ => {
            let _ = writeln!(
                s,
                "{}: tail intact, nothing to truncate ({})",
                r.path,
                output::size(r.size_before)
            );
        }
    }
    s
}
