//! `durus`: the command line tool for durus databases.
//!
//! Each subcommand lives in its own module; this file only parses the
//! command line and turns a failure into `durus: error: ...` and exit
//! status 2.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod backup;
mod census;
mod dump;
mod info;
mod output;
mod pack;
mod progress;
mod repair;
mod server;
mod verify;

/// Tools for durus databases (SHELF-1 files, compatible with Python Durus 4.3).
#[derive(Debug, Parser)]
#[command(name = "durus", version)]
#[command(
    after_help = "Exit status: 0 on success, 1 when `verify` finds a problem or `dump` \
                        meets an object it cannot show in full, 2 on a usage error or a file that cannot be opened."
)]
struct Cli {
    /// Log level for diagnostics on stderr (error, warn, info, debug, trace).
    #[arg(long, global = true, default_value = "warn")]
    log_level: tracing::Level,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    Info(info::Args),
    Verify(verify::Args),
    Repair(repair::Args),
    Pack(pack::Args),
    Census(census::Args),
    Dump(dump::Args),
    Backup(backup::Args),
    Serve(server::ServeArgs),
    Stop(server::StopArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_max_level(cli.log_level)
        .with_writer(std::io::stderr)
        .with_target(false)
        .init();
    let result = match cli.command {
        Command::Info(args) => info::run(&args),
        Command::Verify(args) => verify::run(&args),
        Command::Repair(args) => repair::run(&args),
        Command::Pack(args) => pack::run(&args),
        Command::Census(args) => census::run(&args),
        Command::Dump(args) => dump::run(&args),
        Command::Backup(args) => backup::run(&args),
        Command::Serve(args) => server::serve(&args),
        Command::Stop(args) => server::stop(&args),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("durus: error: {e}");
            ExitCode::from(output::EXIT_ERROR)
        }
    }
}
