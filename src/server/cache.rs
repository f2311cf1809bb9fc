//! The built-in session cache.
//!
//! Layout, chosen for O(1) lookups that touch as few random cache lines as
//! possible, and a small per-session footprint:
//! - a hash index: an open-addressing table (linear probing, backward-shift
//!   deletion, no tombstones) whose buckets OWN the sessions: 32 bits of the
//!   id's hash, the session's slot number and id length, and ONE boxed byte
//!   slice `id ++ data` (one heap allocation per session). A lookup reads
//!   one bucket and the session's bytes, nothing else;
//! - the hash is a keyed multiply-fold hash seeded per cache from the OS's
//!   random source, so clients cannot aim collisions;
//! - a slot per session (16 bytes: its bucket and its heap position, so
//!   both can be found from either side as they move, and its neighbours
//!   in insertion order), reused through a free list. The slots form an
//!   intrusive doubly-linked list from the oldest stored session to the
//!   newest, so the oldest is found, and any session unlinked, in O(1);
//! - an intrusive 4-ary min-heap of (expiry, slot) entries (12 bytes, the
//!   key inline so sifting reads no sessions), giving removal anywhere in
//!   O(log n). The expiry lives only there: a lookup needs it only while
//!   the heap's top says some stored session has expired.
//!
//! Expired sessions are never returned: every lookup checks the expiry, and
//! every operation first reclaims a bounded number of expired sessions from
//! the top of the heap, so memory is reclaimed without scans.
//!
//! When the cache is full an add evicts sessions that already expired
//! (from the top of the heap) and then the OLDEST STORED one (the head of
//! the insertion list), as Apache's shmcb cyclic cache does: a client that
//! fills the cache with long-lived sessions sees them age out under normal
//! traffic, instead of evicting every normal session (which evicting the
//! session closest to expiry would do). Timeouts are also clamped to
//! [`Cache::max_timeout`] (one day by default; dc_server's `-maxtimeout`),
//! so a planted session outlives normal ones by a bounded time even in a
//! cache that never fills.

use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;

use super::SessionCache;
use crate::proto::{MAX_ID_LEN, MAX_TOTAL_DATA};

/// Largest session data stored (the protocol's message limit).
pub const MAX_DATA_LEN: usize = MAX_TOTAL_DATA;

/// Default [`Cache::max_timeout`]: one day. TLS sessions are normally kept
/// for minutes to hours; a longer timeout from a client is clamped to it.
pub const DEFAULT_MAX_TIMEOUT_MS: u64 = 86_400_000;

/// Most sessions one cache holds (slot numbers have 25 bits).
pub const MAX_CAPACITY: usize = (1 << SLOT_BITS) - 1;
// dc_server's -sessions limit (10 000 000) must fit.
const _: () = assert!(MAX_CAPACITY >= 10_000_000);

/// Expired sessions reclaimed per operation at most (the rest are skipped
/// by lookups and reclaimed by later operations).
const PURGE_BATCH: usize = 64;

const NO_POS: u32 = u32::MAX;

/// Bits of a bucket's `packed` word holding the slot number; the rest hold
/// the id length (at most 64, 7 bits).
const SLOT_BITS: u32 = 25;
const SLOT_MASK: u32 = (1 << SLOT_BITS) - 1;

/// Children per heap node.
const ARITY: usize = 4;

/// A heap entry: the expiry inline (12 bytes, packed).
#[derive(Clone, Copy, Debug)]
#[repr(C, packed(4))]
struct HeapEntry {
    expiry: u64,
    slot: u32,
}

/// A hash bucket, empty when `buf` is `None` (24 bytes).
#[derive(Debug, Default)]
struct Bucket {
    /// 32 bits of the id's hash; the home bucket is derived from it.
    hash: u32,
    /// Slot number (low [`SLOT_BITS`]) and id length (the rest).
    packed: u32,
    /// The id bytes followed by the data bytes.
    buf: Option<Box<[u8]>>,
}

impl Bucket {
    fn slot(&self) -> u32 {
        self.packed & SLOT_MASK
    }
    fn id_len(&self) -> usize {
        (self.packed >> SLOT_BITS) as usize
    }
    /// The session's id and data (empty for an empty bucket).
    fn parts(&self) -> (&[u8], &[u8]) {
        match &self.buf {
            Some(b) => b.split_at(self.id_len()),
            None => (&[], &[]),
        }
    }
}

