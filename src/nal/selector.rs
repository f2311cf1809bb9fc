//! NAL_SELECTOR: waits for network events on the connections and listeners
//! bound to it.
//!
//! Ownership: a [`Selector`] owns a registry behind `Arc<Mutex<_>>`. Binding
//! an object gives it a [`Registration`] (a weak reference to the registry,
//! a slot index and a generation number). Dropping the registration (by
//! `del_from_selector`, by resetting or by dropping the object) clears the
//! slot, so objects freed while bound leave nothing behind; a selector freed
//! or reset before its objects just makes their registrations stale, which
//! the objects notice (generation mismatch or dead registry) and treat as
//! "not bound". Connection slots hold a `Weak` to the connection's shared
//! state so that the interest set can be recomputed from the buffers at
//! every select.

use std::io;
use std::os::fd::RawFd;
use std::sync::{Arc, Weak};
use std::time::Duration;

use parking_lot::Mutex;

use super::connection::ConnCore;

/// poll(2) event bits as reported after a select.
pub(crate) const EV_READ: i16 = libc::POLLIN;
pub(crate) const EV_WRITE: i16 = libc::POLLOUT;
pub(crate) const EV_ERROR: i16 = libc::POLLERR | libc::POLLHUP | libc::POLLNVAL;

pub(crate) enum SlotObj {
    /// A connection: fd and interest come from its shared state.
    Conn(Weak<Mutex<ConnCore>>),
    /// A listener: always wants readability. The listener's registration
    /// is dropped before its socket is closed, so the fd stays valid.
    Listener(RawFd),
}

struct Slot {
    gen: u64,
    obj: SlotObj,
    /// Interest used at the previous select (fallback when the connection's
    /// state is locked by its owner during the select).
    last_events: i16,
    last_fd: RawFd,
    /// Events reported by the last select, not yet consumed by io/accept.
    revents: i16,
}

#[derive(Default)]
pub(crate) struct Registry {
    slots: Vec<Option<Slot>>,
    free: Vec<usize>,
    next_gen: u64,
    count: usize,
}

impl Registry {
    fn insert(&mut self, obj: SlotObj) -> (usize, u64) {
        self.next_gen += 1;
        let gen = self.next_gen;
        let slot = Slot {
            gen,
            obj,
            last_events: 0,
            last_fd: -1,
            revents: 0,
        };
        let idx = match self.free.pop() {
            Some(i) => {
                self.slots[i] = Some(slot);
                i
            }
            None => {
                self.slots.push(Some(slot));
                self.slots.len() - 1
            }
        };
        self.count += 1;
        (idx, gen)
    }

    fn slot_mut(&mut self, idx: usize, gen: u64) -> Option<&mut Slot> {
        match self.slots.get_mut(idx) {
            Some(Some(s)) if s.gen == gen => Some(s),
            _ => None,
        }
    }

    fn remove(&mut self, idx: usize, gen: u64) {
        if self.slot_mut(idx, gen).is_some() {
            self.slots[idx] = None;
            self.free.push(idx);
            self.count -= 1;
        }
    }
}

/// The binding of one connection or listener to one selector. Dropping it
/// unbinds the object.
pub(crate) struct Registration {
    reg: Weak<Mutex<Registry>>,
    idx: usize,
    gen: u64,
}

impl Registration {
    /// Whether the binding is still in force (selector alive, not reset).
    pub(crate) fn is_live(&self) -> bool {
        match self.reg.upgrade() {
            Some(r) => r.lock().slot_mut(self.idx, self.gen).is_some(),
            None => false,
        }
    }

    /// Whether this binding is to `sel`.
    pub(crate) fn is_with(&self, sel: &Selector) -> bool {
        std::ptr::eq(self.reg.as_ptr(), Arc::as_ptr(&sel.reg))
    }

    /// Take the events reported by the last select for this object. None
    /// when the binding is stale.
    pub(crate) fn take_events(&self) -> Option<i16> {
        let r = self.reg.upgrade()?;
        let mut g = r.lock();
        let s = g.slot_mut(self.idx, self.gen)?;
        Some(std::mem::take(&mut s.revents))
    }
}

impl std::fmt::Debug for Registration {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registration")
            .field("idx", &self.idx)
            .field("gen", &self.gen)
            .finish()
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        if let Some(r) = self.reg.upgrade() {
            r.lock().remove(self.idx, self.gen);
        }
    }
}

/// A set of connections and listeners to wait on (NAL_SELECTOR).
///
/// All three C constructors (`NAL_SELECTOR_new`, `_new_fdselect`,
/// `_new_fdpoll`) give the same poll(2)-based selector.
pub struct Selector {
    reg: Arc<Mutex<Registry>>,
    pollfds: Vec<libc::pollfd>,
    /// Slot index of each entry of `pollfds`.
    map: Vec<usize>,
}

impl Default for Selector {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Debug for Selector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Selector")
            .field("num_objects", &self.num_objects())
            .finish()
    }
}

