//! C ABI of libnal: the 65 `NAL_*` functions over [`crate::nal`].
//!
//! Object types: NAL_ADDRESS = [`crate::nal::NalAddress`], NAL_LISTENER =
//! [`crate::nal::Listener`], NAL_CONNECTION = [`crate::nal::Connection`],
//! NAL_SELECTOR = [`crate::nal::Selector`], NAL_BUFFER =
//! [`crate::nal::Buffer`]. Objects made by `*_new` are boxed; the buffers
//! returned by `NAL_CONNECTION_get_read/_send` point into the connection's
//! shared state and stay valid (at a fixed address) until the connection is
//! freed. NULL arguments give the failure value (0, NULL, or nothing).

use std::os::raw::{c_char, c_int, c_uchar, c_uint, c_ulong};
use std::ptr::{null, null_mut};
use std::time::Duration;

use super::{bytes, bytes_mut, c_str, from_c, guard, into_c, obj, obj_mut};
use crate::nal::codec;

pub type NAL_ADDRESS = crate::nal::NalAddress;
pub type NAL_LISTENER = crate::nal::Listener;
pub type NAL_CONNECTION = crate::nal::Connection;
pub type NAL_SELECTOR = crate::nal::Selector;
pub type NAL_BUFFER = crate::nal::Buffer;

fn b(v: bool) -> c_int {
    c_int::from(v)
}

/// Saturating conversion of a Rust size to `unsigned int`.
fn ui(v: usize) -> c_uint {
    c_uint::try_from(v).unwrap_or(c_uint::MAX)
}

/* ---------------------------------------------------------------- config */

#[no_mangle]
pub unsafe extern "C" fn NAL_config_set_nagle(enabled: c_int) {
    guard("NAL_config_set_nagle", (), || {
        crate::nal::set_nagle(enabled != 0)
    })
}

/* --------------------------------------------------------------- address */

#[no_mangle]
pub unsafe extern "C" fn NAL_ADDRESS_new() -> *mut NAL_ADDRESS {
    guard("NAL_ADDRESS_new", null_mut(), || into_c(NAL_ADDRESS::new()))
}

#[no_mangle]
pub unsafe extern "C" fn NAL_ADDRESS_free(addr: *mut NAL_ADDRESS) {
    // SAFETY: addr is NULL or came from NAL_ADDRESS_new (caller contract).
    guard("NAL_ADDRESS_free", (), || drop(unsafe { from_c(addr) }))
}

#[no_mangle]
pub unsafe extern "C" fn NAL_ADDRESS_reset(addr: *mut NAL_ADDRESS) {
    guard("NAL_ADDRESS_reset", (), || {
        // SAFETY: addr is NULL or a live NAL_ADDRESS (caller contract).
        if let Some(a) = unsafe { obj_mut(addr) } {
            a.reset()
        }
    })
}

#[no_mangle]
pub unsafe extern "C" fn NAL_ADDRESS_create(
    addr: *mut NAL_ADDRESS,
    addr_string: *const c_char,
    def_buffer_size: c_uint,
) -> c_int {
    guard("NAL_ADDRESS_create", 0, || {
        // SAFETY: caller contract: live object and NUL-terminated string.
        let (Some(a), Some(s)) = (unsafe { obj_mut(addr) }, unsafe { c_str(addr_string) }) else {
            return 0;
        };
        match a.try_create(s, def_buffer_size as usize) {
            Ok(ok) => b(ok),
            Err(e) => {
                // A string the original accepted: say why it fails here
                // (one line per call), rather than leave a program
                // wondering. Ordinary refusals stay silent, as there.
                if e.original_accepted() {
                    crate::client::log_line(&format!("distcache-rs: NAL_ADDRESS_create: {e}"));
                }
                0
            }
        }
    })
}

#[no_mangle]
pub unsafe extern "C" fn NAL_ADDRESS_get_def_buffer_size(addr: *const NAL_ADDRESS) -> c_uint {
    guard("NAL_ADDRESS_get_def_buffer_size", 0, || {
        // SAFETY: addr is NULL or a live NAL_ADDRESS (caller contract).
        unsafe { obj(addr) }.map_or(0, |a| ui(a.def_buffer_size()))
    })
}