/// Where a stored session's bucket and heap entry are, and its neighbours
/// in insertion order.
#[derive(Clone, Copy, Debug)]
struct Slot {
    bucket: u32,
    /// `NO_POS` for a free slot.
    heap_pos: u32,
    /// The session stored just before this one (`NO_POS`: this is the oldest).
    older: u32,
    /// The session stored just after this one (`NO_POS`: this is the newest).
    newer: u32,
}

/// A keyed hash for session ids (at most 64 bytes): 16 bytes per round
/// through a 64x64->128 multiply folded to 64 bits, keyed on both inputs.
#[derive(Clone, Copy, Debug)]
struct IdHasher {
    k0: u64,
    k1: u64,
    k2: u64,
}

#[inline]
fn fold_mul(a: u64, b: u64) -> u64 {
    let r = (a as u128).wrapping_mul(b as u128);
    (r as u64) ^ ((r >> 64) as u64)
}

#[inline]
fn read_u64(b: &[u8]) -> u64 {
    let mut a = [0u8; 8];
    a[..b.len()].copy_from_slice(b);
    u64::from_le_bytes(a)
}

impl IdHasher {
    fn random() -> IdHasher {
        // RandomState draws its keys from the OS's random source.
        let s = RandomState::new();
        IdHasher {
            k0: s.hash_one(0x6463_7273u64),
            k1: s.hash_one(0x7365_7373u64) | 1,
            k2: s.hash_one(0x6b65_7973u64) | 1,
        }
    }

    fn hash(&self, id: &[u8]) -> u64 {
        let mut h = self.k0 ^ (id.len() as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        let mut chunks = id.chunks(16);
        for c in &mut chunks {
            let (a, b) = if c.len() > 8 {
                (read_u64(&c[..8]), read_u64(&c[8..]))
            } else {
                (read_u64(c), 0)
            };
            h = fold_mul(a ^ self.k1 ^ h, b ^ self.k2);
        }
        fold_mul(h ^ self.k2, self.k1.rotate_left(17))
    }

    /// The 32 bits of the hash a bucket keeps.
    fn hash32(&self, id: &[u8]) -> u32 {
        (self.hash(id) >> 32) as u32
    }
}

/// The built-in cache: at most `capacity` sessions.
#[derive(Debug)]
pub struct Cache {
    capacity: usize,
    slots: Vec<Slot>,
    free: Vec<u32>,
    table: Vec<Bucket>,
    mask: usize,
    heap: Vec<HeapEntry>,
    hasher: IdHasher,
    /// Head (oldest stored) and tail (newest) of the insertion list.
    oldest: u32,
    newest: u32,
    max_timeout_ms: u64,
    /// Live sessions removed to make room for new ones (for metrics).
    evictions: u64,
    /// Sessions reclaimed once expired (for metrics).
    expirations: u64,
    /// Id and data bytes of the sessions held.
    bytes: u64,
}

/// What a lookup found.
enum Found {
    /// The bucket of a live session.
    Live(usize),
    Missing,
}

fn empty_table(n: usize) -> Vec<Bucket> {
    let mut t = Vec::with_capacity(n);
    t.resize_with(n, Bucket::default);
    t
}

impl Cache {
    /// An empty cache holding at most `capacity` sessions (at least 1, at
    /// most [`MAX_CAPACITY`]).
    pub fn new(capacity: usize) -> Cache {
        let capacity = capacity.clamp(1, MAX_CAPACITY);
        let buckets = 16usize;
        Cache {
            capacity,
            slots: Vec::new(),
            free: Vec::new(),
            table: empty_table(buckets),
            mask: buckets - 1,
            heap: Vec::new(),
            hasher: IdHasher::random(),
            oldest: NO_POS,
            newest: NO_POS,
            max_timeout_ms: DEFAULT_MAX_TIMEOUT_MS,
            evictions: 0,
            expirations: 0,
            bytes: 0,
        }
    }

    /// Live sessions evicted so far to make room (a full cache's adds).
    pub fn evictions(&self) -> u64 {
        self.evictions
    }

    /// Expired sessions reclaimed so far (by a lookup, a purge, or to make
    /// room).
    pub fn expirations(&self) -> u64 {
        self.expirations
    }

    /// Id and data bytes of the sessions held (expired ones not yet
    /// reclaimed included), without the index structures.
    pub fn stored_bytes(&self) -> u64 {
        self.bytes
    }

    /// The longest a session is stored: an add with a larger timeout stores
    /// the session for this long (clamped, not refused).
    pub fn max_timeout(&self) -> u64 {
        self.max_timeout_ms
    }

    /// Change [`Cache::max_timeout`] (at least 1 ms). Sessions already
    /// stored keep their expiry.
    pub fn set_max_timeout(&mut self, ms: u64) {
        self.max_timeout_ms = ms.max(1);
    }

