//! What the benchmark executables share: the command line of driver and
//! workers, and process measurements.

use std::path::{Path, PathBuf};

#[allow(dead_code)]
pub mod items;

pub type AnyResult<T> = std::result::Result<T, Box<dyn std::error::Error>>;

/// Command line: the driver's flags and the worker's.
#[derive(Debug, Default)]
pub struct Args {
    pub quick: bool,
    /// `--json PATH`: where the driver writes one JSON line per result.
    pub json: Option<PathBuf>,
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
                "--json" => args.json = Some(value("--json")?.into()),
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

// ------------------------------------------- added for benches/server.rs
// (`allow(dead_code)`: not every bench executable uses every helper)

/// Where a driver puts its temporary files: `--tmp`, else `$BENCH_TMP`,
/// else `target/bench-tmp` under the project root.
#[allow(dead_code)]
pub fn bench_tmp_base(tmp: Option<&Path>) -> PathBuf {
    tmp.map(Path::to_path_buf).unwrap_or_else(|| {
        std::env::var_os("BENCH_TMP")
            .map(PathBuf::from)
            .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target/bench-tmp"))
    })
}

/// The median of `xs` (the mean of the middle two for an even count).
#[allow(dead_code)]
pub fn median(xs: &[f64]) -> f64 {
    let mut sorted = xs.to_vec();
    sorted.sort_by(f64::total_cmp);
    let mid = sorted.len() / 2;
    if sorted.is_empty() {
        f64::NAN
    } else if sorted.len() % 2 == 1 {
        sorted[mid]
    } else {
        (sorted[mid - 1] + sorted[mid]) / 2.0
    }
}

/// A result line in the schema of `benches/objects.rs`: raw seconds per
/// repetition and the rate `items / seconds` in `unit` (median, min, max).
#[allow(dead_code)]
pub fn rate_row(
    workload: &str,
    items: u64,
    unit: &str,
    secs: &[f64],
    rss_kb: u64,
    extra: serde_json::Value,
) -> serde_json::Value {
    let (fastest, slowest) = extremes(secs);
    let rate = |s: f64| items as f64 / s;
    let stats = [rate(median(secs)), rate(slowest), rate(fastest)];
    row(workload, items, unit, secs, stats, rss_kb, extra)
}

/// The fastest and the slowest of `secs`.
fn extremes(secs: &[f64]) -> (f64, f64) {
    let fastest = secs.iter().copied().fold(f64::NAN, f64::min);
    let slowest = secs.iter().copied().fold(f64::NAN, f64::max);
    (fastest, slowest)
}

/// The row schema every bench writes: `[median, min, max]` in `unit`.
fn row(
    workload: &str,
    items: u64,
    unit: &str,
    secs: &[f64],
    [median, min, max]: [f64; 3],
    rss_kb: u64,
    extra: serde_json::Value,
) -> serde_json::Value {
    serde_json::json!({
        "side": "rust",
        "workload": workload,
        "items": items,
        "unit": unit,
        "reps": secs.len(),
        "secs": secs,
        "median": median,
        "min": min,
        "max": max,
        "peak_rss_kb": rss_kb,
        "extra": extra,
    })
}

/// Removes `--flag VALUE` from `args` and returns the value, if present
/// (for worker flags that [`Args`] does not know).
#[allow(dead_code)]
pub fn take_flag(args: &mut Vec<String>, flag: &str) -> AnyResult<Option<String>> {
    match args.iter().position(|a| a == flag) {
        None => Ok(None),
        Some(i) if i + 1 < args.len() => {
            let value = args.remove(i + 1);
            args.remove(i);
            Ok(Some(value))
        }
        Some(_) => Err(format!("{flag} needs a value").into()),
    }
}

/// Peak resident set size of another live process in KiB (its VmHWM).
#[allow(dead_code)]
pub fn proc_peak_rss_kb(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

/// CPU time (user + system, every thread) a process has used so far, in
/// seconds: `pid` is a number or `self`. From /proc/PID/stat, in clock
/// ticks of 10 ms (USER_HZ is 100 on Linux).
#[allow(dead_code)]
pub fn cpu_secs(pid: &str) -> AnyResult<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the command name, which may hold spaces: state is the
    // 3rd field of the line, utime the 14th and stime the 15th.
    let rest = stat
        .rsplit_once(')')
        .ok_or("no command name in /proc stat")?
        .1;
    let field = |i: usize| -> AnyResult<f64> {
        let v = rest.split_whitespace().nth(i).ok_or("short /proc stat")?;
        Ok(v.parse::<f64>()? / 100.0)
    };
    Ok(field(11)? + field(12)?)
}

/// Runs this executable again as `--worker NAME ARGS...` and parses the
/// JSON lines it prints (lines starting with `{`).
#[allow(dead_code)]
pub fn run_worker(name: &str, args: &[String]) -> AnyResult<Vec<serde_json::Value>> {
    let out = std::process::Command::new(std::env::current_exe()?)
        .args(["--worker", name])
        .args(args)
        .output()?;
    if !out.status.success() {
        return Err(format!(
            "worker {name} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        )
        .into());
    }
    let mut rows = Vec::new();
    for line in String::from_utf8(out.stdout)?.lines() {
        if line.starts_with('{') {
            rows.push(serde_json::from_str(line)?);
        }
    }
    Ok(rows)
}

// ------------------------------------------- added for benches/btree.rs

/// A result line of plain times (unit `ms`): raw seconds per repetition,
/// and the median, fastest and slowest repetition in milliseconds. The
/// schema of [`rate_row`], so that reports read both alike.
#[allow(dead_code)]
pub fn time_row(
    workload: &str,
    items: u64,
    secs: &[f64],
    rss_kb: u64,
    extra: serde_json::Value,
) -> serde_json::Value {
    let (fastest, slowest) = extremes(secs);
    let stats = [median(secs) * 1e3, fastest * 1e3, slowest * 1e3];
    row(workload, items, "ms", secs, stats, rss_kb, extra)
}

/// One human-readable line for a result row (rates without decimals,
/// milliseconds with three).
#[allow(dead_code)]
pub fn summary(row: &serde_json::Value) -> String {
    let f = |k: &str| row[k].as_f64().unwrap_or(f64::NAN);
    let unit = row["unit"].as_str().unwrap_or("");
    let digits = if unit == "ms" { 3 } else { 0 };
    format!(
        "{}: median {:.digits$} {}, min {:.digits$}, max {:.digits$}, peak RSS {:.1} MiB",
        row["workload"].as_str().unwrap_or("?"),
        f("median"),
        unit,
        f("min"),
        f("max"),
        f("peak_rss_kb") / 1024.0
    )
}

/// One row per workload from the rows of several worker processes (one
/// process per repetition, so that each cold run is cold): all their
/// timings together, the largest peak RSS, `extra` of the first process
/// with `processes` added. Rows in `ms` stay times, the others rates.
#[allow(dead_code)]
pub fn merge_runs(runs: &[Vec<serde_json::Value>]) -> AnyResult<Vec<serde_json::Value>> {
    let first = runs.first().ok_or("no runs to merge")?;
    let mut merged = Vec::new();
    for row in first {
        let workload = row["workload"].as_str().ok_or("row without workload")?;
        let same: Vec<&serde_json::Value> = runs
            .iter()
            .flatten()
            .filter(|r| r["workload"] == row["workload"])
            .collect();
        let secs: Vec<f64> = same
            .iter()
            .flat_map(|r| r["secs"].as_array().into_iter().flatten())
            .filter_map(serde_json::Value::as_f64)
            .collect();
        let rss = same
            .iter()
            .filter_map(|r| r["peak_rss_kb"].as_u64())
            .max()
            .unwrap_or(0);
        let mut extra = row["extra"].clone();
        extra["processes"] = serde_json::json!(same.len());
        let items = row["items"].as_u64().ok_or("row without items")?;
        let unit = row["unit"].as_str().ok_or("row without unit")?;
        merged.push(if unit == "ms" {
            time_row(workload, items, &secs, rss, extra)
        } else {
            rate_row(workload, items, unit, &secs, rss, extra)
        });
    }
    Ok(merged)
}

/// Where a driver's result rows go: a summary line on stderr as each
/// arrives, a JSON line to `--json PATH`, and at the end a table on
/// stdout.
pub struct Sink {
    json: Option<(PathBuf, std::io::BufWriter<std::fs::File>)>,
    rows: Vec<(serde_json::Value, String)>,
}

impl Sink {
    pub fn new(args: &Args) -> AnyResult<Sink> {
        let json = match &args.json {
            Some(path) => {
                let file = std::fs::File::create(path)
                    .map_err(|e| format!("cannot create {}: {e}", path.display()))?;
                Some((path.clone(), std::io::BufWriter::new(file)))
            }
            None => None,
        };
        Ok(Sink {
            json,
            rows: Vec::new(),
        })
    }

    /// Reports `row`, described by `line` on stderr (and in the table).
    pub fn emit(&mut self, row: serde_json::Value, line: String) -> AnyResult<()> {
        use std::io::Write;
        eprintln!("  {line}");
        if let Some((path, out)) = &mut self.json {
            writeln!(out, "{row}")
                .and_then(|()| out.flush())
                .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
        }
        self.rows.push((row, line));
        Ok(())
    }

    /// Prints the table of every row: median and spread (min–max over the
    /// repetitions), repetitions, peak RSS.
    pub fn finish(self) {
        let f = |row: &serde_json::Value, k: &str| row[k].as_f64().unwrap_or(f64::NAN);
        println!("| workload | n | unit | median | min–max | reps | peak RSS |");
        println!("| --- | ---: | --- | ---: | ---: | ---: | ---: |");
        for (row, _) in &self.rows {
            let unit = row["unit"].as_str().unwrap_or("");
            let digits = if unit == "ms" { 3 } else { 0 };
            println!(
                "| {} | {} | {unit} | {:.digits$} | {:.digits$}–{:.digits$} | {} | {:.1} MiB |",
                row["workload"].as_str().unwrap_or("?"),
                row["items"],
                f(row, "median"),
                f(row, "min"),
                f(row, "max"),
                row["reps"],
                f(row, "peak_rss_kb") / 1024.0,
            );
        }
    }
}