#[no_mangle]
pub unsafe extern "C" fn NAL_ADDRESS_set_def_buffer_size(
    addr: *mut NAL_ADDRESS,
    def_buffer_size: c_uint,
) -> c_int {
    guard("NAL_ADDRESS_set_def_buffer_size", 0, || {
        // SAFETY: addr is NULL or a live NAL_ADDRESS (caller contract).
        unsafe { obj_mut(addr) }.map_or(0, |a| b(a.set_def_buffer_size(def_buffer_size as usize)))
    })
}

#[no_mangle]
pub unsafe extern "C" fn NAL_ADDRESS_can_connect(addr: *const NAL_ADDRESS) -> c_int {
    guard("NAL_ADDRESS_can_connect", 0, || {
        // SAFETY: addr is NULL or a live NAL_ADDRESS (caller contract).
        unsafe { obj(addr) }.map_or(0, |a| b(a.can_connect()))
    })
}

#[no_mangle]
pub unsafe extern "C" fn NAL_ADDRESS_can_listen(addr: *const NAL_ADDRESS) -> c_int {
    guard("NAL_ADDRESS_can_listen", 0, || {
        // SAFETY: addr is NULL or a live NAL_ADDRESS (caller contract).
        unsafe { obj(addr) }.map_or(0, |a| b(a.can_listen()))
    })
}

/* -------------------------------------------------------------- selector */

#[no_mangle]
pub unsafe extern "C" fn NAL_SELECTOR_new() -> *mut NAL_SELECTOR {
    guard("NAL_SELECTOR_new", null_mut(), || {
        into_c(NAL_SELECTOR::new())
    })
}

#[no_mangle]
pub unsafe extern "C" fn NAL_SELECTOR_new_fdselect() -> *mut NAL_SELECTOR {
    guard("NAL_SELECTOR_new_fdselect", null_mut(), || {
        into_c(NAL_SELECTOR::new())
    })
}

#[no_mangle]
pub unsafe extern "C" fn NAL_SELECTOR_new_fdpoll() -> *mut NAL_SELECTOR {
    guard("NAL_SELECTOR_new_fdpoll", null_mut(), || {
        into_c(NAL_SELECTOR::new())
    })
}

#[no_mangle]
pub unsafe extern "C" fn NAL_SELECTOR_free(sel: *mut NAL_SELECTOR) {
    // SAFETY: sel is NULL or came from NAL_SELECTOR_new* (caller contract).
    guard("NAL_SELECTOR_free", (), || drop(unsafe { from_c(sel) }))
}

#[no_mangle]
pub unsafe extern "C" fn NAL_SELECTOR_reset(sel: *mut NAL_SELECTOR) {
    guard("NAL_SELECTOR_reset", (), || {
        // SAFETY: sel is NULL or a live NAL_SELECTOR (caller contract).
        if let Some(s) = unsafe { obj_mut(sel) } {
            s.reset()
        }
    })
}

#[no_mangle]
pub unsafe extern "C" fn NAL_SELECTOR_select(
    sel: *mut NAL_SELECTOR,
    usec_timeout: c_ulong,
    use_timeout: c_int,
) -> c_int {
    guard("NAL_SELECTOR_select", -1, || {
        // SAFETY: sel is NULL or a live NAL_SELECTOR (caller contract).
        let Some(s) = (unsafe { obj_mut(sel) }) else {
            return -1;
        };
        // c_ulong is 32 bits on some targets.
        #[allow(clippy::useless_conversion)]
        let usec = u64::from(usec_timeout);
        let timeout = (use_timeout != 0).then(|| Duration::from_micros(usec));
        match s.select(timeout) {
            Ok(n) => c_int::try_from(n).unwrap_or(c_int::MAX),
            Err(_) => -1,
        }
    })
}

#[no_mangle]
pub unsafe extern "C" fn NAL_SELECTOR_num_objects(sel: *const NAL_SELECTOR) -> c_uint {
    guard("NAL_SELECTOR_num_objects", 0, || {
        // SAFETY: sel is NULL or a live NAL_SELECTOR (caller contract).
        unsafe { obj(sel) }.map_or(0, |s| ui(s.num_objects()))
    })
}

/* -------------------------------------------------------------- listener */

