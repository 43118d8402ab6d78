//! Compiling C and C++ programs against the library.

// Shared by test binaries that each use a part of it (tests/common/mod.rs
// lists the support modules): what one binary leaves unused is not dead.
#![allow(dead_code)]

use crate::paths::{lib_dir, repo_dir, run};
use std::process::Command;

// ----- compiling C programs against the library -----

use std::path::{Path, PathBuf};

pub const C_FLAGS: &[&str] = &["-std=c99", "-Wall", "-Wextra", "-Werror", "-pedantic"];
pub const CXX_FLAGS: &[&str] = &["-x", "c++", "-std=c++11", "-Wall", "-Wextra", "-Werror", "-pedantic"];
/// The value of one of the files that say how programs link libws: its
/// line that is neither empty nor a `#` comment.
fn link_setting(text: &'static str) -> &'static str {
    text.lines().map(str::trim).find(|l| !l.is_empty() && !l.starts_with('#')).expect("a value under the comments")
}

/// The shared library's soname (scripts/soname.txt, which build.rs gives
/// the linker).
pub fn soname() -> &'static str {
    link_setting(include_str!("../../scripts/soname.txt"))
}

/// What a program linking libws.a also links from the system
/// (scripts/static-libs.txt: rustc --print native-static-libs).
pub fn static_libs() -> Vec<&'static str> {
    link_setting(include_str!("../../scripts/static-libs.txt")).split_whitespace().collect()
}

/// A directory holding libws.so under its soname, as an install would.
pub fn shared_lib_dir(scratch: &Path) -> PathBuf {
    let d = scratch.join("lib");
    std::fs::create_dir_all(&d).unwrap();
    let so = lib_dir().join("libws.so");
    for name in ["libws.so", soname()] {
        let _ = std::fs::remove_file(d.join(name));
        std::os::unix::fs::symlink(&so, d.join(name)).unwrap();
    }
    d
}

pub enum Link {
    Shared,
    Static,
}

/// Sanitizer flags for the C side when `LIBWS_C_SANITIZE` names some (e.g.
/// `address,undefined`, as scripts/sanitize.sh sets it with an instrumented
/// libws): any report ends the program with a failure, none is recovered.
pub fn sanitize_flags() -> Vec<String> {
    match std::env::var("LIBWS_C_SANITIZE") {
        Ok(s) if !s.is_empty() => {
            vec![format!("-fsanitize={s}"), "-fno-omit-frame-pointer".into(), "-fno-sanitize-recover=all".into()]
        }
        _ => Vec::new(),
    }
}

pub fn compile(source: &Path, out: &Path, compiler: &str, flags: &[&str], link: Link, scratch: &Path) {
    let mut cmd = Command::new(compiler);
    cmd.args(flags).args(sanitize_flags()).arg("-I").arg(repo_dir().join("include")).arg(source).arg("-o").arg(out);
    // -x c++ applies to later inputs too: switch back before the libraries.
    cmd.args(["-x", "none"]);
    match link {
        Link::Shared => {
            let d = shared_lib_dir(scratch);
            cmd.arg(format!("-L{}", d.display())).arg(format!("-Wl,-rpath,{}", d.display()));
            cmd.args(["-lws", "-lpthread"]);
        }
        Link::Static => {
            cmd.arg(lib_dir().join("libws.a")).args(static_libs());
        }
    }
    run(&mut cmd);
}
