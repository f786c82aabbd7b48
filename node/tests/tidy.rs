//! Tidy checks over the whole workspace: module docs, banned test attributes, module layout
//! and the internal dependency graph of STYLE.md section 1.

#![allow(clippy::unwrap_used)]

use std::{
    collections::BTreeSet,
    path::{Path, PathBuf},
    process::Command,
};

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().to_string();
        if path.is_dir() {
            if name == "target" || name.starts_with('.') {
                continue;
            }
            rust_files(&path, out);
        } else if name.ends_with(".rs") {
            out.push(path);
        }
    }
}

fn workspace_sources() -> Vec<PathBuf> {
    let root = workspace_root();
    let mut files = Vec::new();
    for crate_dir in ["core", "proto", "cluster", "bridges", "node", "loadtest"] {
        for sub in ["src", "tests", "benches"] {
            rust_files(&root.join(crate_dir).join(sub), &mut files);
        }
    }
    assert!(files.len() > 20, "tidy found too few files: {files:?}");
    files
}

#[test]
fn every_rust_file_starts_with_a_module_doc() {
    let mut missing = Vec::new();
    for path in workspace_sources() {
        let text = std::fs::read_to_string(&path).unwrap();
        let first = text
            .lines()
            .find(|line| !line.trim().is_empty())
            .unwrap_or_default();
        if !first.starts_with("//!") {
            missing.push(path);
        }
    }
    assert!(
        missing.is_empty(),
        "files without a leading `//!` doc line: {missing:#?}"
    );
}

#[test]
fn no_should_panic_or_ignored_tests() {
    let banned = [concat!("#[should", "_panic"), concat!("#[ig", "nore")];
    let mut offenders = Vec::new();
    for path in workspace_sources() {
        let text = std::fs::read_to_string(&path).unwrap();
        if banned.iter().any(|pattern| text.contains(pattern)) {
            offenders.push(path);
        }
    }
    assert!(
        offenders.is_empty(),
        "banned test attributes in: {offenders:#?}"
    );
}

#[test]
fn no_mod_rs_files() {
    let offenders: Vec<_> = workspace_sources()
        .into_iter()
        .filter(|path| {
            path.file_name().unwrap() == "mod.rs"
                && !path.components().any(|c| c.as_os_str() == "tests")
        })
        .collect();
    assert!(
        offenders.is_empty(),
        "use foo.rs + foo/ instead of mod.rs: {offenders:#?}"
    );
}

#[test]
fn internal_dependency_graph_matches_the_architecture() {
    let output = Command::new(env!("CARGO"))
        .args(["metadata", "--format-version", "1", "--no-deps"])
        .current_dir(workspace_root())
        .output()
        .unwrap();
    assert!(output.status.success(), "cargo metadata failed");
    let metadata: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    let allowed: BTreeSet<(&str, &str)> = [
        ("starling-node", "starling-core"),
        ("starling-node", "starling-cluster"),
        ("starling-node", "starling-bridges"),
        ("starling-cluster", "starling-core"),
        ("starling-cluster", "starling-proto"),
        ("starling-bridges", "starling-core"),
        ("starling-loadtest", "starling-core"),
        ("starling-testkit", "starling-node"),
    ]
    .into_iter()
    .collect();
    let mut unexpected = Vec::new();
    for package in metadata["packages"].as_array().unwrap() {
        let name = package["name"].as_str().unwrap();
        for dependency in package["dependencies"].as_array().unwrap() {
            let dep_name = dependency["name"].as_str().unwrap();
            let is_normal = dependency["kind"].is_null();
            if dep_name.starts_with("starling-")
                && dep_name != name
                && is_normal
                && !allowed.contains(&(name, dep_name))
            {
                unexpected.push(format!("{name} -> {dep_name}"));
            }
        }
    }
    assert!(
        unexpected.is_empty(),
        "dependency edges not in ARCHITECTURE.md: {unexpected:?}"
    );
}
