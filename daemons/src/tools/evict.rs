//! Which connection a full daemon closes to make room for a newcomer.
//!
//! When a daemon's connection table is full (its `-maxconns`, or accept(2)
//! failing with EMFILE/ENFILE), refusing the newcomer lets a flood of idle
//! or dribbling sockets lock every good application out. Instead the daemon
//! closes one connection it holds, chosen by [`pick_victim`]:
//!
//! 1. among the connections that have never completed a request (a
//!    dribbler, or a socket opened and left silent), the one that has waited
//!    longest;
//! 2. if there is none, the one idle longest among the rest;
//! 3. never a connection with a request in flight (its answer is owed).
//!
//! A multiplexing peer (a dc_client upstream, a reused Apache connection)
//! has completed requests, so it goes last, and only when it is idle.

/// What the policy needs to know about one connection.
#[derive(Clone, Copy, Debug)]
pub struct Candidate {
    /// The connection has completed (been answered for) at least one request.
    pub completed_any: bool,
    /// At least one request of this connection is being served or its
    /// answer has not been fully written yet.
    pub in_flight: bool,
    /// When (ms, the daemon's clock) the connection last did something
    /// useful: accepted, or its last request completed.
    pub since_ms: u64,
    /// Which of two connections with the same `since_ms` is older: the
    /// lower serial was made first (a fast peer opens many in one ms).
    pub serial: u64,
}

/// The index (into `cands`) of the connection to close, or `None` when
/// every connection has a request in flight.
pub fn pick_victim<I>(cands: I) -> Option<usize>
where
    I: IntoIterator<Item = Candidate>,
{
    // A never-completed connection wins over any that completed; within a
    // class the oldest (`since_ms`, then `serial`) wins.
    let mut best: Option<(usize, (bool, u64, u64))> = None;
    for (i, c) in cands.into_iter().enumerate() {
        if c.in_flight {
            continue;
        }
        let key = (c.completed_any, c.since_ms, c.serial);
        if best.map_or(true, |(_, b)| key < b) {
            best = Some((i, key));
        }
    }
    best.map(|(i, _)| i)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(completed_any: bool, in_flight: bool, age_ms: u64, now: u64) -> Candidate {
        Candidate {
            completed_any,
            in_flight,
            since_ms: now - age_ms,
            serial: 0,
        }
    }

    #[test]
    fn never_completed_oldest_first() {
        let now = 100_000;
        let v = [
            c(true, false, 9_000, now),  // idle multiplexer, oldest of all
            c(false, false, 100, now),   // young dribbler
            c(false, false, 5_000, now), // old dribbler: the victim
            c(false, true, 8_000, now),  // in flight: never
        ];
        assert_eq!(pick_victim(v), Some(2));
    }

    #[test]
    fn then_idle_longest_never_in_flight() {
        let now = 100_000;
        let v = [
            c(true, false, 100, now),
            c(true, true, 9_000, now),
            c(true, false, 3_000, now),
        ];
        assert_eq!(pick_victim(v), Some(2));
        let busy = [c(true, true, 1, now), c(false, true, 2, now)];
        assert_eq!(pick_victim(busy), None);
        assert_eq!(pick_victim([]), None);
    }

    #[test]
    fn same_millisecond_goes_by_serial() {
        let at = |serial| Candidate {
            completed_any: true,
            in_flight: false,
            since_ms: 7,
            serial,
        };
        assert_eq!(pick_victim([at(5), at(3), at(9)]), Some(1));
        let mut young = at(1);
        young.since_ms = 8;
        assert_eq!(pick_victim([young, at(4)]), Some(1), "time first");
    }
}
