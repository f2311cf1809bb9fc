//! The server side: the session cache interface and request handling.
//!
//! [`handle_request`] answers one decoded request against any
//! [`SessionCache`]; both the DC_SERVER C API (over NAL connections, with
//! the built-in cache or a caller's `DC_CACHE_cb`) and the `dc_server` tool
//! (its own epoll loop) use it, so every front end answers byte for byte
//! the same way.

pub mod cache;
pub mod dcserver;

use crate::proto::{self, status, AddParse, Cmd, MsgRef};

/// A session store. Time is the caller's clock in milliseconds; expiry is
/// judged against it, never against the wall clock.
pub trait SessionCache {
    /// Store a session that expires at `now_ms + timeout_ms`. Returns false
    /// when a live session with this id is already stored (or the store
    /// refuses it). The built-in [`cache::Cache`], when full, makes room by
    /// evicting expired sessions and then the oldest stored, and clamps
    /// timeouts to its maximum (one day by default); a caller's own store
    /// (DC_SERVER's `DC_CACHE_cb`) applies its own policy.
    fn add(&mut self, now_ms: u64, timeout_ms: u64, id: &[u8], data: &[u8]) -> bool;
    /// If a live session with this id exists, call `f` with its data and
    /// return true.
    fn get_with(&mut self, now_ms: u64, id: &[u8], f: &mut dyn FnMut(&[u8])) -> bool;
    /// Remove a live session; true if there was one.
    fn remove(&mut self, now_ms: u64, id: &[u8]) -> bool;
    /// Whether a live session with this id exists.
    fn have(&mut self, now_ms: u64, id: &[u8]) -> bool;
    /// Number of live sessions.
    fn num_items(&mut self, now_ms: u64) -> usize;
}

/// Counters kept by a server, for status lines and DC_SERVER_num_operations.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Requests answered (all commands).
    pub ops: u64,
    pub adds: u64,
    pub adds_refused: u64,
    pub gets: u64,
    pub hits: u64,
    pub misses: u64,
    pub removes: u64,
    /// REMOVEs that found a live session (the rest found none).
    pub removes_found: u64,
    pub haves: u64,
    /// HAVEs answered yes.
    pub haves_found: u64,
}

/// The request cannot be answered and the connection must be closed
/// (an ADD payload shorter than 8 bytes, or a message that is not a request).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Fatal;

/// Server policy knobs.
#[derive(Clone, Copy, Debug, Default)]
pub struct Policy {
    /// ADD timeouts below this are stored with this timeout (`-mintimeout`).
    pub min_timeout_ms: u64,
}

/// Answer one request, appending the encoded response to `out`.
pub fn handle_request(
    cache: &mut dyn SessionCache,
    policy: &Policy,
    stats: &mut Stats,
    now_ms: u64,
    msg: MsgRef<'_>,
    out: &mut Vec<u8>,
) -> Result<(), Fatal> {
    if msg.is_response {
        return Err(Fatal);
    }
    let reply = |out: &mut Vec<u8>, payload: &[u8]| {
        // Payloads we produce are at most one session's data, never over
        // the limit; a failure here would be a bug, reported by the caller.
        proto::encode_message(out, true, msg.uid, msg.cmd, payload).map_err(|_| Fatal)
    };
    match msg.cmd {
        Cmd::Add => {
            let code = match proto::parse_add(msg.payload) {
                AddParse::Fatal => return Err(Fatal),
                AddParse::Reject(code) => code,
                AddParse::Ok(req) => {
                    let timeout = (req.timeout_ms as u64).max(policy.min_timeout_ms);
                    if cache.add(now_ms, timeout, req.id, req.data) {
                        status::OK
                    } else {
                        status::ADD_MATCHING_SESSION
                    }
                }
            };
            stats.adds += 1;
            if code != status::OK {
                stats.adds_refused += 1;
            }
            reply(out, &[code])?;
        }
        Cmd::Get => {
            stats.gets += 1;
            let mut res = Ok(());
            let hit = cache.get_with(now_ms, msg.payload, &mut |data| {
                res = reply(out, data);
            });
            if hit {
                stats.hits += 1;
                res?;
            } else {
                stats.misses += 1;
                reply(out, &[status::NOTOK])?;
            }
        }
        Cmd::Remove => {
            stats.removes += 1;
            let ok = cache.remove(now_ms, msg.payload);
            stats.removes_found += u64::from(ok);
            reply(out, &[if ok { status::OK } else { status::NOTOK }])?;
        }
        Cmd::Have => {
            stats.haves += 1;
            let ok = cache.have(now_ms, msg.payload);
            stats.haves_found += u64::from(ok);
            reply(out, &[if ok { status::OK } else { status::NOTOK }])?;
        }
    }
    stats.ops += 1;
    Ok(())
}
