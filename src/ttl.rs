//! Lifetimes written as text: the REST API's `duration` field and the proxy's
//! `X-Bigcache-TTL` header.
//!
//! Accepted, in this order:
//! 1. humantime: `30s`, `1m`, `6h`, `28d`, `2w`, `1h 30m`, `1day`;
//! 2. the original server's form, `^\d+[smhd]` with anything after the unit
//!    ignored, so its Django connector's `"28ds"` still means 28 days.
//!
//! humantime goes first because the original's rule would read `1h 30m` as
//! one hour.

use std::time::Duration;

/// Longest lifetime accepted; keeps deadlines far from integer overflow.
pub const MAX_TTL: Duration = Duration::from_secs(100 * 365 * 24 * 3600);

pub const ACCEPTED_FORMS: &str = "a number with a unit: `30s`, `1m`, `6h`, `28d`, `2w`, or \
     combinations like `1h 30m` (humantime); the original server's `28ds` form is accepted too";

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TtlError {
    #[error("invalid duration {input:?}: expected {ACCEPTED_FORMS}")]
    Invalid { input: String },
    #[error("duration {input:?} is longer than 100 years")]
    TooLong { input: String },
}

pub fn parse(input: &str) -> Result<Duration, TtlError> {
    let text = input.trim();
    let d = humantime::parse_duration(text)
        .ok()
        .or_else(|| parse_seed_form(text))
        .ok_or_else(|| TtlError::Invalid {
            input: input.to_string(),
        })?;
    if d > MAX_TTL {
        return Err(TtlError::TooLong {
            input: input.to_string(),
        });
    }
    Ok(d)
}

/// `^\d+[smhd]`, the rest ignored.
fn parse_seed_form(text: &str) -> Option<Duration> {
    let digits = text.bytes().take_while(u8::is_ascii_digit).count();
    if digits == 0 {
        return None;
    }
    let n: u64 = text[..digits].parse().ok()?;
    let unit = match text.as_bytes().get(digits)? {
        b's' => 1,
        b'm' => 60,
        b'h' => 3600,
        b'd' => 86400,
        _ => return None,
    };
    Some(Duration::from_secs(n.checked_mul(unit)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secs(s: &str) -> Result<u64, TtlError> {
        parse(s).map(|d| d.as_secs())
    }

    #[test]
    fn seed_forms() {
        assert_eq!(secs("1s"), Ok(1));
        assert_eq!(secs("60s"), Ok(60));
        assert_eq!(secs("1m"), Ok(60));
        assert_eq!(secs("1h"), Ok(3600));
        assert_eq!(secs("1d"), Ok(86400));
        assert_eq!(secs("28ds"), Ok(28 * 86400));
        assert_eq!(secs("5mxyz"), Ok(300));
    }

    #[test]
    fn humantime_forms() {
        assert_eq!(secs("1h 30m"), Ok(5400));
        assert_eq!(secs("2w"), Ok(14 * 86400));
        assert_eq!(secs("1day"), Ok(86400));
        assert_eq!(secs(" 30s "), Ok(30));
    }

    #[test]
    fn rejects_the_rest() {
        for bad in ["", "abc", "60", "-1s", "1x", "s1", "1.5.5h", "m"] {
            assert!(
                matches!(parse(bad), Err(TtlError::Invalid { .. })),
                "{bad:?} was accepted"
            );
        }
        assert!(matches!(parse("200y"), Err(TtlError::TooLong { .. })));
        assert!(parse("99999999999999999999999d").is_err());
    }

    #[test]
    fn error_names_the_accepted_forms() {
        let msg = parse("soon").unwrap_err().to_string();
        assert!(msg.contains("28d") && msg.contains("1h 30m"), "{msg}");
    }
}
