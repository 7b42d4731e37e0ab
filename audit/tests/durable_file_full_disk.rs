//! Files written into a full data dir: each write fails with an error and leaves nothing
//! half-written behind, and the same write succeeds once space is freed. Needs root
//! (mount).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod small_disk;

use esm_audit::durable_file::{append, create_new, replace};
use small_disk::SmallDisk;

/// A file too big for what is left on the full disk.
fn big() -> Vec<u8> {
    vec![b'k'; 256 << 10]
}

fn names(dir: &std::path::Path) -> Vec<String> {
    let mut n: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    n.sort();
    n
}

#[test]
fn a_full_disk_leaves_no_half_written_file_and_the_retry_succeeds() {
    let disk = SmallDisk::new("1m");
    let dir = disk.path();
    replace(&dir.join("esm.toml"), b"old = true\n", 0o600).unwrap();
    append(&dir.join("serials.jsonl"), b"{\"n\":1}\n", 0o600).unwrap();
    let filler = disk.fill();

    let key = dir.join("key.pem");
    let e = create_new(&key, &big(), 0o600).unwrap_err();
    assert_eq!(e.raw_os_error(), Some(28), "ENOSPC, got {e}");
    let e = replace(&dir.join("esm.toml"), &big(), 0o600).unwrap_err();
    assert_eq!(e.raw_os_error(), Some(28), "ENOSPC, got {e}");
    assert!(append(&dir.join("serials.jsonl"), &big(), 0o600).is_err());

    // Nothing new, nothing staged, the old contents whole.
    assert_eq!(names(dir), ["esm.toml", "filler", "serials.jsonl"]);
    assert_eq!(
        std::fs::read(dir.join("esm.toml")).unwrap(),
        b"old = true\n"
    );
    assert_eq!(
        std::fs::read(dir.join("serials.jsonl")).unwrap(),
        b"{\"n\":1}\n"
    );

    std::fs::remove_file(filler).unwrap();
    create_new(&key, &big(), 0o600).unwrap();
    replace(&dir.join("esm.toml"), b"new = true\n", 0o600).unwrap();
    append(&dir.join("serials.jsonl"), b"{\"n\":2}\n", 0o600).unwrap();
    assert_eq!(std::fs::read(&key).unwrap(), big());
    assert_eq!(
        std::fs::read(dir.join("serials.jsonl")).unwrap(),
        b"{\"n\":1}\n{\"n\":2}\n"
    );
}
