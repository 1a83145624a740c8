//! Opening a SHELF-1 file made of arbitrary bytes (storage/file.rs): an
//! error, or a storage whose every stored oid loads or fails cleanly,
//! read-only and with repair; never a panic.
#![no_main]

use std::io;
use std::path::PathBuf;

use durus_core::storage::file_io::FileIo;
use durus_core::{FileStorage, FileStorageOptions, Storage};
use libfuzzer_sys::fuzz_target;

/// The fuzzer's bytes as a file.
struct MemFile(Vec<u8>);

impl FileIo for MemFile {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        let from = (offset as usize).min(self.0.len());
        let n = buf.len().min(self.0.len() - from);
        buf[..n].copy_from_slice(&self.0[from..from + n]);
        Ok(n)
    }
    fn write_all_at(&mut self, buf: &[u8], offset: u64) -> io::Result<()> {
        let end = offset as usize + buf.len();
        if self.0.len() < end {
            self.0.resize(end, 0);
        }
        self.0[offset as usize..end].copy_from_slice(buf);
        Ok(())
    }
    fn size(&self) -> io::Result<u64> {
        Ok(self.0.len() as u64)
    }
    fn set_len(&mut self, len: u64) -> io::Result<()> {
        self.0.resize(len as usize, 0);
        Ok(())
    }
    fn sync_data(&mut self) -> io::Result<()> {
        Ok(())
    }
}

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
