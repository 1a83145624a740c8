//! `ClientStorage`: a [`Storage`](crate::Storage) over a durus server
//! (wire protocol 1, spec sections 7 and 8).
//!
//! Works with Python Durus 4.3's server and with ours. Where Durus's
//! client has sharp edges this one does not copy them: a bulk load reads
//! every reply before reporting an error (spec 15), records are checked
//! before they are sent (a malformed commit crashes Durus's server,
//! spec 7.6), and a failure in the middle of an exchange marks the
//! connection broken instead of letting the next call read a stale reply.

use std::collections::{BTreeSet, HashMap};
use std::fmt;
use std::io::{self, BufReader, Write};
use std::time::Duration;

use crate::error::{Error, Result};
use crate::format::protocol::{
    encode_transaction, parse_oids, put_u32, read_frame, read_u32, read_u8, CMD_BULK_LOAD,
    CMD_COMMIT, CMD_GOODBYE, CMD_LOAD, CMD_NEW_OIDS, CMD_PACK, CMD_SYNC, CMD_VERSION,
    PROTOCOL_VERSION, STATUS_INVALID, STATUS_KEYERROR, STATUS_OKAY,
};
use crate::format::{record, Oid};
use crate::storage::address::{Address, Stream, DEFAULT_SPIN};
use crate::storage::walk::reachable_records;
use crate::storage::{PackReport, RecordIter, Storage};

/// Oids asked for per `M` request, as Durus's client does.
const OID_BATCH: u8 = 32;

/// The largest record or oid list accepted from a server. A length field
/// is never trusted for an allocation (see [`read_frame`]); this bounds
/// what a confused server can make us buffer.
const FRAME_LIMIT: usize = 1 << 30;

/// A storage whose records live in a durus storage server (Python Durus
/// 4.3's `durus -s` or ours), reached over TCP or a unix socket.
///
/// Several processes, each with its own `ClientStorage` and
/// [`Connection`](crate::Connection), share one database this way; the
/// server tells each client which oids the others changed, and the
/// connection turns those into [`Error::Conflict`] and
/// [`Error::ReadConflict`] (spec 9.6).
///
/// ```no_run
/// use durus_core::storage::ClientStorage;
/// use durus_core::Connection;
/// let conn = Connection::new(ClientStorage::connect("127.0.0.1:2972")?)?;
/// conn.commit()?;
/// # Ok::<(), durus_core::Error>(())
/// ```
pub struct ClientStorage {
    address: Address,
    /// `None` once closed.
    stream: Option<BufReader<Stream>>,
    /// Why the connection is out of step with the server, if it is.
    broken: Option<String>,
    /// Oids reserved for us by the server and not handed out yet.
    pool: BTreeSet<Oid>,
    /// Oids handed out since `begin`: back to the pool if the commit is
    /// abandoned.
    new_oids: Vec<Oid>,
    /// The records of the commit being built, in the order first stored.
    staged: Vec<Vec<u8>>,
    /// Oid → index in `staged`, so a second store of an oid replaces.
    staged_index: HashMap<Oid, usize>,
}

/// What went wrong in the middle of an exchange: either way the stream is
/// out of step and the connection is unusable.
enum Fault {
    Io(io::Error),
    Protocol(String),
}

impl From<io::Error> for Fault {
    fn from(e: io::Error) -> Self {
        Fault::Io(e)
    }
}

/// One load response (spec 7.3).
enum Loaded {
    Record(Vec<u8>),
    Missing,
    Invalid,
}

impl ClientStorage {
    /// Connects to the server at `address` (`host:port`, `[v6]:port`,
    /// `unix:PATH` or a path containing `/`) and checks that it speaks
    /// protocol 1.
    pub fn connect(address: impl AsRef<str>) -> Result<ClientStorage> {
        let address: Address = address.as_ref().parse()?;
        Self::connect_to(&address)
    }

