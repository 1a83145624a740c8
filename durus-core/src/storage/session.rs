//! One client's conversation in wire protocol 1 (spec section 7), over any
//! byte stream: reading its frames, checking them and answering them.
//!
//! [`Service`] is a server without a listener: the storage, the per-client
//! bookkeeping ([`Hub`]) and the options. The socket server
//! ([`Server`](crate::Server)) runs one [`Service::serve`] per connection on
//! its own thread; a fuzz target or a test runs one over bytes in memory.
//!
//! Bad input never reaches the storage: transaction data is parsed and
//! checked (lengths, embedded oids, refs, oids the client may write) before
//! anything is stored; lengths from the wire are bounded and buffers grow
//! only as bytes arrive; the conversation ends with an error naming the
//! peer and the reason.

use std::io::{self, BufReader, Read, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;

use crate::error::{Error, Result};
use crate::format::protocol::{self as wire, *};
use crate::format::Oid;
use crate::storage::hub::{ClientId, Hub};
use crate::storage::server::ServerOptions;
use crate::storage::Storage;

/// The protocol-1 service over one storage, serving any number of
/// conversations at once (each on its caller's thread).
///
/// ```
/// use durus_core::format::protocol::{CMD_LOAD, STATUS_KEYERROR};
/// use durus_core::storage::{ServerOptions, Service};
/// use durus_core::{MemoryStorage, Oid};
/// let service = Service::new(MemoryStorage::new(), ServerOptions::default());
/// let request = [&[CMD_LOAD][..], &Oid(0).to_bytes()].concat();
/// let mut answer = Vec::new();
/// service.serve(&request[..], &mut answer, "example", true)?;
/// assert_eq!(answer, [STATUS_KEYERROR]); // no root yet
/// # Ok::<(), durus_core::Error>(())
/// ```
pub struct Service {
    opts: ServerOptions,
    /// Set by a client's stop command (`Q`) or by the server's owner.
    stop: Arc<AtomicBool>,
    hub: Arc<Hub>,
}

impl Service {
    /// A service over `storage`.
    pub fn new(storage: impl Storage + Send + 'static, opts: ServerOptions) -> Service {
        Service {
            // A committer waits for the few commits ahead of it, each about
            // one client round trip.
            hub: Arc::new(Hub::new(Box::new(storage), opts.readonly, opts.spin * 4)),
            opts,
            stop: Arc::new(AtomicBool::new(false)),
        }
    }

    /// The options it serves with.
    pub fn options(&self) -> &ServerOptions {
        &self.opts
    }

    /// Serves one client to the end of its conversation: its goodbye, the
    /// end of its stream between commands, a stop command, or the service
    /// stopping while it idles. `peer` names it in errors and logs; `local`
    /// says whether it may stop the service (see
    /// [`ServerOptions::remote_stop`]).
    ///
    /// A malformed or refused frame ends the conversation with
    /// [`Error::Protocol`]; whatever it had not committed is dropped.
    pub fn serve(
        &self,
        reader: impl Read,
        writer: impl Write,
        peer: &str,
        local: bool,
    ) -> Result<()> {
        let id = self.hub.join();
        let mut session = Session {
            service: self,
            id,
            may_stop: local || self.opts.remote_stop,
            reader: BufReader::with_capacity(64 << 10, reader),
            writer,
        };
        let ended = session.serve();
        self.hub.leave(id);
        ended.map_err(|end| match end {
            SessionEnd::Io(e) if !is_stall_or_eof(&e) => {
                Error::io(format!("serving client {id} ({peer})"), e)
            }
            other => Error::Protocol {
                peer: format!("client {id} ({peer})"),
                detail: other.to_string(),
            },
        })
    }

    /// Whether a client asked the service to stop, or its owner did.
    pub fn stop_requested(&self) -> bool {
        self.stop.load(Ordering::SeqCst)
    }

    /// The flag that stops the service when set.
    pub(crate) fn stop_flag(&self) -> &Arc<AtomicBool> {
        &self.stop
    }

    /// The fsyncs its commits have shared so far (see
    /// [`ServerHandle::group_syncs`](crate::ServerHandle::group_syncs)).
    pub(crate) fn group_syncs(&self) -> Option<u64> {
        self.hub.group_syncs()
    }

    /// Waits for a commit in progress and closes the storage.
    pub fn close(&self) -> Result<()> {
        self.hub.close()
    }
}

/// Whether an I/O error is a stalled peer or one that hung up mid-command
/// (said in words by [`SessionEnd`]'s Display, not as an OS error).
fn is_stall_or_eof(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut | io::ErrorKind::UnexpectedEof
    )
}

