//! The Python Durus 4.3 venv the interop tests run (`PEER_VENV`, default
//! `target/durus-peer-venv`), checked once per test binary.

use std::path::{Path, PathBuf};
use std::process::Command;

/// How to get one, for error messages.
pub const HOW: &str = "create it with `NO_ZODB=1 PEER_VENV=$PWD/target/durus-peer-venv \
                       ../shared/interop/setup.sh` from the project root, or set PEER_VENV \
                       to a venv where Python Durus 4.3 is installed";

/// The venv directory, once its python imports Durus 4.3; otherwise a
/// message saying what is wrong and how to mend it.
pub fn durus43_venv() -> Result<PathBuf, String> {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    let venv = std::env::var_os("PEER_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| manifest.join("target/durus-peer-venv"));
    let python = venv.join("bin/python");
    if !python.exists() {
        return Err(format!(
            "interop tests need Python Durus 4.3, but {} does not exist; {HOW}",
            python.display()
        ));
    }
    let out = Command::new(&python)
        .args(["-B", "-c", "import durus; print(durus.__version__)"])
        .output()
        .map_err(|e| format!("cannot run {}: {e}; {HOW}", python.display()))?;
    if !out.status.success() {
        return Err(format!(
            "`import durus` fails with {}: {}; {HOW}",
            python.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    let version = String::from_utf8_lossy(&out.stdout).trim().to_string();
    if version != "4.3" {
        return Err(format!(
            "{} has durus {version}, these tests pin Durus 4.3; {HOW}",
            python.display()
        ));
    }
    Ok(venv)
}
