//! Scraping a daemon's `-metrics` endpoint in the tests: one HTTP
//! exchange, and `GET /metrics` parsed into its samples.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

/// One HTTP exchange with 127.0.0.1:port: the whole answer (status line,
/// headers, body) as text.
pub fn http(port: u16, request: &str) -> String {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(request.as_bytes()).unwrap();
    let mut out = Vec::new();
    s.read_to_end(&mut out).unwrap();
    String::from_utf8(out).unwrap()
}

pub fn status_of(answer: &str) -> &str {
    answer.lines().next().unwrap_or("")
}

/// The samples of a scrape: `name{labels}` (as written) to value.
pub fn scrape(port: u16) -> BTreeMap<String, f64> {
    let answer = http(
        port,
        "GET /metrics HTTP/1.1\r\nHost: localhost\r\nAccept: text/plain\r\n\r\n",
    );
    assert_eq!(status_of(&answer), "HTTP/1.1 200 OK", "{answer}");
    let (head, body) = answer.split_once("\r\n\r\n").expect("end of headers");
    assert!(
        head.contains("Content-Type: text/plain; version=0.0.4"),
        "{head}"
    );
    let mut m = BTreeMap::new();
    for line in body.lines() {
        if line.starts_with('#') || line.is_empty() {
            continue;
        }
        let (k, v) = line.rsplit_once(' ').unwrap_or_else(|| panic!("{line}"));
        let v: f64 = v.parse().unwrap_or_else(|_| panic!("value of {line}"));
        assert!(m.insert(k.to_string(), v).is_none(), "{k} twice");
    }
    m
}

pub fn val(m: &BTreeMap<String, f64>, k: &str) -> f64 {
    *m.get(k)
        .unwrap_or_else(|| panic!("no sample {k} in {:#?}", m.keys().collect::<Vec<_>>()))
}
