//! Event time: RFC 3339 in, UTC microseconds inside, one canonical form out.
//!
//! The parser is written out rather than taken from a date library because the contract is
//! narrower than RFC 3339 parsers are: the year must be 2000 to 2099 *as written* (before the
//! offset is applied), the offset must be explicit, and digits past the microsecond are cut, not
//! rounded. Doing it by hand also keeps it allocation-free on the validation hot path.

use std::fmt;

use crate::transaction::zero_padded;

/// Microseconds in one second, minute, hour, day.
pub const MICROS_PER_SECOND: i64 = 1_000_000;
const MICROS_PER_MINUTE: i64 = 60 * MICROS_PER_SECOND;
const MICROS_PER_HOUR: i64 = 60 * MICROS_PER_MINUTE;
const MICROS_PER_DAY: i64 = 24 * MICROS_PER_HOUR;

/// An instant in UTC, as microseconds since the Unix epoch: the precision of Iceberg's
/// `timestamptz`, so what the pipeline stores is exactly what it validated.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct EventTime(i64);

/// Why a timestamp was refused; the text becomes the dead letter's `message`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TimeError {
    /// Not of the form `YYYY-MM-DDTHH:MM:SS[.fraction](Z|±hh:mm)`.
    Format,
    /// No `Z` or `±hh:mm` after the time.
    NoOffset,
    /// The year as written is outside 2000..=2099.
    Year,
    /// A month, day, hour, minute, second or offset out of range (e.g. February 30).
    Range,
}

impl fmt::Display for TimeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            TimeError::Format => "event_time must be RFC 3339, e.g. 2026-03-10T09:30:00.000000Z",
            TimeError::NoOffset => "event_time must carry an explicit offset (Z or ±hh:mm)",
            TimeError::Year => "event_time year must be between 2000 and 2099",
            TimeError::Range => "event_time is not a real date and time",
        })
    }
}

impl EventTime {
    /// The instant `micros` microseconds after 1970-01-01T00:00:00Z.
    pub const fn from_micros(micros: i64) -> Self {
        EventTime(micros)
    }

    /// Microseconds since the Unix epoch.
    pub const fn as_micros(self) -> i64 {
        self.0
    }

    /// The current wall-clock time (used for `received_at`/`detected_at`, never for validation).
    pub fn now() -> Self {
        let d = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        EventTime(d.as_micros() as i64)
    }

    /// The UTC hour of day, 0..=23.
    pub fn hour_utc(self) -> u32 {
        (self.0.rem_euclid(MICROS_PER_DAY) / MICROS_PER_HOUR) as u32
    }

    /// Parses RFC 3339 with an explicit offset, as the contract's `event_time` rule says.
    pub fn parse_rfc3339(s: &str) -> Result<Self, TimeError> {
        let b = s.as_bytes();
        // Date and time without the offset: "2026-03-10T09:30:00" (19 bytes).
        if b.len() < 19 {
            return Err(TimeError::Format);
        }
        let year = digits(b, 0, 4)?;
        expect(b, 4, b'-')?;
        let month = digits(b, 5, 2)?;
        expect(b, 7, b'-')?;
        let day = digits(b, 8, 2)?;
        if !matches!(b[10], b'T' | b't') {
            return Err(TimeError::Format);
        }
        let hour = digits(b, 11, 2)?;
        expect(b, 13, b':')?;
        let minute = digits(b, 14, 2)?;
        expect(b, 16, b':')?;
        let second = digits(b, 17, 2)?;

        // Fraction: any number of digits, of which the first six count.
        let mut i = 19;
        let mut micros = 0i64;
        if b.get(i) == Some(&b'.') {
            i += 1;
            let start = i;
            while i < b.len() && b[i].is_ascii_digit() {
                if i - start < 6 {
                    micros = micros * 10 + i64::from(b[i] - b'0');
                }
                i += 1;
            }
            let n = i - start;
            if n == 0 {
                return Err(TimeError::Format);
            }
            for _ in n..6 {
                micros *= 10;
            }
        }

        let offset_minutes: i64 = match b.get(i) {
            Some(b'Z' | b'z') if i + 1 == b.len() => 0,
            Some(&sign @ (b'+' | b'-')) if i + 6 == b.len() => {
                let oh = digits(b, i + 1, 2)?;
                expect(b, i + 3, b':')?;
                let om = digits(b, i + 4, 2)?;
                if oh > 23 || om > 59 {
                    return Err(TimeError::Range);
                }
                let m = i64::from(oh * 60 + om);
                if sign == b'-' {
                    -m
                } else {
                    m
                }
            }
            None => return Err(TimeError::NoOffset),
            _ => return Err(TimeError::Format),
        };

        if !(2000..=2099).contains(&year) {
            return Err(TimeError::Year);
        }
        // Second 60 (a leap second) has no representation in a microsecond timestamp: refused.
        if !(1..=12).contains(&month)
            || day == 0
            || day > days_in_month(year, month)
            || hour > 23
            || minute > 59
            || second > 59
        {
            return Err(TimeError::Range);
        }

        let days = days_from_civil(year as i64, month, day);
        let local = days * MICROS_PER_DAY
            + i64::from(hour) * MICROS_PER_HOUR
            + i64::from(minute) * MICROS_PER_MINUTE
            + i64::from(second) * MICROS_PER_SECOND
            + micros;
        Ok(EventTime(local - offset_minutes * MICROS_PER_MINUTE))
    }
}

