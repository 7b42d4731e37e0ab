//! Frameworks as data: a TOML file listing controls, each with esm's own summary of what
//! it asks and the checks that decide it. The shipped ones are compiled in; a user's own
//! file is read the same way.

use serde::Deserialize;

use crate::checks::CATALOGUE;
use crate::error::{Error, Result};

pub const SOC2: &str = include_str!("../frameworks/soc2.toml");
pub const ISO27001: &str = include_str!("../frameworks/iso27001.toml");

/// A framework file larger than this is not one.
pub const MAX_FILE: usize = 1 << 20;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Framework {
    pub id: String,
    pub name: String,
    pub version: String,
    pub controls: Vec<Control>,
    /// `builtin` or the file it came from.
    #[serde(skip)]
    pub source: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Control {
    pub id: String,
    pub title: String,
    pub statement: String,
    #[serde(default)]
    pub checks: Vec<String>,
    #[serde(default)]
    pub manual: Vec<String>,
}

impl Framework {
    /// `soc2`, `iso27001`, or `None` for any other name (a file, then).
    pub fn builtin(name: &str) -> Option<Result<Self>> {
        let text = match name {
            "soc2" => SOC2,
            "iso27001" => ISO27001,
            _ => return None,
        };
        Some(Self::parse(text, "builtin"))
    }

    pub fn parse(text: &str, source: &str) -> Result<Self> {
        let mut f: Framework = toml::from_str(text).map_err(|e| {
            Error::Usage(format!("framework {source}: {}", one_line(&e.to_string())))
        })?;
        f.source = source.to_owned();
        f.validate()?;
        Ok(f)
    }

    fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(Error::Usage(format!("framework {}: {m}", self.source)));
        if self.controls.is_empty() {
            return bad("has no controls".into());
        }
        let mut seen = std::collections::HashSet::new();
        for c in &self.controls {
            if c.id.trim().is_empty() || c.title.trim().is_empty() || c.statement.trim().is_empty()
            {
                return bad(format!(
                    "control {:?} needs an id, a title and a statement",
                    c.id
                ));
            }
            if !seen.insert(c.id.as_str()) {
                return bad(format!("control {} is listed twice", c.id));
            }
            if c.checks.is_empty() && c.manual.is_empty() {
                return bad(format!(
                    "control {} has neither checks nor manual items",
                    c.id
                ));
            }
            if let Some(unknown) = c
                .checks
                .iter()
                .find(|k| !CATALOGUE.iter().any(|(id, _)| id == k))
            {
                return bad(format!("control {}: unknown check {unknown:?}", c.id));
            }
        }
        Ok(())
    }
}

fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn shipped_frameworks_have_the_required_controls() {
        let soc2 = Framework::builtin("soc2").unwrap().unwrap();
        let ids: Vec<&str> = soc2.controls.iter().map(|c| c.id.as_str()).collect();
        assert_eq!(
            ids,
            [
                "CC6.1", "CC6.2", "CC6.3", "CC6.6", "CC6.7", "CC6.8", "CC7.1", "CC7.2", "CC7.3",
                "CC8.1"
            ]
        );
        let iso = Framework::builtin("iso27001").unwrap().unwrap();
        let ids: Vec<&str> = iso.controls.iter().map(|c| c.id.as_str()).collect();
        assert_eq!(
            ids,
            [
                "5.15", "5.16", "5.17", "5.18", "5.28", "5.33", "8.2", "8.3", "8.5", "8.15",
                "8.16", "8.17", "8.20", "8.24", "8.32"
            ]
        );
    }

    #[test]
    fn refuses_unknown_check_and_duplicate_control() {
        let unknown = "id='x'\nname='x'\nversion='1'\n[[controls]]\nid='A'\ntitle='t'\nstatement='s'\nchecks=['nope']\n";
        assert!(matches!(
            Framework::parse(unknown, "f"),
            Err(Error::Usage(_))
        ));
        let dup = "id='x'\nname='x'\nversion='1'\n[[controls]]\nid='A'\ntitle='t'\nstatement='s'\nmanual=['m']\n[[controls]]\nid='A'\ntitle='t'\nstatement='s'\nmanual=['m']\n";
        assert!(matches!(Framework::parse(dup, "f"), Err(Error::Usage(_))));
        assert!(Framework::builtin("pci").is_none());
    }
}
