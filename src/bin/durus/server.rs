//! `durus serve` and `durus stop`: run a storage server, stop one.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use durus::format::protocol::CMD_QUIT;
use durus::storage::address::{Address, DEFAULT_SPIN};
use durus::storage::{Server, ServerOptions};
use durus::{Error, FileStorageOptions, Result};

/// Where a server listens: `--address HOST:PORT` or `--unix PATH`.
#[derive(Debug, clap::Args)]
pub struct Listen {
    /// TCP address (IPv6 in brackets: [::1]:2972).
    #[arg(long, default_value = "127.0.0.1:2972", conflicts_with = "unix")]
    pub address: String,
    /// A unix-domain socket path instead of TCP.
    #[arg(long)]
    pub unix: Option<PathBuf>,
}

impl Listen {
    fn address(&self) -> Result<Address> {
        match &self.unix {
            Some(path) => Ok(Address::Unix(path.clone())),
            None => self.address.parse(),
        }
    }
}

/// Serve a database file to clients over Durus wire protocol 1.
///
/// Python Durus 4.3 clients (`ClientStorage`) and durus for Rust clients
/// work alike. Ctrl-C, SIGTERM and `durus stop` stop the server after the
/// commit in progress, if any: no transaction is half written.
#[derive(Debug, clap::Args)]
pub struct ServeArgs {
    /// The database file (created if missing). Default: a temporary file,
    /// removed when the server stops.
    #[arg(long)]
    pub file: Option<PathBuf>,
    #[command(flatten)]
    pub listen: Listen,
    /// Permission bits to clear on the unix socket file (octal, as a umask).
    #[arg(long, value_parser = parse_octal, requires = "unix")]
    pub umask: Option<u32>,
    /// Owner of the unix socket file (a user name or uid).
    #[arg(long, requires = "unix")]
    pub owner: Option<String>,
    /// Group of the unix socket file (a group name or gid).
    #[arg(long, requires = "unix")]
    pub group: Option<String>,
    /// Refuse every commit.
    #[arg(long)]
    pub readonly: bool,
    /// Pack automatically after this many bytes were committed (0: never).
    #[arg(long, default_value_t = 0)]
    pub gcbytes: u64,
    /// Do not fsync commits (faster, not durable across a power loss).
    #[arg(long)]
    pub no_fsync: bool,
    /// Truncate a damaged tail when opening the file.
    #[arg(long)]
    pub repair: bool,
    /// How long (microseconds) a client's thread stays awake for its next
    /// request before sleeping; it cuts a loopback round trip several
    /// times over on virtual machines at the cost of that much CPU after
    /// each request. 0 disables it.
    #[arg(long, value_name = "MICROS", default_value_t = DEFAULT_SPIN.as_micros() as u64)]
    pub spin: u64,
    /// The most clients served at once; more are disconnected (and logged).
    #[arg(long, value_name = "N", default_value_t = ServerOptions::default().max_clients)]
    pub max_clients: usize,
    /// The largest commit a client may send, in bytes (its records and
    /// their framing); a larger one is refused and the client dropped.
    #[arg(long, value_name = "BYTES", default_value_t = ServerOptions::default().max_transaction)]
    pub max_commit_bytes: usize,
    /// The most oids one bulk load may ask for; more is refused and the
    /// client dropped.
    #[arg(long, value_name = "N", default_value_t = ServerOptions::default().max_bulk_load)]
    pub max_bulk_load: u32,
    /// Let clients on other hosts stop the server with the stop command
    /// (by default only unix-socket and loopback clients may).
    #[arg(long)]
    pub allow_remote_stop: bool,
}

/// Stop a running server (protocol command Q) and wait until it is gone.
#[derive(Debug, clap::Args)]
pub struct StopArgs {
    #[command(flatten)]
    pub listen: Listen,
}