    /// Connects to the server at `address` and checks that it speaks
    /// protocol 1 (the `V` handshake, which Durus's client always sends).
    pub fn connect_to(address: &Address) -> Result<ClientStorage> {
        let mut stream = address.connect()?;
        stream.set_spin(DEFAULT_SPIN).map_err(|e| {
            Error::io(
                format!("cannot make the socket to {address} non-blocking"),
                e,
            )
        })?;
        Self::handshake(address.clone(), stream)
    }

    fn handshake(address: Address, stream: Stream) -> Result<ClientStorage> {
        let mut storage = ClientStorage {
            address,
            stream: Some(BufReader::new(stream)),
            broken: None,
            pool: BTreeSet::new(),
            new_oids: Vec::new(),
            staged: Vec::new(),
            staged_index: HashMap::new(),
        };
        let mut request = vec![CMD_VERSION];
        put_u32(&mut request, PROTOCOL_VERSION);
        let version = storage.exchange("the version handshake", |s| {
            s.get_mut().write_all(&request)?;
            Ok(read_u32(s)?)
        })?;
        if version != PROTOCOL_VERSION {
            let detail = format!(
                "the server speaks protocol {version}, this client protocol {PROTOCOL_VERSION}"
            );
            storage.broken = Some(detail.clone());
            return Err(storage.protocol_error(detail));
        }
        Ok(storage)
    }

    /// The server this storage talks to.
    pub fn address(&self) -> &Address {
        &self.address
    }

    /// Sets how long a request polls for its answer before sleeping
    /// (default [`DEFAULT_SPIN`]; zero: it sleeps at once, sparing the CPU
    /// on a machine with more busy processes than cores).
    pub fn set_spin(&mut self, spin: Duration) -> Result<()> {
        let address = self.address.clone();
        self.stream
            .as_mut()
            .ok_or(Error::Closed)?
            .get_mut()
            .set_spin(spin)
            .map_err(|e| Error::io(format!("cannot set the spin on {address}"), e))
    }

    /// Limits how long any one read or write on the connection may block
    /// (`None`, the default as in Durus, waits forever). A timeout leaves
    /// the connection unusable, like any failure mid-exchange.
    pub fn set_timeout(&self, timeout: Option<Duration>) -> Result<()> {
        let stream = self.stream.as_ref().ok_or(Error::Closed)?.get_ref();
        stream
            .set_read_timeout(timeout)
            .and_then(|()| stream.set_write_timeout(timeout))
            .map_err(|e| Error::io(format!("cannot set a timeout on {}", self.address), e))
    }

    fn protocol_error(&self, detail: impl Into<String>) -> Error {
        Error::Protocol {
            peer: format!("the durus server at {}", self.address),
            detail: detail.into(),
        }
    }

    /// Fails unless the connection is open and in step with the server.
    fn check_usable(&self) -> Result<()> {
        if self.stream.is_none() {
            return Err(Error::Closed);
        }
        if let Some(why) = &self.broken {
            return Err(Error::InvalidState(format!(
                "the connection to the durus server at {} is unusable after an earlier failure \
                 ({why}); connect a new ClientStorage",
                self.address
            )));
        }
        Ok(())
    }

    /// Runs one request/reply exchange. Any fault inside it marks the
    /// connection broken: the bytes still in flight would otherwise be
    /// read as the reply to the next request.
    fn exchange<T>(
        &mut self,
        what: &str,
        f: impl FnOnce(&mut BufReader<Stream>) -> std::result::Result<T, Fault>,
    ) -> Result<T> {
        self.check_usable()?;
        let stream = self.stream.as_mut().ok_or(Error::Closed)?;
        match f(stream) {
            Ok(value) => Ok(value),
            Err(fault) => {
                let (summary, error) = match fault {
                    Fault::Io(e) => {
                        let context = if e.kind() == io::ErrorKind::UnexpectedEof {
                            format!(
                                "{what}: the durus server at {} closed the connection",
                                self.address
                            )
                        } else {
                            format!("{what} with the durus server at {}", self.address)
                        };
                        (format!("{context}: {e}"), Error::io(context, e))
                    }
                    Fault::Protocol(detail) => {
                        let detail = format!("{what}: {detail}");
                        (detail.clone(), self.protocol_error(detail))
                    }
                };
                self.broken = Some(summary);
                Err(error)
            }
        }
    }

