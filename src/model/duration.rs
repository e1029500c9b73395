//! Go-style durations (`8h`, `1h30m`, `1.5s`, `300ms`).
//!
//! Capability grants (`period`) and the configuration file use Go's `time.ParseDuration` syntax, and the CRD and
//! the wire format carry Go's canonical `Duration.String()` form (`8h0m0s`). Both directions are ported here
//! literally so values written by the upstream Go TKA round-trip unchanged.
//!
//! Deliberate differences from Go:
//! - negative durations (any leading `-`, even `-0s`) are rejected: nothing in TKA has a use for them;
//! - the bare number `0` is accepted (as in Go) and means zero; any other bare number is rejected with the advice
//!   to add a unit;
//! - there is no `d` unit (Go has none either); the error says which units exist.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Go's `Duration` is an `int64` of nanoseconds; larger values are out of range there, so they are here too.
const MAX_NANOS: u64 = i64::MAX as u64;

const NANOSECOND: u64 = 1;
const MICROSECOND: u64 = 1_000 * NANOSECOND;
const MILLISECOND: u64 = 1_000 * MICROSECOND;
const SECOND: u64 = 1_000 * MILLISECOND;
const MINUTE: u64 = 60 * SECOND;
const HOUR: u64 = 60 * MINUTE;

/// A non-negative duration written and printed the way Go does.
#[derive(Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Debug)]
pub struct GoDuration(Duration);

/// Why a duration string was rejected. The `Display` form names the input and says how to fix it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DurationError {
    #[error("invalid duration \"\": empty (use e.g. 30s, 5m or 1h30m)")]
    Empty,
    #[error("invalid duration {input:?}: negative durations are not allowed")]
    Negative { input: String },
    #[error("invalid duration {input:?}: missing unit (add a unit, e.g. {input}s)")]
    MissingUnit { input: String },
    #[error("invalid duration {input:?}: unknown unit {unit:?} (use ns, us, ms, s, m or h)")]
    UnknownUnit { input: String, unit: String },
    #[error(
        "invalid duration {input:?}: expected a number followed by a unit, e.g. 30s, 5m or 1h30m"
    )]
    Syntax { input: String },
    #[error("invalid duration {input:?}: too large (at most about 292 years)")]
    Overflow { input: String },
}

impl GoDuration {
    pub const ZERO: GoDuration = GoDuration(Duration::ZERO);

    pub const fn from_std(d: Duration) -> Self {
        GoDuration(d)
    }

    pub const fn as_std(self) -> Duration {
        self.0
    }

    pub const fn from_secs(secs: u64) -> Self {
        GoDuration(Duration::from_secs(secs))
    }

    pub const fn from_millis(millis: u64) -> Self {
        GoDuration(Duration::from_millis(millis))
    }

    pub const fn is_zero(self) -> bool {
        self.0.is_zero()
    }

    /// Parses Go's `time.ParseDuration` syntax: a sequence of decimal numbers, each with optional fraction and a
    /// unit suffix (`ns`, `us`, `µs`, `μs`, `ms`, `s`, `m`, `h`), e.g. `300ms`, `1.5h`, `2h45m`.
    pub fn parse(input: &str) -> Result<GoDuration, DurationError> {
        let err_input = || input.to_string();
        let mut s = input.as_bytes();
        match s.first() {
            None => return Err(DurationError::Empty),
            Some(b'-') => return Err(DurationError::Negative { input: err_input() }),
            Some(b'+') => s = &s[1..],
            _ => {}
        }
        if s == b"0" {
            return Ok(GoDuration::ZERO);
        }
        if s.is_empty() {
            return Err(DurationError::Syntax { input: err_input() });
        }
        let mut total: u64 = 0;
        while !s.is_empty() {
            // The next character must be a digit or '.'.
            if !(s[0] == b'.' || s[0].is_ascii_digit()) {
                return Err(DurationError::Syntax { input: err_input() });
            }
            let before = s.len();
            let (whole, rest) =
                leading_int(s).ok_or_else(|| DurationError::Overflow { input: err_input() })?;
            s = rest;
            let has_int = before != s.len();

            let (mut frac, mut scale, mut has_frac) = (0u64, 1f64, false);
            if s.first() == Some(&b'.') {
                s = &s[1..];
                let before = s.len();
                (frac, scale, s) = leading_fraction(s);
                has_frac = before != s.len();
            }
            if !has_int && !has_frac {
                // e.g. ".s"
                return Err(DurationError::Syntax { input: err_input() });
            }

            let unit_len = s
                .iter()
                .position(|c| *c == b'.' || c.is_ascii_digit())
                .unwrap_or(s.len());
            if unit_len == 0 {
                return Err(DurationError::MissingUnit { input: err_input() });
            }
            // Digits and '.' are ASCII, so this split is on a char boundary.
            let unit = std::str::from_utf8(&s[..unit_len]).expect("input is a &str");
            s = &s[unit_len..];
            let scale_ns = unit_nanos(unit).ok_or_else(|| DurationError::UnknownUnit {
                input: err_input(),
                unit: unit.to_string(),
            })?;

            let overflow = || DurationError::Overflow { input: err_input() };
            let mut v = whole.checked_mul(scale_ns).ok_or_else(overflow)?;
            if frac > 0 {
                // Like Go: float64 is accurate to the nanosecond for fractions of the largest unit (hours).
                v = v
                    .checked_add((frac as f64 * (scale_ns as f64 / scale)) as u64)
                    .ok_or_else(overflow)?;
            }
            total = total.checked_add(v).ok_or_else(overflow)?;
            if total > MAX_NANOS {
                return Err(overflow());
            }
        }
        Ok(GoDuration(Duration::from_nanos(total)))
    }
}

