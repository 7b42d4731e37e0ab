//! The fuzz target `config` (fuzz/fuzz_targets/config.rs) in the normal test suite: its seeds
//! (the file `esm init` writes, the deploy examples) parse, and every input under
//! tests/fuzz_regressions (crashes the fuzzer found, once fixed) returns Ok or an error
//! instead of panicking.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use esm_config::Config;

fn files(dir: &Path) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|d| d.map(|e| e.unwrap().path()).collect())
        .unwrap_or_default();
    out.sort();
    out
}

fn parse(bytes: &[u8]) -> esm_config::Result<Config> {
    let text = String::from_utf8_lossy(bytes);
    Config::parse(&text, "/nonexistent/esm-fuzz".into(), &BTreeMap::new())
}

#[test]
fn every_fuzz_seed_is_a_valid_config() {
    let seeds = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/seeds/config");
    let seeds = files(&seeds);
    assert!(seeds.len() >= 3, "{seeds:?}");
    for seed in seeds {
        let config = parse(&std::fs::read(&seed).unwrap());
        assert!(
            config.is_ok(),
            "{}: {}",
            seed.display(),
            config.unwrap_err().chain()
        );
    }
}

#[test]
fn inputs_that_once_crashed_the_parser_are_refused_or_parsed() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fuzz_regressions");
    for input in files(&dir) {
        let bytes = std::fs::read(&input).unwrap();
        let result = std::panic::catch_unwind(|| parse(&bytes).map(|_| ()));
        assert!(result.is_ok(), "{} panicked", input.display());
    }
}
