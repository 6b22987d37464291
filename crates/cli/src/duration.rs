//! Durations on the command line: `500ms`, `30s`, `5m`, `2h`, or a bare
//! number of seconds.

use std::time::Duration;

/// The longest duration any flag takes: each flag has its own, smaller limit
/// too, checked where it is used; this one keeps the conversion to a
/// `Duration` (and to milliseconds) in range.
const LONGEST: Duration = Duration::from_secs(365 * 24 * 3600);

/// Parses a duration for clap.
pub fn parse(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let value: f64 = number
        .parse()
        .map_err(|_| format!("{text:?} is not a duration: use e.g. 500ms, 30s, 5m, 2h"))?;
    let seconds = match unit {
        "ms" => value / 1000.0,
        "" | "s" => value,
        "m" => value * 60.0,
        "h" => value * 3600.0,
        other => {
            return Err(format!(
                "unknown unit {other:?} in {text:?}: use ms, s, m or h"
            ))
        }
    };
    if !seconds.is_finite() || seconds < 0.0 {
        return Err(format!("{text:?} is not a duration"));
    }
    match Duration::try_from_secs_f64(seconds) {
        Ok(duration) if duration <= LONGEST => Ok(duration),
        _ => Err(format!(
            "{text:?} is too long: a duration is at most 365 days (8760h)"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_with_units_and_refuse_nonsense() {
        assert_eq!(parse("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse("2"), Ok(Duration::from_secs(2)));
        assert_eq!(parse("5m"), Ok(Duration::from_secs(300)));
        assert!(parse("5x").is_err());
        assert!(parse("soon").is_err());
        assert_eq!(parse("8760h"), Ok(LONGEST));
        for huge in ["8761h", "99999999999999999999", "18446744073709551616s"] {
            let err = parse(huge).expect_err(huge);
            assert!(err.contains("is at most 365 days"), "{err}");
        }
    }
}
