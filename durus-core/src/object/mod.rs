//! The object layer: persistent Rust values, their handles, the cache and
//! the connection that loads and commits them (Durus spec section 9).
//!
//! A value of a [`Persistent`] type lives in an object cell, shared by every
//! [`PRef`] handle to it. A cell is *unsaved* (new or changed), *saved*
//! (loaded, unchanged) or a *ghost* (known by oid, state not loaded);
//! handles load ghosts on first access. Everything here is `Rc`-based and
//! `!Send`: one connection per thread.

mod cache;
mod cbor;
mod cell;
mod class;
mod codec;
mod connection;
mod crawler;
mod database;
mod persistent;
mod pobject;
mod pref;
pub mod registry;
mod slot;

pub use connection::{Connection, DEFAULT_CACHE_SIZE, TRANSACT_ATTEMPTS};
pub use crawler::Crawler;
pub use database::Database;
pub use persistent::Persistent;
pub use pobject::PObject;
pub use pref::PRef;