impl EventTime {
    /// The canonical form as bytes, `YYYY-MM-DDTHH:MM:SS.ffffffZ` (27 bytes), written digit by
    /// digit: the generator and the outputs write one per record.
    pub fn canonical(self) -> [u8; 27] {
        let days = self.0.div_euclid(MICROS_PER_DAY);
        let in_day = self.0.rem_euclid(MICROS_PER_DAY);
        let (y, m, d) = civil_from_days(days);
        let secs = in_day / MICROS_PER_SECOND;
        let mut out = *b"0000-00-00T00:00:00.000000Z";
        let mut put = |at: usize, width: usize, v: i64| {
            zero_padded(&mut out[at..at + width], v as u64);
        };
        put(0, 4, y.clamp(0, 9999));
        put(5, 2, i64::from(m));
        put(8, 2, i64::from(d));
        put(11, 2, secs / 3600);
        put(14, 2, secs / 60 % 60);
        put(17, 2, secs % 60);
        put(20, 6, in_day % MICROS_PER_SECOND);
        out
    }
}

/// The canonical form: `YYYY-MM-DDTHH:MM:SS.ffffffZ`, always six fraction digits, always UTC.
impl fmt::Display for EventTime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let bytes = self.canonical();
        f.write_str(std::str::from_utf8(&bytes).map_err(|_| fmt::Error)?)
    }
}

impl serde::Serialize for EventTime {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for EventTime {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        EventTime::parse_rfc3339(&s).map_err(serde::de::Error::custom)
    }
}

fn digits(b: &[u8], at: usize, n: usize) -> Result<u32, TimeError> {
    let mut v = 0u32;
    for &c in b.get(at..at + n).ok_or(TimeError::Format)? {
        if !c.is_ascii_digit() {
            return Err(TimeError::Format);
        }
        v = v * 10 + u32::from(c - b'0');
    }
    Ok(v)
}

fn expect(b: &[u8], at: usize, c: u8) -> Result<(), TimeError> {
    if b.get(at) == Some(&c) {
        Ok(())
    } else {
        Err(TimeError::Format)
    }
}

fn is_leap(y: u32) -> bool {
    y.is_multiple_of(4) && (!y.is_multiple_of(100) || y.is_multiple_of(400))
}