    /// Gives this transaction's new oids back to the pool (the commit was
    /// abandoned, so the objects that had them are forgotten).
    fn return_new_oids(&mut self) {
        self.pool.extend(self.new_oids.drain(..));
    }

    fn clear_staged(&mut self) {
        self.staged.clear();
        self.staged_index.clear();
    }
}

/// Reads one load response; `K` and `I` are answers, not faults.
fn read_load_response(s: &mut BufReader<Stream>, oid: Oid) -> std::result::Result<Loaded, Fault> {
    match read_u8(s)? {
        STATUS_OKAY => {
            let len = read_u32(s)? as usize;
            let record = read_frame(s, len, FRAME_LIMIT)
                .map_err(|e| frame_fault(e, format!("the record of oid {oid}")))?;
            Ok(Loaded::Record(record))
        }
        STATUS_KEYERROR => Ok(Loaded::Missing),
        STATUS_INVALID => Ok(Loaded::Invalid),
        other => Err(Fault::Protocol(format!(
            "unknown load status byte {other:#04x} for oid {oid}"
        ))),
    }
}

/// Reads int4 n and n oids (invalidations).
fn read_oid_list(s: &mut BufReader<Stream>) -> std::result::Result<Vec<Oid>, Fault> {
    let n = read_u32(s)? as usize;
    let len = n
        .checked_mul(8)
        .ok_or_else(|| Fault::Protocol(format!("a list of {n} oids is too long")))?;
    let bytes = read_frame(s, len, FRAME_LIMIT)
        .map_err(|e| frame_fault(e, format!("a list of {n} oids")))?;
    parse_oids(&bytes).map_err(|e| Fault::Protocol(e.to_string()))
}

/// An oversized frame is the server's fault; anything else is I/O.
fn frame_fault(e: io::Error, what: String) -> Fault {
    if e.kind() == io::ErrorKind::InvalidData {
        Fault::Protocol(format!("{what}: {e}"))
    } else {
        Fault::Io(e)
    }
}

fn loaded(oid: Oid, answer: Loaded) -> Result<Vec<u8>> {
    match answer {
        Loaded::Record(record) => Ok(record),
        Loaded::Missing => Err(Error::KeyNotFound(oid)),
        Loaded::Invalid => Err(Error::ReadConflict { oids: vec![oid] }),
    }
}

impl Storage for ClientStorage {
    /// `L`: the record, or [`Error::KeyNotFound`], or
    /// [`Error::ReadConflict`] when another client changed the oid since
    /// our last sync (the server will not show us the newer state yet).
    fn load(&mut self, oid: Oid) -> Result<Vec<u8>> {
        let mut request = Vec::with_capacity(9);
        request.push(CMD_LOAD);
        request.extend_from_slice(&oid.to_bytes());
        let answer = self.exchange(&format!("loading oid {oid}"), |s| {
            s.get_mut().write_all(&request)?;
            read_load_response(s, oid)
        })?;
        loaded(oid, answer)
    }

    /// `B`: one round trip for all of `oids`. Every reply is read before
    /// the first error (if any) is returned, so the connection stays in
    /// step (Durus 4.3 leaves the rest unread, spec 15).
    fn bulk_load(&mut self, oids: &[Oid]) -> Result<Vec<Vec<u8>>> {
        if oids.is_empty() {
            self.check_usable()?;
            return Ok(Vec::new());
        }
        let n = u32::try_from(oids.len()).map_err(|_| {
            Error::InvalidState(format!(
                "cannot bulk load {} oids in one request (protocol 1 counts in an int4)",
                oids.len()
            ))
        })?;
        let mut request = Vec::with_capacity(5 + 8 * oids.len());
        request.push(CMD_BULK_LOAD);
        put_u32(&mut request, n);
        for oid in oids {
            request.extend_from_slice(&oid.to_bytes());
        }
        let answers = self.exchange(&format!("bulk loading {n} oids"), |s| {
            s.get_mut().write_all(&request)?;
            oids.iter()
                .map(|&oid| read_load_response(s, oid))
                .collect::<std::result::Result<Vec<_>, _>>()
        })?;
        oids.iter()
            .zip(answers)
            .map(|(&oid, answer)| loaded(oid, answer))
            .collect()
    }

