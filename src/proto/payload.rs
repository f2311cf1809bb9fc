//! Payload formats of the four commands and the 1-byte result codes.

use super::frame::MAX_ID_LEN;

/// Largest session timeout accepted by a server: 7 days in milliseconds.
pub const MAX_EXPIRY_MS: u64 = 604_800_000;
/// The smallest timeout the original client library accepted.
pub const DC_MIN_TIMEOUT_MS: u64 = 500;

/// 1-byte answers.
pub mod status {
    /// Success / present / removed.
    pub const OK: u8 = 0;
    /// Miss / not found / absent.
    pub const NOTOK: u8 = 1;
    /// Sent by a proxy when its server connection died with the request in flight.
    pub const DISCONNECTED: u8 = 2;
    /// ADD: the payload is inconsistent (id runs past the end, no data).
    pub const ADD_CORRUPT: u8 = 100;
    /// ADD: a live session with this id is already stored.
    pub const ADD_MATCHING_SESSION: u8 = 101;
    /// ADD: timeout above 7 days.
    pub const ADD_TIMEOUT_RANGE: u8 = 102;
    /// ADD: id length 0 or above 64.
    pub const ADD_ID_RANGE: u8 = 103;
    /// ADD: data length 0 or above 32768.
    pub const ADD_DATA_RANGE: u8 = 104;

    /// Name of a status byte, for logs.
    pub fn name(v: u8) -> &'static str {
        match v {
            OK => "OK",
            NOTOK => "NOTOK",
            DISCONNECTED => "DISCONNECTED",
            ADD_CORRUPT => "ADD_CORRUPT",
            ADD_MATCHING_SESSION => "ADD_MATCHING_SESSION",
            ADD_TIMEOUT_RANGE => "ADD_TIMEOUT_RANGE",
            ADD_ID_RANGE => "ADD_ID_RANGE",
            ADD_DATA_RANGE => "ADD_DATA_RANGE",
            _ => "UNKNOWN",
        }
    }
}

/// Build an ADD request payload: `timeout u32 | id_len u32 | id | data`.
pub fn encode_add(out: &mut Vec<u8>, timeout_ms: u32, id: &[u8], data: &[u8]) {
    out.reserve(8 + id.len() + data.len());
    out.extend_from_slice(&timeout_ms.to_be_bytes());
    out.extend_from_slice(&(id.len() as u32).to_be_bytes());
    out.extend_from_slice(id);
    out.extend_from_slice(data);
}

/// Length of an ADD payload for this id and data.
pub fn add_payload_len(id_len: usize, data_len: usize) -> usize {
    8 + id_len + data_len
}

/// A validated ADD request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AddRequest<'a> {
    pub timeout_ms: u32,
    pub id: &'a [u8],
    pub data: &'a [u8],
}

/// What a server makes of an ADD payload.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AddParse<'a> {
    /// Shorter than 8 bytes: the original drops the connection, unanswered.
    Fatal,
    /// Answer with this status byte (100, 102, 103 or 104).
    Reject(u8),
    /// Well-formed: the caller checks for a duplicate and stores it.
    Ok(AddRequest<'a>),
}

/// Validate an ADD payload in the original server's order (see
/// `tests/vectors/README.md`: timeout, then consistency, then id range,
/// then data range).
pub fn parse_add(payload: &[u8]) -> AddParse<'_> {
    if payload.len() < 8 {
        return AddParse::Fatal;
    }
    let timeout_ms = u32::from_be_bytes([payload[0], payload[1], payload[2], payload[3]]);
    let id_len = u32::from_be_bytes([payload[4], payload[5], payload[6], payload[7]]) as usize;
    if timeout_ms as u64 > MAX_EXPIRY_MS {
        return AddParse::Reject(status::ADD_TIMEOUT_RANGE);
    }
    let rest = payload.len() - 8;
    if id_len >= rest {
        return AddParse::Reject(status::ADD_CORRUPT);
    }
    if id_len == 0 || id_len > MAX_ID_LEN {
        return AddParse::Reject(status::ADD_ID_RANGE);
    }
    let data = &payload[8 + id_len..];
    if data.is_empty() || data.len() > super::frame::MAX_TOTAL_DATA {
        return AddParse::Reject(status::ADD_DATA_RANGE);
    }
    AddParse::Ok(AddRequest {
        timeout_ms,
        id: &payload[8..8 + id_len],
        data,
    })
}

