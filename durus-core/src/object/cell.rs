//! The object cell: one per object in memory, shared by its handles.

use std::cell::{Cell, RefCell};
use std::rc::{Rc, Weak};

use crate::format::Oid;
use crate::object::connection::ConnInner;
use crate::object::slot::Slot;

/// Durus's `_p_status` (spec 9.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Status {
    /// New, or changed since it was loaded: written by the next commit.
    Unsaved,
    /// Loaded and unchanged.
    Saved,
    /// Known by oid; the state is loaded on first access.
    Ghost,
}

/// What a connection shares with its cells (one per connection).
pub(crate) struct Link {
    pub(crate) conn: Weak<ConnInner>,
    /// The connection's transaction serial, here so that "already accessed
    /// in this transaction" is one comparison on every read, with no
    /// upgrade of `conn`.
    pub(crate) serial: Cell<u64>,
    /// Cells alive with this link: the cache's exact count, kept by the
    /// cells themselves because ghosting a container frees the cells only
    /// its state held, which nothing else would notice.
    pub(crate) live: Rc<Cell<usize>>,
}

impl Link {
    fn add(&self) {
        self.live.set(self.live.get() + 1);
    }

    fn remove(&self) {
        self.live.set(self.live.get().saturating_sub(1));
    }
}

/// `repr(C)` keeps what every read touches (status, serial, link, state)
/// together at the front: a warm read of a large object graph is bound by
/// the cache lines it touches per object.
#[repr(C)]
pub(crate) struct ObjectCell {
    pub(crate) status: Cell<Status>,
    /// Set when a pack removed the object and its oid went to a new one:
    /// this cell is no longer the connection's object for the oid.
    pub(crate) displaced: Cell<bool>,
    /// The connection's transaction serial at the last access.
    pub(crate) serial: Cell<u64>,
    /// `None` for an object never stored.
    pub(crate) link: RefCell<Option<Rc<Link>>>,
    /// The state; `None` exactly when a ghost.
    pub(crate) state: RefCell<Option<Slot>>,
    pub(crate) oid: Cell<Option<Oid>>,
    /// The class name the record (or the creating type) gives.
    pub(crate) class: Cell<&'static str>,
}

impl ObjectCell {
    /// A new, never-stored object.
    pub(crate) fn new_unsaved(state: Slot) -> Rc<ObjectCell> {
        Rc::new(ObjectCell {
            oid: Cell::new(None),
            status: Cell::new(Status::Unsaved),
            displaced: Cell::new(false),
            serial: Cell::new(0),
            link: RefCell::new(None),
            class: Cell::new(state.state().class()),
            state: RefCell::new(Some(state)),
        })
    }

    /// A ghost of a stored object.
    pub(crate) fn new_ghost(oid: Oid, link: Rc<Link>, class: &'static str) -> Rc<ObjectCell> {
        link.add();
        Rc::new(ObjectCell {
            oid: Cell::new(Some(oid)),
            status: Cell::new(Status::Ghost),
            displaced: Cell::new(false),
            serial: Cell::new(0),
            link: RefCell::new(Some(link)),
            class: Cell::new(class),
            state: RefCell::new(None),
        })
    }

    pub(crate) fn connection(&self) -> Option<Rc<ConnInner>> {
        self.link.borrow().as_ref().and_then(|l| l.conn.upgrade())
    }

    /// True unless the object is stored and has not been accessed in its
    /// connection's current transaction (the fast path of every read).
    #[inline]
    pub(crate) fn accessed(&self) -> bool {
        match &*self.link.borrow() {
            Some(link) => self.serial.get() == link.serial.get(),
            None => true,
        }
    }

    pub(crate) fn class_name(&self) -> &'static str {
        self.class.get()
    }

    /// Drops the state (the cell becomes a ghost). A state borrowed at the
    /// moment (a `read` closure that called back into the connection) is
    /// left alone, and the answer is false.
    pub(crate) fn ghostify(&self) -> bool {
        let Ok(mut state) = self.state.try_borrow_mut() else {
            return false;
        };
        *state = None;
        self.status.set(Status::Ghost);
        true
    }

    /// Joins the connection of `link` (a new object getting its oid), or
    /// leaves its connection (`None`).
    pub(crate) fn set_link(&self, link: Option<Rc<Link>>) {
        if let Some(new) = &link {
            new.add();
        }
        if let Some(old) = self.link.replace(link) {
            old.remove();
        }
    }

    /// Forgets the oid and connection (a new object whose commit failed).
    pub(crate) fn unstore(&self) {
        self.oid.set(None);
        self.set_link(None);
        self.status.set(Status::Unsaved);
    }
}

impl Drop for ObjectCell {
    fn drop(&mut self) {
        if let Some(link) = self.link.get_mut() {
            link.remove();
        }
    }
}