fn unit_nanos(unit: &str) -> Option<u64> {
    Some(match unit {
        "ns" => NANOSECOND,
        // Go accepts the micro sign (U+00B5) and the Greek mu (U+03BC).
        "us" | "\u{b5}s" | "\u{3bc}s" => MICROSECOND,
        "ms" => MILLISECOND,
        "s" => SECOND,
        "m" => MINUTE,
        "h" => HOUR,
        _ => return None,
    })
}

/// Consumes leading digits; `None` on overflow (Go's `errLeadingInt`).
fn leading_int(s: &[u8]) -> Option<(u64, &[u8])> {
    let n = s.iter().take_while(|c| c.is_ascii_digit()).count();
    let mut x: u64 = 0;
    for c in &s[..n] {
        x = x.checked_mul(10)?.checked_add(u64::from(c - b'0'))?;
        if x > MAX_NANOS {
            return None;
        }
    }
    Some((x, &s[n..]))
}

/// Consumes the digits after a '.', returning the value, its scale (10^digits used) and the rest. Digits beyond
/// what fits are consumed but ignored, as in Go.
fn leading_fraction(s: &[u8]) -> (u64, f64, &[u8]) {
    let n = s.iter().take_while(|c| c.is_ascii_digit()).count();
    let (mut x, mut scale, mut overflow) = (0u64, 1f64, false);
    for c in &s[..n] {
        if overflow {
            continue;
        }
        match x
            .checked_mul(10)
            .and_then(|y| y.checked_add(u64::from(c - b'0')))
        {
            Some(y) if y <= MAX_NANOS => {
                x = y;
                scale *= 10.0;
            }
            _ => overflow = true,
        }
    }
    (x, scale, &s[n..])
}

/// `int.frac` of `v / 10^prec`, without trailing zeros in the fraction and without the point if it is zero.
fn split_frac(v: u128, prec: u32) -> (u128, String) {
    let pow = 10u128.pow(prec);
    let (int, rem) = (v / pow, v % pow);
    if rem == 0 {
        return (int, String::new());
    }
    let digits = format!("{rem:0width$}", width = prec as usize);
    (int, format!(".{}", digits.trim_end_matches('0')))
}

impl fmt::Display for GoDuration {
    /// Go's `Duration.String()`: `0s`, `1.1µs`, `300ms`, `1.5s`, `1m30s`, `8h0m0s`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ns = self.0.as_nanos();
        if ns < u128::from(SECOND) {
            let (unit, prec) = match ns {
                0 => return f.write_str("0s"),
                n if n < u128::from(MICROSECOND) => ("ns", 0),
                n if n < u128::from(MILLISECOND) => ("\u{b5}s", 3),
                _ => ("ms", 6),
            };
            let (int, frac) = split_frac(ns, prec);
            return write!(f, "{int}{frac}{unit}");
        }
        let (secs, frac) = split_frac(ns, 9);
        let (h, m, s) = (secs / 3600, secs / 60 % 60, secs % 60);
        if h > 0 {
            write!(f, "{h}h{m}m{s}{frac}s")
        } else if m > 0 {
            write!(f, "{m}m{s}{frac}s")
        } else {
            write!(f, "{s}{frac}s")
        }
    }
}