fn days_in_month(y: u32, m: u32) -> u32 {
    match m {
        2 if is_leap(y) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's `days_from_civil`).
pub(crate) fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let m = i64::from(m);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The inverse of [`days_from_civil`].
pub(crate) fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> Result<String, TimeError> {
        EventTime::parse_rfc3339(s).map(|t| t.to_string())
    }

    #[test]
    fn canonical_form_round_trips() {
        assert_eq!(
            p("2026-03-10T09:30:00.123456Z").unwrap(),
            "2026-03-10T09:30:00.123456Z"
        );
        assert_eq!(
            p("2026-03-10T09:30:00Z").unwrap(),
            "2026-03-10T09:30:00.000000Z"
        );
        assert_eq!(
            p("2026-03-10t09:30:00.5z").unwrap(),
            "2026-03-10T09:30:00.500000Z"
        );
    }

    #[test]
    fn offsets_are_converted_to_utc() {
        assert_eq!(
            p("2026-03-10T02:30:00+02:00").unwrap(),
            "2026-03-10T00:30:00.000000Z"
        );
        assert_eq!(
            p("2026-03-10T23:30:00-01:30").unwrap(),
            "2026-03-11T01:00:00.000000Z"
        );
        assert_eq!(
            p("2026-03-10T09:30:00-00:00").unwrap(),
            "2026-03-10T09:30:00.000000Z"
        );
    }

    #[test]
    fn digits_past_the_microsecond_are_cut_not_rounded() {
        assert_eq!(
            p("2026-03-10T09:30:00.1234569Z").unwrap(),
            "2026-03-10T09:30:00.123456Z"
        );
        assert_eq!(
            p("2026-03-10T23:59:59.999999999Z").unwrap(),
            "2026-03-10T23:59:59.999999Z"
        );
    }

    #[test]
    fn year_bounds_apply_as_written() {
        assert!(p("2000-01-01T00:00:00Z").is_ok());
        assert_eq!(p("1999-12-31T23:59:59.999999Z"), Err(TimeError::Year));
        assert!(p("2099-12-31T23:59:59.999999Z").is_ok());
        assert_eq!(p("2100-01-01T00:00:00Z"), Err(TimeError::Year));
        // As written, not after conversion: both sides of the conversion stay valid.
        assert_eq!(
            p("2000-01-01T00:30:00+01:00").unwrap(),
            "1999-12-31T23:30:00.000000Z"
        );
        assert_eq!(
            p("2099-12-31T23:30:00-01:00").unwrap(),
            "2100-01-01T00:30:00.000000Z"
        );
    }

    #[test]
    fn calendar_ranges() {
        assert!(p("2024-02-29T00:00:00Z").is_ok());
        assert_eq!(p("2026-02-29T00:00:00Z"), Err(TimeError::Range));
        assert_eq!(p("2026-04-31T00:00:00Z"), Err(TimeError::Range));
        assert_eq!(p("2026-13-01T00:00:00Z"), Err(TimeError::Range));
        assert_eq!(p("2026-00-01T00:00:00Z"), Err(TimeError::Range));
        assert_eq!(p("2026-01-00T00:00:00Z"), Err(TimeError::Range));
        assert_eq!(p("2026-01-01T24:00:00Z"), Err(TimeError::Range));
        assert_eq!(p("2026-01-01T23:60:00Z"), Err(TimeError::Range));
        assert_eq!(p("2026-01-01T23:59:60Z"), Err(TimeError::Range));
        assert_eq!(p("2026-01-01T00:00:00+24:00"), Err(TimeError::Range));
        assert!(p("2026-01-01T00:00:00+23:59").is_ok());
    }

    #[test]
    fn malformed() {
        assert_eq!(p("2026-03-10T09:30:00"), Err(TimeError::NoOffset));
        assert_eq!(p("2026-03-10T09:30:00.123"), Err(TimeError::NoOffset));
        assert_eq!(p("2026-03-10 09:30:00Z"), Err(TimeError::Format));
        assert_eq!(p("2026-03-10T09:30:00.Z"), Err(TimeError::Format));
        assert_eq!(p("2026-03-10T09:30:00Zjunk"), Err(TimeError::Format));
        assert_eq!(p("2026-03-10T09:30:00+0200"), Err(TimeError::Format));
        assert_eq!(p("2026-3-10T09:30:00Z"), Err(TimeError::Format));
        assert_eq!(p("+2026-03-10T09:30:00Z"), Err(TimeError::Format));
        assert_eq!(p(""), Err(TimeError::Format));
    }

    #[test]
    fn hour_of_day() {
        let t = |s| EventTime::parse_rfc3339(s).unwrap().hour_utc();
        assert_eq!(t("2026-03-10T00:59:59.999999Z"), 0);
        assert_eq!(t("2026-03-10T01:00:00Z"), 1);
        assert_eq!(t("2026-03-10T06:00:00+01:00"), 5);
    }

    #[test]
    fn civil_conversions_agree_over_the_valid_range() {
        let first = days_from_civil(1999, 12, 1);
        let last = days_from_civil(2100, 2, 1);
        for z in first..last {
            let (y, m, d) = civil_from_days(z);
            assert_eq!(days_from_civil(y, m, d), z);
        }
        assert_eq!(days_from_civil(1970, 1, 1), 0);
    }
}
