//! Go durations (`GoDuration::parse` and its Go `Duration.String()` printer).
//!
//! Input: UTF-8 text `a` or `a|b`. Properties:
//! - every accepted value prints to a string that parses back to the same value (also through serde);
//! - every rejection names the input and starts with "invalid duration";
//! - a plain `<digits><unit>` means exactly digits × unit;
//! - parsing `a` then `b` and adding equals parsing `ab` (Go's grammar is a sequence of summed components),
//!   and `ab` is "too large" exactly when the sum is;
//! - the first 8 bytes as nanoseconds print to a string that parses back to them.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tka::model::duration::{DurationError, GoDuration};

const MAX_NANOS: u128 = i64::MAX as u128;

fuzz_target!(|data: &[u8]| {
    if let Some(bytes) = data.get(..8) {
        let nanos = u64::from_le_bytes(bytes.try_into().unwrap()) % (i64::MAX as u64 + 1);
        round_trips(GoDuration::from_std(std::time::Duration::from_nanos(nanos)));
    }
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let whole = checked_parse(text);
    if let Ok(d) = whole
        && let Some(exact) = single_integer_component(text)
    {
        assert_eq!(d.as_std().as_nanos(), exact, "{text:?}");
    }
    if let Some((a, b)) = text.split_once('|') {
        concatenation_adds(a, b);
    }
});

/// Parses and checks what holds for every input.
fn checked_parse(text: &str) -> Result<GoDuration, DurationError> {
    let parsed = GoDuration::parse(text);
    match &parsed {
        Ok(d) => {
            assert!(d.as_std().as_nanos() <= MAX_NANOS, "{text:?} → {d:?}");
            round_trips(*d);
        }
        Err(e) => {
            let message = e.to_string();
            assert!(
                message.starts_with(&format!("invalid duration {text:?}")),
                "{text:?}: {message}"
            );
        }
    }
    parsed
}

fn round_trips(d: GoDuration) {
    let printed = d.to_string();
    let back = GoDuration::parse(&printed)
        .unwrap_or_else(|e| panic!("{d:?} prints as {printed:?}, which does not parse: {e}"));
    assert_eq!(back, d, "{printed:?}");
    assert_eq!(back.to_string(), printed, "the printed form is canonical");
    let json = serde_json::to_string(&d).expect("serializes");
    let from_json: GoDuration = serde_json::from_str(&json).expect("deserializes");
    assert_eq!(from_json, d, "{json}");
}

/// `^\+?[0-9]+(ns|us|µs|μs|ms|s|m|h)$` → its value in nanoseconds (`None` for anything else or too large).
fn single_integer_component(text: &str) -> Option<u128> {
    let t = text.strip_prefix('+').unwrap_or(text);
    let digits = t.bytes().take_while(u8::is_ascii_digit).count();
    let (number, unit) = t.split_at(digits);
    let unit_nanos: u128 = match unit {
        "ns" => 1,
        "us" | "\u{b5}s" | "\u{3bc}s" => 1_000,
        "ms" => 1_000_000,
        "s" => 1_000_000_000,
        "m" => 60_000_000_000,
        "h" => 3_600_000_000_000,
        _ => return None,
    };
    let n: u128 = number.parse().ok()?;
    n.checked_mul(unit_nanos).filter(|v| *v <= MAX_NANOS)
}

fn concatenation_adds(a: &str, b: &str) {
    let (Ok(x), Ok(y)) = (checked_parse(a), checked_parse(b)) else {
        return;
    };
    // A sign only leads the whole string, and a bare "0" (no unit) is only allowed on its own.
    if b.is_empty() || b.starts_with('+') || b == "0" {
        return;
    }
    let joined = format!("{a}{b}");
    let sum = x.as_std().as_nanos() + y.as_std().as_nanos();
    match GoDuration::parse(&joined) {
        Ok(z) => assert_eq!(z.as_std().as_nanos(), sum, "{a:?} + {b:?} vs {joined:?}"),
        Err(DurationError::Overflow { .. }) => {
            assert!(
                sum > MAX_NANOS,
                "{joined:?} overflows but {a:?} + {b:?} = {sum} ns"
            )
        }
        Err(e) => panic!("{a:?} and {b:?} parse, {joined:?} does not: {e}"),
    }
}
