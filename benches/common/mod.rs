//! What the benchmark executables share: the command line of driver and
//! workers, and process measurements.

use std::path::{Path, PathBuf};

pub type AnyResult<T> = std::result::Result<T, Box<dyn std::error::Error>>;

/// Command line: the driver's flags and the worker's.
#[derive(Debug, Default)]
pub struct Args {
    pub quick: bool,
    pub json: bool,
    pub tmp: Option<PathBuf>,
    pub only: Option<Vec<String>>,
    pub worker: Option<String>,
    pub dir: Option<PathBuf>,
    pub n: usize,
    pub reps: usize,
}

impl Args {
    pub fn parse(mut it: impl Iterator<Item = String>) -> AnyResult<Args> {
        let mut args = Args::default();
        while let Some(arg) = it.next() {
            let mut value = |flag: &str| it.next().ok_or(format!("{flag} needs a value"));
            match arg.as_str() {
                "--bench" => {} // added by `cargo bench`
                "--quick" => args.quick = true,
                "--json" => args.json = true,
                "--tmp" => args.tmp = Some(value("--tmp")?.into()),
                "--only" => {
                    args.only = Some(value("--only")?.split(',').map(str::to_owned).collect())
                }
                "--worker" => args.worker = Some(value("--worker")?),
                "--dir" => args.dir = Some(value("--dir")?.into()),
                "--n" => args.n = value("--n")?.parse()?,
                "--reps" => args.reps = value("--reps")?.parse()?,
                other => return Err(format!("unknown argument {other:?}").into()),
            }
        }
        Ok(args)
    }
}

/// Peak resident set size of this process in KiB (VmHWM).
pub fn peak_rss_kb() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

pub fn file_len(path: &Path) -> u64 {
    std::fs::metadata(path).map(|m| m.len()).unwrap_or(0)
}

pub fn remove_db(path: &Path) {
    for suffix in ["", ".pack", ".prepack"] {
        let mut p = path.as_os_str().to_owned();
        p.push(suffix);
        let _ = std::fs::remove_file(PathBuf::from(p));
    }
}
