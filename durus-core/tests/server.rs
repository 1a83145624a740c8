//! The storage server over real sockets, spoken to byte by byte (spec
//! section 7): the protocol, per-client invalidations, and bad input that
//! Durus 4.3 crashes on (spec 7.6, 15) dropping only the offending client.

use std::io::{Read, Write};
use std::path::PathBuf;
use std::thread::JoinHandle;
use std::time::Duration;

use durus_core::format::protocol::{encode_transaction, PROTOCOL_VERSION};
use durus_core::format::{record, Oid};
use durus_core::storage::address::{Address, Stream};
use durus_core::storage::{Server, ServerHandle, ServerOptions};
use durus_core::{FileStorage, FileStorageOptions, Storage};

/// A server on a fresh file (port 0 or a unix socket), run on a thread.
struct Running {
    address: Address,
    handle: ServerHandle,
    thread: Option<JoinHandle<durus_core::Result<()>>>,
    path: PathBuf,
    _dir: tempfile::TempDir,
}

impl Running {
    fn start(opts: ServerOptions) -> Running {
        Self::start_on(opts, false)
    }

    fn start_on(opts: ServerOptions, unix: bool) -> Running {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("served.durus");
        let storage = FileStorage::open(&path).unwrap();
        let address = if unix {
            Address::Unix(dir.path().join("durus.sock"))
        } else {
            "127.0.0.1:0".parse().unwrap()
        };
        let server = Server::bind(storage, &address, opts).unwrap();
        let address = server.address().clone();
        let handle = server.handle();
        let thread = Some(std::thread::spawn(move || server.run()));
        Running {
            address,
            handle,
            thread,
            path,
            _dir: dir,
        }
    }

    fn client(&self) -> Client {
        let mut c = Client(self.address.connect().unwrap());
        c.0.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        c.send(b"V");
        c.send(&PROTOCOL_VERSION.to_be_bytes());
        assert_eq!(c.u32(), 1);
        c
    }