    /// The maximum number of sessions.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Sessions held, including expired ones not yet reclaimed.
    pub fn len_raw(&self) -> usize {
        self.heap.len()
    }

    /// Bytes of the index structures (hash table, slots, heap, free list),
    /// excluding the sessions' own id+data allocations.
    pub fn structure_bytes(&self) -> usize {
        self.slots.capacity() * std::mem::size_of::<Slot>()
            + self.table.capacity() * std::mem::size_of::<Bucket>()
            + self.heap.capacity() * std::mem::size_of::<HeapEntry>()
            + self.free.capacity() * 4
    }

    #[inline]
    fn home(&self, hash: u32) -> usize {
        hash as usize & self.mask
    }

    /// Find the bucket holding `id`, if any.
    fn find_bucket(&self, id: &[u8]) -> Option<usize> {
        let hash = self.hasher.hash32(id);
        let mut i = self.home(hash);
        loop {
            let b = &self.table[i];
            let Some(buf) = &b.buf else { return None };
            if b.hash == hash && b.id_len() == id.len() && &buf[..id.len()] == id {
                return Some(i);
            }
            i = (i + 1) & self.mask;
        }
    }

    /// Put `b` in the first free bucket from its home; returns where.
    fn insert_bucket(&mut self, b: Bucket) -> usize {
        let mut i = self.home(b.hash);
        while self.table[i].buf.is_some() {
            i = (i + 1) & self.mask;
        }
        self.slots[b.slot() as usize].bucket = i as u32;
        self.table[i] = b;
        i
    }

    /// Empty bucket `i`, shifting later members of its cluster back (and
    /// telling their slots where they went). Returns the emptied bucket.
    fn remove_bucket(&mut self, mut i: usize) -> Bucket {
        let removed = std::mem::take(&mut self.table[i]);
        let mut j = i;
        loop {
            j = (j + 1) & self.mask;
            if self.table[j].buf.is_none() {
                break;
            }
            let k = self.home(self.table[j].hash);
            // Move bucket j into the hole at i unless its home lies in (i, j].
            let stays = if i <= j {
                i < k && k <= j
            } else {
                i < k || k <= j
            };
            if !stays {
                let moved = std::mem::take(&mut self.table[j]);
                self.slots[moved.slot() as usize].bucket = i as u32;
                self.table[i] = moved;
                i = j;
            }
        }
        removed
    }

    fn grow_table_if_needed(&mut self) {
        // Keep the load at most 3/4.
        if (self.heap.len() + 1) * 4 <= self.table.len() * 3 {
            return;
        }
        let n = self.table.len() * 2;
        let old = std::mem::replace(&mut self.table, empty_table(n));
        self.mask = n - 1;
        for b in old {
            if b.buf.is_some() {
                self.insert_bucket(b);
            }
        }
    }

    /// Whether the session in slot `slot` has expired at `now`. Its expiry
    /// is read from the heap only when the heap's top (the earliest expiry
    /// of all) says that some session has.
    fn expired(&self, now: u64, slot: u32) -> bool {
        match self.heap.first() {
            Some(top) if { top.expiry } <= now => {
                let pos = self.slots[slot as usize].heap_pos as usize;
                let e = self.heap[pos].expiry;
                e <= now
            }
            _ => false,
        }
    }

    fn lookup(&mut self, now: u64, id: &[u8]) -> Found {
        match self.find_bucket(id) {
            None => Found::Missing,
            Some(b) => {
                let slot = self.table[b].slot();
                if self.expired(now, slot) {
                    self.expirations += 1;
                    self.remove_slot(slot);
                    Found::Missing
                } else {
                    Found::Live(b)
                }
            }
        }
    }

    // ---- heap (4-ary, keys inline so sifting touches no sessions) ----

    fn heap_place(&mut self, pos: usize, e: HeapEntry) {
        self.heap[pos] = e;
        self.slots[e.slot as usize].heap_pos = pos as u32;
    }

    fn sift_up(&mut self, mut pos: usize) {
        let e = self.heap[pos];
        let key = e.expiry;
        while pos > 0 {
            let parent = (pos - 1) / ARITY;
            let p = self.heap[parent];
            if p.expiry <= key {
                break;
            }
            self.heap_place(pos, p);
            pos = parent;
        }
        self.heap_place(pos, e);
    }

