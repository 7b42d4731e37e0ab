//! Files that keys name (keys, JWKS, descriptor sets): read with a size bound, so a wrong
//! path to a huge file is refused without reading it all.

use std::io::Read;
use std::path::Path;

use crate::Error;

/// Reads at most one byte more than `max` of `path`, so the caller can tell "too large".
pub(crate) fn read_at_most(key: &str, path: &Path, max: u64) -> crate::Result<Vec<u8>> {
    let f = std::fs::File::open(path).map_err(|e| Error::KeyFile {
        key: key.to_owned(),
        path: path.to_owned(),
        problem: e.to_string(),
    })?;
    let mut buf = Vec::new();
    f.take(max + 1)
        .read_to_end(&mut buf)
        .map_err(|source| Error::KeyFileRead {
            key: key.to_owned(),
            path: path.to_owned(),
            source,
        })?;
    Ok(buf)
}

/// A UTF-8 text file of at most `max` bytes.
pub(crate) fn read_text(key: &str, path: &Path, max: u64) -> crate::Result<String> {
    let buf = read_at_most(key, path, max)?;
    let problem = |p: String| Error::KeyFile {
        key: key.to_owned(),
        path: path.to_owned(),
        problem: p,
    };
    if buf.len() as u64 > max {
        return Err(problem(format!("larger than {max} bytes")));
    }
    String::from_utf8(buf).map_err(|_| problem("not UTF-8 text".into()))
}
