//! The workspace's manifests: every dependency a crate lists is used by it.

use std::path::{Path, PathBuf};

/// The `.rs` files under `dir`.
fn sources(dir: &Path, into: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries {
        let path = entry.unwrap().path();
        if path.is_dir() {
            sources(&path, into);
        } else if path.extension().is_some_and(|e| e == "rs") {
            into.push(path);
        }
    }
}

/// Whether `text` uses the crate `name` as code does: a path through it
/// (`url::Url`, `tokio::main`), or `use name;` / `extern crate name`. A
/// variable or a word in a comment that happens to be spelled the same
/// (`url: &str`, `base_url`) does not count.
fn names(text: &str, name: &str) -> bool {
    let word = |c: char| c.is_alphanumeric() || c == '_';
    let path = format!("{name}::");
    text.match_indices(&path)
        .any(|(at, _)| !text[..at].chars().next_back().is_some_and(word))
        || text.contains(&format!("use {name};"))
        || text.contains(&format!("extern crate {name}"))
}

#[test]
fn every_dependency_is_used() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let workspace: toml::Table =
        toml::from_str(&std::fs::read_to_string(root.join("Cargo.toml")).unwrap()).unwrap();
    let mut unused = Vec::new();
    for member in workspace["workspace"]["members"].as_array().unwrap() {
        let dir = root.join(member.as_str().unwrap());
        let manifest: toml::Table =
            toml::from_str(&std::fs::read_to_string(dir.join("Cargo.toml")).unwrap()).unwrap();
        let Some(dependencies) = manifest.get("dependencies").and_then(|d| d.as_table()) else {
            continue;
        };
        // What the library, the binaries and the build script compile (an
        // optional dependency is named there too, behind its feature).
        let mut files = Vec::new();
        sources(&dir.join("src"), &mut files);
        files.push(dir.join("build.rs"));
        let text: String = files
            .iter()
            .filter_map(|f| std::fs::read_to_string(f).ok())
            .collect();
        for key in dependencies.keys() {
            if !names(&text, &key.replace('-', "_")) {
                unused.push(format!("{member}: {key}"));
            }
        }
    }
    assert!(
        unused.is_empty(),
        "dependencies no source of their crate names (remove them):\n{}",
        unused.join("\n")
    );
}

#[test]
fn only_code_that_goes_through_a_crate_counts() {
    assert!(names("use url::Url;", "url"));
    assert!(names("#[tokio::main]", "tokio"));
    assert!(names("bbb_secret::Secret", "bbb_secret"));
    assert!(names("use mimalloc;", "mimalloc"));
    assert!(!names("fn connect(url: &str) {}  // the url", "url"));
    assert!(!names("base_url::join()", "url"));
}
