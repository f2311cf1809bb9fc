//! The one permission-string parser and the one user/group lookup, shared
//! by the library (`NAL_LISTENER_set_fs_perms`/`_set_fs_owner`) and the
//! tools (`-sockperms`, `-user`, `-sockowner`, `-sockgroup`).
//!
//! Lookups use the reentrant `getpwnam_r`/`getgrnam_r` family (no static
//! buffers: safe in a threaded host) with a buffer that starts at the
//! size the C library suggests and doubles on `ERANGE`, up to
//! [`MAX_LOOKUP_BUF`]; a group with more members than that fails with a
//! message naming the limit.

use std::ffi::{CStr, CString};
use std::io;

/// Largest buffer a lookup grows to (a group listing thousands of members
/// needs tens of KB; nothing legitimate needs more).
pub const MAX_LOOKUP_BUF: usize = 1 << 20;
/// First buffer size when the C library gives no hint.
const FIRST_LOOKUP_BUF: usize = 1024;

/// Parse a permission string: 1 to 4 octal digits (`660`, `0770`, `4755`),
/// nothing else (no sign, no blanks, no `0o` prefix). The value is at most
/// 0o7777 by construction.
pub fn parse_octal(s: &str) -> Option<u32> {
    if s.is_empty() || s.len() > 4 || !s.bytes().all(|b| (b'0'..=b'7').contains(&b)) {
        return None;
    }
    u32::from_str_radix(s, 8).ok()
}

/// A user found in the password database.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct User {
    pub name: String,
    pub uid: u32,
    pub gid: u32,
}

fn not_found(what: &str, name: &str) -> io::Error {
    io::Error::new(io::ErrorKind::NotFound, format!("unknown {what} '{name}'"))
}

fn first_buf(key: libc::c_int) -> usize {
    // SAFETY: sysconf takes a plain integer and has no side effects.
    let n = unsafe { libc::sysconf(key) };
    if n > 0 {
        (n as usize).clamp(FIRST_LOOKUP_BUF, MAX_LOOKUP_BUF)
    } else {
        FIRST_LOOKUP_BUF
    }
}

/// Run one `get*_r` call with a growing buffer. `call` returns the C
/// function's result code and whether an entry was found; `Ok(false)`
/// means "no such entry".
fn with_buffer(
    what: &str,
    name: &str,
    first: usize,
    mut call: impl FnMut(&mut [libc::c_char]) -> (libc::c_int, bool),
) -> io::Result<Option<Vec<libc::c_char>>> {
    let mut size = first;
    loop {
        let mut buf = vec![0 as libc::c_char; size];
        let (rc, found) = call(&mut buf);
        match rc {
            0 => return Ok(found.then_some(buf)),
            libc::ERANGE if size < MAX_LOOKUP_BUF => size = (size * 2).min(MAX_LOOKUP_BUF),
            libc::ERANGE => {
                return Err(io::Error::new(
                    io::ErrorKind::OutOfMemory,
                    format!(
                        "cannot look up {what} '{name}': its entry needs more than {MAX_LOOKUP_BUF} bytes"
                    ),
                ))
            }
            // "Not found" may come back as one of these, per POSIX.
            libc::ENOENT | libc::ESRCH | libc::EBADF | libc::EPERM => return Ok(None),
            e => {
                let err = io::Error::from_raw_os_error(e);
                return Err(io::Error::new(
                    err.kind(),
                    format!("cannot look up {what} '{name}': {err}"),
                ));
            }
        }
    }
}

fn user_from(pw: &libc::passwd) -> User {
    // SAFETY: on success pw_name points to a NUL-terminated string inside
    // the buffer, which the caller keeps alive.
    let n = unsafe { CStr::from_ptr(pw.pw_name) };
    User {
        name: n.to_string_lossy().into_owned(),
        uid: pw.pw_uid,
        gid: pw.pw_gid,
    }
}

/// Look a user up by name, or by numeric uid when no user has that name.
pub fn lookup_user(name: &str) -> io::Result<User> {
    let c = CString::new(name).map_err(|_| not_found("user", name))?;
    // SAFETY: an all-zero passwd is a valid value for an out-parameter.
    let mut pw: libc::passwd = unsafe { std::mem::zeroed() };
    let first = first_buf(libc::_SC_GETPW_R_SIZE_MAX);
    let found = with_buffer("user", name, first, |buf| {
        let mut res: *mut libc::passwd = std::ptr::null_mut();
        // SAFETY: every pointer is valid for the call and buf.len() is
        // its real size; getpwnam_r writes only within them.
        let rc =
            unsafe { libc::getpwnam_r(c.as_ptr(), &mut pw, buf.as_mut_ptr(), buf.len(), &mut res) };
        (rc, !res.is_null())
    })?;
    if found.is_some() {
        return Ok(user_from(&pw));
    }
    match name.parse::<u32>() {
        Ok(uid) => user_by_uid(uid)?.ok_or_else(|| not_found("user", name)),
        Err(_) => Err(not_found("user", name)),
    }
}

