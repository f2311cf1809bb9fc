//! The C ABI: every exported function of libnal, libdistcache and
//! libdistcacheserver, grouped like the C headers.
//!
//! Every `extern "C"` function body runs inside [`guard`], which catches a
//! Rust panic and turns it into the function's documented failure value, so
//! a bug in this library can never unwind into (or abort) the host process.
//! Pointers received from C are turned into references only through the
//! helpers below, which treat NULL as a failure instead of a crash.
//!
//! Opaque C types map to Rust types like this: the C side only ever holds a
//! pointer produced by `Box::into_raw` of the Rust object, and gives it back
//! to `*_free`, which reclaims it with `Box::from_raw`.

#![allow(non_camel_case_types, non_snake_case, clippy::missing_safety_doc)]

use std::panic::{catch_unwind, AssertUnwindSafe};

pub mod client;
pub mod nal;
pub mod plug;
pub mod server;

/// Run `f`, returning `fail` if it panics. The panic message has already
/// been printed on stderr by the panic hook; we add which entry point failed.
pub(crate) fn guard<R>(func: &'static str, fail: R, f: impl FnOnce() -> R) -> R {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(r) => r,
        Err(_) => {
            eprintln!("distcache-rs: internal error in {func}; returning failure to the caller");
            fail
        }
    }
}

/// Borrow a C object immutably; NULL gives None.
///
/// # Safety
/// `p` is NULL or a pointer this library handed out for a live `T`, not
/// being mutated elsewhere for the duration of `'a`.
pub(crate) unsafe fn obj<'a, T>(p: *const T) -> Option<&'a T> {
    // SAFETY: per the function contract, a non-NULL p points to a live T.
    unsafe { p.as_ref() }
}

/// Borrow a C object mutably; NULL gives None.
///
/// # Safety
/// `p` is NULL or a pointer this library handed out for a live `T`, with no
/// other reference to it alive for the duration of `'a`.
pub(crate) unsafe fn obj_mut<'a, T>(p: *mut T) -> Option<&'a mut T> {
    // SAFETY: per the function contract, a non-NULL p points to a live,
    // unaliased T.
    unsafe { p.as_mut() }
}

/// Hand a new object to C.
pub(crate) fn into_c<T>(v: T) -> *mut T {
    Box::into_raw(Box::new(v))
}

/// Take back ownership of an object handed to C; NULL gives None.
///
/// # Safety
/// `p` is NULL or came from [`into_c`] and has not been freed yet.
pub(crate) unsafe fn from_c<T>(p: *mut T) -> Option<Box<T>> {
    if p.is_null() {
        None
    } else {
        // SAFETY: per the function contract p came from Box::into_raw.
        Some(unsafe { Box::from_raw(p) })
    }
}

/// View C memory as a byte slice. NULL is allowed only with length 0.
///
/// # Safety
/// A non-NULL `p` must point to `len` readable bytes that stay valid and
/// unmodified for `'a`.
pub(crate) unsafe fn bytes<'a>(p: *const u8, len: usize) -> Option<&'a [u8]> {
    if p.is_null() {
        if len == 0 {
            Some(&[])
        } else {
            None
        }
    } else {
        // SAFETY: per the function contract.
        Some(unsafe { std::slice::from_raw_parts(p, len) })
    }
}

/// View writable C memory as a byte slice. NULL is allowed only with length 0.
///
/// # Safety
/// A non-NULL `p` must point to `len` writable bytes, not aliased for `'a`.
pub(crate) unsafe fn bytes_mut<'a>(p: *mut u8, len: usize) -> Option<&'a mut [u8]> {
    if p.is_null() {
        if len == 0 {
            Some(&mut [])
        } else {
            None
        }
    } else {
        // SAFETY: per the function contract.
        Some(unsafe { std::slice::from_raw_parts_mut(p, len) })
    }
}

/// Read a NUL-terminated C string as UTF-8 (lossy is not acceptable for
/// addresses, so invalid UTF-8 gives None).
///
/// # Safety
/// A non-NULL `p` must point to a NUL-terminated string.
pub(crate) unsafe fn c_str<'a>(p: *const std::os::raw::c_char) -> Option<&'a str> {
    if p.is_null() {
        return None;
    }
    // SAFETY: per the function contract.
    unsafe { std::ffi::CStr::from_ptr(p) }.to_str().ok()
}
