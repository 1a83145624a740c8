//! `durus pack FILE`: offline garbage collection.

use std::fmt::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;

use durus::storage::{PackPhase, PackProgress};
use durus::{FileStorage, Result, Storage};
use serde::Serialize;

use crate::output;
use crate::progress::Progress;

/// Rewrite the file keeping only what the root reaches (offline pack).
///
/// Takes the write lock (fails if a program or server has the file open;
/// pack a served database through the server instead), copies every record
/// reachable from the root (oid 0) into `FILE.pack`, fsyncs it and renames
/// it over FILE. The original is kept as `FILE.prepack`, as Durus does.
/// Oids of removed objects may be reused by later commits.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The database file.
    pub file: PathBuf,
    /// Print JSON (including every removed oid) instead of text.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Serialize)]
struct Report {
    path: String,
    size_before: u64,
    size_after: u64,
    kept: u64,
    removed_count: usize,
    removed: Vec<u64>,
    prepack: Option<String>,
}

pub fn run(args: &Args) -> Result<ExitCode> {
    let mut storage = FileStorage::options().create(false).open(&args.file)?;
    let mut bar = Bar::new();
    let packed = storage.pack_with_progress(&mut |p| bar.update(p));
    bar.finish();
    let packed = packed?;
    storage.close()?;
    let report = Report {
        path: args.file.display().to_string(),
        size_before: packed.size_before,
        size_after: packed.size_after,
        kept: packed.kept,
        removed_count: packed.removed.len(),
        removed: packed.removed.iter().map(|o| o.get()).collect(),
        prepack: packed.prepack.map(|p| p.display().to_string()),
    };
    if args.json {
        output::emit_json(&report)?;
    } else {
        output::emit(&render(&report))?;
    }
    Ok(ExitCode::SUCCESS)
}

/// Shows in the human output at most this many removed oids.
const LISTED_OIDS: usize = 10;

fn render(r: &Report) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "packed {}", r.path);
    let _ = writeln!(s, "  size before:  {}", output::size(r.size_before));
    let _ = writeln!(s, "  size after:   {}", output::size(r.size_after));
    let _ = writeln!(s, "  kept:         {} records", r.kept);
    let mut removed = format!(
        "  removed:      {} object{}",
        r.removed_count,
        if r.removed_count == 1 { "" } else { "s" }
    );
    if !r.removed.is_empty() {
        let shown: Vec<String> = r
            .removed
            .iter()
            .take(LISTED_OIDS)
            .map(u64::to_string)
            .collect();
        let more = if r.removed.len() > LISTED_OIDS {
            format!(", ... (--json lists all {})", r.removed.len())
        } else {
            String::new()
        };
        let _ = write!(removed, " (oids {}{more})", shown.join(", "));
    }
    let _ = writeln!(s, "{removed}");
    if let Some(prepack) = &r.prepack {
        let _ = writeln!(s, "  original kept as {prepack}");
    }
    s
}

/// `durus pack`'s bar: records copied of those stored.
struct Bar(Progress);

impl Bar {
    fn new() -> Self {
        Bar(Progress::new(
            "{spinner} packing [{bar:40}] {pos}/{len} records {msg} ({elapsed})",
        ))
    }

    fn update(&mut self, p: PackProgress) {
        let bar = self.0.bar();
        // `total` counts garbage too: once copying ends, what was copied is all.
        if p.phase == PackPhase::Finishing {
            bar.set_length(p.done);
            bar.set_message("writing the offset map and syncing");
        } else {
            bar.set_length(p.total.max(p.done));
        }
        bar.set_position(p.done);
    }

    fn finish(&self) {
        self.0.finish();
    }
}