/// One conversation: requests are read through a buffer (a command and
/// its arguments usually arrive in one segment: one syscall).
struct Session<'a, R, W> {
    service: &'a Service,
    id: ClientId,
    /// Whether this client's `Q` stops the service.
    may_stop: bool,
    reader: BufReader<R>,
    writer: W,
}

/// Why a session ends.
type SessionResult = std::result::Result<(), SessionEnd>;

#[derive(Debug)]
enum SessionEnd {
    Io(io::Error),
    Refused(String),
}

impl std::fmt::Display for SessionEnd {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SessionEnd::Io(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                write!(f, "stalled inside a command past the timeout")
            }
            SessionEnd::Io(e) if e.kind() == io::ErrorKind::UnexpectedEof => {
                write!(f, "closed the connection in the middle of a command")
            }
            SessionEnd::Io(e) => write!(f, "{e}"),
            SessionEnd::Refused(why) => write!(f, "{why}"),
        }
    }
}

impl From<io::Error> for SessionEnd {
    fn from(e: io::Error) -> Self {
        SessionEnd::Io(e)
    }
}

fn refused(e: Error) -> SessionEnd {
    SessionEnd::Refused(match e {
        Error::ReadOnly => "tried to write to a read-only server".to_string(),
        other => other.to_string(),
    })
}

