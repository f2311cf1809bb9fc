//! C ABI of DC_SERVER (`distcache/dc_server.h`): the 12 `DC_SERVER_*`
//! functions over [`crate::server::dcserver::DcServer`].
//!
//! Cache selection: `DC_SERVER_set_default_cache()` and
//! `DC_SERVER_set_cache()` choose the cache implementation of the servers
//! created *afterwards* by `DC_SERVER_new` (servers already created keep
//! theirs). The choice is one process-wide setting protected by a mutex;
//! `DC_SERVER_set_cache` copies the caller's `DC_CACHE_cb` table, so the
//! table itself need not outlive the call. If neither was called,
//! `DC_SERVER_new` uses the built-in cache (the original required a call).
//!
//! Time: every `struct timeval *now` is the caller's clock, converted to
//! milliseconds; a caller's `DC_CACHE_cb` receives it back as a timeval
//! rounded down to the millisecond. NULL `now` makes the call fail.
//!
//! Clients made with `DC_CLIENT_FLAG_IN_SERVER` get their network I/O from
//! `DC_SERVER_clients_io`, which has no selector argument: bind each such
//! connection once to the selector you select on
//! (`NAL_CONNECTION_add_to_selector`), as with every NAL object. Until it is
//! bound the client is kept but gets no I/O. Other clients are driven by
//! the caller (`NAL_CONNECTION_io`, then `DC_SERVER_process_client`).
//!
//! A `DC_CLIENT*` stays valid until `DC_SERVER_del_client`, until
//! `DC_SERVER_clients_io` drops it (in-server clients whose peer closed or
//! sent a corrupt stream), or until `DC_SERVER_free`.

use std::os::raw::{c_int, c_uchar, c_uint, c_ulong};
use std::ptr::{null_mut, NonNull};
use std::sync::Mutex;

use super::nal::NAL_CONNECTION;
use super::plug::CConn;
use super::{from_c, guard, into_c, obj, obj_mut};
use crate::proto::MAX_TOTAL_DATA;
use crate::server::cache::{Cache, MAX_CAPACITY};
use crate::server::dcserver::{Client, DcServer};
use crate::server::SessionCache;

/// The C `DC_SERVER`.
pub type DC_SERVER = DcServer;
/// The C `DC_CLIENT`.
pub type DC_CLIENT = Client;

/// The C `DC_CACHE`: a caller's cache object, opaque to us.
#[repr(C)]
pub struct DC_CACHE {
    _opaque: [u8; 0],
}

/// The C `DC_CACHE_cb` table. Its layout is ABI (declared by the header
/// prelude, excluded from generation): the field order and types must
/// stay exactly those of `include/prelude/dc_server.h.in`; a unit test and
/// capi-tests/srv_embed.c check size and offsets.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct DC_CACHE_cb {
    pub cache_new: Option<unsafe extern "C" fn(max_sessions: c_uint) -> *mut DC_CACHE>,
    pub cache_free: Option<unsafe extern "C" fn(cache: *mut DC_CACHE)>,
    pub cache_add: Option<
        unsafe extern "C" fn(
            cache: *mut DC_CACHE,
            now: *const libc::timeval,
            timeout_msecs: c_ulong,
            session_id: *const c_uchar,
            session_id_len: c_uint,
            data: *const c_uchar,
            data_len: c_uint,
        ) -> c_int,
    >,
    pub cache_get: Option<
        unsafe extern "C" fn(
            cache: *mut DC_CACHE,
            now: *const libc::timeval,
            session_id: *const c_uchar,
            session_id_len: c_uint,
            store: *mut c_uchar,
            store_size: c_uint,
        ) -> c_uint,
    >,
    pub cache_remove: Option<
        unsafe extern "C" fn(
            cache: *mut DC_CACHE,
            now: *const libc::timeval,
            session_id: *const c_uchar,
            session_id_len: c_uint,
        ) -> c_int,
    >,
    pub cache_have: Option<
        unsafe extern "C" fn(
            cache: *mut DC_CACHE,
            now: *const libc::timeval,
            session_id: *const c_uchar,
            session_id_len: c_uint,
        ) -> c_int,
    >,
    pub cache_num_items:
        Option<unsafe extern "C" fn(cache: *mut DC_CACHE, now: *const libc::timeval) -> c_uint>,
}

impl DC_CACHE_cb {
    fn complete(&self) -> bool {
        self.cache_new.is_some()
            && self.cache_free.is_some()
            && self.cache_add.is_some()
            && self.cache_get.is_some()
            && self.cache_remove.is_some()
            && self.cache_have.is_some()
            && self.cache_num_items.is_some()
    }
}

