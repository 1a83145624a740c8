//! What every subcommand shares: writing to stdout without panicking on a
//! closed pipe, JSON output, byte sizes, and the checks before a
//! read-write open.

use std::io::{self, Write};

use durus::{Error, Result};
use serde::Serialize;

/// Exit status for a usage error or a file that cannot be opened.
pub const EXIT_ERROR: u8 = 2;

/// Exit status of `verify` when it finds something wrong.
pub const EXIT_PROBLEMS: u8 = 1;

/// Writes `text` to stdout. A reader that went away (`durus census | head`)
/// is not an error.
pub fn emit(text: &str) -> Result<()> {
    let mut out = io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Err(e) if e.kind() != io::ErrorKind::BrokenPipe => {
            Err(Error::io("cannot write to standard output", e))
        }
        _ => Ok(()),
    }
}

/// Writes `value` as pretty JSON and a newline to stdout.
pub fn emit_json<T: Serialize>(value: &T) -> Result<()> {
    let mut text = serde_json::to_string_pretty(value)
        .map_err(|e| Error::io("cannot encode the JSON output", e.into()))?;
    text.push('\n');
    emit(&text)
}

/// A warning on stderr, for things that do not change the exit status.
pub fn warn(message: &str) {
    eprintln!("durus: warning: {message}");
}

/// `1234567 bytes (1.2 MiB)`; small sizes are just `40 bytes`.
pub fn size(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["KiB", "MiB", "GiB", "TiB", "PiB"];
    if bytes < 1024 {
        return format!("{bytes} bytes");
    }
    let mut value = bytes as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    format!("{bytes} bytes ({value:.1} {})", UNITS[unit])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_are_exact_bytes_plus_a_rounded_unit() {
        assert_eq!(size(40), "40 bytes");
        assert_eq!(size(1536), "1536 bytes (1.5 KiB)");
        assert_eq!(size(3 << 30), "3221225472 bytes (3.0 GiB)");
    }
}