#[no_mangle]
pub unsafe extern "C" fn NAL_LISTENER_new() -> *mut NAL_LISTENER {
    guard("NAL_LISTENER_new", null_mut(), || {
        into_c(NAL_LISTENER::new())
    })
}

#[no_mangle]
pub unsafe extern "C" fn NAL_LISTENER_free(list: *mut NAL_LISTENER) {
    // SAFETY: list is NULL or came from NAL_LISTENER_new (caller contract).
    guard("NAL_LISTENER_free", (), || drop(unsafe { from_c(list) }))
}

#[no_mangle]
pub unsafe extern "C" fn NAL_LISTENER_reset(list: *mut NAL_LISTENER) {
    guard("NAL_LISTENER_reset", (), || {
        // SAFETY: list is NULL or a live NAL_LISTENER (caller contract).
        if let Some(l) = unsafe { obj_mut(list) } {
            l.reset()
        }
    })
}

#[no_mangle]
pub unsafe extern "C" fn NAL_LISTENER_create(
    list: *mut NAL_LISTENER,
    addr: *const NAL_ADDRESS,
) -> c_int {
    guard("NAL_LISTENER_create", 0, || {
        // SAFETY: both are NULL or live objects (caller contract).
        let (Some(l), Some(a)) = (unsafe { obj_mut(list) }, unsafe { obj(addr) }) else {
            return 0;
        };
        match a.address() {
            Some(ad) => b(l.create(ad, a.def_buffer_size())),
            None => 0,
        }
    })
}

#[no_mangle]
pub unsafe extern "C" fn NAL_LISTENER_add_to_selector(
    list: *mut NAL_LISTENER,
    sel: *mut NAL_SELECTOR,
) -> c_int {
    guard("NAL_LISTENER_add_to_selector", 0, || {
        // SAFETY: both are NULL or live objects (caller contract).
        let (Some(l), Some(s)) = (unsafe { obj_mut(list) }, unsafe { obj(sel) }) else {
            return 0;
        };
        b(l.add_to_selector(s))
    })
}

#[no_mangle]
pub unsafe extern "C" fn NAL_LISTENER_del_from_selector(list: *mut NAL_LISTENER) {
    guard("NAL_LISTENER_del_from_selector", (), || {
        // SAFETY: list is NULL or a live NAL_LISTENER (caller contract).
        if let Some(l) = unsafe { obj_mut(list) } {
            l.del_from_selector()
        }
    })
}

#[no_mangle]
pub unsafe extern "C" fn NAL_LISTENER_finished(list: *const NAL_LISTENER) -> c_int {
    guard("NAL_LISTENER_finished", 0, || {
        // SAFETY: list is NULL or a live NAL_LISTENER (caller contract).
        unsafe { obj(list) }.map_or(0, |l| b(l.finished()))
    })
}

#[no_mangle]
pub unsafe extern "C" fn NAL_LISTENER_set_fs_owner(
    list: *mut NAL_LISTENER,
    ownername: *const c_char,
    groupname: *const c_char,
) -> c_int {
    guard("NAL_LISTENER_set_fs_owner", 0, || {
        // SAFETY: list is NULL or a live NAL_LISTENER (caller contract).
        let Some(l) = (unsafe { obj_mut(list) }) else {
            return 0;
        };
        // SAFETY: each name is NULL or NUL-terminated (caller contract).
        let (o, g) = unsafe { (c_str(ownername), c_str(groupname)) };
        if (o.is_none() && !ownername.is_null()) || (g.is_none() && !groupname.is_null()) {
            return 0;
        }
        b(l.set_fs_owner(o, g))
    })
}

#[no_mangle]
pub unsafe extern "C" fn NAL_LISTENER_set_fs_perms(
    list: *mut NAL_LISTENER,
    octal_string: *const c_char,
) -> c_int {
    guard("NAL_LISTENER_set_fs_perms", 0, || {
        // SAFETY: caller contract: live object and NUL-terminated string.
        let (Some(l), Some(s)) = (unsafe { obj_mut(list) }, unsafe { c_str(octal_string) }) else {
            return 0;
        };
        b(l.set_fs_perms(s))
    })
}

/* ------------------------------------------------------------ connection */