    /// Drops the records staged so far and forgets the oids handed out
    /// since the last `begin` (as Durus does: an oid taken before `begin`
    /// may belong to an object this very commit writes).
    fn begin(&mut self) -> Result<()> {
        self.check_usable()?;
        self.clear_staged();
        self.new_oids.clear();
        Ok(())
    }

    /// Stages `record` (checked to be a well-formed record of `oid`, which
    /// Durus's server does not check); a second store of an oid replaces
    /// the first.
    fn store(&mut self, oid: Oid, record: Vec<u8>) -> Result<()> {
        self.check_usable()?;
        record::check_stored_as(oid, &record)?;
        match self.staged_index.get(&oid) {
            Some(&i) => self.staged[i] = record,
            None => {
                self.staged_index.insert(oid, self.staged.len());
                self.staged.push(record);
            }
        }
        Ok(())
    }

    /// The commit exchange (spec 7.4). With nothing staged it sends
    /// nothing: the server keeps the invalidations for the next `sync` or
    /// commit, so none are lost.
    ///
    /// Otherwise `invalidations` gets the oids other clients changed since
    /// our last sync; if it fails, the transaction is abandoned (int4 0 is
    /// sent), its new oids go back to the pool, and its error is returned.
    /// A server that refuses the commit (`I`) gives [`Error::Conflict`]
    /// with no oids.
    fn end(&mut self, invalidations: &mut dyn FnMut(&[Oid]) -> Result<()>) -> Result<()> {
        self.check_usable()?;
        if self.staged.is_empty() {
            return Ok(());
        }
        // Encoded before `C`, so nothing can fail between the server's
        // invalidation list and our answer to it.
        let data = encode_transaction(self.staged.iter().map(Vec::as_slice))?;
        let total = u32::try_from(data.len()).map_err(|_| {
            Error::InvalidState(format!(
                "a transaction of {} bytes is over protocol 1's limit of 4 GiB",
                data.len()
            ))
        })?;
        let count = self.staged.len();
        self.clear_staged();

        let invalid = self.exchange("starting a commit", |s| {
            s.get_mut().write_all(&[CMD_COMMIT])?;
            read_oid_list(s)
        })?;
        if !invalid.is_empty() {
            if let Err(e) = invalidations(&invalid) {
                self.exchange("abandoning a commit", |s| {
                    Ok(s.get_mut().write_all(&0u32.to_be_bytes())?)
                })?;
                self.return_new_oids();
                return Err(e);
            }
        }
        let mut message = Vec::with_capacity(4 + data.len());
        put_u32(&mut message, total);
        message.extend_from_slice(&data);
        drop(data);
        let status = self.exchange(&format!("committing {count} records"), |s| {
            s.get_mut().write_all(&message)?;
            Ok(read_u8(s)?)
        })?;
        match status {
            STATUS_OKAY => {
                self.new_oids.clear();
                Ok(())
            }
            STATUS_INVALID => {
                self.return_new_oids();
                Err(Error::Conflict { oids: Vec::new() })
            }
            other => {
                let detail = format!("unknown commit status byte {other:#04x}");
                self.broken = Some(detail.clone());
                Err(self.protocol_error(detail))
            }
        }
    }

    /// `S`: the oids other clients committed or a pack removed since our
    /// last sync or commit.
    fn sync(&mut self) -> Result<Vec<Oid>> {
        self.exchange("syncing", |s| {
            s.get_mut().write_all(&[CMD_SYNC])?;
            read_oid_list(s)
        })
    }

