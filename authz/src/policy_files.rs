//! The files of a policy set as read from a directory: every `.rego` file and the
//! `data.json` / `data.yaml` files, bounded against a runaway or hostile directory.

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// Bounds on what a policy directory may hold, against a runaway or hostile directory.
pub const MAX_FILES: usize = 1000;
pub const MAX_FILE_LEN: u64 = 4 << 20;

/// One file of a policy set, as read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceFile {
    /// Path relative to the set's root, with `/` separators.
    pub path: String,
    pub text: String,
}

/// Reads every `.rego`, `data.json`, `data.yaml`/`data.yml` under `root`, sorted by path.
pub fn read_dir(root: &Path) -> Result<Vec<SourceFile>> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let entries = std::fs::read_dir(&dir).map_err(Error::io(&dir))?;
        for entry in entries {
            let entry = entry.map_err(Error::io(&dir))?;
            let path = entry.path();
            let meta = std::fs::metadata(&path).map_err(Error::io(&path))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.starts_with('.') {
                continue;
            }
            if meta.is_dir() {
                stack.push(path);
                continue;
            }
            let wanted = name.ends_with(".rego")
                || matches!(name.as_str(), "data.json" | "data.yaml" | "data.yml");
            if !wanted {
                continue;
            }
            let rel = rel_path(root, &path);
            if meta.len() > MAX_FILE_LEN {
                return Err(Error::policy(
                    rel,
                    format!("larger than {MAX_FILE_LEN} bytes"),
                ));
            }
            if out.len() >= MAX_FILES {
                return Err(Error::policy(
                    root.display().to_string(),
                    format!("more than {MAX_FILES} policy files"),
                ));
            }
            let bytes = std::fs::read(&path).map_err(Error::io(&path))?;
            let text = String::from_utf8(bytes).map_err(|_| Error::policy(&rel, "not UTF-8"))?;
            out.push(SourceFile { path: rel, text });
        }
    }
    out.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(out)
}

fn rel_path(root: &Path, p: &Path) -> String {
    let rel: PathBuf = p.strip_prefix(root).unwrap_or(p).to_path_buf();
    rel.components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect::<Vec<_>>()
        .join("/")
}