    fn sift_down(&mut self, mut pos: usize) {
        let n = self.heap.len();
        let e = self.heap[pos];
        let key = e.expiry;
        loop {
            let first = pos * ARITY + 1;
            if first >= n {
                break;
            }
            let mut c = first;
            let mut ck = self.heap[first].expiry;
            for j in first + 1..(first + ARITY).min(n) {
                let k = self.heap[j].expiry;
                if k < ck {
                    c = j;
                    ck = k;
                }
            }
            if ck >= key {
                break;
            }
            let child = self.heap[c];
            self.heap_place(pos, child);
            pos = c;
        }
        self.heap_place(pos, e);
    }

    fn heap_remove(&mut self, pos: usize) {
        let last = self.heap.pop().expect("heap not empty");
        if pos < self.heap.len() {
            self.heap_place(pos, last);
            self.sift_down(pos);
            self.sift_up(self.slots[last.slot as usize].heap_pos as usize);
        }
    }

    // ---- insertion order (intrusive doubly-linked list of slots) ----

    /// Append `slot` as the newest stored session.
    fn link_newest(&mut self, slot: u32) {
        let s = &mut self.slots[slot as usize];
        s.older = self.newest;
        s.newer = NO_POS;
        match self.newest {
            NO_POS => self.oldest = slot,
            n => self.slots[n as usize].newer = slot,
        }
        self.newest = slot;
    }

    fn unlink(&mut self, slot: u32) {
        let Slot { older, newer, .. } = self.slots[slot as usize];
        match older {
            NO_POS => self.oldest = newer,
            o => self.slots[o as usize].newer = newer,
        }
        match newer {
            NO_POS => self.newest = older,
            n => self.slots[n as usize].older = older,
        }
    }

    /// Remove a stored session entirely.
    fn remove_slot(&mut self, slot: u32) {
        let Slot {
            bucket, heap_pos, ..
        } = self.slots[slot as usize];
        let b = self.remove_bucket(bucket as usize);
        self.bytes -= b.buf.as_ref().map_or(0, |x| x.len() as u64);
        self.heap_remove(heap_pos as usize);
        self.unlink(slot);
        self.slots[slot as usize].heap_pos = NO_POS;
        self.free.push(slot);
    }

    /// Make room for one session: an expired one goes first (the heap's
    /// top), else the oldest stored.
    fn evict_one(&mut self, now: u64) {
        let top = self.heap[0];
        let victim = if { top.expiry } <= now {
            self.expirations += 1;
            top.slot
        } else {
            self.evictions += 1;
            self.oldest
        };
        self.remove_slot(victim);
    }

    /// Reclaim up to `limit` expired sessions.
    fn purge(&mut self, now: u64, limit: usize) {
        for _ in 0..limit {
            match self.heap.first() {
                Some(&top) if { top.expiry } <= now => {
                    self.expirations += 1;
                    self.remove_slot(top.slot)
                }
                _ => break,
            }
        }
    }

    /// Store a new session (the id must not be indexed yet).
    fn insert(&mut self, expiry: u64, id: &[u8], data: &[u8]) {
        self.grow_table_if_needed();
        self.bytes += (id.len() + data.len()) as u64;
        let mut buf = Vec::with_capacity(id.len() + data.len());
        buf.extend_from_slice(id);
        buf.extend_from_slice(data);
        let fresh = Slot {
            bucket: 0,
            heap_pos: NO_POS,
            older: NO_POS,
            newer: NO_POS,
        };
        let slot = match self.free.pop() {
            Some(s) => {
                self.slots[s as usize] = fresh;
                s
            }
            None => {
                if self.slots.len() == self.slots.capacity() {
                    // Grow geometrically, but never beyond the capacity.
                    let extra = self
                        .slots
                        .len()
                        .max(16)
                        .min(self.capacity - self.slots.len());
                    self.slots.reserve_exact(extra.max(1));
                    self.heap
                        .reserve_exact(self.slots.capacity() - self.heap.len());
                }
                self.slots.push(fresh);
                (self.slots.len() - 1) as u32
            }
        };
        self.insert_bucket(Bucket {
            hash: self.hasher.hash32(id),
            packed: slot | ((id.len() as u32) << SLOT_BITS),
            buf: Some(buf.into_boxed_slice()),
        });
        self.heap.push(HeapEntry { expiry, slot });
        self.sift_up(self.heap.len() - 1);
        self.link_newest(slot);
    }

    /// Call `f(id, data, expiry)` for every live session at `now_ms`,
    /// oldest stored first (expiry on the cache's clock); stops at the
    /// first error. For snapshots: reloading them in this order keeps the
    /// eviction order.
    pub fn try_for_each_live<E>(
        &self,
        now_ms: u64,
        mut f: impl FnMut(&[u8], &[u8], u64) -> Result<(), E>,
    ) -> Result<(), E> {
        let mut cur = self.oldest;
        while cur != NO_POS {
            let s = self.slots[cur as usize];
            let expiry = self.heap[s.heap_pos as usize].expiry;
            if expiry > now_ms {
                let (id, data) = self.table[s.bucket as usize].parts();
                f(id, data, expiry)?;
            }
            cur = s.newer;
        }
        Ok(())
    }