impl<R: Read, W: Write> Session<'_, R, W> {
    fn serve(&mut self) -> SessionResult {
        loop {
            // Between commands a client may idle as long as it likes: a
            // read timeout there (set by the server on its socket) just
            // reads again, unless the service is stopping.
            let cmd = match wire::read_u8(&mut self.reader) {
                Ok(cmd) => cmd,
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    ) =>
                {
                    if self.service.stop_requested() {
                        return Ok(());
                    }
                    continue;
                }
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(()),
                Err(e) => return Err(e.into()),
            };
            match cmd {
                CMD_GOODBYE => return Ok(()),
                CMD_QUIT if !self.may_stop => {
                    return Err(SessionEnd::Refused(
                        "asked the server to stop from another host: refused (durus serve --allow-remote-stop)".into(),
                    ));
                }
                CMD_QUIT => {
                    tracing::info!("client {} asked the server to stop", self.id);
                    self.service.stop.store(true, Ordering::SeqCst);
                    return Ok(());
                }
                _ => self.command(cmd)?,
            }
        }
    }

    fn send(&mut self, bytes: &[u8]) -> SessionResult {
        self.writer.write_all(bytes)?;
        Ok(())
    }

    fn command(&mut self, cmd: u8) -> SessionResult {
        let hub = &self.service.hub;
        match cmd {
            CMD_VERSION => {
                let version = wire::read_u32(&mut self.reader)?;
                self.send(&PROTOCOL_VERSION.to_be_bytes())?;
                if version != PROTOCOL_VERSION {
                    return Err(SessionEnd::Refused(format!(
                        "speaks protocol {version}, not {PROTOCOL_VERSION}"
                    )));
                }
                Ok(())
            }
            CMD_NEW_OID => {
                let oids = hub.new_oids(self.id, 1).map_err(refused)?;
                self.send(&oids[0].to_bytes())
            }
            CMD_NEW_OIDS => {
                let n = wire::read_u8(&mut self.reader)?;
                let oids = hub.new_oids(self.id, n as usize).map_err(refused)?;
                let bytes: Vec<u8> = oids.iter().flat_map(|o| o.to_bytes()).collect();
                self.send(&bytes)
            }
            CMD_LOAD => {
                let oid = wire::read_oid(&mut self.reader)?;
                let mut out = Vec::new();
                self.load_into(&mut out, oid)?;
                self.send(&out)
            }
            CMD_BULK_LOAD => {
                let n = wire::read_u32(&mut self.reader)?;
                if n > self.service.opts.max_bulk_load {
                    return Err(SessionEnd::Refused(format!(
                        "asked to bulk load {n} oids (the limit is {})",
                        self.service.opts.max_bulk_load
                    )));
                }
                let bytes = wire::read_frame(&mut self.reader, n as usize * 8, usize::MAX)?;
                let oids = wire::parse_oids(&bytes).map_err(refused)?;
                let mut out = Vec::new();
                for oid in oids {
                    self.load_into(&mut out, oid)?;
                    if out.len() >= 1 << 20 {
                        self.send(&out)?;
                        out.clear();
                    }
                }
                self.send(&out)
            }
            CMD_SYNC => {
                let oids = hub.sync(self.id).map_err(refused)?;
                self.send(&encode_oid_list(&oids))
            }
            CMD_COMMIT => self.commit(),
            CMD_PACK => {
                // Answered when the pack is done (Durus answers at once for
                // its incremental packer): the client's next sync then
                // brings the removals. Others are served meanwhile.
                match hub.pack() {
                    Err(e @ Error::ReadOnly) => return Err(refused(e)),
                    Err(e) => tracing::error!(
                        "pack asked by client {} failed (the file is unchanged): {e}",
                        self.id
                    ),
                    Ok(_) => {}
                }
                self.send(&[STATUS_OKAY])
            }
            other => Err(SessionEnd::Refused(format!(
                "sent an unknown command byte 0x{other:02x}"
            ))),
        }
    }

    /// Appends a load response for `oid` (spec 7.3).
    fn load_into(&self, out: &mut Vec<u8>, oid: Oid) -> SessionResult {
        match self.service.hub.load(self.id, oid) {
            Ok(record) => wire::encode_load_ok(out, &record),
            Err(Error::KeyNotFound(_)) => out.push(STATUS_KEYERROR),
            Err(Error::ReadConflict { .. }) => out.push(STATUS_INVALID),
            Err(e) => return Err(refused(e)),
        }
        Ok(())
    }

    /// The commit exchange (spec 7.4).
    fn commit(&mut self) -> SessionResult {
        let hub = &self.service.hub;
        let opts = &self.service.opts;
        let commit = hub.begin_commit(self.id).map_err(refused)?;
        self.send(&encode_oid_list(commit.invalidations()))?;
        let len = wire::read_u32(&mut self.reader)? as usize;
        if len == 0 {
            return Ok(()); // the client abandoned the transaction (a conflict)
        }
        let data = wire::read_frame(&mut self.reader, len, opts.max_transaction).map_err(|e| {
            match e.kind() {
                io::ErrorKind::InvalidData => {
                    SessionEnd::Refused(format!("sent a transaction too large: {e}"))
                }
                _ => SessionEnd::Io(e),
            }
        })?;
        let entries = wire::parse_transaction(&data)
            .map_err(|e| SessionEnd::Refused(format!("sent a malformed commit: {e}")))?;
        let written = commit.write(&entries).map_err(refused)?;
        // The commit lock is free again: the next commit goes on while
        // this one waits for its (shared) fsync.
        hub.wait_durable(written).map_err(refused)?;
        tracing::debug!(
            "client {} committed {} records ({len} bytes)",
            self.id,
            entries.len()
        );
        self.send(&[STATUS_OKAY])?;
        if opts.gcbytes > 0 && hub.bytes_since_pack() >= opts.gcbytes {
            start_pack(hub.clone());
        }
        Ok(())
    }
}

