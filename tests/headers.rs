//! The committed headers in include/ must be exactly what cbindgen generates
//! from the current sources (build.rs writes them to $OUT_DIR/include).
//! Fix a failure with `make headers`.

use std::path::Path;

#[test]
fn committed_headers_match_the_code() {
    let generated = Path::new(env!("OUT_DIR")).join("include");
    // The checkout `cargo test` runs in (a test binary reused by a clone
    // checks the clone's headers), else the one it was built in.
    let root = std::env::var_os("CARGO_MANIFEST_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| env!("CARGO_MANIFEST_DIR").into());
    let committed = root.join("include");
    let mut checked = 0;
    for h in [
        "libnal/nal.h",
        "distcache/dc_plug.h",
        "distcache/dc_client.h",
        "distcache/dc_server.h",
    ] {
        let g = std::fs::read_to_string(generated.join(h)).expect("generated header");
        let c = std::fs::read_to_string(committed.join(h))
            .unwrap_or_else(|e| panic!("include/{h}: {e}; run `make headers`"));
        assert!(
            g == c,
            "include/{h} differs from what the code generates; run `make headers`"
        );
        checked += 1;
    }
    assert_eq!(checked, 4);
}
