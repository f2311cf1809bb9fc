//! Process-level helpers for the tools: users and groups, privileges,
//! daemonizing, pid files, signals, resource limits, clocks.

use std::ffi::CString;
use std::fs;
use std::io::{self, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use once_cell::sync::Lazy;

pub use distcache_rs::sysdb::{lookup_group, lookup_user, user_name, User};

fn not_found(what: &str, name: &str) -> io::Error {
    io::Error::new(io::ErrorKind::NotFound, format!("unknown {what} '{name}'"))
}

/// The effective user id of this process.
pub fn euid() -> u32 {
    // SAFETY: geteuid takes no arguments and cannot fail.
    unsafe { libc::geteuid() }
}

/// This program's file name (`dc_server`), for lines printed before or
/// without a configured log.
pub fn program_name() -> &'static str {
    static NAME: once_cell::sync::Lazy<String> = once_cell::sync::Lazy::new(|| {
        std::env::args()
            .next()
            .and_then(|a| {
                Path::new(&a)
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
            })
            .unwrap_or_else(|| "distcache".into())
    });
    &NAME
}

/// Switch to `user` (supplementary groups, gid, then uid). Call after the
/// listening socket exists. Succeeds without change if we already are that
/// user.
pub fn drop_privileges(user: &str) -> io::Result<()> {
    let u = lookup_user(user)?;
    // SAFETY: getuid/getgid take no arguments and cannot fail.
    let (cur_uid, cur_gid) = unsafe { (libc::getuid(), libc::getgid()) };
    if cur_uid == u.uid && cur_gid == u.gid {
        return Ok(());
    }
    let fail = |what: &str| {
        let e = io::Error::last_os_error();
        io::Error::new(
            e.kind(),
            format!("cannot switch to user '{user}': {what}: {e}"),
        )
    };
    let cname = CString::new(u.name.clone()).map_err(|_| not_found("user", user))?;
    // SAFETY: cname is a valid C string; gid is a plain integer.
    if unsafe { libc::initgroups(cname.as_ptr(), u.gid as _) } != 0 {
        return Err(fail("initgroups"));
    }
    // SAFETY: plain integer argument.
    if unsafe { libc::setgid(u.gid) } != 0 {
        return Err(fail("setgid"));
    }
    // SAFETY: plain integer argument.
    if unsafe { libc::setuid(u.uid) } != 0 {
        return Err(fail("setuid"));
    }
    Ok(())
}

/// Pid of the process at the other end of a UNIX socket (SO_PEERCRED).
pub use distcache_rs::transport::peer_pid;

/// Returned by [`daemonize`] to the detached child: call
/// [`Detached::ready`] once start-up is complete (pid file written), or
/// [`Detached::fail`] with the reason it failed. The waiting parent then
/// exits 0, or prints the reason on its stderr and exits 1 (also when the
/// child dies without reporting).
#[derive(Debug)]
pub struct Detached {
    pipe: Option<OwnedFd>,
}

impl Detached {
    /// Tell the foreground parent that start-up succeeded.
    pub fn ready(mut self) {
        if let Some(fd) = self.pipe.take() {
            let _ = fs::File::from(fd).write_all(b"1");
        }
    }

    /// Tell the foreground parent that start-up failed, and why.
    pub fn fail(mut self, why: &str) {
        if let Some(fd) = self.pipe.take() {
            let _ = fs::File::from(fd).write_all(format!("0{why}").as_bytes());
        }
    }
}

