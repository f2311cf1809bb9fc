//! stunnel's `sessiond` protocol: one UDP datagram per request, a 36-byte
//! header (version, type, 16-bit big-endian timeout in seconds, 32-byte
//! zero-padded key) followed by up to 512 bytes of DER session.
//!
//! NEW stores (overwriting), GET is answered with OK + value or ERR, REMOVE
//! deletes; NEW and REMOVE are never answered. stunnel ships no protocol
//! document: these facts were established for stunnel 5.68 (Debian 12's
//! stunnel4) from how its client side behaves, confirmed by experiments
//! with the real stunnel4 binary.
//!
//! The protocol has no authentication: anyone who can reach the port can
//! read or plant sessions. Bind it to loopback or a private address.

use distcache_rs::server::SessionCache;

/// Header length (version, type, timeout, key).
pub const HEADER_LEN: usize = 36;
/// Key length on the wire.
pub const KEY_LEN: usize = 32;
/// Largest value stunnel sends (and reads back).
pub const MAX_VALUE: usize = 512;
/// The only protocol version.
pub const VERSION: u8 = 1;
/// Request types.
pub const T_NEW: u8 = 0x00;
pub const T_GET: u8 = 0x01;
pub const T_REMOVE: u8 = 0x02;
/// Reply types.
pub const T_ERR: u8 = 0x80;
pub const T_OK: u8 = 0x81;
/// stunnel caps session lifetimes at 18 hours.
pub const MAX_TIMEOUT_S: u16 = 64800;

/// A decoded request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Request<'a> {
    New {
        timeout_s: u16,
        key: &'a [u8],
        value: &'a [u8],
    },
    Get {
        key: &'a [u8],
    },
    Remove {
        key: &'a [u8],
    },
}

/// Why a datagram was dropped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Malformed {
    /// Shorter than the 36-byte header.
    Short(usize),
    /// Version byte other than 1.
    Version(u8),
    /// Unknown type (replies included: we never accept them as requests).
    Type(u8),
    /// Longer than 36 + 512 bytes.
    TooLong(usize),
    /// A NEW without a value, or a GET/REMOVE with one.
    BadLength(usize),
}

impl std::fmt::Display for Malformed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Malformed::Short(n) => write!(f, "short datagram ({n} bytes)"),
            Malformed::Version(v) => write!(f, "unknown version {v}"),
            Malformed::Type(t) => write!(f, "unknown type {t:#04x}"),
            Malformed::TooLong(n) => write!(f, "oversized datagram ({n} bytes)"),
            Malformed::BadLength(n) => write!(f, "length {n} does not fit the type"),
        }
    }
}

/// Decode one datagram.
pub fn parse(d: &[u8]) -> Result<Request<'_>, Malformed> {
    if d.len() < HEADER_LEN {
        return Err(Malformed::Short(d.len()));
    }
    if d[0] != VERSION {
        return Err(Malformed::Version(d[0]));
    }
    if d.len() > HEADER_LEN + MAX_VALUE {
        return Err(Malformed::TooLong(d.len()));
    }
    let timeout_s = u16::from_be_bytes([d[2], d[3]]);
    let key = &d[4..HEADER_LEN];
    let value = &d[HEADER_LEN..];
    match d[1] {
        T_NEW if !value.is_empty() => Ok(Request::New {
            timeout_s,
            key,
            value,
        }),
        T_GET if value.is_empty() => Ok(Request::Get { key }),
        T_REMOVE if value.is_empty() => Ok(Request::Remove { key }),
        T_NEW | T_GET | T_REMOVE => Err(Malformed::BadLength(d.len())),
        t => Err(Malformed::Type(t)),
    }
}

/// Counters for the status line.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SessiondStats {
    pub news: u64,
    pub gets: u64,
    pub hits: u64,
    pub removes: u64,
    pub dropped: u64,
}

