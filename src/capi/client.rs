//! C ABI of the blocking client: the seven `DC_CTX_*` functions of
//! `distcache/dc_client.h`, thin wrappers over [`crate::client::Client`].
//!
//! Return values follow ABI.md: add/remove 1 or 0, get/reget 1 (hit) or 0,
//! has 1 (present), 0 (absent) or -1 (error). Arguments the original only
//! asserted on (NULL pointers, empty or over-long ids, empty or over-long
//! session data, a NULL `result_used`) give the failure value.

use std::os::raw::{c_char, c_int, c_uchar, c_uint, c_ulong};
use std::ptr;

use super::{bytes, bytes_mut, c_str, from_c, guard, into_c, obj};
use crate::client::{AddOutcome, Client, Error, Session};
use crate::proto::{MAX_ID_LEN, MAX_TOTAL_DATA};

/// Length of the id view: a caller's over-long length is cut to one byte
/// past the limit, which the client refuses, so no slice ever claims more
/// memory than a valid request needs (a garbage length is never trusted).
fn clamp_id(len: c_uint) -> usize {
    (len as usize).min(MAX_ID_LEN + 1)
}

/// Same for session data.
fn clamp_data(len: c_uint) -> usize {
    (len as usize).min(MAX_TOTAL_DATA + 1)
}

/// `DC_CTX`: a [`Client`].
pub type DC_CTX = Client;

/// Create a client for `target` with `DC_CTX_FLAG_*` bits; NULL on a bad
/// address, or when `PERSISTENT` (without `LATE`) cannot connect.
#[no_mangle]
pub unsafe extern "C" fn DC_CTX_new(target: *const c_char, flags: c_uint) -> *mut DC_CTX {
    guard("DC_CTX_new", ptr::null_mut(), || {
        // SAFETY: the caller passes NULL or a NUL-terminated string.
        let Some(t) = (unsafe { c_str(target) }) else {
            return ptr::null_mut();
        };
        match Client::new(t, flags) {
            Ok(c) => into_c(c),
            Err(e) => {
                crate::client::log_line(&format!(
                    "distcache-rs: DC_CTX_new({t:?}, {flags:#x}): {e}"
                ));
                ptr::null_mut()
            }
        }
    })
}

/// Free a client (closing its connections). NULL is ignored.
#[no_mangle]
pub unsafe extern "C" fn DC_CTX_free(ctx: *mut DC_CTX) {
    guard("DC_CTX_free", (), || {
        // SAFETY: ctx is NULL or came from DC_CTX_new and is freed once.
        drop(unsafe { from_c(ctx) });
    })
}

/// Add a session; 1 when the server stored it, 0 otherwise.
#[no_mangle]
pub unsafe extern "C" fn DC_CTX_add_session(
    ctx: *mut DC_CTX,
    id_data: *const c_uchar,
    id_len: c_uint,
    sess_data: *const c_uchar,
    sess_len: c_uint,
    timeout_msecs: c_ulong,
) -> c_int {
    guard("DC_CTX_add_session", 0, || {
        // SAFETY: ctx is NULL or a live DC_CTX; Client is Sync, so a shared
        // reference is sound even while other threads use it.
        let Some(c) = (unsafe { obj(ctx) }) else {
            return 0;
        };
        // SAFETY: the caller passes NULL or id_len readable bytes; we view
        // at most one byte more than a valid id has.
        let Some(id) = (unsafe { bytes(id_data, clamp_id(id_len)) }) else {
            return 0;
        };
        // SAFETY: the caller passes NULL or sess_len readable bytes; we view
        // at most one byte more than a valid session has.
        let Some(data) = (unsafe { bytes(sess_data, clamp_data(sess_len)) }) else {
            return 0;
        };
        // c_ulong is 32 bits wide on some targets.
        #[allow(clippy::unnecessary_cast)]
        let timeout = timeout_msecs as u64;
        match c.add(id, data, timeout) {
            Ok(AddOutcome::Stored) => 1,
            _ => 0,
        }
    })
}

/// Remove a session; 1 when the server removed it, 0 otherwise.
#[no_mangle]
pub unsafe extern "C" fn DC_CTX_remove_session(
    ctx: *mut DC_CTX,
    id_data: *const c_uchar,
    id_len: c_uint,
) -> c_int {
    guard("DC_CTX_remove_session", 0, || {
        // SAFETY: ctx is NULL or a live DC_CTX (Client is Sync).
        let Some(c) = (unsafe { obj(ctx) }) else {
            return 0;
        };
        // SAFETY: the caller passes NULL or id_len readable bytes; we view
        // at most one byte more than a valid id has.
        let Some(id) = (unsafe { bytes(id_data, clamp_id(id_len)) }) else {
            return 0;
        };
        match c.remove(id) {
            Ok(true) => 1,
            _ => 0,
        }
    })
}