/// Detach from the terminal: fork (the parent waits until the child calls
/// [`Detached::ready`] or [`Detached::fail`] or dies, then `_exit`s with 0
/// or 1 without running destructors, so it never removes the child's socket
/// file), `setsid`, `chdir("/")`, and point stdin/stdout/stderr at
/// /dev/null. Paths the caller still needs must already be absolute. Call
/// before creating threads.
///
/// With `announce`, the parent prints the daemon's pid on stderr before it
/// exits, so an operator who gave no pid file still learns where it went.
pub fn daemonize(announce: bool) -> io::Result<Detached> {
    let mut fds = [0 as libc::c_int; 2];
    // SAFETY: fds has room for two descriptors.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: both descriptors are fresh and owned by us alone.
    let (rd, wr) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    let _ = io::stdout().flush();
    let _ = io::stderr().flush();
    // SAFETY: the tools are single-threaded at this point.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(io::Error::last_os_error());
    }
    if pid > 0 {
        drop(wr);
        let mut msg = Vec::new();
        let _ = io::Read::read_to_end(&mut fs::File::from(rd), &mut msg);
        let code = match msg.first() {
            Some(b'1') => {
                if announce {
                    eprintln!(
                        "{}: running in the background as pid {pid} (no -pidfile given)",
                        program_name()
                    );
                }
                0
            }
            Some(_) => {
                eprintln!("{}", String::from_utf8_lossy(&msg[1..]));
                1
            }
            None => {
                eprintln!("the daemon process exited during start-up");
                1
            }
        };
        // SAFETY: _exit ends the parent without running destructors: the
        // listener and pid file now belong to the child.
        unsafe { libc::_exit(code) };
    }
    drop(rd);
    // SAFETY: no arguments; we are a fresh child, not a group leader.
    if unsafe { libc::setsid() } < 0 {
        return Err(io::Error::last_os_error());
    }
    std::env::set_current_dir("/")?;
    let null = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/null")?;
    for fd in 0..3 {
        // SAFETY: both descriptors are open; dup2 replaces fd atomically.
        if unsafe { libc::dup2(null.as_raw_fd(), fd) } < 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(Detached { pipe: Some(wr) })
}

/// Make a path absolute against the current directory (before
/// [`daemonize`] changes it).
pub fn absolute_path(p: &Path) -> io::Result<PathBuf> {
    if p.is_absolute() {
        Ok(p.to_path_buf())
    } else {
        Ok(std::env::current_dir()?.join(p))
    }
}

/// A pid file; removed by [`PidFile::remove`] or on drop, and then only
/// while it still holds our pid.
///
/// Written without following symbolic links: the pid goes to a new file
/// (`O_CREAT|O_EXCL|O_NOFOLLOW`) in the same directory, renamed over the
/// path, so a link planted at the path (or at the temporary name) never
/// makes us write elsewhere. A path that is a symbolic link or not a
/// regular file is refused.
#[derive(Debug)]
pub struct PidFile {
    path: PathBuf,
    removed: bool,
}

/// How many temporary names [`PidFile::write`] tries before giving up
/// (each try fails only if the name already exists).
const PID_TMP_TRIES: u32 = 8;

impl PidFile {
    /// Write our pid (decimal, newline) to `path` (made absolute).
    pub fn write(path: &Path) -> io::Result<PidFile> {
        PidFile::write_for(path, None)
    }

