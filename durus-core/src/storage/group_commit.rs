//! Group commit: committers that write while another one's fsync runs
//! share the next fsync instead of queueing one each.
//!
//! The server writes a transaction under its commit lock, releases the
//! lock, and only then waits for the transaction to be durable before it
//! answers the client. Whoever finds no fsync running starts one covering
//! everything written so far; those who wrote meanwhile wait for it to end
//! and, if it did not cover them, one of them starts the next. Four
//! clients committing at once thus pay about two fsyncs per round, not
//! four (docs/BENCHMARKS.md).
//!
//! A client hears that its commit succeeded only once it is durable.
//! Other clients can load a transaction between its write and its fsync
//! (it is in the file and the index): if the machine then loses power,
//! what they read is gone, but so is anything they committed after it,
//! because their transactions come later in the same file and no fsync
//! can make them durable without it.

use std::sync::{Arc, Condvar, Mutex, MutexGuard};

use crate::error::{Error, Result};

/// Makes everything written to a storage so far durable, without the
/// storage itself (so it can run while others use the storage).
pub trait Syncer: Send + Sync {
    fn sync(&self) -> Result<()>;
}

/// Coordinates the fsyncs of concurrent committers over one [`Syncer`].
pub(crate) struct GroupCommit {
    syncer: Arc<dyn Syncer>,
    state: Mutex<State>,
    synced: Condvar,
}

#[derive(Default)]
struct State {
    /// Transactions written (numbered from 1).
    written: u64,
    /// Transactions known durable.
    durable: u64,
    syncing: bool,
    /// Set by a failed fsync: nothing written since can be vouched for.
    failed: Option<String>,
    /// fsyncs run, for tests and logs.
    syncs: u64,
}

impl GroupCommit {
    pub(crate) fn new(syncer: Arc<dyn Syncer>) -> Self {
        GroupCommit {
            syncer,
            state: Mutex::new(State::default()),
            synced: Condvar::new(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Notes a transaction written (call in write order, under the lock
    /// that orders the writes); returns its number for [`Self::wait`].
    pub(crate) fn written(&self) -> u64 {
        let mut state = self.lock();
        state.written += 1;
        state.written
    }

    /// Returns once transaction `n` is durable, syncing if no one else is.
    pub(crate) fn wait(&self, n: u64) -> Result<()> {
        let mut state = self.lock();
        loop {
            if let Some(why) = &state.failed {
                return Err(Error::Poisoned(why.clone()));
            }
            if state.durable >= n {
                return Ok(());
            }
            if state.syncing {
                state = self.synced.wait(state).unwrap_or_else(|p| p.into_inner());
                continue;
            }
            let target = state.written;
            state.syncing = true;
            drop(state);
            let result = self.syncer.sync();
            state = self.lock();
            state.syncing = false;
            state.syncs += 1;
            match result {
                Ok(()) => state.durable = state.durable.max(target),
                Err(e) => state.failed = Some(format!("fsync failed: {e}")),
            }
            self.synced.notify_all();
        }
    }

    /// fsyncs run so far.
    pub(crate) fn syncs(&self) -> u64 {
        self.lock().syncs
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::mpsc;
    use std::thread;
    use std::time::Duration;

    /// A syncer whose fsyncs block until the test lets each one finish.
    struct Gated {
        started: Mutex<mpsc::Sender<()>>,
        release: Mutex<mpsc::Receiver<bool>>,
        calls: AtomicU64,
    }

    impl Syncer for Gated {
        fn sync(&self) -> Result<()> {
            self.calls.fetch_add(1, Ordering::SeqCst);
            self.started.lock().unwrap().send(()).unwrap();
            let ok = self.release.lock().unwrap().recv().unwrap();
            if ok {
                Ok(())
            } else {
                Err(Error::InvalidState("disk gone".into()))
            }
        }
    }

    fn gated() -> (Arc<Gated>, mpsc::Receiver<()>, mpsc::Sender<bool>) {
        let (started_tx, started_rx) = mpsc::channel();
        let (release_tx, release_rx) = mpsc::channel();
        let syncer = Arc::new(Gated {
            started: Mutex::new(started_tx),
            release: Mutex::new(release_rx),
            calls: AtomicU64::new(0),
        });
        (syncer, started_rx, release_tx)
    }

    #[test]
    fn committers_that_write_during_an_fsync_share_the_next_one() {
        let (syncer, started, release) = gated();
        let group = Arc::new(GroupCommit::new(syncer.clone()));
        let first = group.written();
        let leader = {
            let group = group.clone();
            thread::spawn(move || group.wait(first))
        };
        started.recv().unwrap(); // the first fsync runs
                                 // Three more transactions are written while it runs.
        let waiters: Vec<_> = (0..3)
            .map(|_| {
                let n = group.written();
                let group = group.clone();
                thread::spawn(move || group.wait(n))
            })
            .collect();
        thread::sleep(Duration::from_millis(50)); // let them queue up
        release.send(true).unwrap();
        leader.join().unwrap().unwrap();
        started.recv().unwrap(); // one more fsync, for all three
        release.send(true).unwrap();
        for w in waiters {
            w.join().unwrap().unwrap();
        }
        assert_eq!(syncer.calls.load(Ordering::SeqCst), 2);
        assert_eq!(group.syncs(), 2);
        // Everything is durable: waiting again syncs nothing.
        group.wait(4).unwrap();
        assert_eq!(group.syncs(), 2);
    }

    #[test]
    fn a_failed_fsync_fails_its_waiters_and_every_later_commit() {
        let (syncer, started, release) = gated();
        let group = Arc::new(GroupCommit::new(syncer));
        let n = group.written();
        let waiter = {
            let group = group.clone();
            thread::spawn(move || group.wait(n))
        };
        started.recv().unwrap();
        release.send(false).unwrap();
        assert!(matches!(waiter.join().unwrap(), Err(Error::Poisoned(_))));
        let later = group.written();
        assert!(matches!(group.wait(later), Err(Error::Poisoned(_))));
    }

    #[test]
    fn a_lone_committer_syncs_once_per_transaction() {
        struct Counting(AtomicU64);
        impl Syncer for Counting {
            fn sync(&self) -> Result<()> {
                self.0.fetch_add(1, Ordering::SeqCst);
                Ok(())
            }
        }
        let syncer = Arc::new(Counting(AtomicU64::new(0)));
        let group = GroupCommit::new(syncer.clone());
        for _ in 0..5 {
            let n = group.written();
            group.wait(n).unwrap();
        }
        assert_eq!(syncer.0.load(Ordering::SeqCst), 5);
    }
}
