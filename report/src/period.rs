//! The reporting period: dates as people write them, as nanoseconds as the store keeps them.

use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

use crate::error::{Error, Result};

pub const NS_PER_SEC: i64 = 1_000_000_000;
pub const NS_PER_HOUR: i64 = 3600 * NS_PER_SEC;
pub const NS_PER_DAY: i64 = 24 * NS_PER_HOUR;

/// `[from, to)` in nanoseconds since the Unix epoch, UTC.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Period {
    pub from_ns: i64,
    pub to_ns: i64,
}

impl Period {
    /// `--from` and `--to` as given. A bare date means its midnight UTC for `from` and the
    /// end of that day for `to`, so `--from 2026-01-01 --to 2026-03-31` covers all of March 31.
    pub fn parse(from: &str, to: &str) -> Result<Self> {
        let from_ns = instant("--from", from, false)?;
        let to_ns = instant("--to", to, true)?;
        if from_ns > to_ns {
            return Err(Error::Usage(format!("--from {from} is after --to {to}")));
        }
        Ok(Self { from_ns, to_ns })
    }

    pub fn contains(&self, t: i64) -> bool {
        t >= self.from_ns && t < self.to_ns
    }

    /// Whole hours in the period, at least one.
    pub fn hours(&self) -> i64 {
        ((self.to_ns - self.from_ns) / NS_PER_HOUR).max(1)
    }
}

fn instant(what: &str, s: &str, end_of_day: bool) -> Result<i64> {
    let date_fmt = time::macros::format_description!("[year]-[month]-[day]");
    let t = match OffsetDateTime::parse(s, &Rfc3339) {
        Ok(t) => t,
        Err(_) => {
            let d = time::Date::parse(s, &date_fmt).map_err(|_| {
                Error::Usage(format!(
                    "{what} {s:?}: expected RFC 3339 (2026-11-01T00:00:00Z) or a date (2026-11-01)"
                ))
            })?;
            let day = d.midnight().assume_utc();
            if end_of_day {
                day + time::Duration::DAY
            } else {
                day
            }
        }
    };
    i64::try_from(t.unix_timestamp_nanos())
        .map_err(|_| Error::Usage(format!("{what} {s:?}: outside the years 1677..2262")))
}

/// RFC 3339 UTC with whole seconds (nanoseconds when the instant has them).
pub fn rfc3339(ns: i64) -> String {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(ns))
        .ok()
        .and_then(|t| t.format(&Rfc3339).ok())
        .unwrap_or_else(|| ns.to_string())
}

/// The UTC day `ns` falls on, as days since the epoch.
pub fn day_of(ns: i64) -> i64 {
    ns.div_euclid(NS_PER_DAY)
}

/// `YYYY-MM-DD` of a day number.
pub fn day_text(day: i64) -> String {
    rfc3339(day * NS_PER_DAY).chars().take(10).collect()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn bare_to_date_covers_that_whole_day() {
        let p = Period::parse("2026-01-01", "2026-01-01").unwrap();
        assert_eq!(p.to_ns - p.from_ns, NS_PER_DAY);
        assert_eq!(rfc3339(p.from_ns), "2026-01-01T00:00:00Z");
    }

    #[test]
    fn refuses_from_after_to_and_bad_dates() {
        assert!(matches!(
            Period::parse("2026-02-01", "2026-01-01"),
            Err(Error::Usage(_))
        ));
        assert!(matches!(
            Period::parse("yesterday", "2026-01-01"),
            Err(Error::Usage(_))
        ));
        assert!(Period::parse("2026-01-01T10:00:00+02:00", "2026-01-01T09:00:00Z").is_ok());
    }

    #[test]
    fn day_numbers_print_as_dates() {
        let p = Period::parse("2026-03-04T05:06:07Z", "2026-03-05").unwrap();
        assert_eq!(day_text(day_of(p.from_ns)), "2026-03-04");
    }
}
