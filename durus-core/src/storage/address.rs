//! Where a storage server listens: a TCP host and port, or a unix socket
//! path; and the byte stream to it.

use std::fmt;
use std::io::{self, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::{Duration, Instant};

use crate::error::{Error, Result};
use crate::format::protocol::{DEFAULT_HOST, DEFAULT_PORT};

/// A server address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Address {
    /// `host:port`; IPv6 hosts in brackets (`[::1]:2972`).
    Tcp { host: String, port: u16 },
    /// A unix-domain socket file.
    Unix(PathBuf),
}

impl Default for Address {
    /// Durus's default, `127.0.0.1:2972`.
    fn default() -> Self {
        Address::Tcp {
            host: DEFAULT_HOST.to_string(),
            port: DEFAULT_PORT,
        }
    }
}

impl fmt::Display for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Address::Tcp { host, port } if host.contains(':') => write!(f, "[{host}]:{port}"),
            Address::Tcp { host, port } => write!(f, "{host}:{port}"),
            Address::Unix(path) => write!(f, "unix:{}", path.display()),
        }
    }
}

impl FromStr for Address {
    type Err = Error;

    /// `host:port`, `[v6]:port`, `:port` (the default host), or
    /// `unix:PATH` / any string containing `/` for a unix socket.
    fn from_str(s: &str) -> Result<Address> {
        if let Some(path) = s.strip_prefix("unix:") {
            return Ok(Address::Unix(path.into()));
        }
        if s.contains('/') {
            return Ok(Address::Unix(s.into()));
        }
        let bad = || {
            Error::InvalidState(format!(
                "{s:?} is not an address: use HOST:PORT, [IPV6]:PORT or unix:PATH"
            ))
        };
        let (host, port) = s.rsplit_once(':').ok_or_else(bad)?;
        let port: u16 = port.parse().map_err(|_| bad())?;
        let host = host.trim_start_matches('[').trim_end_matches(']');
        let host = if host.is_empty() { DEFAULT_HOST } else { host };
        Ok(Address::Tcp {
            host: host.to_string(),
            port,
        })
    }
}

impl Address {
    /// Connects, with `TCP_NODELAY` on TCP (every request is a small write
    /// waiting for its answer).
    pub fn connect(&self) -> Result<Stream> {
        let failed = |e| Error::io(format!("cannot connect to the durus server at {self}"), e);
        match self {
            Address::Tcp { host, port } => {
                let addrs = (host.as_str(), *port).to_socket_addrs().map_err(failed)?;
                let mut last = io::Error::new(io::ErrorKind::NotFound, "the host has no address");
                for addr in addrs {
                    match TcpStream::connect(addr) {
                        Ok(s) => {
                            s.set_nodelay(true).map_err(failed)?;
                            return Ok(Stream::from(s));
                        }
                        Err(e) => last = e,
                    }
                }
                Err(failed(last))
            }
            Address::Unix(path) => UnixStream::connect(path).map(Stream::from).map_err(failed),
        }
    }
}

/// How long clients and server threads poll for an answer or the next
/// request before sleeping: a client's think time between two requests of
/// one transaction, and a few round trips. Chosen by `scripts/bench-server`
/// (50 µs lost part of the gain, 1 ms gained nothing more).
pub const DEFAULT_SPIN: Duration = Duration::from_micros(200);

/// A connected byte stream to or from a server.
///
/// A read can first *spin*: poll the socket without sleeping for a short
/// while before blocking. Protocol 1 is one small request waiting for one
/// small answer, and on a virtual machine most of a loopback round trip
/// is the time to wake a sleeping thread on the other vCPU (~70 µs here
/// against ~10 µs when the reader is awake; docs/BENCHMARKS.md), so a
/// reader that expects an answer within microseconds stays awake for it.
/// Past the spin budget the read sleeps in the kernel as usual, and read
/// timeouts apply from there.
#[derive(Debug)]
pub struct Stream {
    socket: Socket,
    /// How long a read polls before sleeping; zero: never (the socket is
    /// then in blocking mode, otherwise non-blocking between reads).
    spin: Duration,
}