#[no_mangle]
pub unsafe extern "C" fn NAL_CONNECTION_new() -> *mut NAL_CONNECTION {
    guard("NAL_CONNECTION_new", null_mut(), || {
        into_c(NAL_CONNECTION::new())
    })
}

#[no_mangle]
pub unsafe extern "C" fn NAL_CONNECTION_free(conn: *mut NAL_CONNECTION) {
    // SAFETY: conn is NULL or came from NAL_CONNECTION_new (caller contract).
    guard("NAL_CONNECTION_free", (), || drop(unsafe { from_c(conn) }))
}

#[no_mangle]
pub unsafe extern "C" fn NAL_CONNECTION_reset(conn: *mut NAL_CONNECTION) {
    guard("NAL_CONNECTION_reset", (), || {
        // SAFETY: conn is NULL or a live NAL_CONNECTION (caller contract).
        if let Some(c) = unsafe { obj_mut(conn) } {
            c.reset()
        }
    })
}

#[no_mangle]
pub unsafe extern "C" fn NAL_CONNECTION_create(
    conn: *mut NAL_CONNECTION,
    addr: *const NAL_ADDRESS,
) -> c_int {
    guard("NAL_CONNECTION_create", 0, || {
        // SAFETY: both are NULL or live objects (caller contract).
        let (Some(c), Some(a)) = (unsafe { obj_mut(conn) }, unsafe { obj(addr) }) else {
            return 0;
        };
        match a.address() {
            Some(ad) => b(c.create(ad, a.def_buffer_size())),
            None => 0,
        }
    })
}

#[no_mangle]
pub unsafe extern "C" fn NAL_CONNECTION_accept(
    conn: *mut NAL_CONNECTION,
    list: *mut NAL_LISTENER,
) -> c_int {
    guard("NAL_CONNECTION_accept", 0, || {
        // SAFETY: both are NULL or live objects (caller contract).
        let (Some(c), Some(l)) = (unsafe { obj_mut(conn) }, unsafe { obj_mut(list) }) else {
            return 0;
        };
        b(c.accept(l))
    })
}

#[no_mangle]
pub unsafe extern "C" fn NAL_CONNECTION_set_size(conn: *mut NAL_CONNECTION, size: c_uint) -> c_int {
    guard("NAL_CONNECTION_set_size", 0, || {
        // SAFETY: conn is NULL or a live NAL_CONNECTION (caller contract).
        unsafe { obj_mut(conn) }.map_or(0, |c| b(c.set_size(size as usize)))
    })
}

/// Pointer to one buffer inside a connection's shared state.
///
/// # Safety
/// `conn` is NULL or a live NAL_CONNECTION.
unsafe fn buf_ptr(conn: *const NAL_CONNECTION, send: bool) -> *mut NAL_BUFFER {
    // SAFETY: per the function contract.
    let Some(c) = (unsafe { obj(conn) }) else {
        return null_mut();
    };
    let core = c.core_ptr();
    // SAFETY: `core` points to the connection's shared state, alive (at a
    // fixed address) as long as the connection; addr_of_mut! only computes a
    // field address and creates no reference. The C side accesses the
    // buffer on the thread that owns the connection, outside any select.
    unsafe {
        if send {
            std::ptr::addr_of_mut!((*core).bufs.send)
        } else {
            std::ptr::addr_of_mut!((*core).bufs.read)
        }
    }
}

#[no_mangle]
pub unsafe extern "C" fn NAL_CONNECTION_get_read(conn: *mut NAL_CONNECTION) -> *mut NAL_BUFFER {
    // SAFETY: conn is NULL or a live NAL_CONNECTION (caller contract).
    guard("NAL_CONNECTION_get_read", null_mut(), || unsafe {
        buf_ptr(conn, false)
    })
}

#[no_mangle]
pub unsafe extern "C" fn NAL_CONNECTION_get_send(conn: *mut NAL_CONNECTION) -> *mut NAL_BUFFER {
    // SAFETY: conn is NULL or a live NAL_CONNECTION (caller contract).
    guard("NAL_CONNECTION_get_send", null_mut(), || unsafe {
        buf_ptr(conn, true)
    })
}

