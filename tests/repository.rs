//! The repository stands on its own: no file sends a reader to documents
//! that a clone does not have (a sibling folder, a spec or design note
//! kept elsewhere). And the code keeps its floors: each module imports only
//! from its own layer and those below it.
//!
//! sanitize: none: it reads the source tree; no libws code runs

use std::path::{Path, PathBuf};

/// Text that points outside the repository.
const OUTSIDE: &[&str] = &["../shared", "SPEC.md", "DESIGN.md", "SPEC §", "SPEC:"];

fn files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for entry in entries.flatten() {
        let path = entry.path();
        let name = entry.file_name();
        // Generated, not committed: build output, packages, and what
        // `make fuzz` leaves in fuzz/corpus and fuzz/artifacts.
        if [".git", "target", "node_modules", "corpus", "artifacts"].iter().any(|n| name == *n) {
            continue;
        }
        if path.is_dir() {
            files(&path, out);
        } else {
            out.push(path);
        }
    }
}

#[test]
fn no_file_points_outside_the_repository() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut all = Vec::new();
    files(root, &mut all);
    assert!(all.iter().any(|p| p.ends_with("README.md")), "walked {} files", all.len());
    let mut found = Vec::new();
    for path in &all {
        let Ok(text) = std::fs::read_to_string(path) else { continue };
        let rel = path.strip_prefix(root).unwrap_or(path).display().to_string();
        if rel == "tests/repository.rs" {
            continue;
        }
        for (n, line) in text.lines().enumerate() {
            if OUTSIDE.iter().any(|o| line.contains(o)) {
                found.push(format!("{rel}:{}: {}", n + 1, line.trim()));
            }
        }
    }
    assert!(found.is_empty(), "say it here instead of pointing outside:\n{}", found.join("\n"));
}

/// The layers of `src/`, bottom first: a module may import from its own
/// layer and those before it in this list (`src/lib.rs` names them all).
const LAYERS: &[&str] = &["error", "log", "transport", "proto", "runtime", "conn", "client", "ffi"];

fn layer_of(rel: &Path) -> Option<usize> {
    let first = rel.components().next()?.as_os_str().to_str()?;
    let name = first.strip_suffix(".rs").unwrap_or(first);
    LAYERS.iter().position(|l| *l == name)
}

#[test]
fn no_module_imports_from_a_layer_above_it() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut all = Vec::new();
    files(&src, &mut all);
    let mut checked = 0;
    let mut found = Vec::new();
    for path in all.iter().filter(|p| p.extension().is_some_and(|e| e == "rs")) {
        let rel = path.strip_prefix(&src).unwrap();
        if rel == Path::new("lib.rs") {
            continue;
        }
        let Some(own) = layer_of(rel) else {
            found.push(format!("{}: in no layer; add its folder to LAYERS", rel.display()));
            continue;
        };
        checked += 1;
        let text = std::fs::read_to_string(path).unwrap();
        for (n, line) in text.lines().enumerate() {
            for (at, _) in line.match_indices("crate::") {
                let rest = &line[at + "crate::".len()..];
                let name: String = rest.chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect();
                let target = LAYERS.iter().position(|l| *l == name);
                match target {
                    Some(t) if t <= own => {}
                    Some(t) => found.push(format!(
                        "{}:{}: {} imports {} from above",
                        rel.display(),
                        n + 1,
                        LAYERS[own],
                        LAYERS[t]
                    )),
                    // `crate::{...}` would hide what is taken: one path per layer.
                    None => found.push(format!("{}:{}: `crate::{name}` is no layer", rel.display(), n + 1)),
                }
            }
        }
    }
    assert!(checked >= 15, "checked only {checked} files");
    assert!(found.is_empty(), "imports against the layers:\n{}", found.join("\n"));
}