    /// Like [`PidFile::write`]; with `owner` (the `-user` the daemon is
    /// about to become) the file is given to that user, so that it can
    /// still be removed at exit from a sticky directory such as /tmp.
    pub fn write_for(path: &Path, owner: Option<&User>) -> io::Result<PidFile> {
        let abs = absolute_path(path)?;
        let shown = abs.display().to_string();
        let refuse = |kind: io::ErrorKind, why: String| {
            io::Error::new(
                kind,
                format!("flag -pidfile: cannot write pid file {shown}: {why}"),
            )
        };
        let dir = abs.parent().unwrap_or(Path::new("/")).to_path_buf();
        let err = |e: io::Error| {
            let d = dir.display();
            let hint = match e.kind() {
                io::ErrorKind::NotFound => format!(" (directory {d} does not exist)"),
                io::ErrorKind::PermissionDenied => format!(" (directory {d} is not writable)"),
                _ => String::new(),
            };
            refuse(e.kind(), format!("{e}{hint}"))
        };
        match fs::symlink_metadata(&abs) {
            Ok(md) if md.file_type().is_symlink() => {
                return Err(refuse(
                    io::ErrorKind::InvalidInput,
                    "it is a symbolic link (refusing to write through it)".into(),
                ))
            }
            Ok(md) if !md.file_type().is_file() => {
                return Err(refuse(
                    io::ErrorKind::InvalidInput,
                    "it exists and is not a regular file".into(),
                ))
            }
            Ok(_) => {
                if let Some(pid) = live_owner(&abs) {
                    return Err(refuse(
                        io::ErrorKind::AlreadyExists,
                        format!("it belongs to running process {pid}"),
                    ));
                }
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(err(e)),
        }
        let name = abs
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let text = format!("{}\n", std::process::id());
        let mut tries = 0;
        let (tmp, mut file) = loop {
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.subsec_nanos())
                .unwrap_or(0);
            let tmp = dir.join(format!(".{name}.{}.{nanos:x}.tmp", std::process::id()));
            match fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o644)
                .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
                .open(&tmp)
            {
                Ok(f) => break (tmp, f),
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists && tries < PID_TMP_TRIES => {
                    tries += 1;
                }
                Err(e) => return Err(err(e)),
            }
        };
        let done = (|| {
            file.write_all(text.as_bytes())?;
            if let Some(u) = owner {
                std::os::unix::fs::fchown(&file, Some(u.uid), Some(u.gid))?;
            }
            drop(file);
            fs::rename(&tmp, &abs)
        })();
        if let Err(e) = done {
            let _ = fs::remove_file(&tmp);
            return Err(err(e));
        }
        Ok(PidFile {
            path: abs,
            removed: false,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Remove the file now (if it still holds our pid).
    pub fn remove(mut self) -> io::Result<()> {
        self.removed = true;
        if holds_our_pid(&self.path) {
            fs::remove_file(&self.path)
        } else {
            Ok(())
        }
    }
}

/// The contents of a regular file, read without following a symbolic link
/// at `path` (and at most a few bytes: a pid file is one short line).
fn read_nofollow(path: &Path) -> Option<String> {
    let f = fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC | libc::O_NONBLOCK)
        .open(path)
        .ok()?;
    if !f.metadata().ok()?.file_type().is_file() {
        return None;
    }
    let mut s = String::new();
    io::Read::read_to_string(&mut io::Read::take(f, 64), &mut s).ok()?;
    Some(s)
}

/// The pid in an existing pid file, if it names another running process
/// of the same program (a stale file, or a pid reused by something else,
/// does not count).
fn live_owner(path: &Path) -> Option<u32> {
    let pid: u32 = read_nofollow(path)?.trim().parse().ok()?;
    if pid == 0 || pid == std::process::id() || pid > i32::MAX as u32 {
        return None;
    }
    // SAFETY: kill with signal 0 only checks that the process exists.
    let exists = unsafe { libc::kill(pid as i32, 0) } == 0
        || io::Error::last_os_error().raw_os_error() == Some(libc::EPERM);
    if !exists {
        return None;
    }
    let comm = |p: &str| fs::read_to_string(format!("/proc/{p}/comm")).ok();
    match (comm(&pid.to_string()), comm("self")) {
        (Some(theirs), Some(ours)) if theirs != ours => None,
        _ => Some(pid),
    }
}

/// Whether the pid file still holds our pid (another process may have
/// replaced it; then it is theirs to remove).
fn holds_our_pid(path: &Path) -> bool {
    read_nofollow(path).and_then(|t| t.trim().parse::<u32>().ok()) == Some(std::process::id())
}

impl Drop for PidFile {
    fn drop(&mut self) {
        if !self.removed && holds_our_pid(&self.path) {
            if let Err(e) = fs::remove_file(&self.path) {
                super::log::line(format_args!(
                    "cannot remove pid file {}: {e}",
                    self.path.display()
                ));
            }
        }
    }
}

/// The supplementary groups of `user` (its primary group included), at
/// most 1024.
fn groups_of(user: &User) -> Vec<u32> {
    let Ok(c) = CString::new(user.name.clone()) else {
        return vec![user.gid];
    };
    let mut n: libc::c_int = 1024;
    let mut groups = vec![0 as libc::gid_t; n as usize];
    // SAFETY: groups has room for n entries; getgrouplist writes at most n
    // and stores the real count in n.
    let r = unsafe { libc::getgrouplist(c.as_ptr(), user.gid, groups.as_mut_ptr(), &mut n) };
    if r < 0 {
        return vec![user.gid];
    }
    groups.truncate(n.max(0) as usize);
    groups
}

/// Why `user` could not remove the file at `path` (owned by `file_uid`)
/// once the daemon runs as that user, or `None` if it can: removing needs
/// write and search permission on the directory, and in a sticky
/// directory (such as /tmp) owning the file or the directory.
pub fn removal_blocker(path: &Path, file_uid: u32, user: &User) -> Option<String> {
    if user.uid == 0 {
        return None;
    }
    let dir = path.parent().unwrap_or(Path::new("/"));
    let md = match fs::metadata(dir) {
        Ok(m) => m,
        Err(e) => return Some(format!("cannot inspect directory {}: {e}", dir.display())),
    };
    let mode = md.mode();
    let bits = if md.uid() == user.uid {
        (mode >> 6) & 0o7
    } else if groups_of(user).contains(&md.gid()) {
        (mode >> 3) & 0o7
    } else {
        mode & 0o7
    };
    let about = || {
        format!(
            "directory {} (owner {}, mode {:04o})",
            dir.display(),
            user_name(md.uid()),
            mode & 0o7777
        )
    };
    if bits & 0o3 != 0o3 {
        return Some(format!("{} is not writable by that user", about()));
    }
    if mode & 0o1000 != 0 && md.uid() != user.uid && file_uid != user.uid {
        return Some(format!(
            "{} is sticky and the file belongs to {}",
            about(),
            user_name(file_uid)
        ));
    }
    None
}

/// The one-line warning for a file (`what`: "pid file", "socket") that
/// `-user` `user` will not be able to remove at exit, or `None`.
pub fn removal_warning(what: &str, path: &Path, user: &User) -> Option<String> {
    let uid = fs::symlink_metadata(path).map(|m| m.uid()).unwrap_or(0);
    removal_blocker(path, uid, user).map(|why| {
        format!(
            "warning: -user {} cannot remove {what} {} at exit: {why}; it will be left behind (give that user a directory of its own, e.g. /run/distcache)",
            user.name,
            path.display()
        )
    })
}

/// Signal handling through a signalfd: SIGTERM, SIGINT and SIGHUP (and
/// SIGUSR1/2 with `killable`) become readable events on [`Signals::fd`]; otherwise
/// SIGUSR1/2 are ignored. SIGPIPE is ignored. When the lines go to a
/// `-logfile` ([`super::log::reopens_on_usr2`], so install after
/// [`super::log::setup`]), SIGUSR2 reopens it instead (with `killable`,
/// SIGUSR1 still stops). Poll the fd for READ and call [`Signals::pending`].
///
/// With `reload` (a daemon with TLS files) and without `killable`,
/// SIGUSR1 asks for the files to be read again instead: [`Signals::pending`]
/// notes it for [`Signals::take_reload`] and does not return it.
#[derive(Debug)]
pub struct Signals {
    fd: OwnedFd,
    reopen: bool,
    reload: bool,
    reload_asked: std::cell::Cell<bool>,
}

impl Signals {
    /// Block every signal [`Signals::install`] may turn into an event, so
    /// that one sent between the moment a socket listens (a supervisor or
    /// a test may act on that) and [`Signals::install`] stays pending
    /// instead of killing the daemon with its socket and pid file left
    /// behind. Call it before binding; install delivers what is pending
    /// (or discards it, for the signals it ignores).
    pub fn hold() -> io::Result<()> {
        // SAFETY: a zeroed sigset_t is then initialised by sigemptyset; the
        // signal numbers are valid.
        unsafe {
            let mut set: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut set);
            for s in [
                libc::SIGTERM,
                libc::SIGINT,
                libc::SIGHUP,
                libc::SIGUSR1,
                libc::SIGUSR2,
            ] {
                libc::sigaddset(&mut set, s);
            }
            if libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) != 0 {
                return Err(io::Error::last_os_error());
            }
        }
        Ok(())
    }

    pub fn install(killable: bool, reload: bool) -> io::Result<Signals> {
        let reload = reload && !killable;
        // SAFETY: a zeroed sigset_t is then initialised by sigemptyset.
        let mut set: libc::sigset_t = unsafe { std::mem::zeroed() };
        // SIGHUP (terminal gone) would kill us without clean-up by
        // default: treat it as a stop request too.
        let mut stop = vec![libc::SIGTERM, libc::SIGINT, libc::SIGHUP];
        let reopen = super::log::reopens_on_usr2();
        let mut ignore = vec![libc::SIGPIPE];
        if killable || reload {
            stop.push(libc::SIGUSR1);
        } else {
            ignore.push(libc::SIGUSR1);
        }
        if killable || reopen {
            stop.push(libc::SIGUSR2);
        } else {
            ignore.push(libc::SIGUSR2);
        }
        // SAFETY: set is a valid sigset_t; signal numbers are valid.
        unsafe {
            libc::sigemptyset(&mut set);
            for s in &stop {
                libc::sigaddset(&mut set, *s);
            }
            for s in &ignore {
                libc::signal(*s, libc::SIG_IGN);
            }
            if libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) != 0 {
                return Err(io::Error::last_os_error());
            }
        }
        // SAFETY: set is a valid sigset_t; -1 asks for a new descriptor.
        let fd = unsafe { libc::signalfd(-1, &set, libc::SFD_NONBLOCK | libc::SFD_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: fd is a fresh descriptor we own.
        Ok(Signals {
            fd: unsafe { OwnedFd::from_raw_fd(fd) },
            reopen,
            reload,
            reload_asked: std::cell::Cell::new(false),
        })
    }

    /// The descriptor to watch for READ.
    pub fn fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }

    /// The next delivered stop signal, if any (non-blocking). A SIGUSR2
    /// that reopens the log file, and a SIGUSR1 that asks for a reload,
    /// are handled here and not returned.
    pub fn pending(&self) -> Option<i32> {
        loop {
            match self.next() {
                Some(libc::SIGUSR2) if self.reopen => super::log::reopen(),
                Some(libc::SIGUSR1) if self.reload => self.reload_asked.set(true),
                other => return other,
            }
        }
    }

    /// Whether a SIGUSR1 asked for a reload since the last call.
    pub fn take_reload(&self) -> bool {
        self.reload_asked.replace(false)
    }

    fn next(&self) -> Option<i32> {
        // SAFETY: an all-zero signalfd_siginfo is valid.
        let mut si: libc::signalfd_siginfo = unsafe { std::mem::zeroed() };
        let sz = std::mem::size_of::<libc::signalfd_siginfo>();
        // SAFETY: si is valid for sz bytes.
        let n = unsafe {
            libc::read(
                self.fd.as_raw_fd(),
                &mut si as *mut libc::signalfd_siginfo as *mut libc::c_void,
                sz,
            )
        };
        (n as usize == sz).then_some(si.ssi_signo as i32)
    }
}

