//! `durus verify FILE`: a structural check that never writes.

use std::fmt::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;

use durus::tools::verify::{verify, Problem, VerifyReport};
use durus::{Error, Result};
use serde::Serialize;

use crate::output;

/// Check a file: layout, tail, every record and every reference.
///
/// Opens the file read-only. Checks that the header and offset map are
/// sound, that the tail holds only complete transactions, that every record
/// loads and decodes, that every reference points at a stored record and
/// that the root (oid 0) exists. Each problem is printed with its oid or
/// file offset. Exit status: 0 when the file is clean, 1 when anything is
/// wrong (including a file that is not a Durus file at all), 2 when the
/// file cannot be read.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The database file.
    pub file: PathBuf,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Serialize)]
struct Report {
    path: String,
    ok: bool,
    /// False when the file's layout is too damaged to open at all.
    opened: bool,
    file_size: Option<u64>,
    records: u64,
    refs: u64,
    problems: Vec<JsonProblem>,
}

#[derive(Debug, Serialize)]
struct JsonProblem {
    oid: Option<u64>,
    offset: Option<u64>,
    detail: String,
}

impl From<&Problem> for JsonProblem {
    fn from(p: &Problem) -> Self {
        JsonProblem {
            oid: p.oid.map(|o| o.get()),
            offset: p.offset,
            detail: p.detail.clone(),
        }
    }
}

pub fn run(args: &Args) -> Result<ExitCode> {
    let report = match verify(&args.file) {
        Ok(report) => from_report(args, &report),
        Err(e) => unopenable(args, e)?,
    };
    if args.json {
        output::emit_json(&report)?;
    } else {
        output::emit(&render(&report))?;
    }
    Ok(if report.ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(output::EXIT_PROBLEMS)
    })
}

fn from_report(args: &Args, report: &VerifyReport) -> Report {
    Report {
        path: args.file.display().to_string(),
        ok: report.is_ok(),
        opened: true,
        file_size: Some(report.file_size),
        records: report.records,
        refs: report.refs,
        problems: report.problems.iter().map(JsonProblem::from).collect(),
    }
}

/// A file whose contents are wrong is a verification failure (exit 1);
/// one that cannot be read at all (missing, permissions) is an error.
fn unopenable(args: &Args, e: Error) -> Result<Report> {
    let (oid, offset, detail) = match e {
        Error::NotAShelf { detail, .. } => {
            (None, None, format!("not a Durus SHELF-1 file: {detail}"))
        }
        Error::Corrupt { offset, detail, .. } => (None, Some(offset), detail),
        Error::TornTail {
            offset,
            file_len,
            detail,
            ..
        } => (
            None,
            Some(offset),
            format!("damaged tail ({} bytes): {detail}", file_len - offset),
        ),
        Error::MalformedRecord { oid, detail } => (oid.map(|o| o.get()), None, detail),
        other => return Err(other),
    };
    Ok(Report {
        path: args.file.display().to_string(),
        ok: false,
        opened: false,
        file_size: std::fs::metadata(&args.file).ok().map(|m| m.len()),
        records: 0,
        refs: 0,
        problems: vec![JsonProblem {
            oid,
            offset,
            detail,
        }],
    })
}

fn render(report: &Report) -> String {
    let mut s = String::new();
    let size = report
        .file_size
        .map_or_else(|| "size unknown".to_string(), output::size);
    if !report.opened {
        let _ = writeln!(
            s,
            "{}: FAILED: the file cannot be opened ({size})",
            report.path
        );
    } else if report.ok {
        let _ = writeln!(
            s,
            "{}: OK: {} records, {} references, {size}",
            report.path, report.records, report.refs
        );
    } else {
        let n = report.problems.len();
        let _ = writeln!(
            s,
            "{}: FAILED: {n} problem{} ({} records, {} references checked, {size})",
            report.path,
            if n == 1 { "" } else { "s" },
            report.records,
            report.refs
        );
    }
    for p in &report.problems {
        let mut place = Vec::new();
        if let Some(oid) = p.oid {
            place.push(format!("oid {oid}"));
        }
        if let Some(offset) = p.offset {
            place.push(format!("offset {offset}"));
        }
        if place.is_empty() {
            let _ = writeln!(s, "  - {}", p.detail);
        } else {
            let _ = writeln!(s, "  - [{}] {}", place.join(", "), p.detail);
        }
    }
    s
}
