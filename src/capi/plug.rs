//! C ABI of DC_PLUG (`distcache/dc_plug.h`): the 11 `DC_PLUG_*` functions
//! over [`crate::plug::Plug`].
//!
//! A DC_PLUG owns its NAL_CONNECTION (freed by `DC_PLUG_free`) unless it was
//! made with `DC_PLUG_FLAG_NOFREE_CONN`; then the caller keeps the
//! connection and must keep it alive for as long as the plug exists.
//! Request ids are 32 bits on the wire: `DC_PLUG_write` sends the low 32
//! bits of `request_uid`.

use std::os::raw::{c_int, c_uchar, c_uint, c_ulong};
use std::ptr::NonNull;

use super::nal::{NAL_CONNECTION, NAL_SELECTOR};
use super::{bytes, from_c, guard, into_c, obj, obj_mut};
use crate::plug::{ConnHandle, Plug, FLAG_NOFREE_CONN, FLAG_TO_SERVER};
use crate::proto::Cmd;

/// The C `DC_PLUG`.
pub type DC_PLUG = Plug;
/// The C enum `DC_CMD` (int-sized; declared by the header prelude).
pub type DC_CMD = c_int;

/// A caller's NAL_CONNECTION used by a plug or a DC_SERVER client: owned
/// (freed on drop, like `NAL_CONNECTION_free`) or borrowed (NOFREE_CONN).
pub(crate) struct CConn {
    ptr: NonNull<NAL_CONNECTION>,
    owned: bool,
}

impl CConn {
    /// Wrap a connection pointer; NULL gives None.
    ///
    /// # Safety
    /// `conn` is NULL or a live NAL_CONNECTION from `NAL_CONNECTION_new`.
    /// It must stay alive for as long as the returned value (when not
    /// `owned`, the caller keeps it alive; when `owned`, nobody else frees
    /// it), and must not be used by anyone else while a function taking the
    /// owning plug or client runs.
    pub(crate) unsafe fn new(conn: *mut NAL_CONNECTION, owned: bool) -> Option<CConn> {
        NonNull::new(conn).map(|ptr| CConn { ptr, owned })
    }
}

// SAFETY: a CConn is the only user of its connection while the plug or
// client holding it is being used (CConn::new's contract), and Connection
// itself is Send; C callers may move a DC_PLUG between threads, as they
// could with the original.
unsafe impl Send for CConn {}

impl ConnHandle for CConn {
    fn conn(&mut self) -> &mut NAL_CONNECTION {
        // SAFETY: per CConn::new's contract the pointer is live and not used
        // elsewhere while the plug or client that holds us is being used;
        // the reference borrows `self` mutably, so there is only one.
        unsafe { self.ptr.as_mut() }
    }
}

impl Drop for CConn {
    fn drop(&mut self) {
        if self.owned {
            // SAFETY: an owned pointer came from NAL_CONNECTION_new (a Box)
            // and nobody else frees it (CConn::new's contract).
            drop(unsafe { from_c(self.ptr.as_ptr()) });
        }
    }
}

fn b(v: bool) -> c_int {
    v as c_int
}

#[no_mangle]
pub unsafe extern "C" fn DC_PLUG_new(conn: *mut NAL_CONNECTION, flags: c_uint) -> *mut DC_PLUG {
    guard("DC_PLUG_new", std::ptr::null_mut(), || {
        let owned = flags & FLAG_NOFREE_CONN == 0;
        // SAFETY: conn is NULL or a live connection handed over by the
        // caller (owned unless NOFREE_CONN, then kept alive by the caller).
        match unsafe { CConn::new(conn, owned) } {
            Some(c) => into_c(Plug::new(Box::new(c), flags & FLAG_TO_SERVER != 0)),
            None => std::ptr::null_mut(),
        }
    })
}

#[no_mangle]
pub unsafe extern "C" fn DC_PLUG_free(plug: *mut DC_PLUG) -> c_int {
    guard("DC_PLUG_free", 0, || {
        // SAFETY: plug is NULL or came from DC_PLUG_new (caller contract).
        b(unsafe { from_c(plug) }.is_some())
    })
}

#[no_mangle]
pub unsafe extern "C" fn DC_PLUG_to_select(plug: *mut DC_PLUG, sel: *mut NAL_SELECTOR) -> c_int {
    guard("DC_PLUG_to_select", 0, || {
        // SAFETY: both are NULL or live objects of this library (caller contract).
        let (Some(p), Some(s)) = (unsafe { obj_mut(plug) }, unsafe { obj(sel) }) else {
            return 0;
        };
        b(p.to_select(s))
    })
}

