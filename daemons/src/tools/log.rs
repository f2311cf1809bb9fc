//! One log style for the tools: `2026-12-02 10:25:00 dc_server: message`,
//! one line per event, to one of three places:
//!
//! - standard error (the default; under systemd that is the journal);
//! - `-logfile FILE`, opened for appending (mode 0640) and reopened on
//!   SIGUSR2, so logrotate can move it away and signal;
//! - `-syslog`, facility daemon, tagged with the tool's name and pid (syslog
//!   adds its own time stamp). A daemon started with `-daemon` and neither
//!   flag logs to syslog, since its standard error is /dev/null.
//!
//! The sink is process-wide state of the daemons only; the C libraries have
//! their own one-line reporting and never call this.

use std::ffi::CString;
use std::fmt;
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use super::sys;

/// Where log lines go.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum Target {
    #[default]
    Stderr,
    File(PathBuf),
    Syslog,
}

impl Target {
    /// The target the flags ask for: `-logfile` wins, then `-syslog`;
    /// with neither, syslog when detached (`-daemon`), else standard error.
    pub fn from_flags(logfile: Option<&Path>, syslog: bool, daemon: bool) -> Target {
        match (logfile, syslog || daemon) {
            (Some(f), _) => Target::File(f.to_path_buf()),
            (None, true) => Target::Syslog,
            (None, false) => Target::Stderr,
        }
    }
}

/// `-logfile` and `-syslog`, the same in every daemon's flag list.
pub const LOGFILE_FLAG: super::Flag = super::Flag::value(
    &["logfile"],
    "path",
    "append log lines to this file (reopened on SIGUSR2)",
);
pub const SYSLOG_FLAG: super::Flag = super::Flag::switch(
    &["syslog"],
    "log to syslog, facility daemon (the default with -daemon)",
);

/// The target from a tool's parsed `-logfile`, `-syslog` and `-daemon`
/// flags; an empty `-logfile` is an error naming the flag.
pub fn target_from(p: &super::Parsed) -> Result<Target, String> {
    let file = match p.get("logfile") {
        Some("") => return Err("flag -logfile: empty path".into()),
        Some(f) => {
            Some(sys::absolute_path(Path::new(f)).map_err(|e| format!("flag -logfile: {e}"))?)
        }
        None => None,
    };
    Ok(Target::from_flags(
        file.as_deref(),
        p.has("syslog"),
        p.has("daemon"),
    ))
}

/// How serious a line is (syslog's priority; files and stderr show all).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Level {
    Info,
    Warning,
    Error,
}

enum Sink {
    Stderr,
    File { path: PathBuf, file: File },
    Syslog,
}

struct State {
    tool: &'static str,
    sink: Sink,
}

static STATE: Mutex<Option<State>> = Mutex::new(None);

fn lock() -> std::sync::MutexGuard<'static, Option<State>> {
    STATE.lock().unwrap_or_else(|p| p.into_inner())
}

fn open_append(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .append(true)
        .create(true)
        .mode(0o640)
        .custom_flags(libc::O_CLOEXEC | libc::O_NOFOLLOW)
        .open(path)
}

/// Send this tool's lines to `target` from now on. A log file is opened
/// here, so a path that cannot be written fails at start-up, in the
/// foreground. A relative path is made absolute first (`-daemon` changes
/// the directory to /).
pub fn setup(tool: &'static str, target: &Target) -> io::Result<()> {
    let sink = match target {
        Target::Stderr => Sink::Stderr,
        Target::File(p) => {
            let path = sys::absolute_path(p)?;
            let file = open_append(&path).map_err(|e| {
                io::Error::new(
                    e.kind(),
                    format!("cannot open log file {}: {e}", path.display()),
                )
            })?;
            Sink::File { path, file }
        }
        Target::Syslog => {
            // openlog keeps the pointer: the ident lives as long as the
            // process (one small allocation, made once).
            let ident: &'static CString =
                Box::leak(Box::new(CString::new(tool).unwrap_or_default()));
            // SAFETY: ident is a valid NUL-terminated string that is never
            // freed; the option and facility are plain flags.
            unsafe { libc::openlog(ident.as_ptr(), libc::LOG_PID, libc::LOG_DAEMON) };
            Sink::Syslog
        }
    };
    *lock() = Some(State { tool, sink });
    Ok(())
}