/// The user with this uid, if the password database has one.
pub fn user_by_uid(uid: u32) -> io::Result<Option<User>> {
    // SAFETY: an all-zero passwd is a valid value for an out-parameter.
    let mut pw: libc::passwd = unsafe { std::mem::zeroed() };
    let first = first_buf(libc::_SC_GETPW_R_SIZE_MAX);
    let found = with_buffer("uid", &uid.to_string(), first, |buf| {
        let mut res: *mut libc::passwd = std::ptr::null_mut();
        // SAFETY: as in lookup_user, for getpwuid_r.
        let rc = unsafe { libc::getpwuid_r(uid, &mut pw, buf.as_mut_ptr(), buf.len(), &mut res) };
        (rc, !res.is_null())
    })?;
    Ok(found.map(|_buf| user_from(&pw)))
}

/// The name of a uid for messages: the user name, or `uid N` spelled as a
/// number when the password database has none.
pub fn user_name(uid: u32) -> String {
    match user_by_uid(uid) {
        Ok(Some(u)) => u.name,
        _ => uid.to_string(),
    }
}

/// Look a group up by name, or by numeric gid when no group has that name.
pub fn lookup_group(name: &str) -> io::Result<u32> {
    let c = CString::new(name).map_err(|_| not_found("group", name))?;
    // SAFETY: an all-zero group is a valid value for an out-parameter.
    let mut gr: libc::group = unsafe { std::mem::zeroed() };
    let first = first_buf(libc::_SC_GETGR_R_SIZE_MAX);
    let found = with_buffer("group", name, first, |buf| {
        let mut res: *mut libc::group = std::ptr::null_mut();
        // SAFETY: every pointer is valid for the call and buf.len() is
        // its real size; getgrnam_r writes only within them.
        let rc =
            unsafe { libc::getgrnam_r(c.as_ptr(), &mut gr, buf.as_mut_ptr(), buf.len(), &mut res) };
        (rc, !res.is_null())
    })?;
    if found.is_some() {
        return Ok(gr.gr_gid);
    }
    name.parse::<u32>().map_err(|_| not_found("group", name))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn octal_syntax() {
        assert_eq!(parse_octal("660"), Some(0o660));
        assert_eq!(parse_octal("0770"), Some(0o770));
        assert_eq!(parse_octal("4755"), Some(0o4755));
        assert_eq!(parse_octal("7"), Some(0o7));
        assert_eq!(parse_octal("7777"), Some(0o7777));
        for bad in [
            "", "8", "68", "66a", "77777", "00660", "17777", "-1", "+1", " 6", "6 ", "0o660",
        ] {
            assert_eq!(parse_octal(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn users_and_groups() {
        let root = lookup_user("root").unwrap();
        assert_eq!((root.uid, root.gid, root.name.as_str()), (0, 0, "root"));
        assert_eq!(lookup_user("0").unwrap().name, "root");
        assert_eq!(user_by_uid(0).unwrap().unwrap().name, "root");
        assert_eq!(user_name(0), "root");
        // A uid nobody has: named by its number.
        assert_eq!(user_by_uid(3_999_999_001).unwrap(), None);
        assert_eq!(user_name(3_999_999_001), "3999999001");
        let e = lookup_user("no-such-user-dcrs").unwrap_err();
        assert!(e.to_string().contains("no-such-user-dcrs"), "{e}");
        assert!(lookup_user("a\0b").is_err());
        assert_eq!(lookup_group("root").unwrap(), 0);
        assert_eq!(lookup_group("0").unwrap(), 0);
        assert_eq!(lookup_group("4242").unwrap(), 4242);
        let e = lookup_group("no-such-group-dcrs").unwrap_err();
        assert!(e.to_string().contains("no-such-group-dcrs"), "{e}");
    }

    /// The buffer grows on ERANGE and stops at the bound.
    #[test]
    fn buffer_grows_and_is_bounded() {
        let mut sizes = Vec::new();
        let r = with_buffer("group", "big", 1024, |buf| {
            sizes.push(buf.len());
            if buf.len() < 8192 {
                (libc::ERANGE, false)
            } else {
                (0, true)
            }
        });
        assert!(r.unwrap().is_some());
        assert_eq!(sizes, [1024, 2048, 4096, 8192]);
        let mut calls = 0;
        let e = with_buffer("group", "huge", 1024, |buf| {
            calls += 1;
            assert!(buf.len() <= MAX_LOOKUP_BUF);
            (libc::ERANGE, false)
        })
        .unwrap_err();
        assert!(e.to_string().contains("huge"), "{e}");
        assert_eq!(calls, 11, "1 KB doubling to 1 MB is 11 tries");
        let e = with_buffer("user", "x", 1024, |_| (libc::EIO, false)).unwrap_err();
        assert!(e.to_string().contains("cannot look up user 'x'"), "{e}");
        assert!(with_buffer("user", "x", 1024, |_| (libc::ENOENT, false))
            .unwrap()
            .is_none());
    }
}
