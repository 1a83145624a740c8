//! The record codec (format/record.rs) on arbitrary bytes: an error or a
//! record whose parts re-encode to the same bytes, never a panic.
#![no_main]

use durus_core::format::{record, Record};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(rec) = Record::decode(data) {
        let refs: Vec<_> = rec.refs().collect();
        // A decoded record is well formed: encoding its parts succeeds
        // unless its refs break the encoder's rules (sorted, unique, not
        // itself), which decode accepts from files written by others.
        if let Ok(again) = record::encode(rec.oid, rec.data, &refs) {
            let back = Record::decode(&again).expect("an encoded record decodes");
            assert_eq!(back.oid, rec.oid);
            assert_eq!(back.data, rec.data);
        }
    }
});