#[no_mangle]
pub unsafe extern "C" fn NAL_CONNECTION_get_read_c(
    conn: *const NAL_CONNECTION,
) -> *const NAL_BUFFER {
    // SAFETY: conn is NULL or a live NAL_CONNECTION (caller contract).
    guard("NAL_CONNECTION_get_read_c", null(), || unsafe {
        buf_ptr(conn, false).cast_const()
    })
}

#[no_mangle]
pub unsafe extern "C" fn NAL_CONNECTION_get_send_c(
    conn: *const NAL_CONNECTION,
) -> *const NAL_BUFFER {
    // SAFETY: conn is NULL or a live NAL_CONNECTION (caller contract).
    guard("NAL_CONNECTION_get_send_c", null(), || unsafe {
        buf_ptr(conn, true).cast_const()
    })
}

#[no_mangle]
pub unsafe extern "C" fn NAL_CONNECTION_io(conn: *mut NAL_CONNECTION) -> c_int {
    guard("NAL_CONNECTION_io", 0, || {
        // SAFETY: conn is NULL or a live NAL_CONNECTION (caller contract).
        unsafe { obj_mut(conn) }.map_or(0, |c| b(c.io()))
    })
}

#[no_mangle]
pub unsafe extern "C" fn NAL_CONNECTION_is_established(conn: *const NAL_CONNECTION) -> c_int {
    guard("NAL_CONNECTION_is_established", 0, || {
        // SAFETY: conn is NULL or a live NAL_CONNECTION (caller contract).
        unsafe { obj(conn) }.map_or(0, |c| b(c.is_established()))
    })
}

#[no_mangle]
pub unsafe extern "C" fn NAL_CONNECTION_add_to_selector(
    conn: *mut NAL_CONNECTION,
    sel: *mut NAL_SELECTOR,
) -> c_int {
    guard("NAL_CONNECTION_add_to_selector", 0, || {
        // SAFETY: both are NULL or live objects (caller contract).
        let (Some(c), Some(s)) = (unsafe { obj_mut(conn) }, unsafe { obj(sel) }) else {
            return 0;
        };
        b(c.add_to_selector(s))
    })
}

#[no_mangle]
pub unsafe extern "C" fn NAL_CONNECTION_del_from_selector(conn: *mut NAL_CONNECTION) {
    guard("NAL_CONNECTION_del_from_selector", (), || {
        // SAFETY: conn is NULL or a live NAL_CONNECTION (caller contract).
        if let Some(c) = unsafe { obj_mut(conn) } {
            c.del_from_selector()
        }
    })
}

#[no_mangle]
pub unsafe extern "C" fn NAL_CONNECTION_create_pair(
    conn1: *mut NAL_CONNECTION,
    conn2: *mut NAL_CONNECTION,
    def_buffer_size: c_uint,
) -> c_int {
    guard("NAL_CONNECTION_create_pair", 0, || {
        if conn1 == conn2 {
            return 0;
        }
        // SAFETY: both are NULL or live, distinct objects (checked above).
        let (Some(a), Some(c)) = (unsafe { obj_mut(conn1) }, unsafe { obj_mut(conn2) }) else {
            return 0;
        };
        b(NAL_CONNECTION::create_pair(a, c, def_buffer_size as usize))
    })
}

/* ---------------------------------------------------------------- buffer */

#[no_mangle]
pub unsafe extern "C" fn NAL_BUFFER_new() -> *mut NAL_BUFFER {
    guard("NAL_BUFFER_new", null_mut(), || into_c(NAL_BUFFER::new()))
}

#[no_mangle]
pub unsafe extern "C" fn NAL_BUFFER_free(buf: *mut NAL_BUFFER) {
    // SAFETY: buf is NULL or came from NAL_BUFFER_new (caller contract).
    guard("NAL_BUFFER_free", (), || drop(unsafe { from_c(buf) }))
}

#[no_mangle]
pub unsafe extern "C" fn NAL_BUFFER_reset(buf: *mut NAL_BUFFER) {
    guard("NAL_BUFFER_reset", (), || {
        // SAFETY: buf is NULL or a live NAL_BUFFER (caller contract).
        if let Some(bf) = unsafe { obj_mut(buf) } {
            bf.clear()
        }
    })
}

