//! Pure byte handling, no policy: oids, the Durus record, the class-name
//! header of record data, and the SHELF-1 file layout.

pub mod class_name;
pub mod oid;
pub mod protocol;
pub mod record;
pub mod shelf;

pub use class_name::ClassName;
pub use oid::Oid;
pub use record::Record;
