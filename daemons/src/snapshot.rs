//! Snapshots of the built-in cache, so that dc_server restarts without
//! losing its sessions (`dc_server -snapshot FILE`).
//!
//! The file holds every live session with its ABSOLUTE expiry (ms since the
//! Unix epoch), so the time the server was down counts against the
//! sessions' lifetimes: what expired meanwhile is dropped at load.
//!
//! Format (all integers little-endian, fixed width):
//!
//! ```text
//! header (40 bytes)
//!   magic     8  b"DCRSSNAP"
//!   version   4  1
//!   reserved  4  0
//!   count     8  number of records
//!   body_len  8  bytes after the header (the file is exactly 40 + body_len)
//!   checksum  8  see below
//! body: `count` records, oldest stored session first
//!   id_len    2  1..=64 (the protocol's MAX_ID_LEN)
//!   id        id_len bytes
//!   data_len  4  1..=32768 (the cache's MAX_DATA_LEN)
//!   data      data_len bytes
//!   expiry    8  absolute expiry, ms since the Unix epoch
//! ```
//!
//! The checksum runs over the body followed by the header's first 32
//! bytes, 8 bytes at a time (the last word zero-padded): `h = (h ^ w) *
//! P; h ^= h >> 29` from an FNV-style offset basis. Each step is a
//! bijection of `h` for a fixed word, so ANY change confined to one 8-byte
//! word (one flipped byte, say) always changes the result; wider damage
//! goes unnoticed with probability about 2^-64. It guards against
//! truncation, torn writes and foreign files, not against an attacker (who
//! could write the file could as well read every session from it).
//!
//! Parsing is bounded: the header must match the file's size, every length
//! is checked against the limits above and against the bytes left, and the
//! count against [`MAX_CAPACITY`]. Any mismatch is [`LoadError::Corrupt`];
//! nothing here panics on any input.
//!
//! Sessions are loaded in the file's order (oldest stored first) into a
//! cache of the configured capacity: when the file holds more live
//! sessions than that (a restart with a smaller `-sessions`), the cache's
//! own policy evicts the oldest stored, so the NEWEST ones are kept, as if
//! they had been added again in their original order.

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufReader, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use distcache_rs::proto::MAX_ID_LEN;
use distcache_rs::server::cache::{Cache, MAX_CAPACITY, MAX_DATA_LEN};
use distcache_rs::server::SessionCache;

/// The file's first 8 bytes.
pub const MAGIC: [u8; 8] = *b"DCRSSNAP";
/// The format version written and understood.
pub const VERSION: u32 = 1;
/// Bytes of the header.
pub const HEADER_LEN: usize = 40;
/// Smallest record: 1-byte id, 1-byte data.
const MIN_RECORD: u64 = 2 + 1 + 4 + 1 + 8;
/// Output is written in chunks of this size.
const CHUNK: usize = 1 << 20;

const FNV_BASIS: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

/// The checksum (see the module documentation), fed in pieces.
#[derive(Clone, Debug)]
struct Checksum {
    h: u64,
    pending: [u8; 8],
    npending: usize,
}

impl Checksum {
    fn new() -> Checksum {
        Checksum {
            h: FNV_BASIS,
            pending: [0; 8],
            npending: 0,
        }
    }

    #[inline]
    fn word(&mut self, w: u64) {
        self.h = (self.h ^ w).wrapping_mul(FNV_PRIME);
        self.h ^= self.h >> 29;
    }

    fn update(&mut self, mut b: &[u8]) {
        if self.npending > 0 {
            let n = (8 - self.npending).min(b.len());
            self.pending[self.npending..self.npending + n].copy_from_slice(&b[..n]);
            self.npending += n;
            b = &b[n..];
            if self.npending < 8 {
                return;
            }
            let w = u64::from_le_bytes(self.pending);
            self.word(w);
            self.npending = 0;
        }
        let mut words = b.chunks_exact(8);
        for c in &mut words {
            let mut a = [0u8; 8];
            a.copy_from_slice(c);
            self.word(u64::from_le_bytes(a));
        }
        let rest = words.remainder();
        self.pending[..rest.len()].copy_from_slice(rest);
        self.npending = rest.len();
    }

    fn finish(mut self) -> u64 {
        if self.npending > 0 {
            self.pending[self.npending..].fill(0);
            let w = u64::from_le_bytes(self.pending);
            self.word(w);
        }
        self.h
    }
}

