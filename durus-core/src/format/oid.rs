//! Object identifiers.

use std::collections::HashMap;
use std::fmt;
use std::hash::{BuildHasherDefault, Hasher};

use crate::error::{Error, Result};

/// An object identifier: a u64, always written as 8 bytes big-endian on
/// disk and on the wire. The root object is [`Oid::ROOT`] (0).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct Oid(pub u64);

impl Oid {
    /// The root object's oid.
    pub const ROOT: Oid = Oid(0);

    /// The 8-byte big-endian encoding.
    pub fn to_bytes(self) -> [u8; 8] {
        self.0.to_be_bytes()
    }

    /// Decodes 8 big-endian bytes.
    pub fn from_bytes(bytes: [u8; 8]) -> Oid {
        Oid(u64::from_be_bytes(bytes))
    }

    /// Decodes a slice that must be exactly 8 bytes long.
    pub fn from_slice(bytes: &[u8]) -> Result<Oid> {
        let arr: [u8; 8] = bytes.try_into().map_err(|_| {
            Error::malformed(None, format!("an oid is 8 bytes, got {}", bytes.len()))
        })?;
        Ok(Oid::from_bytes(arr))
    }

    /// The integer value.
    pub fn get(self) -> u64 {
        self.0
    }
}

impl From<u64> for Oid {
    fn from(n: u64) -> Oid {
        Oid(n)
    }
}

impl fmt::Display for Oid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl fmt::Debug for Oid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Oid({})", self.0)
    }
}

/// A hasher for in-memory maps keyed by oid. Oids are dense small
/// integers, and objects stored together have neighbouring oids, so the
/// hash keeps an oid's low bits (hashbrown's bucket index): neighbours
/// share cache lines, and a scan of a million objects does not miss the
/// CPU cache on every lookup. The top 7 bits (hashbrown's tag) come from
/// one multiplication (Fibonacci hashing), and bits above 2^24 are folded
/// into the low ones, so strided or huge oids still spread. SipHash's
/// protection against chosen keys buys nothing here: the keys are the
/// database's own oids.
#[derive(Default, Clone, Copy)]
pub struct OidHasher(u64);

impl Hasher for OidHasher {
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.write_u64(self.0.rotate_left(8) ^ u64::from(b));
        }
    }

    fn write_u64(&mut self, n: u64) {
        const K: u64 = 0x9E37_79B9_7F4A_7C15;
        const TAG: u64 = 0x7F << 57;
        let low = n ^ (n >> 24).wrapping_mul(K);
        self.0 = (low & !TAG) | (n.wrapping_mul(K) & TAG);
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

/// A `HashMap` keyed by oid with [`OidHasher`].
pub type OidHashMap<V> = HashMap<Oid, V, BuildHasherDefault<OidHasher>>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn oid_is_eight_bytes_big_endian() {
        assert_eq!(Oid(1).to_bytes(), [0, 0, 0, 0, 0, 0, 0, 1]);
        assert_eq!(Oid(0x0102).to_bytes(), [0, 0, 0, 0, 0, 0, 1, 2]);
        assert_eq!(Oid::from_bytes([0, 0, 0, 0, 0, 0, 1, 2]), Oid(258));
    }

    #[test]
    fn oid_from_slice_rejects_wrong_length() {
        assert!(Oid::from_slice(&[0; 4]).is_err());
        assert!(Oid::from_slice(&[0; 9]).is_err());
        assert_eq!(Oid::from_slice(&[0xff; 8]).unwrap(), Oid(u64::MAX));
    }

    #[test]
    fn oid_hasher_spreads_dense_oids_over_the_top_bits() {
        use std::hash::{BuildHasher, BuildHasherDefault};
        let build = BuildHasherDefault::<OidHasher>::default();
        let tops: std::collections::HashSet<u64> =
            (0..128).map(|n| build.hash_one(Oid(n)) >> 57).collect();
        // hashbrown keeps the top 7 bits as a tag: dense oids must not share one.
        assert!(tops.len() > 64, "only {} distinct tags", tops.len());
        // ... and indexes buckets by the low bits: neighbours stay neighbours.
        assert!((0..1u64 << 20).all(|n| build.hash_one(Oid(n)) & 0xF_FFFF == n));
        // Oids apart by a large power of two land in different buckets.
        let low: std::collections::HashSet<u64> = (0..1024u64)
            .map(|n| build.hash_one(Oid(n << 30)) & 0xF_FFFF)
            .collect();
        assert!(low.len() > 1000, "{} distinct bucket bits", low.len());
    }
}
