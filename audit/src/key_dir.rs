//! The directory the audit keys live in (`DIR/audit/` by default): made owner-only, because
//! the data dir above it is left traversable so that workloads can reach the agent socket.

use std::path::Path;

use crate::error::{Error, Result};

/// Creates `dir` (and missing parents) with mode 0700; an existing directory is left as is.
pub fn create_private_dir(dir: &Path) -> Result<()> {
    let mut b = std::fs::DirBuilder::new();
    b.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut b, 0o700);
    b.create(dir).map_err(Error::io(dir))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    #[cfg(unix)]
    #[test]
    fn the_key_dir_is_made_owner_only() {
        use std::os::unix::fs::PermissionsExt;
        let d = tempfile::tempdir().unwrap();
        let dir = d.path().join("audit");
        crate::checkpoint::SigningKey::load_or_create(&dir).unwrap();
        let mode = std::fs::metadata(&dir).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o700);
        let other = d.path().join("other");
        crate::redact::Redactor::load_or_create(&other).unwrap();
        let mode = std::fs::metadata(&other).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o700);
    }
}
