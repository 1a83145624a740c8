//! Running the `durus` binary from the integration tests.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

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

/// A `durus serve` child; its address is read from its first stderr line.
pub struct Serving {
    pub child: Child,
    pub address: String,
}

impl Serving {
    pub fn start(args: &[&str]) -> Serving {
        let mut child = Command::new(env!("CARGO_BIN_EXE_durus"))
            .arg("serve")
            .args(args)
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(child.stderr.as_mut().unwrap())
            .read_line(&mut line)
            .unwrap();
        // "durus: serving FILE on ADDRESS"
        let address = line.trim().rsplit(" on ").next().unwrap().to_string();
        assert!(line.starts_with("durus: serving"), "{line}");
        Serving { child, address }
    }

    /// Waits for the process to exit and returns its status code.
    pub fn wait(mut self) -> i32 {
        self.child.wait().unwrap().code().unwrap_or(-1)
    }

    /// The server's peak resident set size in KiB (VmHWM), while it runs.
    pub fn peak_rss_kb(&self) -> u64 {
        std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .ok()
            .and_then(|s| {
                let line = s.lines().find(|l| l.starts_with("VmHWM:"))?;
                line.split_whitespace().nth(1)?.parse().ok()
            })
            .unwrap_or(0)
    }
}

impl Drop for Serving {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