#[derive(Clone, Copy)]
enum CacheChoice {
    Builtin,
    Custom(DC_CACHE_cb),
}

/// The cache implementation for servers created from now on.
static CACHE_CHOICE: Mutex<Option<CacheChoice>> = Mutex::new(None);

fn set_choice(c: CacheChoice) {
    *CACHE_CHOICE.lock().unwrap_or_else(|e| e.into_inner()) = Some(c);
}

fn choice() -> CacheChoice {
    CACHE_CHOICE
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .unwrap_or(CacheChoice::Builtin)
}

/// Milliseconds from a caller's timeval (negative parts count as 0).
fn tv_to_ms(tv: &libc::timeval) -> u64 {
    let s = u64::try_from(tv.tv_sec).unwrap_or(0);
    let us = u64::try_from(tv.tv_usec).unwrap_or(0).min(999_999);
    s.saturating_mul(1000).saturating_add(us / 1000)
}

fn ms_to_tv(ms: u64) -> libc::timeval {
    libc::timeval {
        tv_sec: (ms / 1000) as libc::time_t,
        tv_usec: ((ms % 1000) * 1000) as libc::suseconds_t,
    }
}

/// A caller's cache behind [`SessionCache`].
struct CallbackCache {
    cb: DC_CACHE_cb,
    cache: NonNull<DC_CACHE>,
    /// Reused storage for cache_get.
    buf: Vec<u8>,
}

impl CallbackCache {
    /// Call `cache_new`; None if it fails. `cb` must be complete.
    fn new(cb: DC_CACHE_cb, max_sessions: c_uint) -> Option<CallbackCache> {
        let new = cb.cache_new?;
        // SAFETY: a function pointer supplied by the caller through
        // DC_SERVER_set_cache, with the documented signature.
        let cache = NonNull::new(unsafe { new(max_sessions) })?;
        Some(CallbackCache {
            cb,
            cache,
            buf: Vec::new(),
        })
    }
}

// Ids are at most 32768 bytes (one message), data likewise: lengths fit
// in c_uint.
fn len_c(s: &[u8]) -> c_uint {
    s.len() as c_uint
}

impl SessionCache for CallbackCache {
    fn add(&mut self, now_ms: u64, timeout_ms: u64, id: &[u8], data: &[u8]) -> bool {
        let Some(f) = self.cb.cache_add else {
            return false;
        };
        let tv = ms_to_tv(now_ms);
        // SAFETY: caller-supplied callback with the documented signature;
        // every pointer is valid for the lengths passed, for the call.
        let r = unsafe {
            f(
                self.cache.as_ptr(),
                &tv,
                timeout_ms as c_ulong,
                id.as_ptr(),
                len_c(id),
                data.as_ptr(),
                len_c(data),
            )
        };
        r != 0
    }

    fn get_with(&mut self, now_ms: u64, id: &[u8], f: &mut dyn FnMut(&[u8])) -> bool {
        let Some(get) = self.cb.cache_get else {
            return false;
        };
        let tv = ms_to_tv(now_ms);
        // SAFETY: caller-supplied callback; store NULL with size 0 asks
        // for the length only.
        let n = unsafe {
            get(
                self.cache.as_ptr(),
                &tv,
                id.as_ptr(),
                len_c(id),
                null_mut(),
                0,
            )
        } as usize;
        if n == 0 {
            return false;
        }
        if n > MAX_TOTAL_DATA {
            eprintln!(
                "libdistcacheserver: cache_get reported a {n}-byte session, more than {MAX_TOTAL_DATA}; answering a miss"
            );
            return false;
        }
        self.buf.clear();
        self.buf.resize(n, 0);
        // SAFETY: caller-supplied callback; store points to n writable bytes.
        let m = unsafe {
            get(
                self.cache.as_ptr(),
                &tv,
                id.as_ptr(),
                len_c(id),
                self.buf.as_mut_ptr(),
                n as c_uint,
            )
        } as usize;
        if m == 0 {
            return false;
        }
        f(&self.buf[..m.min(n)]);
        true
    }

    fn remove(&mut self, now_ms: u64, id: &[u8]) -> bool {
        let Some(f) = self.cb.cache_remove else {
            return false;
        };
        let tv = ms_to_tv(now_ms);
        // SAFETY: caller-supplied callback; pointers valid for the call.
        unsafe { f(self.cache.as_ptr(), &tv, id.as_ptr(), len_c(id)) != 0 }
    }

    fn have(&mut self, now_ms: u64, id: &[u8]) -> bool {
        let Some(f) = self.cb.cache_have else {
            return false;
        };
        let tv = ms_to_tv(now_ms);
        // SAFETY: caller-supplied callback; pointers valid for the call.
        unsafe { f(self.cache.as_ptr(), &tv, id.as_ptr(), len_c(id)) != 0 }
    }

