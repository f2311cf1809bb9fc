//! Address strings (nal::Address and NAL_ADDRESS_create's NalAddress).
//!
//! Input: the address string (invalid UTF-8 is tried lossily, as the C
//! entry point refuses it anyway); the length picks a buffer size.
//! Host names are never looked up (Address::parse_numeric), so the target
//! sends no DNS queries; strings that would need a lookup stop there.
//! Checks: no panic; a parsed address prints as a string that parses back
//! to the same address; NalAddress::create agrees with Address::parse and
//! refuses a second create; buffer sizes over 32768 are refused.
#![no_main]

use distcache_rs::nal::address::{Address, LOOKUP_REFUSED, MAX_UNIX_PATH};
use distcache_rs::nal::NalAddress;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let s = String::from_utf8_lossy(data);
    let parsed = match Address::parse_numeric(&s) {
        Err(e) if e.0.ends_with(LOOKUP_REFUSED) => return,
        r => r,
    };
    if let Ok(a) = &parsed {
        let text = a.to_string();
        let back = Address::parse_numeric(&text).expect("printed address parses");
        assert_eq!(&back, a, "{s:?} -> {text:?}");
        if let Address::Unix(p) = a {
            assert!(!p.as_os_str().is_empty());
            assert!(p.as_os_str().len() <= MAX_UNIX_PATH);
        }
    }
    // No lookup can happen past this point: the same string through the
    // resolving parser and the NAL_ADDRESS object.
    assert_eq!(Address::parse(&s), parsed);
    let size = data.len() * 613 % 40000;
    let mut na = NalAddress::new();
    let ok = na.create(&s, size);
    assert_eq!(ok, parsed.is_ok() && size <= 32768);
    if ok {
        assert_eq!(na.address(), parsed.as_ref().ok());
        assert_eq!(na.def_buffer_size(), size);
        assert_eq!(na.can_connect(), parsed.as_ref().unwrap().can_connect());
        assert!(!na.create(&s, size), "second create must fail");
    } else {
        assert!(na.address().is_none());
    }
});
