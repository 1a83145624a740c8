//! Storage-level tools: census and verification. They read only record
//! frames, refs and class names, so they work on Python-written and
//! Rust-written records alike.

pub mod census;
pub mod dump;
pub mod instances;
pub mod verify;