#[no_mangle]
pub unsafe extern "C" fn NAL_BUFFER_set_size(buf: *mut NAL_BUFFER, size: c_uint) -> c_int {
    guard("NAL_BUFFER_set_size", 0, || {
        // SAFETY: buf is NULL or a live NAL_BUFFER (caller contract).
        unsafe { obj_mut(buf) }.map_or(0, |bf| b(bf.set_size(size as usize)))
    })
}

#[no_mangle]
pub unsafe extern "C" fn NAL_BUFFER_empty(buf: *const NAL_BUFFER) -> c_int {
    guard("NAL_BUFFER_empty", 0, || {
        // SAFETY: buf is NULL or a live NAL_BUFFER (caller contract).
        unsafe { obj(buf) }.map_or(0, |bf| b(bf.is_empty()))
    })
}

#[no_mangle]
pub unsafe extern "C" fn NAL_BUFFER_full(buf: *const NAL_BUFFER) -> c_int {
    guard("NAL_BUFFER_full", 0, || {
        // SAFETY: buf is NULL or a live NAL_BUFFER (caller contract).
        unsafe { obj(buf) }.map_or(0, |bf| b(bf.is_full()))
    })
}

#[no_mangle]
pub unsafe extern "C" fn NAL_BUFFER_notempty(buf: *const NAL_BUFFER) -> c_int {
    guard("NAL_BUFFER_notempty", 0, || {
        // SAFETY: buf is NULL or a live NAL_BUFFER (caller contract).
        unsafe { obj(buf) }.map_or(0, |bf| b(!bf.is_empty()))
    })
}

#[no_mangle]
pub unsafe extern "C" fn NAL_BUFFER_notfull(buf: *const NAL_BUFFER) -> c_int {
    guard("NAL_BUFFER_notfull", 0, || {
        // SAFETY: buf is NULL or a live NAL_BUFFER (caller contract).
        unsafe { obj(buf) }.map_or(0, |bf| b(!bf.is_full()))
    })
}

#[no_mangle]
pub unsafe extern "C" fn NAL_BUFFER_used(buf: *const NAL_BUFFER) -> c_uint {
    guard("NAL_BUFFER_used", 0, || {
        // SAFETY: buf is NULL or a live NAL_BUFFER (caller contract).
        unsafe { obj(buf) }.map_or(0, |bf| ui(bf.used()))
    })
}

#[no_mangle]
pub unsafe extern "C" fn NAL_BUFFER_unused(buf: *const NAL_BUFFER) -> c_uint {
    guard("NAL_BUFFER_unused", 0, || {
        // SAFETY: buf is NULL or a live NAL_BUFFER (caller contract).
        unsafe { obj(buf) }.map_or(0, |bf| ui(bf.unused()))
    })
}

#[no_mangle]
pub unsafe extern "C" fn NAL_BUFFER_size(buf: *const NAL_BUFFER) -> c_uint {
    guard("NAL_BUFFER_size", 0, || {
        // SAFETY: buf is NULL or a live NAL_BUFFER (caller contract).
        unsafe { obj(buf) }.map_or(0, |bf| ui(bf.size()))
    })
}

#[no_mangle]
pub unsafe extern "C" fn NAL_BUFFER_data(buf: *const NAL_BUFFER) -> *const c_uchar {
    guard("NAL_BUFFER_data", null(), || {
        // SAFETY: buf is NULL or a live NAL_BUFFER (caller contract).
        unsafe { obj(buf) }.map_or(null(), |bf| bf.data().as_ptr())
    })
}

#[no_mangle]
pub unsafe extern "C" fn NAL_BUFFER_write(
    buf: *mut NAL_BUFFER,
    ptr: *const c_uchar,
    size: c_uint,
) -> c_uint {
    guard("NAL_BUFFER_write", 0, || {
        // SAFETY: caller contract: live buffer; ptr holds `size` bytes.
        let (Some(bf), Some(src)) = (unsafe { obj_mut(buf) }, unsafe {
            bytes(ptr, size as usize)
        }) else {
            return 0;
        };
        ui(bf.write(src))
    })
}

