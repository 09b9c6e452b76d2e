//! Replays every file of the fuzz corpora (`fuzz/corpus/<target>/`) through
//! the harnesses the fuzz targets call, so CI on stable keeps what the fuzzer
//! found fixed.

use std::path::{Path, PathBuf};

fn corpus(target: &str) -> Vec<(PathBuf, Vec<u8>)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus").join(target);
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.is_file())
        .map(|path| {
            let bytes = std::fs::read(&path).unwrap();
            (path, bytes)
        })
        .collect();
    files.sort();
    assert!(!files.is_empty(), "empty corpus {}", dir.display());
    files
}

#[test]
fn attachment_corpus_keeps_its_invariants() {
    let dir = tempfile::tempdir().unwrap();
    chatd::attach::prepare_dirs(dir.path()).unwrap();
    let mut stored = 0;
    let mut refused = 0;
    for (path, bytes) in corpus("attachment") {
        eprintln!("{}", path.display());
        if chatd::attach::fuzz::attachment(&bytes, dir.path()) {
            stored += 1;
        } else {
            refused += 1;
        }
    }
    // The seeds cover both paths, or the corpus guards half of the code.
    assert!(stored >= 5 && refused >= 5, "stored {stored}, refused {refused}");
}

#[test]
fn file_name_corpus_keeps_its_invariants() {
    for (path, bytes) in corpus("file_name") {
        eprintln!("{}", path.display());
        chatd::attach::fuzz::file_name(&bytes);
    }
}

#[test]
fn static_path_corpus_keeps_its_invariants() {
    for (path, bytes) in corpus("static_path") {
        eprintln!("{}", path.display());
        chatd::http::static_files::fuzz_static_path(&bytes);
    }
}

#[test]
fn ws_protocol_corpus_keeps_its_invariants() {
    let mut parsed = 0;
    let mut refused = 0;
    for (path, bytes) in corpus("ws_protocol") {
        eprintln!("{}", path.display());
        if chatd::ws::fuzz::ws_protocol(&bytes) {
            parsed += 1;
        } else {
            refused += 1;
        }
    }
    assert!(parsed >= 5 && refused >= 5, "parsed {parsed}, refused {refused}");
}

#[test]
fn route_corpus_keeps_its_invariants() {
    let mut matched = 0;
    let mut unmatched = 0;
    for (path, bytes) in corpus("route") {
        eprintln!("{}", path.display());
        if chatd::http::fuzz::route(&bytes) {
            matched += 1;
        } else {
            unmatched += 1;
        }
    }
    assert!(matched >= 5 && unmatched >= 5, "matched {matched}, unmatched {unmatched}");
}
