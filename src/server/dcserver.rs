//! The DC_SERVER object: one session cache plus a set of clients, each a
//! NAL connection carrying distcache requests (the engine behind
//! `distcache/dc_server.h`).
//!
//! Requests are answered by [`crate::server::handle_request`], so an
//! embedded server answers byte for byte like `dc_server`. Time is always
//! the caller's (milliseconds), never the wall clock.
//!
//! Clients come in two kinds (C's `DC_CLIENT_FLAG_IN_SERVER`):
//! - in-server clients are driven by [`DcServer::clients_io`], which does
//!   their network I/O (they must be bound to the selector the caller
//!   selects on), answers their requests and drops those that
//!   disconnected or sent a corrupt stream;
//! - other clients are driven by the caller, who does the connection's I/O
//!   and calls [`DcServer::process_client`], deleting the client when it
//!   fails.

use std::collections::BTreeMap;

use super::{handle_request, Policy, SessionCache, Stats};
use crate::plug::{ConnHandle, Plug};
use crate::proto::{MsgRef, PROTO_LEVEL};

/// While this many bytes of answers wait for a client that does not read
/// them, its further requests are left unprocessed (they stay in its
/// connection, so TCP throttles it) instead of growing our memory.
pub const MAX_PENDING_OUTPUT: usize = 256 * 1024;

/// Identifies a client of a [`DcServer`].
pub type ClientId = u64;

/// One client connection of a server (the C `DC_CLIENT`).
#[derive(Debug)]
pub struct Client {
    id: ClientId,
    /// The server this client belongs to, for the C layer (a `DC_CLIENT*`
    /// alone must find its `DC_SERVER`). Set when the client is added;
    /// valid as long as the server is not moved (the C layer keeps servers
    /// boxed). Safe code never dereferences it.
    owner: *mut DcServer,
    plug: Plug,
    in_server: bool,
    /// A request could not be answered: answers already queued are still
    /// delivered, nothing more is read, and the client goes away once they
    /// are sent (as the original did).
    closing: bool,
}

impl Client {
    pub fn id(&self) -> ClientId {
        self.id
    }
    /// The server that owns this client (see the field's documentation).
    pub fn owner(&self) -> *mut DcServer {
        self.owner
    }
    pub fn in_server(&self) -> bool {
        self.in_server
    }
    /// The client's protocol engine.
    pub fn plug(&mut self) -> &mut Plug {
        &mut self.plug
    }
}

/// A distcache server engine: a cache, counters and clients.
pub struct DcServer {
    cache: Box<dyn SessionCache>,
    policy: Policy,
    stats: Stats,
    /// Boxed so that a client's address (the C `DC_CLIENT*`) never moves.
    clients: BTreeMap<ClientId, Box<Client>>,
    next_id: ClientId,
    /// Encoded answers of the request being handled.
    scratch: Vec<u8>,
}

impl std::fmt::Debug for DcServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DcServer")
            .field("stats", &self.stats)
            .field("clients", &self.clients.len())
            .finish()
    }
}

impl DcServer {
    /// A server using `cache`.
    pub fn new(cache: Box<dyn SessionCache>) -> DcServer {
        DcServer {
            cache,
            policy: Policy::default(),
            stats: Stats::default(),
            clients: BTreeMap::new(),
            next_id: 1,
            scratch: Vec::new(),
        }
    }

    /// Change the request policy (`-mintimeout`).
    pub fn set_policy(&mut self, policy: Policy) {
        self.policy = policy;
    }

    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    /// Requests answered since creation or the last reset
    /// (DC_SERVER_num_operations).
    pub fn num_operations(&self) -> u64 {
        self.stats.ops
    }

    /// Zero the counters (DC_SERVER_reset_operations).
    pub fn reset_operations(&mut self) {
        self.stats = Stats::default();
    }

    /// Live sessions at `now_ms` (DC_SERVER_items_stored).
    pub fn items_stored(&mut self, now_ms: u64) -> usize {
        self.cache.num_items(now_ms)
    }