/// How a client library reads an answer (the original's rules):
/// ADD and REMOVE succeed only on exactly `00`; a GET answer of 5 bytes or
/// more is a hit; HAVE maps `00` to present and `01` to absent.
pub mod answer {
    use super::status;

    /// ADD / REMOVE: success?
    pub fn is_ok(payload: &[u8]) -> bool {
        payload == [status::OK]
    }
    /// GET: the session data, if this answer is a hit.
    pub fn get_hit(payload: &[u8]) -> Option<&[u8]> {
        if payload.len() >= 5 {
            Some(payload)
        } else {
            None
        }
    }
    /// HAVE: Some(true) present, Some(false) absent, None an error answer.
    pub fn have(payload: &[u8]) -> Option<bool> {
        match payload {
            [status::OK] => Some(true),
            [status::NOTOK] => Some(false),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn add(timeout: u32, id_len: u32, rest: &[u8]) -> Vec<u8> {
        let mut v = timeout.to_be_bytes().to_vec();
        v.extend_from_slice(&id_len.to_be_bytes());
        v.extend_from_slice(rest);
        v
    }

    #[test]
    fn add_rules_in_order() {
        assert_eq!(parse_add(&[0; 7]), AddParse::Fatal);
        assert_eq!(parse_add(&[]), AddParse::Fatal);
        // Timeout beats everything else.
        assert_eq!(
            parse_add(&add(0xffff_ffff, 0, b"x")),
            AddParse::Reject(status::ADD_TIMEOUT_RANGE)
        );
        assert!(matches!(
            parse_add(&add(604_800_000, 1, b"ab")),
            AddParse::Ok(_)
        ));
        assert_eq!(
            parse_add(&add(604_800_001, 1, b"ab")),
            AddParse::Reject(status::ADD_TIMEOUT_RANGE)
        );
        // Consistency: id_len must leave at least one byte of data.
        assert_eq!(
            parse_add(&add(1, 0, b"")),
            AddParse::Reject(status::ADD_CORRUPT)
        );
        assert_eq!(
            parse_add(&add(1, 5, b"empty")),
            AddParse::Reject(status::ADD_CORRUPT)
        );
        assert_eq!(
            parse_add(&add(1, u32::MAX, b"abcd")),
            AddParse::Reject(status::ADD_CORRUPT)
        );
        // Then the id range.
        assert_eq!(
            parse_add(&add(1, 0, b"abc")),
            AddParse::Reject(status::ADD_ID_RANGE)
        );
        assert_eq!(
            parse_add(&add(1, 65, &[b'I'; 66])),
            AddParse::Reject(status::ADD_ID_RANGE)
        );
        match parse_add(&add(7, 64, &[b'J'; 65])) {
            AddParse::Ok(r) => {
                assert_eq!(r.timeout_ms, 7);
                assert_eq!(r.id.len(), 64);
                assert_eq!(r.data, b"J");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn encode_add_layout() {
        let mut v = Vec::new();
        encode_add(&mut v, 300000, b"session-id-A", b"data");
        assert_eq!(&v[..8], &[0, 4, 0x93, 0xe0, 0, 0, 0, 12]);
        assert_eq!(v.len(), add_payload_len(12, 4));
    }

    #[test]
    fn answers() {
        assert!(answer::is_ok(&[0]));
        assert!(!answer::is_ok(&[0, 0]));
        assert!(!answer::is_ok(&[]));
        assert_eq!(answer::get_hit(&[1]), None);
        assert_eq!(answer::get_hit(b"abcd"), None);
        assert_eq!(answer::get_hit(b"abcde"), Some(&b"abcde"[..]));
        assert_eq!(answer::have(&[0]), Some(true));
        assert_eq!(answer::have(&[1]), Some(false));
        assert_eq!(answer::have(&[2]), None);
    }
}