#[derive(Debug)]
enum Socket {
    Tcp(TcpStream),
    Unix(UnixStream),
}

impl From<TcpStream> for Stream {
    fn from(s: TcpStream) -> Stream {
        Stream {
            socket: Socket::Tcp(s),
            spin: Duration::ZERO,
        }
    }
}

impl From<UnixStream> for Stream {
    fn from(s: UnixStream) -> Stream {
        Stream {
            socket: Socket::Unix(s),
            spin: Duration::ZERO,
        }
    }
}

impl Stream {
    pub fn set_read_timeout(&self, t: Option<Duration>) -> io::Result<()> {
        match &self.socket {
            Socket::Tcp(s) => s.set_read_timeout(t),
            Socket::Unix(s) => s.set_read_timeout(t),
        }
    }

    pub fn set_write_timeout(&self, t: Option<Duration>) -> io::Result<()> {
        match &self.socket {
            Socket::Tcp(s) => s.set_write_timeout(t),
            Socket::Unix(s) => s.set_write_timeout(t),
        }
    }

    /// Sets how long each read polls before it sleeps (zero: it sleeps at
    /// once). Clones share the socket's blocking mode, so set this before
    /// [`try_clone`](Self::try_clone), which copies it.
    pub fn set_spin(&mut self, spin: Duration) -> io::Result<()> {
        self.set_nonblocking(!spin.is_zero())?;
        self.spin = spin;
        Ok(())
    }

    pub fn try_clone(&self) -> io::Result<Stream> {
        let socket = match &self.socket {
            Socket::Tcp(s) => Socket::Tcp(s.try_clone()?),
            Socket::Unix(s) => Socket::Unix(s.try_clone()?),
        };
        Ok(Stream {
            socket,
            spin: self.spin,
        })
    }

    /// Closes both directions (wakes a thread blocked reading it).
    pub fn shutdown(&self) -> io::Result<()> {
        match &self.socket {
            Socket::Tcp(s) => s.shutdown(std::net::Shutdown::Both),
            Socket::Unix(s) => s.shutdown(std::net::Shutdown::Both),
        }
    }

    fn set_nonblocking(&self, on: bool) -> io::Result<()> {
        match &self.socket {
            Socket::Tcp(s) => s.set_nonblocking(on),
            Socket::Unix(s) => s.set_nonblocking(on),
        }
    }

    /// Runs one blocking call on a socket kept non-blocking for spinning.
    fn blocking<T>(&mut self, call: impl FnOnce(&mut Socket) -> io::Result<T>) -> io::Result<T> {
        self.set_nonblocking(false)?;
        let result = call(&mut self.socket);
        self.set_nonblocking(true)?;
        result
    }
}

impl Read for Socket {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Socket::Tcp(s) => s.read(buf),
            Socket::Unix(s) => s.read(buf),
        }
    }
}

impl Write for Socket {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Socket::Tcp(s) => s.write(buf),
            Socket::Unix(s) => s.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Socket::Tcp(s) => s.flush(),
            Socket::Unix(s) => s.flush(),
        }
    }
}