    /// Add a client on `conn` (DC_SERVER_new_client). The connection is
    /// dropped with the client (a borrowed handle leaves it alone).
    pub fn new_client(&mut self, conn: Box<dyn ConnHandle>, in_server: bool) -> &mut Client {
        let id = self.next_id;
        self.next_id += 1;
        let owner: *mut DcServer = self;
        let c = Box::new(Client {
            id,
            owner,
            plug: Plug::new(conn, false),
            in_server,
            closing: false,
        });
        self.clients.entry(id).or_insert(c)
    }

    /// The client `id`, if it exists.
    pub fn client_mut(&mut self, id: ClientId) -> Option<&mut Client> {
        self.clients.get_mut(&id).map(|c| &mut **c)
    }

    /// Remove a client, dropping its connection unless borrowed
    /// (DC_SERVER_del_client). False if there is no such client.
    pub fn del_client(&mut self, id: ClientId) -> bool {
        self.clients.remove(&id).is_some()
    }

    /// Number of clients.
    pub fn num_clients(&self) -> usize {
        self.clients.len()
    }

    /// True when the server has no clients (DC_SERVER_clients_empty).
    pub fn clients_empty(&self) -> bool {
        self.clients.is_empty()
    }

    /// Answer every complete request waiting on client `id`
    /// (DC_SERVER_process_client). The caller does the connection's network
    /// I/O. False when the client must be deleted: corrupt stream, no such
    /// client, or a request that cannot be answered (an ADD under 8 bytes)
    /// once the answers to the requests before it have been sent (until
    /// then it stays true, and nothing more is read).
    pub fn process_client(&mut self, id: ClientId, now_ms: u64) -> bool {
        let DcServer {
            cache,
            policy,
            stats,
            clients,
            scratch,
            ..
        } = self;
        match clients.get_mut(&id) {
            Some(c) => serve(c, &mut **cache, policy, stats, scratch, now_ms),
            None => false,
        }
    }

    /// Network I/O and request processing for every in-server client
    /// (DC_SERVER_clients_io), after the caller's select. Clients whose
    /// connection failed (peer closed, socket error) or whose stream was
    /// corrupt are removed. Returns how many were removed.
    ///
    /// An in-server client's connection must be bound to the selector the
    /// caller selects on (NAL_CONNECTION_add_to_selector, before or after
    /// creating the client); while it is not bound, it gets no network I/O
    /// (requests already buffered are still answered) but is kept.
    pub fn clients_io(&mut self, now_ms: u64) -> usize {
        let DcServer {
            cache,
            policy,
            stats,
            clients,
            scratch,
            ..
        } = self;
        let before = clients.len();
        clients.retain(|_, c| {
            if !c.in_server {
                return true;
            }
            let net_ok = !c.plug.conn().is_bound() || c.plug.io();
            net_ok && serve(c, &mut **cache, policy, stats, scratch, now_ms)
        });
        before - clients.len()
    }
}

/// Answer the requests waiting on one client. False when the client must
/// go: corrupt stream, or (after a request that cannot be answered, such
/// as an ADD under 8 bytes) once the answers queued before it are sent.
fn serve(
    c: &mut Client,
    cache: &mut dyn SessionCache,
    policy: &Policy,
    stats: &mut Stats,
    scratch: &mut Vec<u8>,
    now_ms: u64,
) -> bool {
    let plug = &mut c.plug;
    if c.closing {
        return !plug.flush();
    }
    // Flush answers left over from last time and decode what arrived.
    if !plug.sync() {
        return false;
    }
    while plug.core().pending_output() < MAX_PENDING_OUTPUT {
        let Some(m) = plug.read(false) else {
            break;
        };
        scratch.clear();
        let req = MsgRef {
            is_response: false,
            uid: m.uid,
            cmd: m.cmd,
            level: PROTO_LEVEL,
            payload: m.payload,
        };
        let r = handle_request(cache, policy, stats, now_ms, req, scratch);
        plug.consume();
        if r.is_err() {
            c.closing = true;
            return !plug.flush();
        }
        plug.queue_encoded(scratch);
    }
    plug.core().is_alive()
}

#[cfg(test)]
mod tests;