    fn num_items(&mut self, now_ms: u64) -> usize {
        let Some(f) = self.cb.cache_num_items else {
            return 0;
        };
        let tv = ms_to_tv(now_ms);
        // SAFETY: caller-supplied callback; pointers valid for the call.
        unsafe { f(self.cache.as_ptr(), &tv) as usize }
    }
}

impl Drop for CallbackCache {
    fn drop(&mut self) {
        if let Some(f) = self.cb.cache_free {
            // SAFETY: the cache came from this table's cache_new and is
            // freed exactly once, here.
            unsafe { f(self.cache.as_ptr()) }
        }
    }
}

fn b(v: bool) -> c_int {
    v as c_int
}

#[no_mangle]
pub unsafe extern "C" fn DC_SERVER_new(max_sessions: c_uint) -> *mut DC_SERVER {
    guard("DC_SERVER_new", null_mut(), || {
        if max_sessions == 0 {
            return null_mut();
        }
        let cache: Box<dyn SessionCache> = match choice() {
            CacheChoice::Builtin => {
                let n = max_sessions as usize;
                if n > MAX_CAPACITY {
                    eprintln!(
                        "libdistcacheserver: DC_SERVER_new({n}): the built-in cache holds at most {MAX_CAPACITY} sessions; using that"
                    );
                }
                Box::new(Cache::new(n))
            }
            CacheChoice::Custom(cb) => match CallbackCache::new(cb, max_sessions) {
                Some(c) => Box::new(c),
                None => return null_mut(),
            },
        };
        into_c(DcServer::new(cache))
    })
}

#[no_mangle]
pub unsafe extern "C" fn DC_SERVER_free(ctx: *mut DC_SERVER) {
    // SAFETY: ctx is NULL or came from DC_SERVER_new (caller contract).
    guard("DC_SERVER_free", (), || drop(unsafe { from_c(ctx) }))
}

#[no_mangle]
pub unsafe extern "C" fn DC_SERVER_set_default_cache() -> c_int {
    guard("DC_SERVER_set_default_cache", 0, || {
        set_choice(CacheChoice::Builtin);
        1
    })
}

#[no_mangle]
pub unsafe extern "C" fn DC_SERVER_set_cache(cache_impl: *const DC_CACHE_cb) -> c_int {
    guard("DC_SERVER_set_cache", 0, || {
        // SAFETY: cache_impl is NULL or points to a DC_CACHE_cb (caller contract);
        // it is copied, not kept.
        let Some(cb) = (unsafe { obj(cache_impl) }) else {
            return 0;
        };
        if !cb.complete() {
            return 0;
        }
        set_choice(CacheChoice::Custom(*cb));
        1
    })
}

#[no_mangle]
pub unsafe extern "C" fn DC_SERVER_items_stored(
    ctx: *mut DC_SERVER,
    now: *const libc::timeval,
) -> c_uint {
    guard("DC_SERVER_items_stored", 0, || {
        // SAFETY: both are NULL or valid (caller contract).
        let (Some(s), Some(now)) = (unsafe { obj_mut(ctx) }, unsafe { obj(now) }) else {
            return 0;
        };
        s.items_stored(tv_to_ms(now)).min(c_uint::MAX as usize) as c_uint
    })
}

#[no_mangle]
pub unsafe extern "C" fn DC_SERVER_reset_operations(ctx: *mut DC_SERVER) {
    guard("DC_SERVER_reset_operations", (), || {
        // SAFETY: ctx is NULL or a live DC_SERVER (caller contract).
        if let Some(s) = unsafe { obj_mut(ctx) } {
            s.reset_operations();
        }
    })
}

#[no_mangle]
pub unsafe extern "C" fn DC_SERVER_num_operations(ctx: *mut DC_SERVER) -> c_ulong {
    guard("DC_SERVER_num_operations", 0, || {
        // SAFETY: ctx is NULL or a live DC_SERVER (caller contract).
        unsafe { obj(ctx) }.map_or(0, |s| s.num_operations() as c_ulong)
    })
}

#[no_mangle]
pub unsafe extern "C" fn DC_SERVER_new_client(
    ctx: *mut DC_SERVER,
    conn: *mut NAL_CONNECTION,
    flags: c_uint,
) -> *mut DC_CLIENT {
    guard("DC_SERVER_new_client", null_mut(), || {
        const NOFREE_CONN: c_uint = 0x0001;
        const IN_SERVER: c_uint = 0x0002;
        // SAFETY: ctx is NULL or a live DC_SERVER (caller contract).
        let Some(s) = (unsafe { obj_mut(ctx) }) else {
            return null_mut();
        };
        // SAFETY: conn is NULL or a live connection handed over by the
        // caller (owned unless NOFREE_CONN, then kept alive by the caller).
        let Some(c) = (unsafe { CConn::new(conn, flags & NOFREE_CONN == 0) }) else {
            return null_mut();
        };
        s.new_client(Box::new(c), flags & IN_SERVER != 0) as *mut DC_CLIENT
    })
}

