//! Where a storage server listens: a TCP host and port, or a unix socket
//! path; and the byte stream to it.

use std::fmt;
use std::io::{self, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

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
                            return Ok(Stream::Tcp(s));
                        }
                        Err(e) => last = e,
                    }
                }
                Err(failed(last))
            }
            Address::Unix(path) => UnixStream::connect(path).map(Stream::Unix).map_err(failed),
        }
    }
}

/// A connected byte stream to or from a server.
#[derive(Debug)]
pub enum Stream {
    Tcp(TcpStream),
    Unix(UnixStream),
}

impl Stream {
    pub fn set_read_timeout(&self, t: Option<Duration>) -> io::Result<()> {
        match self {
            Stream::Tcp(s) => s.set_read_timeout(t),
            Stream::Unix(s) => s.set_read_timeout(t),
        }
    }

    pub fn set_write_timeout(&self, t: Option<Duration>) -> io::Result<()> {
        match self {
            Stream::Tcp(s) => s.set_write_timeout(t),
            Stream::Unix(s) => s.set_write_timeout(t),
        }
    }

    pub fn try_clone(&self) -> io::Result<Stream> {
        Ok(match self {
            Stream::Tcp(s) => Stream::Tcp(s.try_clone()?),
            Stream::Unix(s) => Stream::Unix(s.try_clone()?),
        })
    }

    /// Closes both directions (wakes a thread blocked reading it).
    pub fn shutdown(&self) -> io::Result<()> {
        match self {
            Stream::Tcp(s) => s.shutdown(std::net::Shutdown::Both),
            Stream::Unix(s) => s.shutdown(std::net::Shutdown::Both),
        }
    }
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Stream::Tcp(s) => s.read(buf),
            Stream::Unix(s) => s.read(buf),
        }
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Stream::Tcp(s) => s.write(buf),
            Stream::Unix(s) => s.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Stream::Tcp(s) => s.flush(),
            Stream::Unix(s) => s.flush(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