    /// The smallest oid of the pool, which is refilled 32 at a time with
    /// `M` (as Durus does).
    fn new_oid(&mut self) -> Result<Oid> {
        if self.pool.is_empty() {
            let batch = self.exchange("asking for new oids", |s| {
                s.get_mut().write_all(&[CMD_NEW_OIDS, OID_BATCH])?;
                let bytes = read_frame(s, 8 * OID_BATCH as usize, FRAME_LIMIT)?;
                let oids = parse_oids(&bytes).map_err(|e| Fault::Protocol(e.to_string()))?;
                let unique: BTreeSet<Oid> = oids.into_iter().collect();
                if unique.len() != OID_BATCH as usize {
                    return Err(Fault::Protocol(format!(
                        "the server handed out the same oid twice in a batch of {OID_BATCH}"
                    )));
                }
                Ok(unique)
            })?;
            self.pool = batch;
        } else {
            self.check_usable()?;
        }
        let oid = self
            .pool
            .pop_first()
            .ok_or_else(|| Error::InvalidState("the oid pool is empty after a refill".into()))?;
        self.new_oids.push(oid);
        Ok(oid)
    }

    /// The records reachable from the root (Durus's `gen_oid_record`: a
    /// server offers no listing), fetched 100 at a time with `B`. Empty
    /// when the database has no root yet.
    fn records(&mut self) -> Result<RecordIter<'_>> {
        self.check_usable()?;
        reachable_records(self)
    }

    /// `P`: the server starts a pack and answers at once, so the report is
    /// empty; the removed oids reach every client as invalidations.
    fn pack(&mut self) -> Result<PackReport> {
        let status = self.exchange("starting a pack", |s| {
            s.get_mut().write_all(&[CMD_PACK])?;
            Ok(read_u8(s)?)
        })?;
        if status != STATUS_OKAY {
            let detail = format!("unknown pack status byte {status:#04x}");
            self.broken = Some(detail.clone());
            return Err(self.protocol_error(detail));
        }
        Ok(PackReport::default())
    }

    /// Says goodbye (`.`, which makes the server drop us) and shuts the
    /// socket. Closing twice is fine; every other call then fails with
    /// [`Error::Closed`].
    fn close(&mut self) -> Result<()> {
        let Some(mut stream) = self.stream.take() else {
            return Ok(());
        };
        self.clear_staged();
        self.pool.clear();
        self.new_oids.clear();
        if self.broken.is_none() {
            // The server forgets us either way; a failed goodbye changes
            // nothing for anyone.
            if let Err(e) = stream.get_mut().write_all(&[CMD_GOODBYE]) {
                tracing::debug!("goodbye to the durus server at {}: {e}", self.address);
            }
        }
        if let Err(e) = stream.get_ref().shutdown() {
            tracing::debug!("shutting the socket to {}: {e}", self.address);
        }
        Ok(())
    }
}

impl Drop for ClientStorage {
    /// Closes politely, so the server does not log a dropped client.
    fn drop(&mut self) {
        let _ = self.close();
    }
}