    fn valid_id(id: &[u8]) -> bool {
        !id.is_empty() && id.len() <= MAX_ID_LEN
    }
}

impl SessionCache for Cache {
    fn add(&mut self, now_ms: u64, timeout_ms: u64, id: &[u8], data: &[u8]) -> bool {
        if !Self::valid_id(id) || data.is_empty() || data.len() > MAX_DATA_LEN {
            return false;
        }
        self.purge(now_ms, PURGE_BATCH);
        if let Found::Live(_) = self.lookup(now_ms, id) {
            return false;
        }
        if timeout_ms == 0 {
            // Expires at once: accepted, never visible, nothing evicted.
            return true;
        }
        while self.heap.len() >= self.capacity {
            self.evict_one(now_ms);
        }
        let timeout_ms = timeout_ms.min(self.max_timeout_ms);
        self.insert(now_ms.saturating_add(timeout_ms), id, data);
        true
    }

    fn get_with(&mut self, now_ms: u64, id: &[u8], f: &mut dyn FnMut(&[u8])) -> bool {
        self.purge(now_ms, PURGE_BATCH);
        if !Self::valid_id(id) {
            return false;
        }
        match self.lookup(now_ms, id) {
            Found::Live(b) => {
                f(self.table[b].parts().1);
                true
            }
            Found::Missing => false,
        }
    }

    fn remove(&mut self, now_ms: u64, id: &[u8]) -> bool {
        self.purge(now_ms, PURGE_BATCH);
        if !Self::valid_id(id) {
            return false;
        }
        match self.lookup(now_ms, id) {
            Found::Live(b) => {
                self.remove_slot(self.table[b].slot());
                true
            }
            Found::Missing => false,
        }
    }

    fn have(&mut self, now_ms: u64, id: &[u8]) -> bool {
        self.purge(now_ms, PURGE_BATCH);
        Self::valid_id(id) && matches!(self.lookup(now_ms, id), Found::Live(_))
    }

