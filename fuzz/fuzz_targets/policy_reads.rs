//! Any text as a Rego file: finding what it reads of the input never panics.
#![no_main]

use esm_authz::input_reads::analyze;
use esm_authz::policy_set::SourceFile;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|text: &str| {
    let files = vec![SourceFile {
        path: "p.rego".into(),
        text: text.into(),
    }];
    let _ = analyze(&files);
});