/// Handle one datagram against `cache` (a store used for sessiond keys
/// only). Returns true when `reply` holds a datagram to send back to the
/// sender; malformed input is counted and dropped.
pub fn handle(
    cache: &mut dyn SessionCache,
    stats: &mut SessiondStats,
    now_ms: u64,
    datagram: &[u8],
    reply: &mut Vec<u8>,
) -> Result<bool, Malformed> {
    reply.clear();
    let req = match parse(datagram) {
        Ok(r) => r,
        Err(e) => {
            stats.dropped += 1;
            return Err(e);
        }
    };
    match req {
        Request::New {
            timeout_s,
            key,
            value,
        } => {
            stats.news += 1;
            let timeout_ms = u64::from(timeout_s.min(MAX_TIMEOUT_S)) * 1000;
            // sessiond semantics: a NEW overwrites.
            cache.remove(now_ms, key);
            cache.add(now_ms, timeout_ms, key, value);
            Ok(false)
        }
        Request::Remove { key } => {
            stats.removes += 1;
            cache.remove(now_ms, key);
            Ok(false)
        }
        Request::Get { key } => {
            stats.gets += 1;
            reply.extend_from_slice(&[VERSION, T_ERR, 0, 0]);
            reply.extend_from_slice(key);
            let hit = cache.get_with(now_ms, key, &mut |v| {
                if v.len() <= MAX_VALUE {
                    reply.extend_from_slice(v);
                }
            });
            if hit && reply.len() > HEADER_LEN {
                reply[1] = T_OK;
                stats.hits += 1;
            }
            Ok(true)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    /// A minimal map-backed cache with a driven clock, enough to test the
    /// handler on its own.
    #[derive(Default)]
    struct MapCache(HashMap<Vec<u8>, (u64, Vec<u8>)>);

    impl SessionCache for MapCache {
        fn add(&mut self, now: u64, t: u64, id: &[u8], data: &[u8]) -> bool {
            if self.have(now, id) {
                return false;
            }
            self.0.insert(id.to_vec(), (now + t, data.to_vec()));
            true
        }
        fn get_with(&mut self, now: u64, id: &[u8], f: &mut dyn FnMut(&[u8])) -> bool {
            match self.0.get(id) {
                Some((exp, d)) if *exp > now => {
                    f(d);
                    true
                }
                _ => false,
            }
        }
        fn remove(&mut self, now: u64, id: &[u8]) -> bool {
            let live = self.have(now, id);
            self.0.remove(id);
            live
        }
        fn have(&mut self, now: u64, id: &[u8]) -> bool {
            matches!(self.0.get(id), Some((exp, _)) if *exp > now)
        }
        fn num_items(&mut self, now: u64) -> usize {
            self.0.values().filter(|(e, _)| *e > now).count()
        }
    }

    fn dgram(t: u8, timeout: u16, key: u8, value: &[u8]) -> Vec<u8> {
        let mut d = vec![VERSION, t];
        d.extend_from_slice(&timeout.to_be_bytes());
        d.extend_from_slice(&[key; KEY_LEN]);
        d.extend_from_slice(value);
        d
    }

    #[test]
    fn new_get_remove() {
        let mut c = MapCache::default();
        let mut s = SessiondStats::default();
        let mut r = Vec::new();
        let der = [0x30u8, 0x7e, 2, 1, 1];
        assert_eq!(
            handle(&mut c, &mut s, 0, &dgram(T_NEW, 300, 7, &der), &mut r),
            Ok(false)
        );
        assert!(r.is_empty());
        assert_eq!(
            handle(&mut c, &mut s, 1000, &dgram(T_GET, 0, 7, &[]), &mut r),
            Ok(true)
        );
        assert_eq!(r, dgram(T_OK, 0, 7, &der));
        // A NEW for the same key overwrites.
        handle(&mut c, &mut s, 1000, &dgram(T_NEW, 300, 7, b"xyz"), &mut r).unwrap();
        handle(&mut c, &mut s, 1000, &dgram(T_GET, 0, 7, &[]), &mut r).unwrap();
        assert_eq!(r, dgram(T_OK, 0, 7, b"xyz"));
        // Miss.
        handle(&mut c, &mut s, 1000, &dgram(T_GET, 0, 8, &[]), &mut r).unwrap();
        assert_eq!(r, dgram(T_ERR, 0, 8, &[]));
        // Expiry after 300 s.
        handle(&mut c, &mut s, 301_000, &dgram(T_GET, 0, 7, &[]), &mut r).unwrap();
        assert_eq!(r[1], T_ERR);
        // Remove.
        handle(&mut c, &mut s, 0, &dgram(T_NEW, 300, 9, b"v"), &mut r).unwrap();
        assert_eq!(
            handle(&mut c, &mut s, 1, &dgram(T_REMOVE, 0, 9, &[]), &mut r),
            Ok(false)
        );
        handle(&mut c, &mut s, 2, &dgram(T_GET, 0, 9, &[]), &mut r).unwrap();
        assert_eq!(r[1], T_ERR);
        assert_eq!(s.news, 3);
        assert_eq!(s.hits, 2);
    }

    #[test]
    fn timeout_is_capped() {
        let mut c = MapCache::default();
        let mut s = SessiondStats::default();
        let mut r = Vec::new();
        handle(&mut c, &mut s, 0, &dgram(T_NEW, u16::MAX, 1, b"v"), &mut r).unwrap();
        assert!(c.have(64_799_999, &[1; KEY_LEN]));
        assert!(!c.have(64_800_000, &[1; KEY_LEN]));
    }

    #[test]
    fn every_malformed_form_is_dropped() {
        let mut c = MapCache::default();
        let mut s = SessiondStats::default();
        let mut r = Vec::new();
        let mut bad_version = dgram(T_GET, 0, 1, &[]);
        bad_version[0] = 2;
        let cases: Vec<(Vec<u8>, Malformed)> = vec![
            (vec![], Malformed::Short(0)),
            (vec![1; 35], Malformed::Short(35)),
            (bad_version, Malformed::Version(2)),
            (dgram(0x03, 0, 1, &[]), Malformed::Type(3)),
            (dgram(T_OK, 0, 1, b"x"), Malformed::Type(T_OK)),
            (dgram(T_ERR, 0, 1, &[]), Malformed::Type(T_ERR)),
            (dgram(T_NEW, 1, 1, &[0; 513]), Malformed::TooLong(549)),
            (dgram(T_NEW, 1, 1, &[]), Malformed::BadLength(36)),
            (dgram(T_GET, 0, 1, b"x"), Malformed::BadLength(37)),
            (dgram(T_REMOVE, 0, 1, b"x"), Malformed::BadLength(37)),
        ];
        let n = cases.len() as u64;
        for (d, want) in cases {
            assert_eq!(handle(&mut c, &mut s, 0, &d, &mut r), Err(want));
            assert!(r.is_empty(), "replied to {want:?}");
        }
        assert_eq!(s.dropped, n);
        assert_eq!(c.num_items(0), 0);
        // The largest legal NEW is accepted.
        assert_eq!(
            handle(&mut c, &mut s, 0, &dgram(T_NEW, 1, 1, &[5; 512]), &mut r),
            Ok(false)
        );
        assert_eq!(c.num_items(0), 1);
    }
}

/// The sources whose datagrams are served (`-sessiond-allow`): IPv4
/// networks, each an address and a prefix length.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Allow(Vec<(u32, u8)>);

impl Allow {
    /// All of 127.0.0.0/8: the default with a loopback bind address.
    pub fn loopback() -> Allow {
        Allow(vec![(0x7f00_0000, 8)])
    }

    /// Parse `CIDR[,CIDR...]`, each `a.b.c.d/len` or `a.b.c.d` (a /32).
    pub fn parse(s: &str) -> Result<Allow, String> {
        let mut nets = Vec::new();
        for part in s.split(',') {
            let part = part.trim();
            let (ip, len) = match part.split_once('/') {
                Some((ip, len)) => (ip, len.parse::<u8>().ok().filter(|l| *l <= 32)),
                None => (part, Some(32)),
            };
            let ip: std::net::Ipv4Addr = ip
                .parse()
                .map_err(|_| format!("'{part}' is not an IPv4 address or a.b.c.d/len network"))?;
            let len = len.ok_or_else(|| format!("'{part}': the prefix length must be 0..32"))?;
            nets.push((u32::from(ip) & mask(len), len));
        }
        if nets.is_empty() {
            return Err("empty list".into());
        }
        Ok(Allow(nets))
    }

    /// Whether datagrams from `ip` are served.
    pub fn allows(&self, ip: std::net::IpAddr) -> bool {
        let std::net::IpAddr::V4(v4) = ip else {
            return false;
        };
        let a = u32::from(v4);
        self.0.iter().any(|&(net, len)| a & mask(len) == net)
    }
}

fn mask(len: u8) -> u32 {
    if len == 0 {
        0
    } else {
        u32::MAX << (32 - u32::from(len))
    }
}

/// Slots of the per-source answer limiter (fixed: a spoofed flood of
/// sources cannot grow it).
pub const ANSWER_SLOTS: usize = 1024;
/// Answers a second per source address (sources sharing a slot share it).
pub const ANSWERS_PER_SEC: u32 = 1000;

/// Rate limit on answers per non-loopback source: a token bucket per slot
/// of a fixed table indexed by a hash of the address, so a GET with a
/// spoofed source cannot turn the server into a reflector beyond
/// [`ANSWERS_PER_SEC`] toward any one victim. Sources that share a slot
/// share its bucket (conservative: never more answers than the limit).
pub struct AnswerLimit {
    /// (tokens, time of the last refill in ms).
    slots: Vec<(u32, u64)>,
    per_sec: u32,
}

impl AnswerLimit {
    pub fn new(per_sec: u32) -> AnswerLimit {
        AnswerLimit {
            slots: vec![(per_sec, 0); ANSWER_SLOTS],
            per_sec,
        }
    }

    /// Whether an answer to `ip` may be sent now (takes a token).
    pub fn take(&mut self, ip: std::net::IpAddr, now_ms: u64) -> bool {
        if ip.is_loopback() {
            return true;
        }
        let key = match ip {
            std::net::IpAddr::V4(v) => u64::from(u32::from(v)),
            std::net::IpAddr::V6(v) => {
                let b = u128::from(v);
                (b as u64) ^ ((b >> 64) as u64)
            }
        };
        // Fibonacci hashing of the address onto the table.
        let h = (key.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 32) as usize % ANSWER_SLOTS;
        let (tokens, last) = &mut self.slots[h];
        let elapsed = now_ms.saturating_sub(*last);
        if elapsed > 0 {
            let refill = (elapsed.min(1000) * u64::from(self.per_sec) / 1000) as u32;
            if refill > 0 {
                *tokens = (*tokens + refill).min(self.per_sec);
                *last = now_ms;
            }
        }
        if *tokens == 0 {
            return false;
        }
        *tokens -= 1;
        true
    }
}

#[cfg(test)]
mod allow_tests {
    use super::*;

    #[test]
    fn cidr_lists() {
        let a = Allow::parse("10.0.0.0/24, 192.168.1.7").unwrap();
        assert!(a.allows("10.0.0.200".parse().unwrap()));
        assert!(!a.allows("10.0.1.1".parse().unwrap()));
        assert!(a.allows("192.168.1.7".parse().unwrap()));
        assert!(!a.allows("192.168.1.8".parse().unwrap()));
        assert!(!a.allows("::1".parse().unwrap()));
        assert!(Allow::parse("0.0.0.0/0")
            .unwrap()
            .allows("8.8.8.8".parse().unwrap()));
        assert!(Allow::loopback().allows("127.9.9.9".parse().unwrap()));
        assert!(!Allow::loopback().allows("10.0.0.1".parse().unwrap()));
        for bad in ["", "10.0.0.0/33", "x", "10.0.0/8", "10.0.0.0/", "::1/128"] {
            assert!(Allow::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn answers_are_limited_per_source_and_refill() {
        let mut l = AnswerLimit::new(10);
        let ip = "10.1.2.3".parse().unwrap();
        let sent = (0..50).filter(|_| l.take(ip, 5000)).count();
        assert_eq!(sent, 10);
        // Loopback is never limited.
        assert!((0..50).all(|_| l.take("127.0.0.1".parse().unwrap(), 5000)));
        // Half a second later: half the bucket back.
        let sent = (0..50).filter(|_| l.take(ip, 5500)).count();
        assert_eq!(sent, 5);
        // Another source has its own bucket (unless it shares the slot).
        let other = "10.9.9.9".parse().unwrap();
        assert!(l.take(other, 5500));
    }
}
