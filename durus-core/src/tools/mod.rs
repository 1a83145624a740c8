//! Storage-level tools: census, verification and backup. They read only
//! record frames, refs and class names (backup: bytes), so they work on
//! Python-written and Rust-written records alike.

pub mod backup;
pub mod census;
pub mod dump;
pub mod instances;
pub mod verify;