/// The server owning a client, and the client's id.
///
/// # Safety
/// `clnt` is NULL or a live DC_CLIENT.
unsafe fn owner_of(clnt: *mut DC_CLIENT) -> Option<(*mut DC_SERVER, u64)> {
    // SAFETY: per the function contract; the borrow ends before the
    // server (which owns the client) is borrowed.
    unsafe { obj(clnt) }.map(|c| (c.owner(), c.id()))
}

#[no_mangle]
pub unsafe extern "C" fn DC_SERVER_del_client(clnt: *mut DC_CLIENT) -> c_int {
    guard("DC_SERVER_del_client", 0, || {
        // SAFETY: clnt is NULL or a live DC_CLIENT (caller contract), whose
        // owner is its live, boxed DC_SERVER.
        let Some(s) = (unsafe { owner_of(clnt) })
            .and_then(|(srv, id)| unsafe { obj_mut(srv) }.map(|s| (s, id)))
        else {
            return 0;
        };
        b(s.0.del_client(s.1))
    })
}

#[no_mangle]
pub unsafe extern "C" fn DC_SERVER_process_client(
    clnt: *mut DC_CLIENT,
    now: *const libc::timeval,
) -> c_int {
    guard("DC_SERVER_process_client", 0, || {
        // SAFETY: now is NULL or a valid timeval (caller contract).
        let Some(now) = (unsafe { obj(now) }) else {
            return 0;
        };
        // SAFETY: clnt is NULL or a live DC_CLIENT (caller contract), whose
        // owner is its live, boxed DC_SERVER.
        let Some(s) = (unsafe { owner_of(clnt) })
            .and_then(|(srv, id)| unsafe { obj_mut(srv) }.map(|s| (s, id)))
        else {
            return 0;
        };
        b(s.0.process_client(s.1, tv_to_ms(now)))
    })
}

#[no_mangle]
pub unsafe extern "C" fn DC_SERVER_clients_io(
    ctx: *mut DC_SERVER,
    now: *const libc::timeval,
) -> c_int {
    guard("DC_SERVER_clients_io", 0, || {
        // SAFETY: both are NULL or valid (caller contract).
        let (Some(s), Some(now)) = (unsafe { obj_mut(ctx) }, unsafe { obj(now) }) else {
            return 0;
        };
        s.clients_io(tv_to_ms(now));
        1
    })
}

#[no_mangle]
pub unsafe extern "C" fn DC_SERVER_clients_empty(ctx: *const DC_SERVER) -> c_int {
    guard("DC_SERVER_clients_empty", 0, || {
        // SAFETY: ctx is NULL or a live DC_SERVER (caller contract).
        unsafe { obj(ctx) }.map_or(0, |s| b(s.clients_empty()))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cache_cb_layout_matches_the_c_struct() {
        let p = std::mem::size_of::<*const ()>();
        assert_eq!(std::mem::size_of::<DC_CACHE_cb>(), 7 * p);
        assert_eq!(std::mem::align_of::<DC_CACHE_cb>(), p);
        let v = DC_CACHE_cb {
            cache_new: None,
            cache_free: None,
            cache_add: None,
            cache_get: None,
            cache_remove: None,
            cache_have: None,
            cache_num_items: None,
        };
        let base = &v as *const _ as usize;
        let offs = [
            &v.cache_new as *const _ as usize,
            &v.cache_free as *const _ as usize,
            &v.cache_add as *const _ as usize,
            &v.cache_get as *const _ as usize,
            &v.cache_remove as *const _ as usize,
            &v.cache_have as *const _ as usize,
            &v.cache_num_items as *const _ as usize,
        ];
        for (i, o) in offs.iter().enumerate() {
            assert_eq!(o - base, i * p, "field {i}");
        }
        assert!(!v.complete());
    }

    #[test]
    fn timeval_conversions() {
        let tv = libc::timeval {
            tv_sec: 12,
            tv_usec: 345_678,
        };
        assert_eq!(tv_to_ms(&tv), 12_345);
        let back = ms_to_tv(12_345);
        assert_eq!((back.tv_sec, back.tv_usec), (12, 345_000));
        let neg = libc::timeval {
            tv_sec: -5,
            tv_usec: -1,
        };
        assert_eq!(tv_to_ms(&neg), 0);
    }
}
