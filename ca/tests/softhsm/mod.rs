//! A throwaway SoftHSM2 token dir for the PKCS#11 tests (apt-get install softhsm2; tests/run
//! installs it), with its own `SOFTHSM2_CONF`.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Mutex, MutexGuard, OnceLock};

use esm_ca::key_backend::pkcs11::{Pin, Pkcs11Config, Pkcs11KeyStore};

pub const MODULE: &str = "/usr/lib/softhsm/libsofthsm2.so";
pub const PIN: &str = "4321";
/// Tokens are made before the module is first loaded: SoftHSM2 sees new ones only then.
pub const TOKENS: [&str; 2] = ["esm-test", "esm-reset"];

/// One SoftHSM2 token dir per test process; tests take turns because one of them resets
/// the module, which every token of the process shares.
pub fn softhsm() -> MutexGuard<'static, ()> {
    static SETUP: OnceLock<PathBuf> = OnceLock::new();
    static TURN: Mutex<()> = Mutex::new(());
    SETUP.get_or_init(|| {
        assert!(
            Path::new(MODULE).exists(),
            "{MODULE} missing: apt-get install softhsm2 (tests/run does)"
        );
        let dir = std::env::temp_dir().join(format!("esm-softhsm-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("tokens")).unwrap();
        let conf = dir.join("softhsm2.conf");
        std::fs::write(
            &conf,
            format!(
                "directories.tokendir = {}\nobjectstore.backend = file\nlog.level = ERROR\n",
                dir.join("tokens").display()
            ),
        )
        .unwrap();
        std::env::set_var("SOFTHSM2_CONF", &conf);
        for label in TOKENS {
            init_token(label);
        }
        dir
    });
    TURN.lock().unwrap_or_else(|e| e.into_inner())
}

/// Runs `softhsm2-util` on this process's token dir and checks it succeeded.
pub fn softhsm2_util(args: &[&str]) {
    let out = Command::new("softhsm2-util").args(args).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

pub fn init_token(label: &str) {
    softhsm2_util(&[
        "--init-token",
        "--free",
        "--label",
        label,
        "--pin",
        PIN,
        "--so-pin",
        "87654321",
    ]);
}

/// The custody record of a key made in the token: sensitive and never extractable since it
/// was made there, as the token itself reports.
pub fn assert_held_by_the_token(c: &serde_json::Value) {
    assert_eq!(c["backend"], "pkcs11", "{c}");
    for (flag, want) in [
        ("sensitive", true),
        ("always_sensitive", true),
        ("extractable", false),
        ("never_extractable", true),
        ("local", true),
        ("private", true),
    ] {
        assert_eq!(c[flag], want, "{flag} in {c}");
    }
}

pub fn store_for(module: &str, label: &str, pin: &str) -> Pkcs11KeyStore {
    Pkcs11KeyStore::new(Pkcs11Config {
        module: module.into(),
        token_label: label.into(),
        pin: Pin::new(pin).unwrap(),
    })
}

pub fn store(label: &str) -> Pkcs11KeyStore {
    store_for(MODULE, label, PIN)
}

pub fn unique(prefix: &str) -> String {
    static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    format!("{prefix}-{}-{n}", std::process::id())
}
