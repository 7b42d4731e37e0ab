//! How esm writes files into its data dir so that a full disk or an I/O error never leaves
//! half of one behind: keys, the config and default policies that `esm init` writes, issued
//! certificates and exports. A half-written key file would be read as a corrupt key at the
//! next start, or block the retry with "already exists"; a half-written line in an append
//! log would fuse with the next line. So new files are written beside their target, synced,
//! and only then put in place; appends are cut back to where they began when they fail.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

/// The name a file is written under before it is put in place: in the same directory (a
/// rename or link never crosses a filesystem) and hidden.
fn staging(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    path.with_file_name(format!(".{name}.{}.tmp", std::process::id()))
}

/// Syncs `path`'s directory, so that the name given to a synced file survives a crash.
fn sync_dir(path: &Path) -> io::Result<()> {
    match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => File::open(dir)?.sync_all(),
        _ => File::open(".")?.sync_all(),
    }
}

/// Creates `path` holding `bytes`, whole or not at all; fails with `AlreadyExists` when
/// `path` exists (a key is never overwritten).
pub fn create_new(path: &Path, bytes: &[u8], mode: u32) -> io::Result<()> {
    if path.symlink_metadata().is_ok() {
        return Err(io::Error::new(
            io::ErrorKind::AlreadyExists,
            format!("{} already exists", path.display()),
        ));
    }
    let mut staged = Staged::create(path, mode)?;
    staged.write_all(bytes)?;
    // A hard link puts the file in place only where nothing is, atomically; dropping the
    // staged file then removes its staging name.
    staged.place(|tmp, path| std::fs::hard_link(tmp, path))
}

/// Replaces `path` (or creates it) with `bytes`, whole: a reader sees the old file or the
/// new one, never a mix.
pub fn replace(path: &Path, bytes: &[u8], mode: u32) -> io::Result<()> {
    let mut staged = Staged::create(path, mode)?;
    staged.write_all(bytes)?;
    staged.commit()
}

/// A file being written in full before it replaces `path`, for contents streamed rather than
/// held in memory (an export): [`Staged::commit`] puts it in place. Its staging name is
/// removed when it is dropped, whether it was put in place or failed on the way.
pub struct Staged {
    file: File,
    tmp: PathBuf,
    path: PathBuf,
}

impl Staged {
    pub fn create(path: &Path, mode: u32) -> io::Result<Self> {
        let tmp = staging(path);
        let _ = std::fs::remove_file(&tmp);
        let mut opts = OpenOptions::new();
        opts.write(true).create_new(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut opts, mode);
        Ok(Self {
            file: opts.open(&tmp)?,
            tmp,
            path: path.to_owned(),
        })
    }

    /// Syncs the file and renames it over the target.
    pub fn commit(self) -> io::Result<()> {
        self.place(|tmp, path| std::fs::rename(tmp, path))
    }

    /// Syncs the file, gives it the target's name with `put`, and syncs the directory.
    fn place(self, put: impl FnOnce(&Path, &Path) -> io::Result<()>) -> io::Result<()> {
        self.file.sync_all()?;
        put(&self.tmp, &self.path)?;
        sync_dir(&self.path)
    }
}

impl Write for Staged {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.file.write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.file.flush()
    }
}

impl Drop for Staged {
    fn drop(&mut self) {
        // After a rename this name is gone already; after a link or a failure it is removed.
        let _ = std::fs::remove_file(&self.tmp);
    }
}

/// Appends `bytes` to `path` (made with `mode` when missing), whole or not at all: a failed
/// append is cut back to the length the file had, so the next one starts on a clean line.
pub fn append(path: &Path, bytes: &[u8], mode: u32) -> io::Result<()> {
    let mut opts = OpenOptions::new();
    opts.create(true).append(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut opts, mode);
    let mut f = opts.open(path)?;
    let before = f.metadata()?.len();
    match f.write_all(bytes).and_then(|()| f.sync_data()) {
        Ok(()) => Ok(()),
        Err(e) => {
            let _ = f.set_len(before);
            Err(e)
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn create_new_never_overwrites_and_leaves_no_staging_file() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("k.pem");
        create_new(&p, b"first", 0o600).unwrap();
        let e = create_new(&p, b"second", 0o600).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::AlreadyExists);
        assert_eq!(std::fs::read(&p).unwrap(), b"first");
        assert_eq!(std::fs::read_dir(d.path()).unwrap().count(), 1);
    }

    #[cfg(unix)]
    #[test]
    fn files_get_their_mode_and_replace_swaps_whole_files() {
        use std::os::unix::fs::PermissionsExt;
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("esm.toml");
        replace(&p, b"a = 1\n", 0o600).unwrap();
        replace(&p, b"a = 2\n", 0o600).unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"a = 2\n");
        let mode = std::fs::metadata(&p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert_eq!(std::fs::read_dir(d.path()).unwrap().count(), 1);
    }

    #[test]
    fn a_staged_file_dropped_before_commit_leaves_the_old_one() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("export.jsonl");
        replace(&p, b"old\n", 0o600).unwrap();
        let mut s = Staged::create(&p, 0o600).unwrap();
        s.write_all(b"half of a new").unwrap();
        drop(s);
        assert_eq!(std::fs::read(&p).unwrap(), b"old\n");
        assert_eq!(std::fs::read_dir(d.path()).unwrap().count(), 1);
    }

    #[test]
    fn appends_accumulate_lines() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("serials.jsonl");
        append(&p, b"{\"a\":1}\n", 0o600).unwrap();
        append(&p, b"{\"a\":2}\n", 0o600).unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"{\"a\":1}\n{\"a\":2}\n");
    }

    #[test]
    fn a_missing_directory_is_an_error_not_a_panic() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("no/such/dir/f");
        assert!(create_new(&p, b"x", 0o600).is_err());
        assert!(replace(&p, b"x", 0o600).is_err());
        assert!(append(&p, b"x", 0o600).is_err());
    }
}