/// The cache's clock and the wall clock read at the same moment, to turn
/// expiries from one into the other.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Clock {
    /// The cache's clock (the `now_ms` its operations are given).
    pub now_ms: u64,
    /// Milliseconds since the Unix epoch.
    pub unix_ms: u64,
}

impl Clock {
    /// `now_ms` paired with the system's wall clock.
    pub fn at(now_ms: u64) -> Clock {
        let unix_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        Clock { now_ms, unix_ms }
    }

    fn to_unix(self, expiry: u64) -> u64 {
        self.unix_ms
            .saturating_add(expiry.saturating_sub(self.now_ms))
    }
}

fn header(count: u64, body_len: u64, body_sum: Checksum) -> [u8; HEADER_LEN] {
    let mut h = [0u8; HEADER_LEN];
    h[..8].copy_from_slice(&MAGIC);
    h[8..12].copy_from_slice(&VERSION.to_le_bytes());
    h[16..24].copy_from_slice(&count.to_le_bytes());
    h[24..32].copy_from_slice(&body_len.to_le_bytes());
    let mut sum = body_sum;
    sum.update(&h[..32]);
    h[32..40].copy_from_slice(&sum.finish().to_le_bytes());
    h
}

/// What was written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Written {
    /// Sessions written.
    pub sessions: u64,
    /// File size in bytes.
    pub bytes: u64,
}

/// Write every live session of `cache` (header, then records) to `w`,
/// which must be positioned at its start.
pub fn write_to<W: Write + Seek>(cache: &Cache, clock: Clock, w: &mut W) -> io::Result<Written> {
    w.write_all(&[0u8; HEADER_LEN])?;
    let mut sum = Checksum::new();
    let mut buf: Vec<u8> = Vec::with_capacity(CHUNK + 64 + MAX_DATA_LEN);
    let mut count = 0u64;
    let mut body_len = 0u64;
    cache.try_for_each_live(clock.now_ms, |id, data, expiry| -> io::Result<()> {
        buf.extend_from_slice(&(id.len() as u16).to_le_bytes());
        buf.extend_from_slice(id);
        buf.extend_from_slice(&(data.len() as u32).to_le_bytes());
        buf.extend_from_slice(data);
        buf.extend_from_slice(&clock.to_unix(expiry).to_le_bytes());
        count += 1;
        if buf.len() >= CHUNK {
            sum.update(&buf);
            w.write_all(&buf)?;
            body_len += buf.len() as u64;
            buf.clear();
        }
        Ok(())
    })?;
    sum.update(&buf);
    w.write_all(&buf)?;
    body_len += buf.len() as u64;
    w.seek(SeekFrom::Start(0))?;
    w.write_all(&header(count, body_len, sum))?;
    Ok(Written {
        sessions: count,
        bytes: HEADER_LEN as u64 + body_len,
    })
}

/// The snapshot of `cache` as bytes (for tests and tools).
pub fn to_bytes(cache: &Cache, clock: Clock) -> Vec<u8> {
    let mut c = io::Cursor::new(Vec::new());
    write_to(cache, clock, &mut c).expect("writing to memory cannot fail");
    c.into_inner()
}

/// Why a snapshot could not be loaded.
#[derive(Debug)]
pub enum LoadError {
    /// The file is truncated, damaged or not a snapshot (why).
    Corrupt(String),
    /// Reading failed.
    Io(io::Error),
}

impl std::fmt::Display for LoadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LoadError::Corrupt(why) => write!(f, "corrupt snapshot: {why}"),
            LoadError::Io(e) => write!(f, "{e}"),
        }
    }
}

/// What a load found.
#[derive(Debug)]
pub struct Loaded {
    /// The sessions that were still live.
    pub cache: Cache,
    /// Sessions now in the cache.
    pub loaded: u64,
    /// Sessions that expired while the server was down.
    pub expired: u64,
    /// Live sessions dropped because the file held more than the cache's
    /// capacity (the oldest stored went).
    pub over_capacity: u64,
}

fn corrupt<T>(why: impl Into<String>) -> Result<T, LoadError> {
    Err(LoadError::Corrupt(why.into()))
}