/// Applies `--umask`, `--owner` and `--group` to the socket file, as
/// Durus does at bind.
fn secure_socket(sock: &std::path::Path, args: &ServeArgs) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    if let Some(umask) = args.umask {
        std::fs::set_permissions(sock, std::fs::Permissions::from_mode(0o777 & !umask))
            .map_err(|e| Error::io(format!("cannot set the mode of {}", sock.display()), e))?;
    }
    let uid = args
        .owner
        .as_deref()
        .map(|o| lookup_id("/etc/passwd", o, "user"))
        .transpose()?;
    let gid = args
        .group
        .as_deref()
        .map(|g| lookup_id("/etc/group", g, "group"))
        .transpose()?;
    if uid.is_some() || gid.is_some() {
        std::os::unix::fs::chown(sock, uid, gid)
            .map_err(|e| Error::io(format!("cannot change the owner of {}", sock.display()), e))?;
    }
    Ok(())
}

/// A numeric id, or the id of `name` in an `/etc/passwd`-style file.
fn lookup_id(file: &str, name: &str, what: &str) -> Result<u32> {
    if let Ok(id) = name.parse() {
        return Ok(id);
    }
    let table =
        std::fs::read_to_string(file).map_err(|e| Error::io(format!("cannot read {file}"), e))?;
    table
        .lines()
        .map(|line| line.split(':').collect::<Vec<_>>())
        .find(|fields| fields.first() == Some(&name))
        .and_then(|fields| fields.get(2).and_then(|id| id.parse().ok()))
        .ok_or_else(|| Error::InvalidState(format!("no {what} named {name:?} in {file}")))
}

fn parse_octal(s: &str) -> std::result::Result<u32, String> {
    u32::from_str_radix(s.trim_start_matches("0o"), 8)
        .map_err(|e| format!("{s:?} is not an octal mode: {e}"))
}

pub fn serve(args: &ServeArgs) -> Result<ExitCode> {
    let address = args.listen.address()?;
    let mut _temp = None;
    let path = match &args.file {
        Some(path) => path.clone(),
        None => {
            let dir = tempfile::Builder::new()
                .prefix("durus-serve-")
                .tempdir()
                .map_err(|e| Error::io("cannot create a temporary directory", e))?;
            let path = dir.path().join("temp.durus");
            _temp = Some(dir);
            path
        }
    };
    let storage = FileStorageOptions::new()
        .readonly(args.readonly)
        .repair(args.repair && !args.readonly)
        .fsync(!args.no_fsync)
        .open(&path)?;
    let opts = ServerOptions {
        readonly: args.readonly,
        gcbytes: args.gcbytes,
        spin: Duration::from_micros(args.spin),
        max_clients: args.max_clients.max(1),
        remote_stop: args.allow_remote_stop,
        max_transaction: args.max_commit_bytes,
        max_bulk_load: args.max_bulk_load,
        ..ServerOptions::default()
    };
    let server = Server::bind(storage, &address, opts)?;
    if let Address::Unix(sock) = server.address() {
        secure_socket(sock, args)?;
    }
    let stop = server.stop_flag();
    for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(signal, stop.clone())
            .map_err(|e| Error::io("cannot handle signals", e))?;
    }
    eprintln!("durus: serving {} on {}", path.display(), server.address());
    server.run()?;
    if stop.load(Ordering::SeqCst) {
        eprintln!("durus: server stopped");
    }
    Ok(ExitCode::SUCCESS)
}

pub fn stop(args: &StopArgs) -> Result<ExitCode> {
    use std::io::{Read, Write};
    let address = args.listen.address()?;
    let mut stream = address.connect()?;
    stream
        .write_all(&[CMD_QUIT])
        .map_err(|e| Error::io(format!("cannot send the stop command to {address}"), e))?;
    // The server closes the connection, then stops accepting new ones.
    let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
    let _ = stream.read(&mut [0u8; 1]);
    let deadline = Instant::now() + Duration::from_secs(10);
    while address.connect().is_ok() {
        if Instant::now() > deadline {
            return Err(Error::InvalidState(format!(
                "the server at {address} still accepts connections 10 s after the stop command"
            )));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    eprintln!("durus: stopped the server at {address}");
    Ok(ExitCode::SUCCESS)
}
