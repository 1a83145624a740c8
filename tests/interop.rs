//! Interop tests against the real Python Durus 4.3 (filled in below).
