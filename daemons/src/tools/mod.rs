//! Helpers shared by the four tools (dc_server, dc_client, dc_snoop,
//! dc_test): single-dash argument parsing, listening/connecting sockets,
//! daemonizing, privileges, pid files, signals, logging (one style:
//! time stamp, tool, one line; stderr, -logfile or -syslog), systemd
//! notifications and small utilities.
//!
//! This module is only used by the binaries; the C libraries never call it.

pub mod args;
pub mod evict;
pub mod log;
pub mod net;
pub mod notify;
pub mod sys;

pub use args::{parse_num, parse_octal, ArgError, Cli, Flag, Parsed};
pub use net::{connect, connect_nonblocking, connect_timeout, listen, Listener, SockOpts, Stream};
pub use sys::{
    absolute_path, daemonize, drop_privileges, lookup_group, lookup_user, now_ms, now_us,
    raise_nofile_limit, removal_warning, signal_name, timestamp, user_name, Detached, PidFile,
    RateLimit, Signals, User,
};
