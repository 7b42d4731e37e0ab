//! Output formats. Every format carries the same content: the period, scope, generation
//! time, esm version, integrity (with the checkpoint), every control and check, and the
//! digest. Rendering is deterministic: the same report gives the same bytes.

pub mod html;
pub mod json;
pub mod md;
pub mod oscal;
pub mod svg;

use crate::error::{Error, Result};
use crate::model::Report;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Json,
    Md,
    Html,
    Oscal,
}

impl Format {
    pub fn parse(s: &str) -> Result<Self> {
        match s {
            "json" => Ok(Self::Json),
            "md" => Ok(Self::Md),
            "html" => Ok(Self::Html),
            "oscal" => Ok(Self::Oscal),
            _ => Err(Error::Usage(format!(
                "--format {s:?}: expected md, html, json or oscal"
            ))),
        }
    }
}

pub fn render(r: &Report, f: Format) -> Result<String> {
    match f {
        Format::Json => json::render(r),
        Format::Md => Ok(md::render(r)),
        Format::Html => Ok(html::render(r)),
        Format::Oscal => oscal::render(r),
    }
}

/// The seal line's JSON: digest and checkpoint, for formats that are not JSON.
pub(crate) fn seal_json(r: &Report) -> String {
    serde_json::json!({
        "digest": r.digest,
        "checkpoint": r.integrity.checkpoint,
    })
    .to_string()
}

/// Counts as `name=n, …` in a stable order.
pub(crate) fn counts_text(c: &std::collections::BTreeMap<String, u64>) -> String {
    c.iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(", ")
}
