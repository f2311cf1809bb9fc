//! systemd's readiness protocol (sd_notify(3)) for `Type=notify` units:
//! `READY=1` once every socket listens, `STOPPING=1` at shutdown and
//! `WATCHDOG=1` from the event loop when the unit sets `WatchdogSec=`.
//!
//! The protocol is one datagram of `KEY=value` lines to the UNIX socket
//! named by `$NOTIFY_SOCKET` (a path, or `@name` in the abstract
//! namespace), so it is written here with the standard library rather than
//! pulled in as a dependency. Without `$NOTIFY_SOCKET` every call is a
//! no-op. A failed send is logged once and otherwise ignored: the cache
//! keeps serving.

use std::io;
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::time::Duration;

/// The notification socket and the watchdog interval, read once at start.
#[derive(Debug)]
pub struct Notifier {
    target: Option<(UnixDatagram, SocketAddr)>,
    watchdog: Option<Duration>,
    next_ping_ms: u64,
    failed_logged: bool,
}

fn socket_addr(s: &str) -> io::Result<SocketAddr> {
    if let Some(name) = s.strip_prefix('@') {
        use std::os::linux::net::SocketAddrExt;
        SocketAddr::from_abstract_name(name.as_bytes())
    } else {
        SocketAddr::from_pathname(s)
    }
}

impl Notifier {
    /// From `$NOTIFY_SOCKET`, `$WATCHDOG_USEC` and `$WATCHDOG_PID` (the
    /// watchdog applies only when its pid is ours or unset). The variables
    /// are removed, so that nothing started from here inherits them.
    pub fn from_env() -> Notifier {
        let sock = std::env::var("NOTIFY_SOCKET").ok();
        let usec = std::env::var("WATCHDOG_USEC").ok();
        let wpid = std::env::var("WATCHDOG_PID").ok();
        for v in ["NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID"] {
            std::env::remove_var(v);
        }
        let target = sock.and_then(|s| match (UnixDatagram::unbound(), socket_addr(&s)) {
            (Ok(d), Ok(a)) => Some((d, a)),
            (Err(e), _) | (_, Err(e)) => {
                super::log::line(format_args!(
                    "warning: NOTIFY_SOCKET={s}: cannot use it ({e}); systemd will not be told"
                ));
                None
            }
        });
        let ours = wpid.map_or(true, |p| p.trim() == std::process::id().to_string());
        let watchdog = match usec.map(|u| u.trim().parse::<u64>()) {
            Some(Ok(u)) if u > 0 && ours && target.is_some() => Some(Duration::from_micros(u)),
            _ => None,
        };
        Notifier {
            target,
            watchdog,
            next_ping_ms: 0,
            failed_logged: false,
        }
    }

    fn send(&mut self, msg: &str) {
        let Some((sock, addr)) = &self.target else {
            return;
        };
        if let Err(e) = sock.send_to_addr(msg.as_bytes(), addr) {
            if !self.failed_logged {
                self.failed_logged = true;
                super::log::line(format_args!(
                    "warning: cannot notify systemd ({}): {e}",
                    msg.lines().next().unwrap_or("")
                ));
            }
        }
    }

    /// Every socket listens and the loop is about to run.
    pub fn ready(&mut self, status: &str) {
        self.send(&format!(
            "READY=1\nSTATUS={status}\nMAINPID={}",
            std::process::id()
        ));
    }

    /// Shutting down (sent before the last clean-up).
    pub fn stopping(&mut self) {
        self.send("STOPPING=1");
    }

    /// How long the event loop may sleep before the next [`Self::tick`]:
    /// half the watchdog interval, as sd_watchdog_enabled(3) advises.
    pub fn max_sleep(&self) -> Option<Duration> {
        self.watchdog.map(|w| w / 2)
    }

    /// Called from the event loop on each pass: sends `WATCHDOG=1` when
    /// half the interval has passed since the last one. A hung loop stops
    /// calling this, and systemd restarts the unit.
    pub fn tick(&mut self, now_ms: u64) {
        let Some(w) = self.watchdog else {
            return;
        };
        if now_ms >= self.next_ping_ms {
            self.next_ping_ms = now_ms + (w.as_millis() as u64 / 2).max(1);
            self.send("WATCHDOG=1");
        }
    }
}
