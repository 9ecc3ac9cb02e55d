//! Times written the way chrono's `Serialize` writes them, faster.
//!
//! Every stored record carries several times, and the durable path
//! serializes records on every write. chrono formats a `DateTime` through
//! `fmt::Display` and hands it to the serializer with `collect_str`, which
//! serde_json escapes one `write_char` at a time: in a profile of durable
//! three-step runs on sled, times were the largest part of encoding. Here
//! the same text (RFC 3339, `Z`, a fraction of 0, 3, 6 or 9 digits as
//! chrono's `SecondsFormat::AutoSi` chooses) is written into a stack
//! buffer and serialized as one string, so stored bytes do not change.
//! Years outside 0..=9999 and leap seconds take chrono's own path.
//!
//! Reading is chrono's, unchanged: use with `serialize_with`.

use chrono::{DateTime, Datelike, Timelike, Utc};
use serde::Serializer;

/// The longest text written here: `9999-12-31T23:59:59.999999999Z`.
const MAX_LEN: usize = 30;

/// Serializes `time` as chrono does.
pub(crate) fn serialize<S: Serializer>(
    time: &DateTime<Utc>,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    let mut buffer = [0u8; MAX_LEN];
    match write(time, &mut buffer) {
        Some(text) => serializer.serialize_str(text),
        None => serde::Serialize::serialize(time, serializer),
    }
}

/// [`serialize`] for an optional time (with `skip_serializing_if`, so
/// `None` is never seen by a derived struct; serialized as chrono would).
pub(crate) fn serialize_opt<S: Serializer>(
    time: &Option<DateTime<Utc>>,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    match time {
        Some(time) => serializer.serialize_some(&Fast(time)),
        None => serializer.serialize_none(),
    }
}

/// A time serialized through [`serialize`].
struct Fast<'a>(&'a DateTime<Utc>);

impl serde::Serialize for Fast<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serialize(self.0, serializer)
    }
}

/// Writes `time` into `buffer`, or `None` where chrono's path is needed.
fn write<'b>(time: &DateTime<Utc>, buffer: &'b mut [u8; MAX_LEN]) -> Option<&'b str> {
    let year = time.year();
    let nano = time.nanosecond();
    if !(0..=9999).contains(&year) || nano >= 1_000_000_000 {
        return None;
    }
    let year = year as u32;
    let two = |buffer: &mut [u8; MAX_LEN], at: usize, value: u32| {
        buffer[at] = b'0' + (value / 10) as u8;
        buffer[at + 1] = b'0' + (value % 10) as u8;
    };
    two(buffer, 0, year / 100);
    two(buffer, 2, year % 100);
    buffer[4] = b'-';
    two(buffer, 5, time.month());
    buffer[7] = b'-';
    two(buffer, 8, time.day());
    buffer[10] = b'T';
    two(buffer, 11, time.hour());
    buffer[13] = b':';
    two(buffer, 14, time.minute());
    buffer[16] = b':';
    two(buffer, 17, time.second());
    let mut len = 19;
    let (digits, mut fraction) = if nano == 0 {
        (0, 0)
    } else if nano.is_multiple_of(1_000_000) {
        (3, nano / 1_000_000)
    } else if nano.is_multiple_of(1_000) {
        (6, nano / 1_000)
    } else {
        (9, nano)
    };
    if digits > 0 {
        buffer[len] = b'.';
        for at in (len + 1..=len + digits).rev() {
            buffer[at] = b'0' + (fraction % 10) as u8;
            fraction /= 10;
        }
        len += 1 + digits;
    }
    buffer[len] = b'Z';
    len += 1;
    // Only ASCII digits and punctuation were written.
    std::str::from_utf8(&buffer[..len]).ok()
}

#[cfg(test)]
mod tests {
    use chrono::{NaiveDate, TimeZone};
    use proptest::prelude::*;

    use super::*;

    /// What both paths write for `time`, as JSON.
    fn both(time: DateTime<Utc>) -> (String, String) {
        let chrono = serde_json::to_string(&time).expect("serializes");
        let mut out = Vec::new();
        serialize(&time, &mut serde_json::Serializer::new(&mut out)).expect("serializes");
        (chrono, String::from_utf8(out).expect("utf-8"))
    }

    #[test]
    fn writes_what_chrono_writes_at_every_precision() {
        let second = Utc.with_ymd_and_hms(2026, 12, 2, 6, 45, 33).unwrap();
        for nano in [
            0,
            1,
            999,
            1_000,
            120_000,
            5_000_000,
            123_456_789,
            999_999_999,
        ] {
            let time = second + chrono::TimeDelta::nanoseconds(nano);
            let (chrono, ours) = both(time);
            assert_eq!(ours, chrono, "{nano} ns");
        }
    }

    #[test]
    fn far_years_and_leap_seconds_are_chrono_s() {
        let far = Utc.with_ymd_and_hms(10_000, 1, 1, 0, 0, 0).unwrap();
        let early = DateTime::<Utc>::MIN_UTC;
        let leap = NaiveDate::from_ymd_opt(2016, 12, 31)
            .and_then(|d| d.and_hms_nano_opt(23, 59, 59, 1_500_000_000))
            .unwrap()
            .and_utc();
        for time in [far, early, leap, DateTime::<Utc>::MAX_UTC] {
            let (chrono, ours) = both(time);
            assert_eq!(ours, chrono);
        }
    }

    #[test]
    fn optional_times_read_back() {
        #[derive(serde::Serialize, serde::Deserialize, PartialEq, Debug)]
        struct Record {
            #[serde(default, serialize_with = "serialize_opt")]
            at: Option<DateTime<Utc>>,
        }
        for at in [
            None,
            Some(Utc.with_ymd_and_hms(1999, 1, 2, 3, 4, 5).unwrap()),
        ] {
            let text = serde_json::to_string(&Record { at }).expect("serializes");
            let back: Record = serde_json::from_str(&text).expect("reads back");
            assert_eq!(back.at, at);
        }
    }

    proptest! {
        #[test]
        fn any_time_is_written_as_chrono_writes_it(
            micros in 0i64..253_402_300_799_999_999,
            nanos in 0u32..1_000,
        ) {
            let time = DateTime::<Utc>::from_timestamp_micros(micros).unwrap()
                + chrono::TimeDelta::nanoseconds(i64::from(nanos) * i64::from(micros % 3 == 0));
            let (chrono, ours) = both(time);
            prop_assert_eq!(ours, chrono);
        }
    }
}