/// Reads exactly `n` bytes and feeds them to the checksum; a short read
/// is corruption (the header promised more).
fn take<R: Read>(r: &mut R, buf: &mut [u8], sum: &mut Checksum) -> Result<(), LoadError> {
    match r.read_exact(buf) {
        Ok(()) => {
            sum.update(buf);
            Ok(())
        }
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => corrupt("file ends early"),
        Err(e) => Err(LoadError::Io(e)),
    }
}

fn le64(b: &[u8]) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[..8]);
    u64::from_le_bytes(a)
}

fn le32(b: &[u8]) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[..4]);
    u32::from_le_bytes(a)
}

/// Load a snapshot of `file_len` bytes from `r` into `empty` (an empty
/// cache configured with its capacity and maximum timeout), dropping what
/// has expired at `clock`. On any error the partly filled cache is
/// dropped: the caller starts afresh.
pub fn read_from<R: Read>(
    r: &mut R,
    file_len: u64,
    empty: Cache,
    clock: Clock,
) -> Result<Loaded, LoadError> {
    let mut cache = empty;
    let mut h = [0u8; HEADER_LEN];
    if file_len < HEADER_LEN as u64 {
        // Still tell a foreign file from a truncated snapshot.
        let mut head = Vec::new();
        (&mut *r)
            .take(8)
            .read_to_end(&mut head)
            .map_err(LoadError::Io)?;
        if !MAGIC.starts_with(&head) {
            return corrupt("not a dc_server snapshot (bad magic)");
        }
        return corrupt(format!("{file_len} bytes, shorter than the header"));
    }
    r.read_exact(&mut h).map_err(|e| match e.kind() {
        io::ErrorKind::UnexpectedEof => LoadError::Corrupt("file ends early".into()),
        _ => LoadError::Io(e),
    })?;
    if h[..8] != MAGIC {
        return corrupt("not a dc_server snapshot (bad magic)");
    }
    let version = le32(&h[8..12]);
    if version != VERSION {
        return corrupt(format!("format version {version}, expected {VERSION}"));
    }
    if le32(&h[12..16]) != 0 {
        return corrupt("reserved header field is not zero");
    }
    let count = le64(&h[16..24]);
    let body_len = le64(&h[24..32]);
    let want_sum = le64(&h[32..40]);
    let have = file_len - HEADER_LEN as u64;
    if body_len != have {
        return corrupt(format!(
            "header announces {body_len} bytes of sessions, the file holds {have}"
        ));
    }
    if count > MAX_CAPACITY as u64 || count.saturating_mul(MIN_RECORD) > body_len {
        return corrupt(format!(
            "header announces {count} sessions, impossible in {body_len} bytes"
        ));
    }
    let mut sum = Checksum::new();
    let mut left = body_len;
    let mut data = vec![0u8; MAX_DATA_LEN];
    let mut id = [0u8; MAX_ID_LEN];
    let (mut loaded, mut expired, mut over) = (0u64, 0u64, 0u64);
    for n in 0..count {
        let mut len = [0u8; 4];
        if left < MIN_RECORD {
            return corrupt(format!("session {n} of {count} runs past the end"));
        }
        take(r, &mut len[..2], &mut sum)?;
        let id_len = u16::from_le_bytes([len[0], len[1]]) as usize;
        if id_len == 0 || id_len > MAX_ID_LEN {
            return corrupt(format!("session {n}: id length {id_len}"));
        }
        if left < MIN_RECORD - 1 + id_len as u64 {
            return corrupt(format!("session {n} of {count} runs past the end"));
        }
        take(r, &mut id[..id_len], &mut sum)?;
        take(r, &mut len, &mut sum)?;
        let data_len = u32::from_le_bytes(len) as usize;
        if data_len == 0 || data_len > MAX_DATA_LEN {
            return corrupt(format!("session {n}: data length {data_len}"));
        }
        let rec = (2 + id_len + 4 + data_len + 8) as u64;
        if rec > left {
            return corrupt(format!("session {n} of {count} runs past the end"));
        }
        left -= rec;
        take(r, &mut data[..data_len], &mut sum)?;
        let mut e = [0u8; 8];
        take(r, &mut e, &mut sum)?;
        let expiry = u64::from_le_bytes(e);
        if expiry <= clock.unix_ms {
            expired += 1;
            continue;
        }
        let full = cache.len_raw() >= cache.capacity();
        // The cache clamps the remaining time to its maximum timeout.
        if !cache.add(
            clock.now_ms,
            expiry - clock.unix_ms,
            &id[..id_len],
            &data[..data_len],
        ) {
            return corrupt(format!("session {n}: id stored twice"));
        }
        if full {
            over += 1;
        } else {
            loaded += 1;
        }
    }
    if left != 0 {
        return corrupt(format!("{left} bytes after the last session"));
    }
    sum.update(&h[..32]);
    if sum.finish() != want_sum {
        return corrupt("checksum mismatch");
    }
    Ok(Loaded {
        cache,
        loaded,
        expired,
        over_capacity: over,
    })
}

