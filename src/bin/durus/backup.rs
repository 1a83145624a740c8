//! `durus backup SRC DEST`: an incremental copy of a live database.

use std::path::PathBuf;
use std::process::ExitCode;

use durus::tools::backup::{backup, BackupKind, BackupProgress, BackupReport};
use durus::Result;
use serde::Serialize;

use crate::output;
use crate::progress::Progress;

/// Back up a database, even while it is served: copies only what is new.
///
/// The first time (DEST missing) SRC is copied whole into a temporary file
/// beside DEST, fsync'd and renamed over DEST. Later runs check that DEST
/// still holds SRC's first bytes (the file head and samples of the data)
/// and append only the bytes SRC has gained since, like `rsync --append`;
/// after a pack of SRC they copy it whole again. SRC is never locked or
/// written, so this works on a file that `durus serve` or a program has
/// open. If the copy catches a commit being written, DEST ends with a torn
/// transaction: a read-only open sees every complete transaction before
/// it, the next backup appends the rest, and `durus repair DEST` truncates
/// it (later backups still append to a repaired DEST).
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The database file to back up.
    pub src: PathBuf,
    /// The backup file (created, extended, or replaced after a pack).
    pub dest: PathBuf,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Serialize)]
struct Report {
    src: String,
    dest: String,
    /// "new", "packed" or "incremental".
    kind: &'static str,
    /// Why a full copy was made (for "packed").
    reason: Option<String>,
    /// Where an incremental copy started.
    from: Option<u64>,
    /// Bytes of an earlier torn tail of DEST that were copied again.
    replaced_tail: u64,
    bytes_copied: u64,
    dest_len: u64,
    /// End of the last complete transaction in DEST.
    valid_len: u64,
    ends_on_boundary: bool,
    torn_tail_bytes: u64,
    torn_tail_detail: Option<String>,
}

impl From<&BackupReport> for Report {
    fn from(r: &BackupReport) -> Self {
        let (kind, reason, from, replaced_tail) = match &r.kind {
            BackupKind::New => ("new", None, None, 0),
            BackupKind::Packed { evidence } => ("packed", Some(evidence.clone()), None, 0),
            BackupKind::Incremental {
                from,
                replaced_tail,
            } => ("incremental", None, Some(*from), *replaced_tail),
        };
        Report {
            src: r.src.display().to_string(),
            dest: r.dest.display().to_string(),
            kind,
            reason,
            from,
            replaced_tail,
            bytes_copied: r.bytes_copied,
            dest_len: r.dest_len,
            valid_len: r.valid_len,
            ends_on_boundary: r.ends_on_boundary(),
            torn_tail_bytes: r.torn_bytes(),
            torn_tail_detail: r.torn_tail.as_ref().map(|t| t.detail.clone()),
        }
    }
}

pub fn run(args: &Args) -> Result<ExitCode> {
    let mut bar = Bar::new();
    let result = backup(&args.src, &args.dest, &mut |p| bar.update(p));
    bar.finish();
    let report = result?;
    if args.json {
        output::emit_json(&Report::from(&report))?;
    } else {
        output::emit(&render(&report))?;
    }
    Ok(ExitCode::SUCCESS)
}

/// Two lines: what was copied and why, then what DEST holds.
fn render(r: &BackupReport) -> String {
    let how = match &r.kind {
        BackupKind::New => "full copy: new backup".to_string(),
        BackupKind::Packed { evidence } => {
            format!("full copy: the source was packed since ({evidence})")
        }
        BackupKind::Incremental {
            from,
            replaced_tail: 0,
        } => format!("incremental: appended from offset {from}"),
        BackupKind::Incremental {
            from,
            replaced_tail,
        } => format!(
            "incremental: appended from offset {from}, replacing a torn tail of {replaced_tail} bytes the source has rewritten"
        ),
    };
    let state = match &r.torn_tail {
        None => format!(
            "{}: {}, ends on a transaction boundary",
            r.dest.display(),
            output::size(r.dest_len)
        ),
        Some(t) => format!(
            "{}: {}; complete transactions end at {}, then {} bytes of a transaction being written ({}); \
             the next backup completes it, `durus repair` truncates it",
            r.dest.display(),
            output::size(r.dest_len),
            r.valid_len,
            r.torn_bytes(),
            t.detail
        ),
    };
    format!(
        "backed up {} to {}: {how}, {} copied\n  {state}\n",
        r.src.display(),
        r.dest.display(),
        output::size(r.bytes_copied)
    )
}

/// `durus backup`'s bar: bytes copied of those to copy.
struct Bar(Progress);

impl Bar {
    fn new() -> Self {
        Bar(Progress::new(
            "{spinner} copying [{bar:40}] {bytes}/{total_bytes} {bytes_per_sec} ({elapsed})",
        ))
    }

    fn update(&mut self, p: BackupProgress) {
        let bar = self.0.bar();
        bar.set_length(p.total);
        bar.set_position(p.done);
    }

    fn finish(&self) {
        self.0.finish();
    }
}