/// Reading into a NULL `ptr` discards up to `size` bytes.
#[no_mangle]
pub unsafe extern "C" fn NAL_BUFFER_read(
    buf: *mut NAL_BUFFER,
    ptr: *mut c_uchar,
    size: c_uint,
) -> c_uint {
    guard("NAL_BUFFER_read", 0, || {
        // SAFETY: buf is NULL or a live NAL_BUFFER (caller contract).
        let Some(bf) = (unsafe { obj_mut(buf) }) else {
            return 0;
        };
        if ptr.is_null() {
            return ui(bf.consume(size as usize));
        }
        // SAFETY: caller contract: ptr has room for `size` bytes.
        match unsafe { bytes_mut(ptr, size as usize) } {
            Some(dst) => ui(bf.read(dst)),
            None => 0,
        }
    })
}

/// Move up to `max` bytes from `src` to `dest`; `max == 0` means no limit
/// (as much as `src` holds and `dest` has room for), as in the original.
#[no_mangle]
pub unsafe extern "C" fn NAL_BUFFER_transfer(
    dest: *mut NAL_BUFFER,
    src: *mut NAL_BUFFER,
    max: c_uint,
) -> c_uint {
    guard("NAL_BUFFER_transfer", 0, || {
        if dest == src {
            return 0;
        }
        // SAFETY: both are NULL or live, distinct buffers (checked above).
        let (Some(d), Some(s)) = (unsafe { obj_mut(dest) }, unsafe { obj_mut(src) }) else {
            return 0;
        };
        let max = if max == 0 { usize::MAX } else { max as usize };
        ui(d.transfer_from(s, max))
    })
}

#[no_mangle]
pub unsafe extern "C" fn NAL_BUFFER_write_ptr(buf: *mut NAL_BUFFER) -> *mut c_uchar {
    guard("NAL_BUFFER_write_ptr", null_mut(), || {
        // SAFETY: buf is NULL or a live NAL_BUFFER (caller contract).
        unsafe { obj_mut(buf) }.map_or(null_mut(), |bf| bf.write_ptr())
    })
}

#[no_mangle]
pub unsafe extern "C" fn NAL_BUFFER_wrote(buf: *mut NAL_BUFFER, size: c_uint) {
    guard("NAL_BUFFER_wrote", (), || {
        // SAFETY: buf is NULL or a live NAL_BUFFER (caller contract).
        if let Some(bf) = unsafe { obj_mut(buf) } {
            bf.wrote(size as usize);
        }
    })
}

/* ---------------------------------------------------------------- codec */

/// Run a decoder on the cursor `(*bin, *bin_len)`, advancing it on success.
///
/// # Safety
/// `bin`, `bin_len` are NULL or valid; `*bin` points to `*bin_len` bytes.
unsafe fn decode_with(
    bin: *mut *const c_uchar,
    bin_len: *mut c_uint,
    f: impl FnOnce(&mut &[u8]) -> bool,
) -> c_int {
    // SAFETY: per the function contract.
    let (Some(p), Some(len)) = (unsafe { obj_mut(bin) }, unsafe { obj_mut(bin_len) }) else {
        return 0;
    };
    // SAFETY: per the function contract.
    let Some(data) = (unsafe { bytes(*p, *len as usize) }) else {
        return 0;
    };
    let mut cur = data;
    if !f(&mut cur) {
        return 0;
    }
    let used = data.len() - cur.len();
    *p = (*p).wrapping_add(used);
    *len -= used as c_uint;
    1
}

/// Run an encoder on the cursor `(*bin, *bin_len)`, advancing it on success.
///
/// # Safety
/// `bin`, `bin_len` are NULL or valid; `*bin` points to `*bin_len` writable
/// bytes.
unsafe fn encode_with(
    bin: *mut *mut c_uchar,
    bin_len: *mut c_uint,
    f: impl FnOnce(&mut &mut [u8]) -> bool,
) -> c_int {
    // SAFETY: per the function contract.
    let (Some(p), Some(len)) = (unsafe { obj_mut(bin) }, unsafe { obj_mut(bin_len) }) else {
        return 0;
    };
    // SAFETY: per the function contract.
    let Some(data) = (unsafe { bytes_mut(*p, *len as usize) }) else {
        return 0;
    };
    let total = data.len();
    let mut cur = data;
    if !f(&mut cur) {
        return 0;
    }
    let used = total - cur.len();
    *p = (*p).wrapping_add(used);
    *len -= used as c_uint;
    1
}