/// Packs on a background thread (the automatic pack of `gcbytes`).
fn start_pack(hub: Arc<Hub>) {
    let spawned = thread::Builder::new()
        .name("durus-pack".into())
        .spawn(move || match hub.pack() {
            Ok(Some(_)) => {}
            Ok(None) => tracing::debug!("a pack is already running"),
            Err(e) => tracing::error!("pack failed (the file is unchanged): {e}"),
        });
    if let Err(e) = spawned {
        tracing::error!("cannot start the pack thread: {e}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::record;
    use crate::MemoryStorage;

    fn service() -> Service {
        Service::new(MemoryStorage::new(), ServerOptions::default())
    }

    /// A client's side of a conversation, all sent at once.
    fn frames(parts: &[&[u8]]) -> Vec<u8> {
        parts.concat()
    }

    #[test]
    fn a_whole_conversation_over_bytes_in_memory_gets_durus_answers() {
        let root = record::encode(Oid(0), b"root", &[Oid(1)]).unwrap();
        let child = record::encode(Oid(1), b"child", &[]).unwrap();
        let tx = encode_transaction([root.as_slice(), child.as_slice()]).unwrap();
        let input = frames(&[
            &[CMD_VERSION],
            &1u32.to_be_bytes(),
            &[CMD_NEW_OIDS, 2],
            &[CMD_COMMIT],
            &(tx.len() as u32).to_be_bytes(),
            &tx,
            &[CMD_LOAD],
            &Oid(0).to_bytes(),
            &[CMD_LOAD],
            &Oid(9).to_bytes(),
            &[CMD_SYNC],
            &[CMD_GOODBYE],
        ]);
        let mut output = Vec::new();
        service()
            .serve(&input[..], &mut output, "test", true)
            .unwrap();
        let mut expected = 1u32.to_be_bytes().to_vec(); // V
        expected.extend_from_slice(&Oid(0).to_bytes()); // M 2
        expected.extend_from_slice(&Oid(1).to_bytes());
        expected.extend_from_slice(&0u32.to_be_bytes()); // C: no invalidations
        expected.push(STATUS_OKAY); // committed
        encode_load_ok(&mut expected, &root); // L 0
        expected.push(STATUS_KEYERROR); // L 9
        expected.extend_from_slice(&0u32.to_be_bytes()); // S: nothing new
        assert_eq!(output, expected);
    }

    #[test]
    fn a_malformed_commit_is_a_protocol_error_naming_the_client_and_stores_nothing() {
        let service = service();
        let rec = record::encode(Oid(0), b"root", &[]).unwrap();
        let mut tx = encode_transaction([rec.as_slice()]).unwrap();
        tx.truncate(tx.len() - 1);
        let input = frames(&[
            &[CMD_NEW_OID, CMD_COMMIT],
            &((tx.len()) as u32).to_be_bytes(),
            &tx,
        ]);
        let err = service
            .serve(&input[..], Vec::new(), "fuzzer", true)
            .unwrap_err();
        assert!(matches!(err, Error::Protocol { .. }), "{err}");
        let text = err.to_string();
        assert!(
            text.contains("(fuzzer)") && text.contains("malformed commit"),
            "{text}"
        );
        // The next client finds no root.
        let mut output = Vec::new();
        let load = frames(&[&[CMD_LOAD], &Oid(0).to_bytes()]);
        service.serve(&load[..], &mut output, "next", true).unwrap();
        assert_eq!(output, vec![STATUS_KEYERROR]);
    }

    #[test]
    fn a_conversation_cut_inside_a_command_is_an_error_and_a_stop_from_afar_is_refused() {
        let service = service();
        let err = service
            .serve(&[CMD_LOAD, 0, 0][..], Vec::new(), "cut", true)
            .unwrap_err();
        assert!(
            err.to_string().contains("in the middle of a command"),
            "{err}"
        );
        let err = service
            .serve(&[CMD_QUIT][..], Vec::new(), "afar", false)
            .unwrap_err();
        assert!(err.to_string().contains("refused"), "{err}");
        assert!(!service.stop_requested());
        service
            .serve(&[CMD_QUIT][..], Vec::new(), "here", true)
            .unwrap();
        assert!(service.stop_requested());
    }
}
