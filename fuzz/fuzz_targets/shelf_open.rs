//! Opening a SHELF-1 file made of arbitrary bytes (storage/file.rs): an
//! error, or a storage whose every stored oid loads or fails cleanly,
//! read-only and with repair; never a panic.
#![no_main]

use std::path::PathBuf;

use durus_core::{FileStorage, FileStorageOptions, Storage};
use durus_fuzz::MemFile;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    for opts in [
        FileStorageOptions::new().readonly(true),
        FileStorageOptions::new().repair(true).fsync(false),
    ] {
        let file = Box::new(MemFile(data.to_vec()));
        let Ok(mut storage) = FileStorage::from_file(PathBuf::from("fuzz.durus"), file, opts)
        else {
            continue;
        };
        let Ok(oids) = storage.oids() else {
            continue;
        };
        for oid in oids.into_iter().take(1000) {
            let _ = storage.load(oid);
        }
        let _ = storage.stats();
    }
});