impl FromStr for GoDuration {
    type Err = DurationError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        GoDuration::parse(s)
    }
}

impl From<Duration> for GoDuration {
    fn from(d: Duration) -> Self {
        GoDuration(d)
    }
}

impl From<GoDuration> for Duration {
    fn from(d: GoDuration) -> Self {
        d.0
    }
}

impl Serialize for GoDuration {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for GoDuration {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = GoDuration;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a Go duration string such as \"30s\", \"5m\" or \"1h30m\"")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<GoDuration, E> {
                GoDuration::parse(v).map_err(E::custom)
            }
        }
        deserializer.deserialize_str(Visitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn canon(s: &str) -> String {
        GoDuration::parse(s)
            .unwrap_or_else(|e| panic!("{s}: {e}"))
            .to_string()
    }

    /// Input → Go's `time.ParseDuration(input).String()`.
    #[test]
    fn parse_and_print_match_go() {
        let table = [
            ("1h30m", "1h30m0s"),
            ("1.5h", "1h30m0s"),
            ("300ms", "300ms"),
            ("8h", "8h0m0s"),
            ("90s", "1m30s"),
            ("0.5s", "500ms"),
            ("1h0.5m", "1h0m30s"),
            ("1\u{b5}s", "1\u{b5}s"),
            ("1\u{3bc}s", "1\u{b5}s"),
            ("2us", "2\u{b5}s"),
            ("1100ns", "1.1\u{b5}s"),
            ("1.5s", "1.5s"),
            ("0", "0s"),
            ("0s", "0s"),
            ("+5s", "5s"),
            ("10m", "10m0s"),
            ("1ns", "1ns"),
            (".5m", "30s"),
            ("5.m", "5m0s"),
            ("1h1m1s1ms1us1ns", "1h1m1.001001001s"),
            ("100h", "100h0m0s"),
            ("2562047h47m16.854775807s", "2562047h47m16.854775807s"),
            ("0.000000001s", "1ns"),
            ("1.0000000009s", "1s"),
        ];
        for (input, want) in table {
            assert_eq!(canon(input), want, "input {input:?}");
        }
    }

    #[test]
    fn rejects_with_clear_errors() {
        let cases = [
            ("5d", "unknown unit \"d\" (use ns, us, ms, s, m or h)"),
            ("30", "missing unit (add a unit, e.g. 30s)"),
            ("1h30", "missing unit"),
            ("-5s", "negative"),
            ("-0", "negative"),
            ("", "empty"),
            ("+", "expected a number"),
            ("s", "expected a number"),
            (".s", "expected a number"),
            ("1h 30m", "unknown unit \"h \""),
            ("9223372036854775808ns", "too large"),
            ("2562048h", "too large"),
        ];
        for (input, want) in cases {
            let err = GoDuration::parse(input).expect_err(input).to_string();
            assert!(err.contains(want), "{input:?}: {err}");
            assert!(
                err.starts_with(&format!("invalid duration {input:?}")),
                "{err}"
            );
        }
        assert_eq!(
            GoDuration::parse("5d").unwrap_err().to_string(),
            "invalid duration \"5d\": unknown unit \"d\" (use ns, us, ms, s, m or h)"
        );
    }

    #[test]
    fn std_conversions_and_zero() {
        let d = GoDuration::parse("1.5s").unwrap();
        assert_eq!(d.as_std(), Duration::from_millis(1500));
        assert_eq!(
            GoDuration::from_std(Duration::from_secs(600)).to_string(),
            "10m0s"
        );
        assert!(GoDuration::parse("0s").unwrap().is_zero());
        assert!(!d.is_zero());
        assert!(GoDuration::from_secs(1) < GoDuration::from_secs(2));
    }

    #[test]
    fn serde_round_trip_as_string() {
        let d: GoDuration = serde_json::from_str("\"90m\"").unwrap();
        assert_eq!(serde_json::to_string(&d).unwrap(), "\"1h30m0s\"");
        assert!(serde_json::from_str::<GoDuration>("\"5d\"").is_err());
        assert!(serde_json::from_str::<GoDuration>("30").is_err());
        let y: GoDuration = serde_yaml::from_str("2h").unwrap();
        assert_eq!(y, GoDuration::from_secs(7200));
    }
}