impl fmt::Debug for ClientStorage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientStorage")
            .field("address", &self.address)
            .field("open", &self.stream.is_some())
            .field("broken", &self.broken)
            .field("pooled_oids", &self.pool.len())
            .field("staged_records", &self.staged.len())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    //! The client against a scripted server on a socket pair: exact bytes,
    //! and what happens when the server misbehaves. (Against the real
    //! Python server: `tests/interop_client.rs`.)

    use super::*;
    use crate::format::record::encode;
    use std::io::Read;
    use std::os::unix::net::UnixStream;
    use std::thread::{self, JoinHandle};

    /// A client connected to `script`, which plays the server on the other
    /// end of a socket pair (the handshake is answered before `script`
    /// runs).
    fn scripted(
        script: impl FnOnce(&mut UnixStream) + Send + 'static,
    ) -> (ClientStorage, JoinHandle<()>) {
        let (ours, mut theirs) = UnixStream::pair().unwrap();
        let server = thread::spawn(move || {
            expect(&mut theirs, &[b'V', 0, 0, 0, 1]);
            theirs.write_all(&[0, 0, 0, 1]).unwrap();
            script(&mut theirs);
        });
        let address = Address::Unix("/scripted".into());
        let client = ClientStorage::handshake(address, Stream::from(ours)).unwrap();
        (client, server)
    }

    fn expect(s: &mut UnixStream, bytes: &[u8]) {
        let mut got = vec![0; bytes.len()];
        s.read_exact(&mut got).unwrap();
        assert_eq!(got, bytes);
    }

    fn oid_request(cmd: u8, oid: u64) -> Vec<u8> {
        [&[cmd][..], &oid.to_be_bytes()].concat()
    }

    #[test]
    fn a_server_speaking_another_protocol_is_a_protocol_error() {
        let (ours, mut theirs) = UnixStream::pair().unwrap();
        let server = thread::spawn(move || {
            expect(&mut theirs, &[b'V', 0, 0, 0, 1]);
            theirs.write_all(&[0, 0, 0, 2]).unwrap();
        });
        let err =
            ClientStorage::handshake(Address::Unix("/x".into()), Stream::from(ours)).unwrap_err();
        assert!(matches!(err, Error::Protocol { .. }), "{err}");
        assert!(err.to_string().contains("protocol 2"), "{err}");
        server.join().unwrap();
    }

    #[test]
    fn load_answers_map_to_record_key_error_and_read_conflict() {
        let rec = encode(Oid(3), b"data", &[]).unwrap();
        let reply = rec.clone();
        let (mut client, server) = scripted(move |s| {
            expect(s, &oid_request(b'L', 3));
            s.write_all(b"O").unwrap();
            s.write_all(&(reply.len() as u32).to_be_bytes()).unwrap();
            s.write_all(&reply).unwrap();
            expect(s, &oid_request(b'L', 4));
            s.write_all(b"K").unwrap();
            expect(s, &oid_request(b'L', 5));
            s.write_all(b"I").unwrap();
        });
        assert_eq!(client.load(Oid(3)).unwrap(), rec);
        assert!(matches!(
            client.load(Oid(4)),
            Err(Error::KeyNotFound(Oid(4)))
        ));
        match client.load(Oid(5)) {
            Err(Error::ReadConflict { oids }) => assert_eq!(oids, vec![Oid(5)]),
            other => panic!("{other:?}"),
        }
        server.join().unwrap();
    }

    #[test]
    fn an_unknown_load_status_breaks_the_connection_for_later_calls() {
        let (mut client, server) = scripted(|s| {
            expect(s, &oid_request(b'L', 1));
            s.write_all(b"Z").unwrap();
        });
        let err = client.load(Oid(1)).unwrap_err();
        assert!(matches!(err, Error::Protocol { .. }), "{err}");
        assert!(err.to_string().contains("0x5a"), "{err}");
        server.join().unwrap();
        let later = client.sync().unwrap_err();
        assert!(matches!(later, Error::InvalidState(_)), "{later}");
        assert!(later.to_string().contains("unusable"), "{later}");
    }

    #[test]
    fn bulk_load_reads_every_reply_before_returning_the_first_error() {
        let rec = encode(Oid(1), b"one", &[]).unwrap();
        let reply = rec.clone();
        let (mut client, server) = scripted(move |s| {
            let mut req = vec![b'B', 0, 0, 0, 3];
            for oid in [2u64, 1, 9] {
                req.extend_from_slice(&oid.to_be_bytes());
            }
            expect(s, &req);
            s.write_all(b"K").unwrap();
            s.write_all(b"O").unwrap();
            s.write_all(&(reply.len() as u32).to_be_bytes()).unwrap();
            s.write_all(&reply).unwrap();
            s.write_all(b"I").unwrap();
            expect(s, b"S");
            s.write_all(&[0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 9]).unwrap();
        });
        assert!(matches!(
            client.bulk_load(&[Oid(2), Oid(1), Oid(9)]),
            Err(Error::KeyNotFound(Oid(2)))
        ));
        assert_eq!(client.sync().unwrap(), vec![Oid(9)]);
        server.join().unwrap();
    }

    #[test]
    fn a_conflict_in_the_invalidations_callback_sends_zero_and_returns_the_oids() {
        let (mut client, server) = scripted(|s| {
            expect(s, &[b'M', 32]);
            for oid in (64u64..96).rev() {
                s.write_all(&oid.to_be_bytes()).unwrap();
            }
            expect(s, b"C");
            s.write_all(&[0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 7]).unwrap();
            expect(s, &[0, 0, 0, 0]);
            expect(s, b"S");
            s.write_all(&[0, 0, 0, 0]).unwrap();
        });
        client.begin().unwrap();
        let oid = client.new_oid().unwrap();
        assert_eq!(oid, Oid(64), "the smallest oid of the batch comes first");
        client.store(oid, encode(oid, b"x", &[]).unwrap()).unwrap();
        let mut seen = Vec::new();
        let err = client
            .end(&mut |oids| {
                seen.extend_from_slice(oids);
                Err(Error::Conflict { oids: vec![Oid(7)] })
            })
            .unwrap_err();
        assert!(err.is_conflict());
        assert_eq!(seen, vec![Oid(7)]);
        // In step: the next exchange reads its own reply.
        assert_eq!(client.sync().unwrap(), vec![]);
        server.join().unwrap();
        client.begin().unwrap();
        assert_eq!(
            client.new_oid().unwrap(),
            Oid(64),
            "the oid went back to the pool"
        );
    }

    #[test]
    fn a_commit_sends_each_oid_once_with_its_last_record_and_reads_the_status() {
        let first = encode(Oid(0), b"first", &[]).unwrap();
        let last = encode(Oid(0), b"last", &[]).unwrap();
        let expected = encode_transaction([last.as_slice()]).unwrap();
        let (mut client, server) = scripted(move |s| {
            expect(s, b"C");
            s.write_all(&[0, 0, 0, 0]).unwrap();
            expect(s, &(expected.len() as u32).to_be_bytes());
            expect(s, &expected);
            s.write_all(b"O").unwrap();
            expect(s, b"C");
            s.write_all(&[0, 0, 0, 0]).unwrap();
            expect(s, &(expected.len() as u32).to_be_bytes());
            expect(s, &expected);
            s.write_all(b"I").unwrap();
            expect(s, b".");
        });
        let mut called = false;
        client.begin().unwrap();
        client.store(Oid(0), first).unwrap();
        client.store(Oid(0), last.clone()).unwrap();
        client
            .end(&mut |_| {
                called = true;
                Ok(())
            })
            .unwrap();
        assert!(!called, "no invalidations, no callback");
        // Nothing staged: no exchange at all.
        client.end(&mut |_| Ok(())).unwrap();
        client.begin().unwrap();
        client.store(Oid(0), last).unwrap();
        match client.end(&mut |_| Ok(())) {
            Err(Error::Conflict { oids }) => assert!(oids.is_empty()),
            other => panic!("{other:?}"),
        }
        client.close().unwrap();
        server.join().unwrap();
        assert!(matches!(client.load(Oid(0)), Err(Error::Closed)));
        assert!(matches!(client.new_oid(), Err(Error::Closed)));
    }

    #[test]
    fn a_record_for_another_oid_is_refused_before_anything_is_sent() {
        let (mut client, server) = scripted(|s| expect(s, b"."));
        client.begin().unwrap();
        let err = client
            .store(Oid(1), encode(Oid(2), b"x", &[]).unwrap())
            .unwrap_err();
        assert!(!err.is_conflict(), "{err}");
        drop(client);
        server.join().unwrap();
    }

    #[test]
    fn a_server_that_hangs_up_mid_reply_is_an_io_error_then_unusable() {
        let (mut client, server) = scripted(|s| {
            expect(s, b"S");
            s.write_all(&[0, 0, 0, 2, 0, 0]).unwrap();
            s.shutdown(std::net::Shutdown::Both).unwrap();
        });
        let err = client.sync().unwrap_err();
        assert!(matches!(err, Error::Io { .. }), "{err}");
        assert!(err.to_string().contains("closed the connection"), "{err}");
        server.join().unwrap();
        assert!(matches!(client.load(Oid(0)), Err(Error::InvalidState(_))));
    }
}
