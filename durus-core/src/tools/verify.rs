//! Structural verification of a SHELF-1 file (`durus verify`).

use std::collections::HashSet;
use std::path::Path;

use crate::error::{Error, Result};
use crate::format::{Oid, Record};
use crate::storage::{FileStorage, Storage};

/// One thing wrong with a file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// The oid concerned, if any.
    pub oid: Option<Oid>,
    /// The file offset concerned, if known.
    pub offset: Option<u64>,
    /// What is wrong.
    pub detail: String,
}

/// What `verify` found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VerifyReport {
    /// File size in bytes.
    pub file_size: u64,
    /// Records that loaded and decoded.
    pub records: u64,
    /// References followed.
    pub refs: u64,
    /// Everything wrong, in file order as far as it is known.
    pub problems: Vec<Problem>,
}

impl VerifyReport {
    /// True when nothing is wrong.
    pub fn is_ok(&self) -> bool {
        self.problems.is_empty()
    }
}

/// Checks a file without writing to it: the layout opens, the tail is
/// intact, every record loads and decodes, every ref points at a record.
/// A file that does not open at all is an `Err`; everything else is in the
/// report.
pub fn verify(path: &Path) -> Result<VerifyReport> {
    let mut storage = FileStorage::options().readonly(true).open(path)?;
    let mut report = VerifyReport {
        file_size: std::fs::metadata(path)
            .map_err(|e| Error::io(format!("cannot stat {}", path.display()), e))?
            .len(),
        ..Default::default()
    };
    if let Some(damage) = storage.tail_damage() {
        report.problems.push(Problem {
            oid: None,
            offset: Some(damage.offset),
            detail: format!("damaged tail ({} bytes): {}", damage.bytes(), damage.detail),
        });
    }
    // An offset map that cannot be read fails the verify, as it failed the
    // open when the open read it whole.
    let oids = storage.oids()?;
    let present: HashSet<Oid> = oids.iter().copied().collect();
    let mut refs = Vec::new();
    for oid in oids {
        match storage.load(oid) {
            Ok(bytes) => {
                report.records += 1;
                let record = Record::decode(&bytes)?;
                refs.extend(record.refs().map(|r| (oid, r)));
            }
            Err(e) => report.problems.push(problem_of(oid, e)),
        }
    }
    report.refs = refs.len() as u64;
    for (from, to) in refs {
        if !present.contains(&to) {
            report.problems.push(Problem {
                oid: Some(from),
                offset: None,
                detail: format!("oid {from} refers to oid {to}, which has no record"),
            });
        }
    }
    if !present.is_empty() && !present.contains(&Oid::ROOT) {
        report.problems.push(Problem {
            oid: Some(Oid::ROOT),
            offset: None,
            detail: "the file holds records but no root (oid 0)".into(),
        });
    }
    Ok(report)
}

fn problem_of(oid: Oid, e: Error) -> Problem {
    let (offset, detail) = match e {
        Error::Corrupt { offset, detail, .. } => (Some(offset), detail),
        other => (None, other.to_string()),
    };
    Problem {
        oid: Some(oid),
        offset,
        detail: format!("oid {oid} does not load: {detail}"),
    }
}