/// Name of a signal number for log lines.
pub fn signal_name(sig: i32) -> &'static str {
    match sig {
        libc::SIGTERM => "SIGTERM",
        libc::SIGINT => "SIGINT",
        libc::SIGUSR1 => "SIGUSR1",
        libc::SIGUSR2 => "SIGUSR2",
        libc::SIGHUP => "SIGHUP",
        _ => "signal",
    }
}

/// Raise the soft RLIMIT_NOFILE to the hard limit; returns the new soft
/// limit.
pub fn raise_nofile_limit() -> io::Result<u64> {
    let mut rl = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: rl is valid for writes.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut rl) } != 0 {
        return Err(io::Error::last_os_error());
    }
    if rl.rlim_cur < rl.rlim_max {
        let want = libc::rlimit {
            rlim_cur: rl.rlim_max,
            rlim_max: rl.rlim_max,
        };
        // SAFETY: want is a valid rlimit.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &want) } != 0 {
            return Err(io::Error::last_os_error());
        }
        rl.rlim_cur = rl.rlim_max;
    }
    Ok(rl.rlim_cur)
}

/// The monotonic clock in microseconds (since boot): one `clock_gettime`
/// (a vDSO call, no system call) and integer arithmetic. `Instant`
/// arithmetic (`elapsed`, `as_millis` in u128) cost more than the read on
/// dc_client's hot path. CLOCK_MONOTONIC_COARSE would be cheaper still, but
/// its resolution is a scheduler tick (4 ms on the test machine), too coarse
/// for millisecond deadlines.
fn monotonic_us() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: ts is a valid timespec for the call to fill; CLOCK_MONOTONIC
    // always exists on Linux, so the call cannot fail (ts stays 0 if it did).
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    (ts.tv_sec as u64)
        .wrapping_mul(1_000_000)
        .wrapping_add(ts.tv_nsec as u64 / 1000)
}