#[no_mangle]
pub unsafe extern "C" fn NAL_decode_uint32(
    bin: *mut *const c_uchar,
    bin_len: *mut c_uint,
    val: *mut c_ulong,
) -> c_int {
    guard("NAL_decode_uint32", 0, || {
        // SAFETY: caller contract for all three pointers.
        let Some(v) = (unsafe { obj_mut(val) }) else {
            return 0;
        };
        // SAFETY: caller contract.
        unsafe {
            decode_with(bin, bin_len, |c| {
                codec::decode_u32(c)
                    .map(|x| *v = c_ulong::from(x))
                    .is_some()
            })
        }
    })
}

#[no_mangle]
pub unsafe extern "C" fn NAL_decode_uint16(
    bin: *mut *const c_uchar,
    bin_len: *mut c_uint,
    val: *mut c_uint,
) -> c_int {
    guard("NAL_decode_uint16", 0, || {
        // SAFETY: caller contract for all three pointers.
        let Some(v) = (unsafe { obj_mut(val) }) else {
            return 0;
        };
        // SAFETY: caller contract.
        unsafe {
            decode_with(bin, bin_len, |c| {
                codec::decode_u16(c).map(|x| *v = c_uint::from(x)).is_some()
            })
        }
    })
}

#[no_mangle]
pub unsafe extern "C" fn NAL_decode_char(
    bin: *mut *const c_uchar,
    bin_len: *mut c_uint,
    val: *mut c_uchar,
) -> c_int {
    guard("NAL_decode_char", 0, || {
        // SAFETY: caller contract for all three pointers.
        let Some(v) = (unsafe { obj_mut(val) }) else {
            return 0;
        };
        // SAFETY: caller contract.
        unsafe {
            decode_with(bin, bin_len, |c| {
                codec::decode_u8(c).map(|x| *v = x).is_some()
            })
        }
    })
}

#[no_mangle]
pub unsafe extern "C" fn NAL_decode_bin(
    bin: *mut *const c_uchar,
    bin_len: *mut c_uint,
    val: *mut c_uchar,
    val_len: c_uint,
) -> c_int {
    guard("NAL_decode_bin", 0, || {
        // SAFETY: caller contract: val has room for val_len bytes.
        let Some(out) = (unsafe { bytes_mut(val, val_len as usize) }) else {
            return 0;
        };
        // SAFETY: caller contract.
        unsafe { decode_with(bin, bin_len, |c| codec::decode_bin(c, out)) }
    })
}

#[no_mangle]
pub unsafe extern "C" fn NAL_encode_uint32(
    bin: *mut *mut c_uchar,
    bin_len: *mut c_uint,
    val: c_ulong,
) -> c_int {
    guard("NAL_encode_uint32", 0, || {
        // SAFETY: caller contract. Only the low 32 bits travel.
        unsafe { encode_with(bin, bin_len, |c| codec::encode_u32(c, val as u32)) }
    })
}

#[no_mangle]
pub unsafe extern "C" fn NAL_encode_uint16(
    bin: *mut *mut c_uchar,
    bin_len: *mut c_uint,
    val: c_uint,
) -> c_int {
    guard("NAL_encode_uint16", 0, || {
        // SAFETY: caller contract. Only the low 16 bits travel.
        unsafe { encode_with(bin, bin_len, |c| codec::encode_u16(c, val as u16)) }
    })
}

#[no_mangle]
pub unsafe extern "C" fn NAL_encode_char(
    bin: *mut *mut c_uchar,
    bin_len: *mut c_uint,
    val: c_uchar,
) -> c_int {
    guard("NAL_encode_char", 0, || {
        // SAFETY: caller contract.
        unsafe { encode_with(bin, bin_len, |c| codec::encode_u8(c, val)) }
    })
}

#[no_mangle]
pub unsafe extern "C" fn NAL_encode_bin(
    bin: *mut *mut c_uchar,
    bin_len: *mut c_uint,
    val: *const c_uchar,
    val_len: c_uint,
) -> c_int {
    guard("NAL_encode_bin", 0, || {
        // SAFETY: caller contract: val holds val_len bytes.
        let Some(src) = (unsafe { bytes(val, val_len as usize) }) else {
            return 0;
        };
        // SAFETY: caller contract.
        unsafe { encode_with(bin, bin_len, |c| codec::encode_bin(c, src)) }
    })
}