/// [`read_from`] over bytes in memory.
pub fn from_bytes(b: &[u8], empty: Cache, clock: Clock) -> Result<Loaded, LoadError> {
    read_from(&mut &b[..], b.len() as u64, empty, clock)
}

/// A fresh cache with the same capacity and maximum timeout as `c`.
fn empty_like(c: &Cache) -> Cache {
    let mut e = Cache::new(c.capacity());
    e.set_max_timeout(c.max_timeout());
    e
}

/// The file's directory ("." for a bare name) and the temporary file
/// written there before the rename.
fn temp_path(path: &Path) -> io::Result<(PathBuf, PathBuf)> {
    let name = path
        .file_name()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "the path names no file"))?;
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let mut tmp = std::ffi::OsString::from(".");
    tmp.push(name);
    tmp.push(format!(".tmp-{}", std::process::id()));
    Ok((dir.clone(), dir.join(tmp)))
}

/// A new file at `tmp`, mode 0600, never through a symbolic link. A stale
/// one left by a crash of a process with the same pid (pid 1 in a
/// container) is removed first.
fn create_temp(tmp: &Path) -> io::Result<File> {
    let open = || {
        OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(tmp)
    };
    match open() {
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
            fs::remove_file(tmp)?;
            open()
        }
        r => r,
    }
}

/// A failed step of writing or loading, with the file it concerned.
#[derive(Debug)]
pub struct SnapError {
    pub what: String,
    pub err: io::Error,
}

impl std::fmt::Display for SnapError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.what, self.err)
    }
}

fn step<T>(r: io::Result<T>, what: impl FnOnce() -> String) -> Result<T, SnapError> {
    r.map_err(|err| SnapError { what: what(), err })
}

/// Write a snapshot of `cache` to `path`: a temporary file in the same
/// directory (mode 0600, `O_EXCL|O_NOFOLLOW`), written, fsync'ed, renamed
/// over `path` (which replaces a symbolic link there rather than following
/// it), then the directory fsync'ed. On failure the temporary file is
/// removed and `path` is left as it was.
pub fn write_file(cache: &Cache, clock: Clock, path: &Path) -> Result<Written, SnapError> {
    let (dir, tmp) = step(temp_path(path), || format!("bad path {}", path.display()))?;
    let file = step(create_temp(&tmp), || {
        format!("cannot create {}", tmp.display())
    })?;
    let written = (|| {
        let mut w = io::BufWriter::with_capacity(CHUNK, file);
        let n = step(write_to(cache, clock, &mut w), || {
            format!("cannot write {}", tmp.display())
        })?;
        let file = step(w.into_inner().map_err(|e| e.into_error()), || {
            format!("cannot write {}", tmp.display())
        })?;
        step(file.sync_all(), || {
            format!("cannot fsync {}", tmp.display())
        })?;
        drop(file);
        step(fs::rename(&tmp, path), || {
            format!("cannot rename {} to {}", tmp.display(), path.display())
        })?;
        Ok(n)
    })();
    if written.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    let written = written?;
    step(File::open(&dir).and_then(|d| d.sync_all()), || {
        format!("cannot fsync directory {}", dir.display())
    })?;
    Ok(written)
}

/// How [`load_file`] went.
#[derive(Debug)]
pub enum Outcome {
    /// No file at the path (a first start).
    Missing,
    /// The sessions were loaded.
    Loaded {
        loaded: u64,
        expired: u64,
        over_capacity: u64,
    },
    /// The file could not be opened or read (left in place).
    Unreadable(SnapError),
    /// The file was corrupt or foreign: renamed to `aside` (None when the
    /// rename failed too, with its error).
    Corrupt {
        why: String,
        aside: Result<PathBuf, SnapError>,
    },
}

