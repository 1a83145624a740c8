//! The object cell: one per object in memory, shared by its handles.

use std::cell::{Cell, RefCell};
use std::rc::{Rc, Weak};

use crate::format::Oid;
use crate::object::connection::ConnInner;
use crate::object::persistent::State;

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

pub(crate) struct ObjectCell {
    pub(crate) oid: Cell<Option<Oid>>,
    /// The connection that stores it; dangling for a never-stored object.
    pub(crate) conn: RefCell<Weak<ConnInner>>,
    pub(crate) status: Cell<Status>,
    /// The connection's transaction serial at the last access.
    pub(crate) serial: Cell<u64>,
    /// The class name the record (or the creating type) gives.
    pub(crate) class: RefCell<Rc<str>>,
    /// The state; `None` exactly when a ghost.
    pub(crate) state: RefCell<Option<Box<dyn State>>>,
}

impl ObjectCell {
    /// A new, never-stored object.
    pub(crate) fn new_unsaved(state: Box<dyn State>) -> Rc<ObjectCell> {
        Rc::new(ObjectCell {
            oid: Cell::new(None),
            conn: RefCell::new(Weak::new()),
            status: Cell::new(Status::Unsaved),
            serial: Cell::new(0),
            class: RefCell::new(Rc::from(state.class())),
            state: RefCell::new(Some(state)),
        })
    }

    /// A ghost of a stored object.
    pub(crate) fn new_ghost(oid: Oid, conn: &Rc<ConnInner>, class: &str) -> Rc<ObjectCell> {
        Rc::new(ObjectCell {
            oid: Cell::new(Some(oid)),
            conn: RefCell::new(Rc::downgrade(conn)),
            status: Cell::new(Status::Ghost),
            serial: Cell::new(0),
            class: RefCell::new(Rc::from(class)),
            state: RefCell::new(None),
        })
    }

    pub(crate) fn connection(&self) -> Option<Rc<ConnInner>> {
        self.conn.borrow().upgrade()
    }

    pub(crate) fn class_name(&self) -> Rc<str> {
        self.class.borrow().clone()
    }

    /// Drops the state (the cell becomes a ghost). A state borrowed at the
    /// moment (a `read` closure that called back into the connection) is
    /// left alone.
    pub(crate) fn ghostify(&self) {
        if let Ok(mut state) = self.state.try_borrow_mut() {
            *state = None;
            self.status.set(Status::Ghost);
        }
    }

    /// Forgets the oid and connection (a new object whose commit failed).
    pub(crate) fn unstore(&self) {
        self.oid.set(None);
        *self.conn.borrow_mut() = Weak::new();
        self.status.set(Status::Unsaved);
    }
}
