//! Hash maps keyed by ids the daemons hand out themselves (connection
//! tokens, dc_client's server-side uids): a multiplicative hash instead of
//! the standard library's SipHash.
//!
//! SipHash resists keys chosen by an attacker to collide; these keys are
//! never taken from the network (they are counters the process assigns), so
//! that protection buys nothing here, and on dc_client's hot path SipHash
//! was about a quarter of all user-space instructions (callgrind, issue 20).
//! A map keyed by anything a peer sends must keep the default hasher.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

/// Hashes one integer key with a single multiply by 2^64 / golden ratio
/// (Fibonacci hashing). Consecutive keys land in distinct buckets (an odd
/// multiplier is a bijection on the low bits) and the high bits, which
/// the table uses as its per-slot tag, depend on every bit of the key.
#[derive(Clone, Copy, Debug, Default)]
pub struct IdHasher(u64);

const K: u64 = 0x9E37_79B9_7F4A_7C15;

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    /// Byte keys (not used by the id maps): folded in eight bytes at a time.
    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut b = [0u8; 8];
            b[..chunk.len()].copy_from_slice(chunk);
            self.write_u64(u64::from_le_bytes(b));
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = (self.0.rotate_left(5) ^ n).wrapping_mul(K);
    }

    fn write_u32(&mut self, n: u32) {
        self.write_u64(u64::from(n));
    }
}

/// A map from self-assigned ids to `V`.
pub type IdMap<K, V> = HashMap<K, V, BuildHasherDefault<IdHasher>>;

/// An empty [`IdMap`].
pub fn new<K, V>() -> IdMap<K, V> {
    IdMap::default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::hash::BuildHasher;

    #[test]
    fn consecutive_ids_spread_over_buckets_and_tags() {
        let b = BuildHasherDefault::<IdHasher>::default();
        // 1024 consecutive ids: distinct low 10 bits (bucket of a
        // 1024-slot table) and many distinct top-7-bit tags.
        let mut low = std::collections::HashSet::new();
        let mut tags = std::collections::HashSet::new();
        for id in 5000u64..6024 {
            let h = b.hash_one(id);
            low.insert(h & 1023);
            tags.insert(h >> 57);
        }
        assert_eq!(low.len(), 1024);
        assert!(tags.len() > 100, "only {} tags", tags.len());
    }

    #[test]
    fn map_works_for_both_key_widths() {
        let mut m: IdMap<u32, u32> = new();
        for i in 0..10_000u32 {
            m.insert(i, i * 2);
        }
        assert!((0..10_000u32).all(|i| m.get(&i) == Some(&(i * 2))));
        let mut t: IdMap<u64, &str> = new();
        t.insert(u64::MAX, "max");
        t.insert(16, "first");
        assert_eq!((t[&u64::MAX], t[&16]), ("max", "first"));
    }
}