/// Open `path` for reading: never through a symbolic link, never blocking
/// on a FIFO, regular files only.
fn open_snapshot(path: &Path) -> io::Result<(File, u64)> {
    let f = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(path)?;
    let md = f.metadata()?;
    let ft = md.file_type();
    if !ft.is_file() {
        let what = if ft.is_dir() {
            "a directory"
        } else if ft.is_fifo() {
            "a FIFO"
        } else {
            "not a regular file"
        };
        return Err(io::Error::new(io::ErrorKind::InvalidInput, what));
    }
    Ok((f, md.len()))
}

/// Load the snapshot at `path` into `cache` (empty, configured), at
/// `clock`. Whatever happens the returned cache is usable: on any failure
/// it is empty. A corrupt or foreign file is renamed to
/// `<path>.bad-<unix seconds>` so that the next write does not destroy it
/// and an operator can look at it.
pub fn load_file(path: &Path, cache: Cache, clock: Clock) -> (Cache, Outcome) {
    let (f, len) = match open_snapshot(path) {
        Ok(x) => x,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return (cache, Outcome::Missing),
        Err(err) => {
            let hint = if err.raw_os_error() == Some(libc::ELOOP) {
                " (a symbolic link is never followed)"
            } else {
                ""
            };
            let what = format!("cannot open {}{hint}", path.display());
            return (cache, Outcome::Unreadable(SnapError { what, err }));
        }
    };
    let fresh = empty_like(&cache);
    let mut r = BufReader::with_capacity(CHUNK, f);
    match read_from(&mut r, len, cache, clock) {
        Ok(l) => (
            l.cache,
            Outcome::Loaded {
                loaded: l.loaded,
                expired: l.expired,
                over_capacity: l.over_capacity,
            },
        ),
        Err(LoadError::Io(err)) => {
            let what = format!("cannot read {}", path.display());
            (fresh, Outcome::Unreadable(SnapError { what, err }))
        }
        Err(LoadError::Corrupt(why)) => {
            let mut bad = path.as_os_str().to_owned();
            bad.push(format!(".bad-{}", clock.unix_ms / 1000));
            let bad = PathBuf::from(bad);
            let aside = step(fs::rename(path, &bad), || {
                format!("cannot rename {} to {}", path.display(), bad.display())
            })
            .map(|()| bad);
            (fresh, Outcome::Corrupt { why, aside })
        }
    }
}

/// [`load_file`] with its one log line (two when a corrupt file could not
/// be renamed aside), as dc_server reports it.
pub fn load_and_log(path: &Path, cache: Cache, now_ms: u64, log: &mut dyn FnMut(&str)) -> Cache {
    let t0 = Instant::now();
    let (cache, outcome) = load_file(path, cache, Clock::at(now_ms));
    let p = path.display();
    match outcome {
        Outcome::Missing => log(&format!(
            "snapshot: no {p} yet, starting with an empty cache"
        )),
        Outcome::Loaded {
            loaded,
            expired,
            over_capacity,
        } => {
            let over = if over_capacity > 0 {
                format!(", {over_capacity} oldest dropped over the -sessions capacity")
            } else {
                String::new()
            };
            log(&format!(
                "snapshot: loaded {loaded} sessions ({expired} expired dropped{over}) from {p} in {} ms",
                t0.elapsed().as_millis()
            ))
        }
        Outcome::Unreadable(e) => log(&format!("snapshot: {e}; starting with an empty cache")),
        Outcome::Corrupt { why, aside } => match aside {
            Ok(bad) => log(&format!(
                "snapshot: {p}: {why}; renamed to {}, starting with an empty cache",
                bad.display()
            )),
            Err(e) => {
                log(&format!(
                    "snapshot: {p}: {why}; starting with an empty cache"
                ));
                log(&format!("snapshot: {e}"));
            }
        },
    }
    cache
}