/// When this process first read the clock, so that its clocks start near 0.
static START_US: Lazy<u64> = Lazy::new(monotonic_us);

/// Microseconds on a monotonic clock (since the first call in this process).
pub fn now_us() -> u64 {
    monotonic_us().saturating_sub(*START_US)
}

/// Milliseconds on a monotonic clock (since the first call in this process).
pub fn now_ms() -> u64 {
    now_us() / 1000
}

/// Limits log lines to `per_sec` per second and counts what it dropped.
#[derive(Clone, Debug)]
pub struct RateLimit {
    per_sec: u32,
    window_start_ms: u64,
    used: u32,
    suppressed: u64,
}

impl RateLimit {
    pub fn new(per_sec: u32) -> RateLimit {
        RateLimit {
            per_sec,
            window_start_ms: 0,
            used: 0,
            suppressed: 0,
        }
    }

    /// Whether a line may be logged now. When allowed, returns how many
    /// lines were suppressed since the last allowed one.
    pub fn allow(&mut self, now_ms: u64) -> Option<u64> {
        if now_ms.saturating_sub(self.window_start_ms) >= 1000 || self.window_start_ms == 0 {
            self.window_start_ms = now_ms.max(1);
            self.used = 0;
        }
        if self.used < self.per_sec {
            self.used += 1;
            Some(std::mem::take(&mut self.suppressed))
        } else {
            self.suppressed += 1;
            None
        }
    }
}