#[no_mangle]
pub unsafe extern "C" fn DC_PLUG_from_select(plug: *mut DC_PLUG) {
    guard("DC_PLUG_from_select", (), || {
        // SAFETY: plug is NULL or a live DC_PLUG (caller contract).
        if let Some(p) = unsafe { obj_mut(plug) } {
            p.from_select();
        }
    })
}

#[no_mangle]
pub unsafe extern "C" fn DC_PLUG_io(plug: *mut DC_PLUG) -> c_int {
    guard("DC_PLUG_io", 0, || {
        // SAFETY: plug is NULL or a live DC_PLUG (caller contract).
        unsafe { obj_mut(plug) }.map_or(0, |p| b(p.io()))
    })
}

#[no_mangle]
pub unsafe extern "C" fn DC_PLUG_read(
    plug: *mut DC_PLUG,
    resume: c_int,
    request_uid: *mut c_ulong,
    cmd: *mut DC_CMD,
    payload_data: *mut *const c_uchar,
    payload_len: *mut c_uint,
) -> c_int {
    guard("DC_PLUG_read", 0, || {
        if request_uid.is_null() || cmd.is_null() || payload_data.is_null() || payload_len.is_null()
        {
            return 0;
        }
        // SAFETY: plug is NULL or a live DC_PLUG (caller contract).
        let Some(p) = (unsafe { obj_mut(plug) }) else {
            return 0;
        };
        let Some(m) = p.read(resume != 0) else {
            return 0;
        };
        // SAFETY: the four output pointers are non-NULL (checked above) and
        // point to writable objects of their types (caller contract). The
        // payload pointer stays valid until DC_PLUG_consume: the message's
        // storage is not touched until then.
        unsafe {
            *request_uid = m.uid as c_ulong;
            *cmd = m.cmd.to_dc_cmd();
            *payload_data = m.payload.as_ptr();
            *payload_len = m.payload.len() as c_uint;
        }
        1
    })
}

#[no_mangle]
pub unsafe extern "C" fn DC_PLUG_consume(plug: *mut DC_PLUG) -> c_int {
    guard("DC_PLUG_consume", 0, || {
        // SAFETY: plug is NULL or a live DC_PLUG (caller contract).
        unsafe { obj_mut(plug) }.map_or(0, |p| b(p.consume()))
    })
}

#[no_mangle]
pub unsafe extern "C" fn DC_PLUG_write(
    plug: *mut DC_PLUG,
    resume: c_int,
    request_uid: c_ulong,
    cmd: DC_CMD,
    payload_data: *const c_uchar,
    payload_len: c_uint,
) -> c_int {
    guard("DC_PLUG_write", 0, || {
        let Some(cmd) = Cmd::from_dc_cmd(cmd) else {
            return 0;
        };
        if payload_len as usize > crate::proto::MAX_TOTAL_DATA {
            return 0;
        }
        // SAFETY: plug is NULL or a live DC_PLUG; payload_data is NULL (only
        // with length 0) or points to payload_len readable bytes (caller
        // contract).
        let (Some(p), Some(data)) = (unsafe { obj_mut(plug) }, unsafe {
            bytes(payload_data, payload_len as usize)
        }) else {
            return 0;
        };
        // Request ids are 32 bits on the wire.
        b(p.write(resume != 0, request_uid as u32, cmd, data).is_ok())
    })
}

#[no_mangle]
pub unsafe extern "C" fn DC_PLUG_write_more(
    plug: *mut DC_PLUG,
    data: *const c_uchar,
    data_len: c_uint,
) -> c_int {
    guard("DC_PLUG_write_more", 0, || {
        if data_len as usize > crate::proto::MAX_TOTAL_DATA {
            return 0;
        }
        // SAFETY: plug is NULL or a live DC_PLUG; data is NULL (only with
        // length 0) or points to data_len readable bytes (caller contract).
        let (Some(p), Some(d)) = (unsafe { obj_mut(plug) }, unsafe {
            bytes(data, data_len as usize)
        }) else {
            return 0;
        };
        b(p.write_more(d).is_ok())
    })
}

#[no_mangle]
pub unsafe extern "C" fn DC_PLUG_commit(plug: *mut DC_PLUG) -> c_int {
    guard("DC_PLUG_commit", 0, || {
        // SAFETY: plug is NULL or a live DC_PLUG (caller contract).
        unsafe { obj_mut(plug) }.map_or(0, |p| b(p.commit().is_ok()))
    })
}

#[no_mangle]
pub unsafe extern "C" fn DC_PLUG_rollback(plug: *mut DC_PLUG) -> c_int {
    guard("DC_PLUG_rollback", 0, || {
        // SAFETY: plug is NULL or a live DC_PLUG (caller contract).
        unsafe { obj_mut(plug) }.map_or(0, |p| b(p.rollback()))
    })
}