/// One line at `level`.
pub fn line_at(level: Level, msg: fmt::Arguments<'_>) {
    let mut g = lock();
    let tool = g.as_ref().map_or_else(sys::program_name, |s| s.tool);
    match g.as_mut().map(|s| &mut s.sink) {
        None | Some(Sink::Stderr) => {
            eprintln!("{} {tool}: {msg}", sys::timestamp());
        }
        Some(Sink::File { path, file }) => {
            // One write(2) per line, so lines of several processes (or a
            // reopen racing a rotation) never interleave mid-line.
            let text = format!("{} {tool}: {msg}\n", sys::timestamp());
            if let Err(e) = file.write_all(text.as_bytes()) {
                eprintln!(
                    "{} {tool}: cannot write log file {}: {e}; {}",
                    sys::timestamp(),
                    path.display(),
                    text.trim_end()
                );
            }
        }
        Some(Sink::Syslog) => {
            let prio = match level {
                Level::Info => libc::LOG_INFO,
                Level::Warning => libc::LOG_WARNING,
                Level::Error => libc::LOG_ERR,
            };
            let text = msg.to_string().replace('\0', "\\0");
            let c = CString::new(text).unwrap_or_default();
            // SAFETY: "%s" with one valid NUL-terminated argument.
            unsafe { libc::syslog(prio, b"%s\0".as_ptr().cast(), c.as_ptr()) };
        }
    }
}

/// One informational line; a message starting with "warning:" is logged
/// as a warning.
pub fn line(msg: fmt::Arguments<'_>) {
    let text = msg.to_string();
    let level = if text.starts_with("warning:") {
        Level::Warning
    } else {
        Level::Info
    };
    line_at(level, format_args!("{text}"))
}

/// A start-up failure: logged at error level, and also on standard error
/// when the lines go elsewhere, so that the operator at the terminal (or
/// the `-daemon` parent, which reports it) sees why the start failed.
pub fn fatal(msg: &str) {
    line_at(Level::Error, format_args!("{msg}"));
    let g = lock();
    if let Some(State { tool, sink }) = g.as_ref() {
        if !matches!(sink, Sink::Stderr) {
            eprintln!("{tool}: {msg}");
        }
    }
}

/// Reopen the log file (SIGUSR2): after logrotate renamed it, new lines go
/// to a new file at the configured path. On failure the old file is kept
/// and the failure is logged there. Nothing to do for stderr and syslog.
pub fn reopen() {
    let mut g = lock();
    let Some(State {
        tool,
        sink: Sink::File { path, file },
    }) = g.as_mut()
    else {
        return;
    };
    match open_append(path) {
        Ok(f) => {
            *file = f;
            let _ = writeln!(
                file,
                "{} {tool}: SIGUSR2: log file reopened",
                sys::timestamp()
            );
        }
        Err(e) => {
            let _ = writeln!(
                file,
                "{} {tool}: SIGUSR2: cannot reopen log file {}: {e}; still writing here",
                sys::timestamp(),
                path.display()
            );
        }
    }
}

/// Whether lines go to a file that SIGUSR2 should reopen.
pub fn reopens_on_usr2() -> bool {
    matches!(
        lock().as_ref(),
        Some(State {
            sink: Sink::File { .. },
            ..
        })
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn target_from_flags() {
        let f = Path::new("/var/log/x.log");
        assert_eq!(
            Target::from_flags(Some(f), true, true),
            Target::File(f.into())
        );
        assert_eq!(Target::from_flags(None, true, false), Target::Syslog);
        assert_eq!(Target::from_flags(None, false, true), Target::Syslog);
        assert_eq!(Target::from_flags(None, false, false), Target::Stderr);
    }
}
