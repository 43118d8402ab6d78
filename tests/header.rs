//! include/ws.h is committed; it must be exactly what cbindgen generates
//! from the source now. Fix a failure with `make header`.
//!
//! sanitize: none: it compares two files; no libws code runs

#[test]
fn committed_header_matches_generated() {
    let generated = include_str!(concat!(env!("OUT_DIR"), "/ws.h"));
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/include/ws.h");
    let committed = std::fs::read_to_string(path).expect("include/ws.h exists");
    assert!(committed == generated, "include/ws.h is out of date: run `make header` and commit it");
}
