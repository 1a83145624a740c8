//! Running the `durus` binary from the integration tests.
#![allow(dead_code)]

use std::process::Command;

use serde_json::Value;

/// What a run of the binary printed and how it exited.
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("stdout is not JSON ({e}):\n{}", self.stdout))
    }

    /// The header lines of `durus dump` (`oid N  class  (...)`), in order.
    pub fn headers(&self) -> Vec<&str> {
        self.stdout
            .lines()
            .filter(|l| l.starts_with("oid "))
            .collect()
    }
}

/// Runs `durus ARGS...`.
pub fn durus(args: &[&str]) -> Run {
    let out = Command::new(env!("CARGO_BIN_EXE_durus"))
        .args(args)
        .output()
        .expect("the durus binary runs");
    Run {
        code: out.status.code().expect("exited, not killed by a signal"),
        stdout: String::from_utf8(out.stdout).expect("UTF-8 stdout"),
        stderr: String::from_utf8(out.stderr).expect("UTF-8 stderr"),
    }
}
