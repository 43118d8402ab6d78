//! The repository stands on its own: no file sends a reader to documents
//! that a clone does not have (a sibling folder, a spec or design note
//! kept elsewhere).

use std::path::{Path, PathBuf};

/// Text that points outside the repository.
const OUTSIDE: &[&str] = &["../shared", "SPEC.md", "DESIGN.md"];

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