    fn num_items(&mut self, now_ms: u64) -> usize {
        self.purge(now_ms, usize::MAX);
        self.heap.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn get(c: &mut Cache, now: u64, id: &[u8]) -> Option<Vec<u8>> {
        let mut out = None;
        c.get_with(now, id, &mut |d| out = Some(d.to_vec()));
        out
    }

    /// Check every structural invariant.
    fn check(c: &Cache) {
        let live: Vec<u32> = (0..c.slots.len() as u32)
            .filter(|&s| c.slots[s as usize].heap_pos != NO_POS)
            .collect();
        assert_eq!(live.len(), c.heap.len());
        assert_eq!(live.len() + c.free.len(), c.slots.len());
        let held: usize = c
            .table
            .iter()
            .filter_map(|b| b.buf.as_ref())
            .map(|b| b.len())
            .sum();
        assert_eq!(c.stored_bytes(), held as u64, "bytes stored");
        assert_eq!(
            c.table.iter().filter(|b| b.buf.is_some()).count(),
            live.len()
        );
        for (pos, e) in c.heap.iter().enumerate() {
            let (slot, expiry) = (e.slot, e.expiry);
            assert_eq!(c.slots[slot as usize].heap_pos as usize, pos);
            if pos > 0 {
                assert!({ c.heap[(pos - 1) / ARITY].expiry } <= expiry);
            }
        }
        for &s in &live {
            let b = c.slots[s as usize].bucket as usize;
            assert_eq!(c.table[b].slot(), s, "slot {s} points at its bucket");
            let (id, _) = c.table[b].parts();
            assert_eq!(c.table[b].hash, c.hasher.hash32(id));
            assert_eq!(c.find_bucket(id), Some(b), "findable from its id");
        }
        // The insertion list links every live slot exactly once, both ways.
        let mut seen = vec![false; c.slots.len()];
        let (mut prev, mut cur, mut n) = (NO_POS, c.oldest, 0usize);
        while cur != NO_POS {
            let s = c.slots[cur as usize];
            assert_ne!(s.heap_pos, NO_POS, "listed slot {cur} is live");
            assert!(!seen[cur as usize], "slot {cur} listed twice");
            seen[cur as usize] = true;
            assert_eq!(s.older, prev, "slot {cur} links back");
            (prev, cur) = (cur, s.newer);
            n += 1;
        }
        assert_eq!(prev, c.newest);
        assert_eq!(n, live.len(), "every live slot is listed");
    }

    #[test]
    fn counts_evictions_expirations_and_bytes() {
        let mut c = Cache::new(2);
        assert!(c.add(0, 100, b"a", b"xx"));
        assert!(c.add(0, 1000, b"b", b"yyy"));
        assert_eq!(c.stored_bytes(), 7);
        // "a" has expired: reclaimed, nothing live evicted.
        assert!(c.add(200, 1000, b"c", b"z"));
        assert_eq!((c.evictions(), c.expirations()), (0, 1));
        // Full of live sessions: the oldest stored ("b") is evicted.
        assert!(c.add(300, 1000, b"d", b"w"));
        assert_eq!((c.evictions(), c.expirations()), (1, 1));
        assert_eq!(c.stored_bytes(), 4);
        check(&c);
        // An explicit REMOVE is neither.
        assert!(c.remove(300, b"c"));
        assert_eq!(
            (c.evictions(), c.expirations(), c.stored_bytes()),
            (1, 1, 2)
        );
        assert_eq!(c.num_items(5000), 0);
        assert_eq!(
            (c.evictions(), c.expirations(), c.stored_bytes()),
            (1, 2, 0)
        );
        check(&c);
    }

    #[test]
    fn more_expired_than_one_purge_reclaims() {
        // 200 sessions expire at 10: one operation reclaims only 64 of
        // them, so lookups must read each candidate's own expiry.
        let mut c = Cache::new(1000);
        for i in 0..200u32 {
            assert!(c.add(0, 10, &i.to_be_bytes(), b"old"));
        }
        assert!(c.add(0, 1000, b"live", b"new"));
        assert_eq!(get(&mut c, 20, b"live").as_deref(), Some(&b"new"[..]));
        assert!(c.len_raw() > 1, "not everything was reclaimed at once");
        for i in 0..200u32 {
            assert_eq!(get(&mut c, 20, &i.to_be_bytes()), None, "{i}");
            check(&c);
        }
        assert!(c.have(20, b"live"));
        assert_eq!(c.num_items(20), 1);
        check(&c);
    }

    #[test]
    fn capacity_is_clamped() {
        assert_eq!(Cache::new(0).capacity(), 1);
        assert_eq!(Cache::new(usize::MAX).capacity(), MAX_CAPACITY);
        assert_eq!(Cache::new(MAX_CAPACITY).capacity(), MAX_CAPACITY);
    }

    #[test]
    fn add_get_remove_have() {
        let mut c = Cache::new(10);
        assert!(c.add(0, 1000, b"id1", b"data1"));
        assert!(c.add(0, 1000, b"id2", b"data2"));
        assert_eq!(get(&mut c, 1, b"id1").as_deref(), Some(&b"data1"[..]));
        assert!(c.have(1, b"id2"));
        assert!(!c.have(1, b"id3"));
        assert!(c.remove(1, b"id1"));
        assert!(!c.remove(1, b"id1"));
        assert_eq!(get(&mut c, 1, b"id1"), None);
        assert_eq!(c.num_items(1), 1);
        check(&c);
    }

    #[test]
    fn expiry_with_driven_clock() {
        let mut c = Cache::new(10);
        assert!(c.add(100, 50, b"a", b"x"));
        assert!(c.add(100, 200, b"b", b"y"));
        assert!(c.have(149, b"a"));
        assert!(!c.have(150, b"a"), "expired exactly at now + timeout");
        assert_eq!(get(&mut c, 150, b"a"), None);
        assert!(!c.remove(150, b"a"));
        assert_eq!(c.num_items(150), 1);
        assert_eq!(c.num_items(300), 0);
        assert_eq!(c.len_raw(), 0, "expired sessions reclaimed");
        check(&c);
    }

    #[test]
    fn timeout_zero_expires_at_once() {
        let mut c = Cache::new(2);
        assert!(c.add(5, 1000, b"keep1", b"x"));
        assert!(c.add(5, 1000, b"keep2", b"x"));
        assert!(c.add(5, 0, b"zero", b"x"));
        assert!(!c.have(5, b"zero"));
        assert_eq!(get(&mut c, 5, b"zero"), None);
        // Nothing was evicted for it.
        assert!(c.have(5, b"keep1") && c.have(5, b"keep2"));
        assert!(c.add(5, 0, b"zero", b"x"), "a dead id may be added again");
    }

    #[test]
    fn eviction_oldest_stored_first() {
        let mut c = Cache::new(3);
        assert!(c.add(0, 300, b"s300", b"x"));
        assert!(c.add(0, 100, b"s100", b"x"));
        assert!(c.add(0, 200, b"s200", b"x"));
        // Full: the first stored goes, whatever the expiries.
        assert!(c.add(0, 1000, b"n1", b"x"));
        assert!(!c.have(0, b"s300"));
        assert!(c.have(0, b"s100") && c.have(0, b"s200") && c.have(0, b"n1"));
        // A removal anywhere keeps the order of the rest.
        assert!(c.remove(0, b"s200"));
        assert!(c.add(0, 50, b"n2", b"x"));
        assert!(c.add(0, 5000, b"n3", b"x"));
        assert!(!c.have(0, b"s100"));
        assert!(c.have(0, b"n1") && c.have(0, b"n2") && c.have(0, b"n3"));
        // A GET does not refresh (insertion order, not LRU).
        assert!(get(&mut c, 0, b"n1").is_some());
        assert!(c.add(0, 5000, b"n4", b"x"));
        assert!(!c.have(0, b"n1"));
        assert_eq!(c.num_items(0), 3);
        check(&c);
    }

    #[test]
    fn planted_long_lived_sessions_age_out() {
        // Issue 13, finding 5: 100 seven-day ADDs fill a 100-session
        // cache; 50 normal ADDs after them must all be retrievable.
        let week = crate::proto::MAX_EXPIRY_MS;
        for max in [DEFAULT_MAX_TIMEOUT_MS, week] {
            let mut c = Cache::new(100);
            c.set_max_timeout(max);
            for i in 0..100u32 {
                assert!(c.add(0, week, format!("planted-{i}").as_bytes(), b"evil"));
            }
            assert_eq!(c.num_items(0), 100);
            for i in 0..50u32 {
                let id = format!("normal-{i}");
                assert!(c.add(10 + i as u64, 300_000, id.as_bytes(), id.as_bytes()));
            }
            for i in 0..50u32 {
                let id = format!("normal-{i}");
                assert_eq!(
                    get(&mut c, 100, id.as_bytes()).as_deref(),
                    Some(id.as_bytes()),
                    "{id} (max timeout {max})"
                );
            }
            // The 50 oldest planted ones made room; the rest are still held.
            assert_eq!(c.num_items(100), 100);
            assert!(!c.have(100, b"planted-49") && c.have(100, b"planted-50"));
            check(&c);
        }
    }

    #[test]
    fn timeouts_are_clamped_to_the_maximum() {
        let mut c = Cache::new(10);
        assert_eq!(c.max_timeout(), DEFAULT_MAX_TIMEOUT_MS);
        let week = crate::proto::MAX_EXPIRY_MS;
        assert!(c.add(0, week, b"long", b"x"), "clamped, not refused");
        assert!(c.have(DEFAULT_MAX_TIMEOUT_MS - 1, b"long"));
        assert!(!c.have(DEFAULT_MAX_TIMEOUT_MS, b"long"));
        c.set_max_timeout(1000);
        let t = DEFAULT_MAX_TIMEOUT_MS;
        assert!(c.add(t, 5000, b"a", b"x"));
        assert!(c.add(t, 500, b"b", b"x"), "shorter ones are untouched");
        assert!(c.have(t + 499, b"b") && !c.have(t + 500, b"b"));
        assert!(c.have(t + 999, b"a") && !c.have(t + 1000, b"a"));
        c.set_max_timeout(0);
        assert_eq!(c.max_timeout(), 1);
        check(&c);
    }

    #[test]
    fn eviction_drops_expired_first() {
        let mut c = Cache::new(3);
        assert!(c.add(0, 500, b"b", b"x"));
        assert!(c.add(0, 10, b"old", b"x"));
        assert!(c.add(0, 400, b"c", b"x"));
        // "b" is the oldest stored, but the expired "old" goes first.
        assert!(c.add(20, 1000, b"new", b"x"));
        assert!(c.have(20, b"b") && c.have(20, b"c") && c.have(20, b"new"));
        assert_eq!(c.num_items(20), 3);
        check(&c);
    }

    #[test]
    fn capacity_is_respected() {
        let mut c = Cache::new(100);
        for i in 0..1000u32 {
            assert!(c.add(0, 1000 + i as u64, &i.to_be_bytes(), b"data"));
            assert!(c.len_raw() <= 100);
        }
        assert_eq!(c.num_items(0), 100);
        // The 100 stored last remain.
        for i in 900..1000u32 {
            assert!(c.have(0, &i.to_be_bytes()), "{i}");
        }
        assert!(!c.have(0, &899u32.to_be_bytes()));
        check(&c);
        assert_eq!(Cache::new(0).capacity(), 1);
    }

    #[test]
    fn duplicate_add_live_vs_expired() {
        let mut c = Cache::new(10);
        assert!(c.add(0, 100, b"dup", b"first"));
        assert!(!c.add(50, 100, b"dup", b"second"), "live id refused");
        assert_eq!(get(&mut c, 50, b"dup").as_deref(), Some(&b"first"[..]));
        assert!(c.add(100, 100, b"dup", b"third"), "expired id replaced");
        assert_eq!(get(&mut c, 150, b"dup").as_deref(), Some(&b"third"[..]));
        assert_eq!(c.num_items(150), 1);
        check(&c);
    }

    #[test]
    fn id_and_data_bounds() {
        let mut c = Cache::new(10);
        let id64 = [7u8; 64];
        let data_max = vec![9u8; MAX_DATA_LEN];
        assert!(c.add(0, 100, &id64, &data_max));
        assert_eq!(get(&mut c, 0, &id64).unwrap().len(), MAX_DATA_LEN);
        assert!(!c.add(0, 100, &[1u8; 65], b"x"), "65-byte id");
        assert!(!c.add(0, 100, b"", b"x"), "empty id");
        assert!(!c.add(0, 100, b"ok", b""), "empty data");
        assert!(!c.add(0, 100, b"ok", &vec![0u8; MAX_DATA_LEN + 1]));
        assert!(c.add(0, 100, &[0u8], &[1u8]));
        assert!(!c.have(0, b""));
        assert!(!c.have(0, &[1u8; 65]));
        assert_eq!(get(&mut c, 0, &[7u8; 65]), None);
        assert_eq!(c.num_items(0), 2);
    }

    #[test]
    fn ids_with_common_prefixes_and_growth() {
        let mut c = Cache::new(5000);
        let ids: Vec<Vec<u8>> = (0..4000u32)
            .map(|i| {
                let mut v = vec![0u8; 1 + (i as usize % 64)];
                let n = v.len();
                v[n - 1] = (i % 251) as u8;
                v[0] = (i / 251) as u8;
                v
            })
            .collect();
        let mut uniq = ids.clone();
        uniq.sort();
        uniq.dedup();
        for (n, id) in uniq.iter().enumerate() {
            assert!(c.add(0, 10 + n as u64, id, id));
        }
        check(&c);
        for id in &uniq {
            assert_eq!(get(&mut c, 0, id).as_deref(), Some(&id[..]));
        }
        // Remove every other one, then check the rest are still found.
        for id in uniq.iter().step_by(2) {
            assert!(c.remove(0, id));
        }
        check(&c);
        for (n, id) in uniq.iter().enumerate() {
            assert_eq!(c.have(0, id), n % 2 == 1);
        }
    }

    #[test]
    fn randomized_against_model() {
        use std::collections::HashMap;
        let mut c = Cache::new(64);
        c.set_max_timeout(150);
        // id -> (expiry, data, insertion number)
        let mut model: HashMap<Vec<u8>, (u64, Vec<u8>, u64)> = HashMap::new();
        let mut stored = 0u64;
        let mut x: u64 = 0x1234_5678;
        let mut rnd = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let mut now = 0u64;
        for _ in 0..20_000 {
            now += rnd() % 3;
            let id = vec![(rnd() % 100) as u8; 1 + (rnd() % 3) as usize];
            model.retain(|_, v| v.0 > now);
            match rnd() % 4 {
                0 => {
                    let t = 1 + rnd() % 200;
                    let data = vec![(rnd() & 0xff) as u8; 1 + (rnd() % 20) as usize];
                    let ok = c.add(now, t, &id, &data);
                    assert_eq!(ok, !model.contains_key(&id));
                    if ok {
                        if model.len() >= 64 {
                            // Expired ones are already out of the model:
                            // the oldest stored live one goes.
                            let gone = model
                                .iter()
                                .min_by_key(|(_, v)| v.2)
                                .map(|(k, _)| k.clone())
                                .unwrap();
                            assert!(!c.have(now, &gone), "oldest stored evicted");
                            model.remove(&gone);
                        }
                        stored += 1;
                        model.insert(id, (now + t.min(150), data, stored));
                    }
                }
                1 => assert_eq!(get(&mut c, now, &id), model.get(&id).map(|v| v.1.clone())),
                2 => assert_eq!(c.remove(now, &id), model.remove(&id).is_some()),
                _ => assert_eq!(c.have(now, &id), model.contains_key(&id)),
            }
        }
        assert_eq!(c.num_items(now), model.len());
        check(&c);
    }
}