fn would_block(r: &io::Result<usize>) -> bool {
    matches!(r, Err(e) if e.kind() == io::ErrorKind::WouldBlock)
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.spin.is_zero() {
            return self.socket.read(buf);
        }
        let first = self.socket.read(buf);
        if !would_block(&first) {
            return first;
        }
        let start = Instant::now();
        while start.elapsed() < self.spin {
            // Yield rather than burn: on two vCPUs the thread we wait for
            // may need this one.
            std::thread::yield_now();
            let r = self.socket.read(buf);
            if !would_block(&r) {
                return r;
            }
        }
        self.blocking(|s| s.read(buf))
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let r = self.socket.write(buf);
        if self.spin.is_zero() || !would_block(&r) {
            return r;
        }
        // The send buffer is full (a large reply): wait like a blocking
        // socket, with its write timeout.
        self.blocking(|s| s.write(buf))
    }

    fn flush(&mut self) -> io::Result<()> {
        self.socket.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::thread;

    fn spinning_pair(spin: Duration) -> (Stream, UnixStream) {
        let (ours, theirs) = UnixStream::pair().unwrap();
        let mut ours = Stream::from(ours);
        ours.set_spin(spin).unwrap();
        (ours, theirs)
    }

    #[test]
    fn a_spinning_read_gets_bytes_sent_after_its_spin_budget() {
        let (mut ours, mut theirs) = spinning_pair(Duration::from_micros(100));
        let sender = thread::spawn(move || {
            thread::sleep(Duration::from_millis(50));
            theirs.write_all(b"late").unwrap();
            theirs
        });
        let mut buf = [0u8; 4];
        ours.read_exact(&mut buf).unwrap();
        assert_eq!(&buf, b"late");
        // Back to polling after the blocking read: bytes already there
        // come at once, and none is an empty would-block.
        let mut theirs = sender.join().unwrap();
        theirs.write_all(b"next").unwrap();
        ours.read_exact(&mut buf).unwrap();
        assert_eq!(&buf, b"next");
    }

    #[test]
    fn a_spinning_read_still_times_out_and_sees_end_of_stream() {
        let (mut ours, theirs) = spinning_pair(Duration::from_micros(100));
        ours.set_read_timeout(Some(Duration::from_millis(20)))
            .unwrap();
        let mut buf = [0u8; 1];
        let err = ours.read(&mut buf).unwrap_err();
        assert!(
            matches!(
                err.kind(),
                io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
            ),
            "{err:?}"
        );
        drop(theirs);
        assert_eq!(ours.read(&mut buf).unwrap(), 0);
    }

    #[test]
    fn a_spinning_stream_writes_more_than_the_socket_buffer_holds() {
        let (ours, mut theirs) = spinning_pair(Duration::from_micros(100));
        // The clone shares the non-blocking socket, as the server's
        // writer does.
        let mut writer = ours.try_clone().unwrap();
        let big: Vec<u8> = (0..4 << 20).map(|i| (i % 251) as u8).collect();
        let expected = big.clone();
        let reader = thread::spawn(move || {
            let mut got = Vec::new();
            let mut chunk = [0u8; 8192];
            while got.len() < expected.len() {
                thread::sleep(Duration::from_micros(200));
                let n = theirs.read(&mut chunk).unwrap();
                got.extend_from_slice(&chunk[..n]);
            }
            assert_eq!(got, expected);
        });
        writer.write_all(&big).unwrap();
        reader.join().unwrap();
    }

    #[test]
    fn a_stream_without_spin_stays_blocking() {
        let (ours, mut theirs) = UnixStream::pair().unwrap();
        let mut ours = Stream::from(ours);
        let sender = thread::spawn(move || {
            thread::sleep(Duration::from_millis(20));
            theirs.write_all(b"x").unwrap();
        });
        let mut buf = [0u8; 1];
        assert_eq!(ours.read(&mut buf).unwrap(), 1);
        sender.join().unwrap();
    }

    #[test]
    fn addresses_parse_as_durus_users_write_them() {
        let tcp = |h: &str, p| Address::Tcp {
            host: h.into(),
            port: p,
        };
        assert_eq!(
            "127.0.0.1:2972".parse::<Address>().unwrap(),
            tcp("127.0.0.1", 2972)
        );
        assert_eq!("[::1]:9000".parse::<Address>().unwrap(), tcp("::1", 9000));
        assert_eq!(":9000".parse::<Address>().unwrap(), tcp("127.0.0.1", 9000));
        assert_eq!(
            "unix:/tmp/d.sock".parse::<Address>().unwrap(),
            Address::Unix("/tmp/d.sock".into())
        );
        assert_eq!(
            "/tmp/d.sock".parse::<Address>().unwrap(),
            Address::Unix("/tmp/d.sock".into())
        );
        assert!("localhost".parse::<Address>().is_err());
        assert!("host:port".parse::<Address>().is_err());
        assert_eq!(tcp("::1", 1).to_string(), "[::1]:1");
        assert_eq!(Address::default().to_string(), "127.0.0.1:2972");
    }
}
