//! Cron expressions, through the `cron` crate (never a hand-written parser). cairn takes
//! the crate's form (seconds first, six or seven fields) and the classic five-field form
//! (minute first), to which it adds `0` seconds. Times are UTC.

use std::str::FromStr;

use chrono::{DateTime, Utc};

/// A parsed expression.
#[derive(Debug, Clone)]
pub struct Cron(cron::Schedule);

/// Parses `text`.
///
/// # Errors
/// The crate's message, with the forms cairn accepts.
pub fn parse(text: &str) -> Result<Cron, String> {
    let fields = text.split_whitespace().count();
    let expr = if fields == 5 {
        format!("0 {text}")
    } else {
        text.to_owned()
    };
    cron::Schedule::from_str(&expr).map(Cron).map_err(|e| {
        format!(
            "`{}` is not a cron expression ({e}); use `sec min hour day month weekday` or `min hour day month weekday`",
            text.chars().take(100).collect::<String>()
        )
    })
}

impl Cron {
    /// The first firing strictly after `after_ms` (unix ms), if any.
    #[must_use]
    pub fn next_after(&self, after_ms: u64) -> Option<u64> {
        let after = DateTime::<Utc>::from_timestamp_millis(i64::try_from(after_ms).ok()?)?;
        let next = self.0.after(&after).next()?;
        u64::try_from(next.timestamp_millis()).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn five_and_six_fields() {
        let every_minute = parse("* * * * *").unwrap();
        assert_eq!(every_minute.next_after(0), Some(60_000));
        let every_second = parse("* * * * * *").unwrap();
        assert_eq!(every_second.next_after(1_500), Some(2_000));
        let hourly = parse("0 17 * * * *").unwrap();
        assert_eq!(hourly.next_after(0), Some(17 * 60_000));
        assert!(
            parse("every tuesday")
                .unwrap_err()
                .contains("not a cron expression")
        );
    }
}