    /// Stops the server and opens its file read-only.
    fn stop(mut self) -> FileStorage {
        self.handle.stop();
        self.thread.take().unwrap().join().unwrap().unwrap();
        FileStorageOptions::new()
            .readonly(true)
            .open(&self.path)
            .unwrap()
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.handle.stop();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A raw protocol-1 client.
struct Client(Stream);

impl Client {
    fn send(&mut self, bytes: &[u8]) {
        self.0.write_all(bytes).unwrap();
    }
    fn bytes(&mut self, n: usize) -> Vec<u8> {
        let mut b = vec![0; n];
        self.0.read_exact(&mut b).unwrap();
        b
    }
    fn u32(&mut self) -> u32 {
        u32::from_be_bytes(self.bytes(4).try_into().unwrap())
    }
    fn oids(&mut self, n: u8) -> Vec<Oid> {
        self.send(&[b'M', n]);
        (0..n)
            .map(|_| Oid::from_slice(&self.bytes(8)).unwrap())
            .collect()
    }
    /// `L`: the record, or the status byte K / I.
    fn load(&mut self, oid: Oid) -> Result<Vec<u8>, u8> {
        self.send(b"L");
        self.send(&oid.to_bytes());
        match self.bytes(1)[0] {
            b'O' => {
                let n = self.u32() as usize;
                Ok(self.bytes(n))
            }
            status => Err(status),
        }
    }
    /// `C` with `records`: the invalidations received, then the status.
    fn commit(&mut self, records: &[Vec<u8>]) -> (Vec<Oid>, u8) {
        let invalid = self.begin_commit();
        let data = encode_transaction(records.iter().map(Vec::as_slice)).unwrap();
        self.send(&(data.len() as u32).to_be_bytes());
        self.send(&data);
        (invalid, self.bytes(1)[0])
    }
    fn begin_commit(&mut self) -> Vec<Oid> {
        self.send(b"C");
        let n = self.u32();
        (0..n)
            .map(|_| Oid::from_slice(&self.bytes(8)).unwrap())
            .collect()
    }
    fn sync(&mut self) -> Vec<Oid> {
        self.send(b"S");
        let n = self.u32();
        (0..n)
            .map(|_| Oid::from_slice(&self.bytes(8)).unwrap())
            .collect()
    }
    /// True once the server has closed the connection.
    fn is_dropped(&mut self) -> bool {
        let mut b = [0; 1];
        matches!(self.0.read(&mut b), Ok(0) | Err(_))
    }
}

fn rec(oid: Oid, body: &str, refs: &[Oid]) -> Vec<u8> {
    record::encode(oid, body.as_bytes(), refs).unwrap()
}

/// A database with a root (oid 0) that refers to oid 1.
fn with_root(server: &Running) -> Client {
    let mut c = server.client();
    let oids = c.oids(2);
    assert_eq!(oids, [Oid(0), Oid(1)]);
    let (invalid, status) = c.commit(&[rec(Oid(0), "root", &[Oid(1)]), rec(Oid(1), "one", &[])]);
    assert_eq!((invalid, status), (vec![], b'O'));
    c
}

#[test]
fn a_commit_is_seen_by_others_as_an_invalidation_and_a_new_state() {
    // Spec 7.4, 7.5: others' invalid sets get the committed oids; an
    // invalid oid loads as I until the client syncs.
    for unix in [false, true] {
        let server = Running::start_on(ServerOptions::default(), unix);
        let mut a = with_root(&server);
        let mut b = server.client();
        assert_eq!(b.load(Oid(1)).unwrap(), rec(Oid(1), "one", &[]));
        let (_, status) = a.commit(&[rec(Oid(1), "one v2", &[])]);
        assert_eq!(status, b'O');
        assert_eq!(
            b.load(Oid(1)),
            Err(b'I'),
            "b must not see the new state before it syncs"
        );
        assert_eq!(b.sync(), vec![Oid(1)]);
        assert_eq!(b.load(Oid(1)).unwrap(), rec(Oid(1), "one v2", &[]));
        assert_eq!(
            a.sync(),
            vec![],
            "a's own commit is not an invalidation for a"
        );
        assert_eq!(b.load(Oid(99)), Err(b'K'));
    }
}

#[test]
fn oids_handed_out_are_never_handed_to_another_client() {
    let server = Running::start(ServerOptions::default());
    let mut a = server.client();
    let mut b = server.client();
    let from_a = a.oids(32);
    let from_b = b.oids(32);
    assert!(from_a.iter().all(|o| !from_b.contains(o)));
    assert_eq!(from_a[0], Oid(0), "the first client gets the root's oid");
}

#[test]
fn the_root_oid_is_handed_out_again_when_its_taker_left_without_creating_it() {
    // Durus 4.3 never hands out oid 0 again: every later connection fails
    // its root assertion until a restart (spec 9.2).
    let server = Running::start(ServerOptions::default());
    {
        let mut a = server.client();
        assert_eq!(a.oids(1), [Oid(0)]);
    }
    let mut b = server.client();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        // a's thread notices its disconnection asynchronously.
        let got = b.oids(1);
        if got == [Oid(0)] {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "oid 0 was never handed out again"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn a_commit_of_an_oid_never_handed_to_the_client_is_refused_and_nothing_is_written() {
    let server = Running::start(ServerOptions::default());
    let mut a = with_root(&server);
    let mut b = server.client();
    let mine = b.oids(1)[0];
    // a writes b's oid (Durus only checks this one), then an oid nobody got.
    for oid in [mine, Oid(5000)] {
        let mut a2 = server.client();
        a2.begin_commit();
        let data = encode_transaction([
            rec(Oid(0), "evil root", &[]).as_slice(),
            rec(oid, "x", &[]).as_slice(),
        ])
        .unwrap();
        a2.send(&(data.len() as u32).to_be_bytes());
        a2.send(&data);
        assert!(a2.is_dropped(), "oid {oid}");
    }
    // Everyone else is served on, and nothing of those commits was written.
    assert_eq!(a.load(Oid(0)).unwrap(), rec(Oid(0), "root", &[Oid(1)]));
    let (_, status) = b.commit(&[rec(mine, "b's", &[])]);
    assert_eq!(status, b'O');
    let mut file = server.stop();
    assert_eq!(file.load(Oid(0)).unwrap(), rec(Oid(0), "root", &[Oid(1)]));
    assert!(file.load(Oid(5000)).is_err());
}

#[test]
fn bad_input_drops_only_the_offending_client() {
    let server = Running::start(ServerOptions::default());
    let mut good = with_root(&server);
    let valid = encode_transaction([rec(Oid(1), "v", &[]).as_slice()]).unwrap();
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("an unknown command byte", b"Z".to_vec()),
        ("garbage", b"\x00\xff\x13garbage".to_vec()),
        (
            "a protocol version other than 1",
            [b"V".as_slice(), &2u32.to_be_bytes()].concat(),
        ),
        (
            "a bulk load claiming 4 billion oids",
            [b"B".as_slice(), &u32::MAX.to_be_bytes()].concat(),
        ),
        (
            "a commit whose length claims 4 GiB",
            [
                b"C".as_slice(),
                &u32::MAX.to_be_bytes(),
                b"only a few bytes",
            ]
            .concat(),
        ),
        (
            "transaction entries that do not add up",
            [
                b"C".as_slice(),
                &(valid.len() as u32 + 3).to_be_bytes(),
                &valid,
                b"xyz",
            ]
            .concat(),
        ),
        ("a record whose embedded oid differs from its entry's", {
            let mut bad = valid.clone();
            bad[4..12].copy_from_slice(&Oid(0).to_bytes());
            [b"C".as_slice(), &(bad.len() as u32).to_be_bytes(), &bad].concat()
        }),
        ("malformed refs", {
            let mut r = rec(Oid(1), "v", &[Oid(0)]);
            r.pop(); // refs no longer a whole number of oids
            let data = [
                &(8 + r.len() as u32).to_be_bytes()[..],
                &Oid(1).to_bytes(),
                &r,
            ]
            .concat();
            [b"C".as_slice(), &(data.len() as u32).to_be_bytes(), &data].concat()
        }),
    ];
    for (what, bytes) in cases {
        let mut bad = Client(server.address.connect().unwrap());
        bad.0
            .set_read_timeout(Some(Duration::from_secs(20)))
            .unwrap();
        bad.send(&bytes);
        // Read whatever the server answered until it hangs up.
        let mut sink = Vec::new();
        let _ = bad.0.read_to_end(&mut sink);
        assert!(sink.len() <= 8, "{what}: unexpected reply {sink:?}");
        assert_eq!(
            good.load(Oid(1)).unwrap(),
            rec(Oid(1), "one", &[]),
            "after {what}"
        );
    }
    let mut file = server.stop();
    assert_eq!(file.load(Oid(1)).unwrap(), rec(Oid(1), "one", &[]));
}

#[test]
fn a_truncated_commit_writes_nothing_and_others_commit_after_it() {
    let server = Running::start(ServerOptions::default());
    let mut a = with_root(&server);
    {
        let mut dying = server.client();
        dying.begin_commit();
        let data = encode_transaction([rec(Oid(1), "half", &[]).as_slice()]).unwrap();
        dying.send(&(data.len() as u32).to_be_bytes());
        dying.send(&data[..data.len() / 2]);
        // Killed mid-commit: the socket closes with half the data sent.
    }
    let (_, status) = a.commit(&[rec(Oid(1), "whole", &[])]);
    assert_eq!(status, b'O');
    let mut file = server.stop();
    assert_eq!(file.load(Oid(1)).unwrap(), rec(Oid(1), "whole", &[]));
}

#[test]
fn a_client_stalled_inside_a_commit_stalls_nobody_and_is_dropped_after_the_timeout() {
    let opts = ServerOptions {
        command_timeout: Duration::from_millis(300),
        ..ServerOptions::default()
    };
    let server = Running::start(opts);
    let mut a = with_root(&server);
    let mut stalled = server.client();
    stalled.begin_commit();
    stalled.send(&100u32.to_be_bytes()); // then nothing
                                         // Loads and syncs of others are served while it holds the commit.
    let mut b = server.client();
    assert_eq!(b.load(Oid(0)).unwrap(), rec(Oid(0), "root", &[Oid(1)]));
    assert_eq!(b.sync(), vec![]);
    // A commit waits for the stalled one to be dropped, then goes through.
    let (_, status) = a.commit(&[rec(Oid(1), "after the stall", &[])]);
    assert_eq!(status, b'O');
    assert!(stalled.is_dropped());
    let mut file = server.stop();
    assert_eq!(
        file.load(Oid(1)).unwrap(),
        rec(Oid(1), "after the stall", &[])
    );
}

#[test]
fn a_readonly_server_serves_loads_and_refuses_commits_new_oids_and_packs() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ro.durus");
    {
        let mut s = FileStorage::open(&path).unwrap();
        s.new_oid().unwrap();
        durus_core::StorageExt::commit_records(&mut s, [rec(Oid(0), "root", &[])]).unwrap();
    }
    let storage = FileStorageOptions::new()
        .readonly(true)
        .open(&path)
        .unwrap();
    let opts = ServerOptions {
        readonly: true,
        ..ServerOptions::default()
    };
    let server = Server::bind(storage, &"127.0.0.1:0".parse().unwrap(), opts).unwrap();
    let address = server.address().clone();
    let handle = server.handle();
    let thread = std::thread::spawn(move || server.run());
    let connect = || {
        let c = Client(address.connect().unwrap());
        c.0.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        c
    };
    let mut reader = connect();
    assert_eq!(reader.load(Oid(0)).unwrap(), rec(Oid(0), "root", &[]));
    let mut writer = connect();
    writer.begin_commit();
    let data = encode_transaction([rec(Oid(0), "changed", &[]).as_slice()]).unwrap();
    writer.send(&(data.len() as u32).to_be_bytes());
    writer.send(&data);
    assert!(writer.is_dropped());
    let mut asker = connect();
    asker.send(&[b'M', 1]);
    assert!(asker.is_dropped());
    let mut packer = connect();
    packer.send(b"P");
    assert!(packer.is_dropped(), "a pack is a write too");
    assert_eq!(reader.load(Oid(0)).unwrap(), rec(Oid(0), "root", &[]));
    handle.stop();
    thread.join().unwrap().unwrap();
    assert_eq!(
        FileStorage::open(&path).unwrap().load(Oid(0)).unwrap(),
        rec(Oid(0), "root", &[])
    );
}

#[test]
fn the_quit_command_stops_the_server_after_closing_the_storage() {
    let server = Running::start(ServerOptions::default());
    let mut a = with_root(&server);
    a.send(b"Q");
    assert!(a.is_dropped());
    let mut s = server;
    let thread = s.thread.take().unwrap();
    thread.join().unwrap().unwrap();
    // The file is closed: a writer can take the lock.
    let mut file = FileStorage::open(&s.path).unwrap();
    assert_eq!(file.load(Oid(1)).unwrap(), rec(Oid(1), "one", &[]));
}

#[test]
fn clients_beyond_the_limit_are_disconnected_and_served_once_one_leaves() {
    let server = Running::start(ServerOptions {
        max_clients: 2,
        ..ServerOptions::default()
    });
    // A handshake, or None if the server closed the connection instead.
    let handshake = || {
        let mut c = Client(server.address.connect().unwrap());
        c.0.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        c.send(b"V");
        c.send(&PROTOCOL_VERSION.to_be_bytes());
        let mut answer = [0; 4];
        c.0.read_exact(&mut answer).ok()?;
        Some((u32::from_be_bytes(answer), c))
    };
    let (one, a) = handshake().expect("the first client is served");
    let (two, _b) = handshake().expect("the second client is served");
    assert_eq!((one, two), (1, 1));
    assert!(handshake().is_none(), "a third client is one too many");

    drop(a);
    // Served again once the server has seen the first client leave.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        if let Some((version, mut c)) = handshake() {
            assert_eq!(version, 1);
            assert_eq!(c.oids(1).len(), 1);
            break;
        }
        assert!(std::time::Instant::now() < deadline, "never served again");
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn a_pack_request_removes_unreachable_records_and_invalidates_them() {
    let server = Running::start(ServerOptions::default());
    let mut a = with_root(&server);
    let mut b = server.client();
    // Oid 1 becomes garbage.
    let (_, status) = a.commit(&[rec(Oid(0), "root without refs", &[])]);
    assert_eq!(status, b'O');
    assert_eq!(b.sync(), vec![Oid(0)]);
    a.send(b"P");
    assert_eq!(a.bytes(1), b"O");
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let mut seen = Vec::new();
    while !seen.contains(&Oid(1)) {
        assert!(
            std::time::Instant::now() < deadline,
            "pack removal never reported"
        );
        seen.extend(b.sync());
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(b.load(Oid(1)), Err(b'K'));
}

#[test]
fn commits_go_on_while_packs_run_and_none_is_lost() {
    let server = Running::start(ServerOptions::default());
    let mut a = with_root(&server);
    let mut b = server.client();
    let mut garbage = Vec::new();
    for i in 0..200u32 {
        let oid = a.oids(1)[0];
        // Each new object is garbage as soon as it is written: packs have
        // something to remove while the root and oid 1 keep changing.
        let (_, status) = a.commit(&[rec(Oid(1), &format!("v{i}"), &[]), rec(oid, "garbage", &[])]);
        assert_eq!(status, b'O', "commit {i}");
        garbage.push(oid);
        if i % 20 == 0 {
            b.send(b"P");
            assert_eq!(b.bytes(1), b"O");
        }
    }
    // b's loads are answered throughout; its sync reports what changed.
    assert!(b.sync().contains(&Oid(1)));
    assert_eq!(b.load(Oid(1)).unwrap(), rec(Oid(1), "v199", &[]));
    let mut file = server.stop();
    assert_eq!(file.load(Oid(1)).unwrap(), rec(Oid(1), "v199", &[]));
    assert_eq!(file.load(Oid(0)).unwrap(), rec(Oid(0), "root", &[Oid(1)]));
}

#[test]
fn a_client_process_killed_mid_commit_writes_nothing_and_the_others_go_on() {
    let server = Running::start(ServerOptions::default());
    let mut a = with_root(&server);
    let Address::Tcp { port, .. } = &server.address else {
        unreachable!()
    };
    // A real process (bash and its /dev/tcp) sends C, a length of 64 and
    // 10 bytes of data, says so, and waits to be killed.
    let script = format!(
        "exec 3<>/dev/tcp/127.0.0.1/{port}; printf 'C\\000\\000\\000\\100' >&3; \
         head -c 4 <&3 >/dev/null; printf '0123456789' >&3; echo sent; sleep 60"
    );
    let mut child = std::process::Command::new("bash")
        .args(["-c", &script])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(child.stdout.as_mut().unwrap()),
        &mut line,
    )
    .unwrap();
    assert_eq!(line.trim(), "sent");
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    let (_, status) = a.commit(&[rec(Oid(1), "after the kill", &[])]);
    assert_eq!(status, b'O');
    let mut file = server.stop();
    assert_eq!(
        file.load(Oid(1)).unwrap(),
        rec(Oid(1), "after the kill", &[])
    );
    assert_eq!(
        file.stats().unwrap().transactions,
        2,
        "the killed commit left no transaction"
    );
}

#[test]
fn gcbytes_packs_automatically_once_enough_was_committed() {
    let opts = ServerOptions {
        gcbytes: 2_000,
        ..ServerOptions::default()
    };
    let server = Running::start(opts);
    let mut a = with_root(&server);
    // Oid 1 becomes garbage; then enough bytes for an automatic pack.
    let (_, status) = a.commit(&[rec(Oid(0), "root alone", &[])]);
    assert_eq!(status, b'O');
    let filler = "x".repeat(500);
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let mut removed = false;
    while !removed {
        assert!(
            std::time::Instant::now() < deadline,
            "no automatic pack removed oid 1"
        );
        let (invalid, status) = a.commit(&[rec(Oid(0), &filler, &[])]);
        assert_eq!(status, b'O');
        removed = invalid.contains(&Oid(1)) || a.sync().contains(&Oid(1));
    }
    assert_eq!(a.load(Oid(1)), Err(b'K'));
}

#[test]
fn concurrent_durable_commits_share_fsyncs_and_all_survive() {
    // Group commit (issue 6): with fsync on, commits written while
    // another's fsync runs share the next one; each client hears "O" only
    // once its transaction is durable. (Which commits share is timing;
    // the sharing itself is pinned by group_commit's unit tests.)
    const CLIENTS: u64 = 4;
    const EACH: u64 = 25;
    let server = Running::start(ServerOptions::default());
    let _root = with_root(&server);
    let threads: Vec<_> = (0..CLIENTS)
        .map(|_| {
            let mut c = server.client();
            let oid = c.oids(1)[0];
            std::thread::spawn(move || {
                for n in 0..EACH {
                    let (_, status) = c.commit(&[rec(oid, &format!("n={n}"), &[])]);
                    assert_eq!(status, b'O');
                }
                oid
            })
        })
        .collect();
    let oids: Vec<Oid> = threads.into_iter().map(|t| t.join().unwrap()).collect();
    let syncs = server.handle.group_syncs().expect("group commit is on");
    let commits = CLIENTS * EACH + 1;
    assert!(
        (1..=commits).contains(&syncs),
        "{syncs} fsyncs for {commits} commits"
    );
    eprintln!("{syncs} fsyncs for {commits} commits");
    let mut storage = server.stop();
    for oid in oids {
        let record = storage.load(oid).unwrap();
        assert_eq!(record, rec(oid, &format!("n={}", EACH - 1), &[]));
    }
}

#[test]
fn a_server_without_fsync_has_no_group_commit() {
    let dir = tempfile::tempdir().unwrap();
    let storage = FileStorageOptions::new()
        .fsync(false)
        .open(dir.path().join("f.durus"))
        .unwrap();
    let server = Server::bind(
        storage,
        &"127.0.0.1:0".parse().unwrap(),
        ServerOptions::default(),
    )
    .unwrap();
    assert_eq!(server.handle().group_syncs(), None);
}
