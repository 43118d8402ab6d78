//! Generates the C header from the Rust source with cbindgen.
//!
//! The header always goes to `$OUT_DIR/ws.h`; `tests/header.rs` fails when
//! the committed `include/ws.h` differs from it. `LIBWS_WRITE_HEADER=1`
//! (as `make header` sets it) also writes `include/ws.h`. Nothing under the
//! source tree is written otherwise, so `cargo publish` verification holds.

use std::path::PathBuf;

fn main() {
    let crate_dir = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"));
    let out_dir = PathBuf::from(std::env::var("OUT_DIR").expect("cargo sets OUT_DIR"));
    println!("cargo:rerun-if-changed=src");
    println!("cargo:rerun-if-changed=cbindgen.toml");
    println!("cargo:rerun-if-env-changed=LIBWS_WRITE_HEADER");
    println!("cargo:rerun-if-changed=scripts/soname.txt");

    // The shared object's soname, so that programs bind to its ABI version.
    let soname = std::fs::read_to_string(crate_dir.join("scripts/soname.txt")).expect("scripts/soname.txt exists");
    let soname = soname.lines().map(str::trim).find(|l| !l.is_empty() && !l.starts_with('#'));
    println!("cargo:rustc-cdylib-link-arg=-Wl,-soname,{}", soname.expect("scripts/soname.txt names the soname"));

    let config = cbindgen::Config::from_file(crate_dir.join("cbindgen.toml")).expect("cbindgen.toml is valid");
    let bindings = cbindgen::Builder::new()
        .with_crate(&crate_dir)
        .with_config(config)
        .generate()
        .expect("cbindgen generates ws.h");
    bindings.write_to_file(out_dir.join("ws.h"));
    if std::env::var_os("LIBWS_WRITE_HEADER").is_some_and(|v| v == "1") {
        bindings.write_to_file(crate_dir.join("include").join("ws.h"));
    }
}
