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

use std::time::Instant;

/// What the policy needs to know about one connection.
#[derive(Clone, Copy, Debug)]
pub struct Candidate {
    /// The connection has completed (been answered for) at least one request.
    pub completed_any: bool,
    /// At least one request of this connection is being served or its
    /// answer has not been fully written yet.
    pub in_flight: bool,
    /// When the connection last did something useful: accepted, or its
    /// last request completed.
    pub since: Instant,
}

/// The index (into `cands`) of the connection to close, or `None` when
/// every connection has a request in flight.
pub fn pick_victim<I>(cands: I) -> Option<usize>
where
    I: IntoIterator<Item = Candidate>,
{
    // (never completed?, since): a never-completed connection wins over
    // any that completed; within a class the oldest `since` wins.
    let mut best: Option<(usize, bool, Instant)> = None;
    for (i, c) in cands.into_iter().enumerate() {
        if c.in_flight {
            continue;
        }
        let fresh = !c.completed_any;
        let better = match best {
            None => true,
            Some((_, bfresh, bsince)) => {
                (fresh && !bfresh) || (fresh == bfresh && c.since < bsince)
            }
        };
        if better {
            best = Some((i, fresh, c.since));
        }
    }
    best.map(|(i, _, _)| i)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn c(completed_any: bool, in_flight: bool, age_ms: u64, now: Instant) -> Candidate {
        Candidate {
            completed_any,
            in_flight,
            since: now - Duration::from_millis(age_ms),
        }
    }

    #[test]
    fn never_completed_oldest_first() {
        let now = Instant::now() + Duration::from_secs(100);
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
        let now = Instant::now() + Duration::from_secs(100);
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
}