/// [`write_file`] with its log line; true when written.
pub fn write_and_log(cache: &Cache, now_ms: u64, path: &Path, log: &mut dyn FnMut(&str)) -> bool {
    let t0 = Instant::now();
    match write_file(cache, Clock::at(now_ms), path) {
        Ok(w) => {
            log(&format!(
                "snapshot: wrote {} sessions ({} bytes) to {} in {} ms",
                w.sessions,
                w.bytes,
                path.display(),
                t0.elapsed().as_millis()
            ));
            true
        }
        Err(e) => {
            log(&format!("snapshot: cannot save {}: {e}", path.display()));
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: Clock = Clock {
        now_ms: 5_000,
        unix_ms: 1_700_000_000_000,
    };

    fn get(c: &mut Cache, now: u64, id: &[u8]) -> Option<Vec<u8>> {
        let mut out = None;
        c.get_with(now, id, &mut |d| out = Some(d.to_vec()));
        out
    }

    /// A cache of `n` sessions "id-i" -> "data-i" (i+1 KB of timeout).
    fn sample(n: u32) -> Cache {
        let mut c = Cache::new(100);
        for i in 0..n {
            let t = 1_000 * (i as u64 + 1);
            let id = format!("id-{i}");
            let data = format!("data-{i}").repeat(1 + i as usize % 3);
            assert!(c.add(T0.now_ms, t, id.as_bytes(), data.as_bytes()));
        }
        c
    }

    fn load(b: &[u8], cap: usize, clock: Clock) -> Result<Loaded, LoadError> {
        from_bytes(b, Cache::new(cap), clock)
    }

    fn is_corrupt(r: Result<Loaded, LoadError>) -> bool {
        matches!(r, Err(LoadError::Corrupt(_)))
    }

    #[test]
    fn round_trip_keeps_data_and_absolute_expiry() {
        let mut c = sample(5);
        assert!(c.remove(T0.now_ms, b"id-2"));
        let bytes = to_bytes(&c, T0);
        assert_eq!(&bytes[..8], b"DCRSSNAP");
        // Restart 1.5 s later on a cache clock that began again at 0.
        let later = Clock {
            now_ms: 10,
            unix_ms: T0.unix_ms + 1_500,
        };
        let mut l = load(&bytes, 100, later).unwrap();
        assert_eq!((l.loaded, l.expired, l.over_capacity), (3, 1, 0));
        assert_eq!(get(&mut l.cache, 10, b"id-0"), None, "expired at +1 s");
        assert_eq!(get(&mut l.cache, 10, b"id-2"), None, "removed before");
        let d1 = get(&mut l.cache, 10, b"id-1").unwrap();
        assert_eq!(d1, b"data-1data-1");
        // id-1 expired at T0 + 2 s: 500 ms left after the restart.
        assert!(l.cache.have(10 + 499, b"id-1"));
        assert!(!l.cache.have(10 + 500, b"id-1"));
        assert!(l.cache.have(10 + 3_499, b"id-4") && !l.cache.have(10 + 3_500, b"id-4"));
    }

    #[test]
    fn empty_cache_round_trips() {
        let bytes = to_bytes(&Cache::new(10), T0);
        assert_eq!(bytes.len(), HEADER_LEN);
        let l = load(&bytes, 10, T0).unwrap();
        assert_eq!((l.loaded, l.expired), (0, 0));
    }

    #[test]
    fn over_capacity_keeps_the_newest_stored() {
        let bytes = to_bytes(&sample(10), T0);
        let mut l = load(&bytes, 4, T0).unwrap();
        assert_eq!((l.loaded, l.over_capacity), (4, 6));
        for i in 0..10u32 {
            let id = format!("id-{i}");
            assert_eq!(l.cache.have(T0.now_ms, id.as_bytes()), i >= 6, "{id}");
        }
    }

    #[test]
    fn remaining_time_is_clamped_to_the_max_timeout() {
        let bytes = to_bytes(&sample(10), T0);
        let mut small = Cache::new(100);
        small.set_max_timeout(2_000);
        let mut l = from_bytes(&bytes, small, T0).unwrap();
        assert!(l.cache.have(T0.now_ms + 1_999, b"id-9"));
        assert!(!l.cache.have(T0.now_ms + 2_000, b"id-9"));
    }

    #[test]
    fn truncation_at_every_byte_is_corrupt() {
        let bytes = to_bytes(&sample(4), T0);
        for n in 0..bytes.len() {
            assert!(is_corrupt(load(&bytes[..n], 100, T0)), "cut at {n}");
        }
        let mut longer = bytes.clone();
        longer.push(0);
        assert!(is_corrupt(load(&longer, 100, T0)), "trailing byte");
    }

    #[test]
    fn every_flipped_byte_is_corrupt() {
        let bytes = to_bytes(&sample(4), T0);
        for i in 0..bytes.len() {
            for mask in [0x01u8, 0x80, 0xff] {
                let mut b = bytes.clone();
                b[i] ^= mask;
                assert!(is_corrupt(load(&b, 100, T0)), "byte {i} ^ {mask:#x}");
            }
        }
    }

    #[test]
    fn foreign_files_are_corrupt() {
        for foreign in [
            &b""[..],
            b"x",
            b"DCRS",
            b"#!/bin/sh\necho hello\n",
            b"-----BEGIN PRIVATE KEY-----\nMIIE\n-----END PRIVATE KEY-----\n",
            &[0u8; 4096],
            &[0xffu8; 100],
        ] {
            match load(foreign, 100, T0) {
                Err(LoadError::Corrupt(_)) => {}
                other => panic!("{foreign:?}: {other:?}"),
            }
        }
        // Another version of the format.
        let mut b = to_bytes(&sample(2), T0);
        b[8] = 2;
        match load(&b, 100, T0) {
            Err(LoadError::Corrupt(why)) => assert!(why.contains("version 2"), "{why}"),
            other => panic!("{other:?}"),
        }
    }

    /// A file whose checksum is right, built from raw parts: corruption
    /// that a checksum cannot see must still be refused by the bounds.
    fn forged(count: u64, body: &[u8]) -> Vec<u8> {
        let mut sum = Checksum::new();
        sum.update(body);
        let mut f = header(count, body.len() as u64, sum).to_vec();
        f.extend_from_slice(body);
        f
    }

    fn record(id: &[u8], data: &[u8], expiry: u64) -> Vec<u8> {
        let mut r = (id.len() as u16).to_le_bytes().to_vec();
        r.extend_from_slice(id);
        r.extend_from_slice(&(data.len() as u32).to_le_bytes());
        r.extend_from_slice(data);
        r.extend_from_slice(&expiry.to_le_bytes());
        r
    }

    #[test]
    fn forged_lengths_and_counts_are_corrupt() {
        let live = T0.unix_ms + 60_000;
        let good = record(b"abc", b"xyz", live);
        let mut l = load(&forged(1, &good), 10, T0).unwrap();
        assert_eq!(get(&mut l.cache, T0.now_ms, b"abc").unwrap(), b"xyz");

        let mut cases: Vec<(&str, Vec<u8>)> = vec![
            ("huge count", forged(u64::MAX, &good)),
            (
                "count above capacity limit",
                forged(MAX_CAPACITY as u64 + 1, &good),
            ),
            ("count one too many", forged(2, &good)),
            ("count one too few", forged(0, &good)),
            ("empty id", forged(1, &record(b"", b"xyz", live))),
            ("65-byte id", forged(1, &record(&[1u8; 65], b"xyz", live))),
            ("empty data", forged(1, &record(b"abc", b"", live))),
            (
                "data above the limit",
                forged(1, &record(b"abc", &vec![0u8; MAX_DATA_LEN + 1], live)),
            ),
        ];
        let dup: Vec<u8> = [good.clone(), good.clone()].concat();
        cases.push(("duplicate id", forged(2, &dup)));
        // Lengths that point past the end of the body.
        for (at, v) in [(0usize, 0xffffu16), (0, 64)] {
            let mut b = good.clone();
            b[at..at + 2].copy_from_slice(&v.to_le_bytes());
            cases.push(("id length past the end", forged(1, &b)));
        }
        for v in [u32::MAX, 0x8000, 100] {
            let mut b = good.clone();
            b[5..9].copy_from_slice(&v.to_le_bytes());
            cases.push(("data length past the end", forged(1, &b)));
        }
        let mut body_len_lies = forged(1, &good);
        body_len_lies[24..32].copy_from_slice(&u64::MAX.to_le_bytes());
        cases.push(("body length", body_len_lies));
        for (what, f) in cases {
            match load(&f, 10, T0) {
                Err(LoadError::Corrupt(_)) => {}
                other => panic!("{what}: {other:?}"),
            }
        }
    }

    #[test]
    fn random_garbage_never_panics() {
        let base = to_bytes(&sample(6), T0);
        let mut x: u64 = 0x9e37_79b9;
        let mut rnd = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        for _ in 0..3000 {
            let mut b = base.clone();
            for _ in 0..1 + rnd() % 4 {
                let i = (rnd() as usize) % b.len();
                b[i] = rnd() as u8;
            }
            let n = (rnd() as usize) % (b.len() + 1);
            // Changed bytes may happen to be unchanged; only a file
            // identical to the original may load.
            let r = load(&b[..n], 100, T0);
            if b[..n] != base[..] {
                assert!(is_corrupt(r));
            }
        }
    }

    #[test]
    fn checksum_catches_any_one_word_change() {
        // Sanity of the mixing step itself: feeding in pieces or whole
        // gives the same value, and differing words differ.
        let data: Vec<u8> = (0..100u8).collect();
        let mut a = Checksum::new();
        a.update(&data);
        let mut b = Checksum::new();
        for c in data.chunks(7) {
            b.update(c);
        }
        let (a, b) = (a.finish(), b.finish());
        assert_eq!(a, b);
        let mut c = Checksum::new();
        c.update(&data[..99]);
        assert_ne!(a, c.finish(), "a shorter input differs");
    }

    fn tmpdir(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!(
            "dcrs-snap-{tag}-{}-{}",
            std::process::id(),
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap()
                .as_nanos()
        ));
        fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn file_is_0600_replaces_a_symlink_and_leaves_no_temp() {
        use std::os::unix::fs::PermissionsExt;
        let d = tmpdir("file");
        let path = d.join("snap");
        let target = d.join("target");
        fs::write(&target, b"precious").unwrap();
        std::os::unix::fs::symlink(&target, &path).unwrap();
        // Loading does not follow the link.
        let (_, out) = load_file(&path, Cache::new(10), T0);
        match out {
            Outcome::Unreadable(e) => assert!(e.to_string().contains("symbolic link"), "{e}"),
            other => panic!("{other:?}"),
        }
        let w = write_file(&sample(3), T0, &path).unwrap();
        assert_eq!(w.sessions, 3);
        let md = fs::symlink_metadata(&path).unwrap();
        assert!(md.file_type().is_file(), "the link was replaced");
        assert_eq!(md.permissions().mode() & 0o777, 0o600);
        assert_eq!(md.len(), w.bytes);
        assert_eq!(fs::read(&target).unwrap(), b"precious");
        let names: Vec<_> = fs::read_dir(&d)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names.len(), 2, "no temporary file left: {names:?}");
        // A stale temporary file of ours (same pid) does not block writes.
        let (_, tmp) = temp_path(&path).unwrap();
        fs::write(&tmp, b"stale").unwrap();
        write_file(&sample(2), T0, &path).unwrap();
        assert!(!tmp.exists());
        let (mut c, out) = load_file(&path, Cache::new(10), T0);
        assert!(matches!(out, Outcome::Loaded { loaded: 2, .. }), "{out:?}");
        assert!(c.have(T0.now_ms, b"id-1"));
        fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn corrupt_file_is_renamed_aside_and_missing_is_not_an_error() {
        let d = tmpdir("bad");
        let path = d.join("snap");
        let (_, out) = load_file(&path, Cache::new(10), T0);
        assert!(matches!(out, Outcome::Missing));
        let mut b = to_bytes(&sample(3), T0);
        let n = b.len();
        b.truncate(n - 3);
        fs::write(&path, &b).unwrap();
        let mut lines = Vec::new();
        let mut c = load_and_log(&path, Cache::new(10), T0.now_ms, &mut |l| {
            lines.push(l.to_string())
        });
        assert_eq!(c.num_items(T0.now_ms), 0);
        assert_eq!(lines.len(), 1, "{lines:?}");
        assert!(lines[0].contains("renamed to"), "{lines:?}");
        assert!(!path.exists());
        let aside: Vec<_> = fs::read_dir(&d)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert_eq!(aside.len(), 1);
        assert!(aside[0].starts_with("snap.bad-"), "{aside:?}");
        assert_eq!(fs::read(d.join(&aside[0])).unwrap(), b, "kept as it was");
        // A directory where the file should be: unreadable, left alone.
        fs::create_dir(&path).unwrap();
        let (_, out) = load_file(&path, Cache::new(10), T0);
        assert!(matches!(out, Outcome::Unreadable(_)), "{out:?}");
        assert!(path.is_dir());
        let mut lines = Vec::new();
        assert!(!write_and_log(&sample(1), 0, &path, &mut |l| lines.push(l.to_string())));
        assert!(lines[0].contains("cannot rename"), "{lines:?}");
        assert_eq!(fs::read_dir(&d).unwrap().count(), 2, "temp file removed");
        fs::remove_dir_all(&d).unwrap();
    }
}
