//! A thin, safe wrapper around Linux epoll for the tools' event loops
//! (dc_server, dc_client, dc_snoop). The libraries never use it: they stay
//! free of background threads and global state.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::time::Duration;

/// Readiness bits.
pub const READ: u32 = libc::EPOLLIN as u32;
pub const WRITE: u32 = libc::EPOLLOUT as u32;
/// Set by the kernel on hang-up / error (always reported).
pub const HUP: u32 = (libc::EPOLLHUP | libc::EPOLLRDHUP) as u32;
pub const ERR: u32 = libc::EPOLLERR as u32;

/// One readiness event: the token given at registration and the bits.
#[derive(Clone, Copy, Debug)]
pub struct Event {
    pub token: u64,
    pub events: u32,
}

impl Event {
    pub fn readable(&self) -> bool {
        self.events & (READ | HUP | ERR) != 0
    }
    pub fn writable(&self) -> bool {
        self.events & (WRITE | ERR | HUP) != 0
    }
    pub fn hangup(&self) -> bool {
        self.events & (HUP | ERR) != 0
    }
}

/// An epoll instance.
pub struct Poller {
    ep: OwnedFd,
    buf: Vec<libc::epoll_event>,
}

impl Poller {
    pub fn new() -> io::Result<Poller> {
        // SAFETY: epoll_create1 takes no pointers; the result is checked.
        let fd = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: fd is a fresh descriptor that we own exclusively.
        let ep = unsafe { OwnedFd::from_raw_fd(fd) };
        Ok(Poller {
            ep,
            buf: vec![libc::epoll_event { events: 0, u64: 0 }; 1024],
        })
    }

    fn ctl(&self, op: i32, fd: RawFd, token: u64, events: u32) -> io::Result<()> {
        let mut ev = libc::epoll_event {
            events: events | libc::EPOLLRDHUP as u32,
            u64: token,
        };
        // SAFETY: ev is a valid epoll_event for the duration of the call.
        let r = unsafe { libc::epoll_ctl(self.ep.as_raw_fd(), op, fd, &mut ev) };
        if r < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(())
        }
    }

    /// Watch `fd` for `events` (level-triggered), reporting `token`.
    pub fn add(&self, fd: RawFd, token: u64, events: u32) -> io::Result<()> {
        self.ctl(libc::EPOLL_CTL_ADD, fd, token, events)
    }

    /// Change what `fd` is watched for.
    pub fn modify(&self, fd: RawFd, token: u64, events: u32) -> io::Result<()> {
        self.ctl(libc::EPOLL_CTL_MOD, fd, token, events)
    }

    /// Stop watching `fd` (closing it does this too).
    pub fn delete(&self, fd: RawFd) -> io::Result<()> {
        self.ctl(libc::EPOLL_CTL_DEL, fd, 0, 0)
    }

    /// Wait for events; `None` waits forever. EINTR returns no events.
    pub fn wait(&mut self, timeout: Option<Duration>, out: &mut Vec<Event>) -> io::Result<()> {
        out.clear();
        let ms = match timeout {
            None => -1,
            Some(d) => d.as_millis().min(i32::MAX as u128) as i32,
        };
        // SAFETY: buf has buf.len() initialised epoll_event slots.
        let n = unsafe {
            libc::epoll_wait(
                self.ep.as_raw_fd(),
                self.buf.as_mut_ptr(),
                self.buf.len() as i32,
                ms,
            )
        };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                return Ok(());
            }
            return Err(e);
        }
        for ev in &self.buf[..n as usize] {
            out.push(Event {
                token: ev.u64,
                events: ev.events,
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::os::unix::net::UnixStream;

    #[test]
    fn reports_readable() {
        let (mut a, b) = UnixStream::pair().unwrap();
        let mut p = Poller::new().unwrap();
        p.add(b.as_raw_fd(), 7, READ).unwrap();
        let mut evs = Vec::new();
        p.wait(Some(Duration::from_millis(0)), &mut evs).unwrap();
        assert!(evs.is_empty());
        a.write_all(b"x").unwrap();
        p.wait(Some(Duration::from_millis(1000)), &mut evs).unwrap();
        assert_eq!(evs.len(), 1);
        assert_eq!(evs[0].token, 7);
        assert!(evs[0].readable());
        p.delete(b.as_raw_fd()).unwrap();
    }
}
