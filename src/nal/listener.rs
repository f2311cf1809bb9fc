//! NAL_LISTENER: a listening socket (TCP or UNIX domain).
//!
//! TCP listeners set SO_REUSEADDR. A UNIX listener whose path is taken by a
//! socket file nobody listens on any more (left by a dead process) replaces
//! that file; a path where a live server listens, or a path that is not a
//! socket, makes [`Listener::create`] fail.

use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use socket2::{Domain, Protocol, SockAddr, Socket, Type};

use super::address::{Address, MAX_BUFFER_SIZE};
use super::connection::apply_nagle;
use super::selector::{Registration, Selector, SlotObj, EV_READ};
use crate::sysdb::parse_octal;

const BACKLOG: i32 = 1024;

/// A listening socket (NAL_LISTENER).
#[derive(Debug, Default)]
pub struct Listener {
    // Declared first so that the binding is dropped before the socket.
    reg: Option<Registration>,
    sock: Option<Socket>,
    addr: Option<Address>,
    def_size: usize,
}

impl Listener {
    pub fn new() -> Listener {
        Listener::default()
    }

    /// Close the socket and unbind, so the object can be created again.
    /// The UNIX socket file is left in place (a forked child may still be
    /// serving on it); the next listener on that path replaces it if stale.
    pub fn reset(&mut self) {
        self.reg = None;
        self.sock = None;
        self.addr = None;
        self.def_size = 0;
    }

    /// Listen on `addr`; connections accepted from it get buffers of
    /// `def_size` bytes (0: the default size). Fails if already created, on
    /// a size over 32768, or on any socket error.
    pub fn create(&mut self, addr: &Address, def_size: usize) -> bool {
        if self.sock.is_some() || def_size > MAX_BUFFER_SIZE || !addr.can_listen() {
            return false;
        }
        let r = match addr {
            Address::Unix(path) => listen_unix(path),
            Address::Ip { addr, .. } => listen_tcp(*addr),
        };
        match r {
            Ok(s) => {
                self.sock = Some(s);
                self.addr = Some(addr.clone());
                self.def_size = def_size;
                true
            }
            Err(_) => false,
        }
    }

    /// The address listened on, once created.
    pub fn address(&self) -> Option<&Address> {
        self.addr.as_ref()
    }

    /// Default buffer size of accepted connections.
    pub fn def_buffer_size(&self) -> usize {
        self.def_size
    }

    /// Bind to `sel` (waits for incoming connections at each select). Fails
    /// if not created or already bound to a live selector.
    pub fn add_to_selector(&mut self, sel: &Selector) -> bool {
        let Some(s) = &self.sock else {
            return false;
        };
        if self.is_bound() {
            return false;
        }
        self.reg = Some(sel.register(SlotObj::Listener(s.as_raw_fd())));
        true
    }

    /// Unbind from the selector (no-op when not bound).
    pub fn del_from_selector(&mut self) {
        self.reg = None;
    }

    /// Whether bound to a selector that is still alive and not reset.
    pub fn is_bound(&self) -> bool {
        self.reg.as_ref().is_some_and(|r| r.is_live())
    }

    /// Whether this listener can accept no more connections (it has no
    /// listening socket).
    pub fn finished(&self) -> bool {
        self.sock.is_none()
    }

    /// Accept a connection if the last select reported one; never blocks.
    pub(crate) fn accept_ready(&mut self) -> Option<(Socket, usize)> {
        let sock = self.sock.as_ref()?;
        let ev = self.reg.as_ref()?.take_events()?;
        if ev & EV_READ == 0 {
            return None;
        }
        let (s, _) = sock.accept().ok()?;
        s.set_nonblocking(true).ok()?;
        if matches!(self.addr, Some(Address::Ip { .. })) {
            apply_nagle(&s).ok()?;
        }
        Some((s, self.def_size))
    }

    fn unix_path(&self) -> Option<&Path> {
        match (&self.sock, &self.addr) {
            (Some(_), Some(Address::Unix(p))) => Some(p),
            _ => None,
        }
    }

    /// Change the owner and/or group of a UNIX listener's socket file. A
    /// user without a group also sets that user's primary group. Names or
    /// numeric ids are accepted. Fails on other transports.
    pub fn set_fs_owner(&self, owner: Option<&str>, group: Option<&str>) -> bool {
        let Some(path) = self.unix_path() else {
            return false;
        };
        let (uid, mut gid) = match owner {
            Some(o) => match lookup_user(o) {
                Some((u, g)) => (Some(u), Some(g)),
                None => return false,
            },
            None => (None, None),
        };
        if let Some(g) = group {
            match lookup_group(g) {
                Some(g) => gid = Some(g),
                None => return false,
            }
        }
        std::os::unix::fs::chown(path, uid, gid).is_ok()
    }

    /// Set the permissions of a UNIX listener's socket file from an octal
    /// string such as "660". Fails on other transports or a bad string.
    pub fn set_fs_perms(&self, octal: &str) -> bool {
        let Some(path) = self.unix_path() else {
            return false;
        };
        let Some(mode) = parse_octal(octal) else {
            return false;
        };
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).is_ok()
    }
}

fn listen_tcp(addr: std::net::SocketAddr) -> io::Result<Socket> {
    let s = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    s.set_reuse_address(true)?;
    s.bind(&SockAddr::from(addr))?;
    s.listen(BACKLOG)?;
    s.set_nonblocking(true)?;
    Ok(s)
}

fn listen_unix(path: &PathBuf) -> io::Result<Socket> {
    let sa = SockAddr::unix(path)?;
    let s = Socket::new(Domain::UNIX, Type::STREAM, None)?;
    match s.bind(&sa) {
        Ok(()) => {}
        Err(e) if e.raw_os_error() == Some(libc::EADDRINUSE) => {
            if !is_stale_socket(path) {
                return Err(e);
            }
            std::fs::remove_file(path)?;
            s.bind(&sa)?;
        }
        Err(e) => return Err(e),
    }
    s.listen(BACKLOG)?;
    s.set_nonblocking(true)?;
    Ok(s)
}

/// A socket file that refuses connections: its server is gone (the one
/// check, [`crate::transport::unix_path_state`]).
fn is_stale_socket(path: &Path) -> bool {
    matches!(
        crate::transport::unix_path_state(path),
        Ok(crate::transport::PathState::Stale)
    )
}

/// (uid, primary gid) of a user name or numeric uid.
fn lookup_user(name: &str) -> Option<(u32, u32)> {
    crate::sysdb::lookup_user(name).ok().map(|u| (u.uid, u.gid))
}

/// gid of a group name or numeric gid.
fn lookup_group(name: &str) -> Option<u32> {
    crate::sysdb::lookup_group(name).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_table_shows_live_listeners_only() {
        let p = std::env::temp_dir().join(format!("dcrs-nal-{}-proc.sock", std::process::id()));
        let _ = std::fs::remove_file(&p);
        let addr = Address::Unix(p.clone());
        let mut l = Listener::new();
        assert!(l.create(&addr, 10));
        assert!(crate::transport::proc_unix_listening(&p));
        l.reset();
        assert!(!crate::transport::proc_unix_listening(&p));
        assert!(p.exists());
        let _ = std::fs::remove_file(&p);
    }
}