impl Selector {
    pub fn new() -> Selector {
        Selector {
            reg: Arc::new(Mutex::new(Registry::default())),
            pollfds: Vec::new(),
            map: Vec::new(),
        }
    }

    /// Number of objects currently bound to this selector.
    pub fn num_objects(&self) -> usize {
        self.reg.lock().count
    }

    /// Unbind every object and forget the last results (NAL_SELECTOR_reset).
    /// Bound objects see their binding as stale and may be added again.
    pub fn reset(&mut self) {
        let mut g = self.reg.lock();
        *g = Registry {
            next_gen: g.next_gen,
            ..Registry::default()
        };
    }

    pub(crate) fn register(&self, obj: SlotObj) -> Registration {
        let (idx, gen) = self.reg.lock().insert(obj);
        Registration {
            reg: Arc::downgrade(&self.reg),
            idx,
            gen,
        }
    }

    /// Wait for events on the bound objects. `timeout` None blocks until an
    /// event arrives. Returns the number of objects with events pending (0
    /// on timeout or when a signal interrupted the wait).
    pub fn select(&mut self, timeout: Option<Duration>) -> io::Result<usize> {
        self.pollfds.clear();
        self.map.clear();
        {
            let mut g = self.reg.lock();
            for (i, s) in g.slots.iter_mut().enumerate() {
                let Some(s) = s else { continue };
                s.revents = 0;
                let (fd, events) = match &s.obj {
                    SlotObj::Listener(fd) => (*fd, EV_READ),
                    SlotObj::Conn(w) => {
                        let Some(core) = w.upgrade() else { continue };
                        // try_lock: if the owner holds a buffer guard during
                        // the select, reuse the previous interest instead of
                        // deadlocking.
                        let r = match core.try_lock() {
                            Some(c) => c.poll_interest(),
                            None => Some((s.last_fd, s.last_events)),
                        };
                        match r {
                            Some(x) => x,
                            None => continue,
                        }
                    }
                };
                s.last_events = events;
                s.last_fd = fd;
                self.pollfds.push(libc::pollfd {
                    fd,
                    events,
                    revents: 0,
                });
                self.map.push(i);
            }
        }
        let n = match sys_poll(&mut self.pollfds, timeout) {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => return Ok(0),
            Err(e) => return Err(e),
        };
        if n == 0 {
            return Ok(0);
        }
        let mut g = self.reg.lock();
        let mut count = 0;
        for (p, &i) in self.pollfds.iter().zip(&self.map) {
            if p.revents == 0 {
                continue;
            }
            if let Some(Some(s)) = g.slots.get_mut(i) {
                s.revents = p.revents;
                count += 1;
            }
        }
        Ok(count)
    }
}

/// ppoll(2) with a microsecond-precision timeout.
fn sys_poll(fds: &mut [libc::pollfd], timeout: Option<Duration>) -> io::Result<usize> {
    let ts = timeout.map(|d| libc::timespec {
        tv_sec: d.as_secs().min(i32::MAX as u64) as libc::time_t,
        tv_nsec: d.subsec_nanos() as libc::c_long,
    });
    let tsp = match &ts {
        Some(t) => t as *const libc::timespec,
        None => std::ptr::null(),
    };
    // SAFETY: `fds` is a valid, exclusively borrowed array of `fds.len()`
    // pollfd structures; `tsp` is NULL or points to `ts`, alive for the call;
    // a NULL signal mask leaves the mask unchanged.
    let r = unsafe {
        libc::ppoll(
            fds.as_mut_ptr(),
            fds.len() as libc::nfds_t,
            tsp,
            std::ptr::null(),
        )
    };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r as usize)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    #[test]
    fn empty_select_times_out() {
        let mut s = Selector::new();
        assert_eq!(s.num_objects(), 0);
        let t = Instant::now();
        assert_eq!(s.select(Some(Duration::from_micros(20_000))).unwrap(), 0);
        assert!(t.elapsed() >= Duration::from_millis(19));
    }

    #[test]
    fn registration_lifecycle() {
        let mut s = Selector::new();
        let a = s.register(SlotObj::Listener(-1));
        let b = s.register(SlotObj::Listener(-1));
        assert_eq!(s.num_objects(), 2);
        assert!(a.is_live() && b.is_live());
        drop(a);
        assert_eq!(s.num_objects(), 1);
        let c = s.register(SlotObj::Listener(-1));
        assert_eq!(s.num_objects(), 2);
        s.reset();
        assert_eq!(s.num_objects(), 0);
        assert!(!b.is_live() && !c.is_live());
        assert_eq!(b.take_events(), None);
        // A stale registration dropped after reset must not remove a new one
        // that reuses its slot.
        let d = s.register(SlotObj::Listener(-1));
        drop(b);
        drop(c);
        assert!(d.is_live());
        assert_eq!(s.num_objects(), 1);
        drop(s);
        assert!(!d.is_live());
        drop(d);
    }
}
