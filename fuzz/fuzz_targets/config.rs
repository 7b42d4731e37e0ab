//! Any bytes as esm.toml: parsing returns a config or an error naming what is wrong, never a
//! panic. The data dir does not exist, so keys that name files (bundle_key, jwks,
//! proto_descriptor) fail to open instead of reading this machine's files. A config that
//! parses is also compared with itself by the reload plan, which must find no change.
#![no_main]

use std::collections::BTreeMap;

use esm_config::Config;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let data_dir = "/nonexistent/esm-fuzz".into();
    match Config::parse(&text, data_dir, &BTreeMap::new()) {
        Ok(config) => {
            let plan = esm_config::reload::plan(&config, &config);
            assert!(plan.is_empty(), "a config differs from itself: {plan:?}");
        }
        Err(e) => {
            let _ = e.chain();
        }
    }
});
