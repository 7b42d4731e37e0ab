//! JSON, as `report/schema/report.schema.json` describes it.

use crate::error::{Error, Result};
use crate::model::Report;

pub fn render(r: &Report) -> Result<String> {
    let mut s =
        serde_json::to_string_pretty(r).map_err(|e| Error::Bug(format!("report JSON: {e}")))?;
    s.push('\n');
    Ok(s)
}