/// A local date-time stamp (UTC) for log lines: `2026-11-27 02:10:00`.
pub fn timestamp() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let (days, rem) = (secs / 86400, secs % 86400);
    // Civil-from-days (proleptic Gregorian).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02}",
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pidfile_write_and_remove() {
        let p = std::env::temp_dir().join(format!("dcrs-pid-{}", std::process::id()));
        let f = PidFile::write(&p).unwrap();
        assert_eq!(
            fs::read_to_string(&p).unwrap(),
            format!("{}\n", std::process::id())
        );
        drop(f);
        assert!(!p.exists());
        let e = PidFile::write(Path::new("/nonexistent-dcrs-dir/x.pid")).unwrap_err();
        assert!(e.to_string().contains("does not exist"), "{e}");
    }

    #[test]
    fn rate_limit() {
        let mut r = RateLimit::new(2);
        assert_eq!(r.allow(1000), Some(0));
        assert_eq!(r.allow(1001), Some(0));
        assert_eq!(r.allow(1002), None);
        assert_eq!(r.allow(1500), None);
        assert_eq!(r.allow(2001), Some(2));
    }

    #[test]
    fn stamp_format() {
        let t = timestamp();
        assert_eq!(t.len(), 19, "{t}");
        assert!(t.starts_with("20"), "{t}");
    }

    #[test]
    fn nofile() {
        let n = raise_nofile_limit().unwrap();
        assert!(n >= 1024);
    }
}
