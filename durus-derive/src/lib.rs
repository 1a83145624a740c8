//! `#[derive(Persistent)]` for durus for Rust.
//!
//! Empty until the object layer lands: the derive needs `PRef`, the
//! connection and the type registry, which live in `durus-core`'s object
//! layer.
