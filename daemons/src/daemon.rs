//! The daemon skeleton dc_server and dc_client share, so that each
//! `src/bin/` file reads as its own job only. Once a daemon has bound its
//! sockets (as root, before `-user`), [`Daemon::start`] does the rest of
//! the start-up in one order for both:
//!
//! 1. `-daemon`: detach (the foreground parent waits for the outcome);
//! 2. signals (after the log sink, so `-logfile` gets SIGUSR2);
//! 3. `-pidfile` (owned by the `-user`, never through a symlink);
//! 4. a warning for each file the `-user` will not be able to remove;
//! 5. `-user`: drop privileges.
//!
//! Then the tool builds its event loop and calls [`Daemon::ready`] (the
//! `-daemon` parent exits 0, systemd gets READY=1); a failure on the way is
//! [`Daemon::fail`] (one log line, the parent prints it and exits 1). The
//! loop calls [`Daemon::tick`] and sleeps at most [`Daemon::max_sleep`]
//! (the systemd watchdog); at the end [`Daemon::stopping`], and dropping
//! the `Daemon` removes the pid file last.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::tools::{self, log, notify::Notifier, Detached, PidFile, Signals};

/// The flags every daemon has.
#[derive(Clone, Debug, Default)]
pub struct Options {
    pub daemon: bool,
    pub pidfile: Option<PathBuf>,
    pub user: Option<String>,
    pub killable: bool,
    /// SIGUSR1 reloads files (TLS) rather than being ignored (unless
    /// `killable`, where it stops the daemon as documented).
    pub reload: bool,
}

/// A started daemon: its signals, pid file and systemd link.
#[derive(Debug)]
pub struct Daemon {
    tool: &'static str,
    pub signals: Signals,
    notify: Notifier,
    detached: Option<Detached>,
    /// Held only to be removed when the daemon is dropped (its Drop).
    _pidfile: Option<PidFile>,
}

impl Daemon {
    /// Call before binding the daemon's sockets: a stop signal that comes
    /// once they listen and before [`Daemon::start`] is kept for the event
    /// loop instead of killing the process ([`Signals::hold`]).
    pub fn hold_signals() {
        if let Err(e) = Signals::hold() {
            log::line(format_args!("cannot block signals during start-up: {e}"));
        }
    }

    /// Steps 1-5 above. `files` are the socket paths the daemon created
    /// (for the removal warning). On failure the line is already logged
    /// (and passed to a waiting `-daemon` parent); return the exit code.
    pub fn start(tool: &'static str, opts: &Options, files: &[&Path]) -> Result<Daemon, i32> {
        let notify = Notifier::from_env();
        let detached = if opts.daemon {
            match tools::daemonize(opts.pidfile.is_none()) {
                Ok(d) => Some(d),
                Err(e) => {
                    log::fatal(&format!("cannot detach: {e}"));
                    return Err(1);
                }
            }
        } else {
            None
        };
        let fail = |d: Option<Detached>, msg: String| {
            log::fatal(&msg);
            if let Some(d) = d {
                d.fail(&format!("{tool}: {msg}"));
            }
            1
        };
        let signals = match Signals::install(opts.killable, opts.reload) {
            Ok(s) => s,
            Err(e) => {
                return Err(fail(
                    detached,
                    format!("cannot set up signal handling: {e}"),
                ))
            }
        };
        let run_as = match opts.user.as_deref().map(tools::lookup_user).transpose() {
            Ok(u) => u,
            Err(e) => return Err(fail(detached, format!("flag -user: {e}"))),
        };
        let pidfile = match &opts.pidfile {
            Some(p) => match PidFile::write_for(p, run_as.as_ref()) {
                Ok(f) => Some(f),
                Err(e) => return Err(fail(detached, e.to_string())),
            },
            None => None,
        };
        if let Some(u) = &run_as {
            let pid = pidfile.as_ref().map(|p| ("pid file", p.path()));
            let socks = files.iter().map(|p| ("socket", *p));
            for (what, path) in pid.into_iter().chain(socks) {
                if let Some(w) = tools::removal_warning(what, path, u) {
                    log::line(format_args!("{w}"));
                }
            }
        }
        if let Some(u) = &opts.user {
            if let Err(e) = tools::drop_privileges(u) {
                return Err(fail(detached, e.to_string()));
            }
        }
        Ok(Daemon {
            tool,
            signals,
            notify,
            detached,
            _pidfile: pidfile,
        })
    }

    /// A start-up failure after [`Daemon::start`]: logged, reported to a
    /// waiting `-daemon` parent; returns the exit code.
    pub fn fail(&mut self, msg: &str) -> i32 {
        log::fatal(msg);
        if let Some(d) = self.detached.take() {
            d.fail(&format!("{}: {msg}", self.tool));
        }
        1
    }

    /// Every socket listens and the loop is about to run: the `-daemon`
    /// parent exits 0, systemd gets READY=1 with `status`.
    pub fn ready(&mut self, status: &str) {
        if let Some(d) = self.detached.take() {
            d.ready();
        }
        self.notify.ready(status);
    }

    /// From the event loop, on every pass: the systemd watchdog.
    pub fn tick(&mut self, now_ms: u64) {
        self.notify.tick(now_ms);
    }

    /// The longest the event loop may sleep (the watchdog's half period).
    pub fn max_sleep(&self) -> Option<Duration> {
        self.notify.max_sleep()
    }

    /// Shutting down: systemd gets STOPPING=1.
    pub fn stopping(&mut self) {
        self.notify.stopping();
    }
}