/// Shared tail of get/reget: copy what fits, report the full length.
///
/// # Safety
/// `result_storage` is NULL or points to `result_size` writable bytes;
/// `result_used` is NULL or points to a writable `unsigned int`.
unsafe fn deliver(
    data: Option<&[u8]>,
    result_storage: *mut c_uchar,
    result_size: c_uint,
    result_used: *mut c_uint,
) -> c_int {
    // On failure `*result_used` is left as it was, as the original does.
    let Some(data) = data else {
        return 0;
    };
    // Only the bytes we write are viewed.
    let n = data.len().min(result_size as usize);
    // SAFETY: per the function contract result_storage holds result_size
    // >= n writable bytes (or is NULL, refused unless n is 0).
    let Some(store) = (unsafe { bytes_mut(result_storage, n) }) else {
        return 0;
    };
    store.copy_from_slice(&data[..n]);
    // SAFETY: checked non-NULL by the callers; writable per contract. A
    // session is at most 32768 bytes, so it fits.
    unsafe { *result_used = data.len() as c_uint };
    1
}

/// Shared body of get/reget: check the arguments, look the id up with
/// `lookup`, then [`deliver`] the result.
///
/// # Safety
/// `ctx` is NULL or a live `DC_CTX`; `id_data` is NULL or points to
/// `id_len` readable bytes; `result_storage` and `result_used` as for
/// [`deliver`].
unsafe fn get_with(
    ctx: *mut DC_CTX,
    id_data: *const c_uchar,
    id_len: c_uint,
    result_storage: *mut c_uchar,
    result_size: c_uint,
    result_used: *mut c_uint,
    lookup: impl FnOnce(&Client, &[u8]) -> Option<Session>,
) -> c_int {
    if result_used.is_null() || (result_storage.is_null() && result_size != 0) {
        return 0;
    }
    // SAFETY: ctx is NULL or a live DC_CTX (Client is Sync).
    let Some(c) = (unsafe { obj(ctx) }) else {
        return 0;
    };
    // SAFETY: the caller passes NULL or id_len readable bytes; we view at
    // most one byte more than a valid id has.
    let Some(id) = (unsafe { bytes(id_data, clamp_id(id_len)) }) else {
        return 0;
    };
    let got = lookup(c, id);
    // SAFETY: result_used is non-NULL (checked) and, like result_storage,
    // valid per the C contract.
    unsafe { deliver(got.as_deref(), result_storage, result_size, result_used) }
}

/// Fetch a session: 1 on a hit, with `*result_used` set to its full length
/// and `min(length, result_size)` bytes copied to `result_storage`; 0 on a
/// miss or an error (`*result_used` is then left untouched, as in the
/// original).
#[no_mangle]
pub unsafe extern "C" fn DC_CTX_get_session(
    ctx: *mut DC_CTX,
    id_data: *const c_uchar,
    id_len: c_uint,
    result_storage: *mut c_uchar,
    result_size: c_uint,
    result_used: *mut c_uint,
) -> c_int {
    guard("DC_CTX_get_session", 0, || {
        // SAFETY: the caller's pointers follow the C contract, which is
        // get_with's.
        unsafe {
            get_with(
                ctx,
                id_data,
                id_len,
                result_storage,
                result_size,
                result_used,
                |c, id| c.get(id).ok().flatten(),
            )
        }
    })
}

/// Like [`DC_CTX_get_session`] but answers from the calling thread's
/// previous get on `ctx` (same id, no operation in between), without
/// network traffic; 0 when there is none.
#[no_mangle]
pub unsafe extern "C" fn DC_CTX_reget_session(
    ctx: *mut DC_CTX,
    id_data: *const c_uchar,
    id_len: c_uint,
    result_storage: *mut c_uchar,
    result_size: c_uint,
    result_used: *mut c_uint,
) -> c_int {
    guard("DC_CTX_reget_session", 0, || {
        // SAFETY: as in DC_CTX_get_session.
        unsafe {
            get_with(
                ctx,
                id_data,
                id_len,
                result_storage,
                result_size,
                result_used,
                |c, id| if id.is_empty() { None } else { c.reget(id) },
            )
        }
    })
}

/// Whether a session is stored: 1 present, 0 absent, -1 error.
///
/// As in the original, a well-formed answer that is neither `00` nor `01`
/// gives -1 when it is one byte long and 0 otherwise.
#[no_mangle]
pub unsafe extern "C" fn DC_CTX_has_session(
    ctx: *mut DC_CTX,
    id_data: *const c_uchar,
    id_len: c_uint,
) -> c_int {
    guard("DC_CTX_has_session", -1, || {
        // SAFETY: ctx is NULL or a live DC_CTX (Client is Sync).
        let Some(c) = (unsafe { obj(ctx) }) else {
            return -1;
        };
        // SAFETY: the caller passes NULL or id_len readable bytes; we view
        // at most one byte more than a valid id has.
        let Some(id) = (unsafe { bytes(id_data, clamp_id(id_len)) }) else {
            return -1;
        };
        match c.has(id) {
            Ok(true) => 1,
            Ok(false) => 0,
            Err(Error::Unexpected { payload, .. }) if payload.len() != 1 => 0,
            Err(_) => -1,
        }
    })
}
