//! Time resolution: turning what a person types after `restore`, `log --since` or `diff` into a
//! UTC instant in nanoseconds, and formatting instants back for people and for machines.
//!
//! Accepted forms (see [`parse_time`]):
//!
//! ```text
//! 2026-12-03T12:34:56.123456789Z     RFC 3339, with Z or an offset (+01:00, -0530), T or space
//! 2026-12-03 12:34[:56[.123]]        no zone: local time
//! 12:34[:56[.123]]                   local time today
//! 90s  10m  2h  3d  1h30m  [ago]     that long before now (m is minutes)
//! @N                                 the instant snapshot N was taken (see [`resolve`])
//! @start                             the start of the current or last `saferoot run`
//! ```
//!
//! The parser is hand-written rather than a list of `strftime` patterns so that every accepted
//! form is visible here, fractional seconds keep all nine digits, and an error can name the input.
//! What this module does not do: decide whether an instant is covered by the journal (restore
//! does), or accept dates without a time (is "2026-12-03" its first or its last instant?).

use crate::journal::{self, Op};
use crate::{manifest, Error, Result, Store};
use chrono::{DateTime, Local, NaiveDate, NaiveDateTime, NaiveTime, TimeZone, Utc};

const NS_PER_SEC: i64 = 1_000_000_000;

/// The list of forms, for error messages.
const FORMS: &str = "expected RFC 3339 (2026-12-03T12:34:56Z, 2026-12-03T12:34:56.5+01:00), \
                     local `YYYY-MM-DD HH:MM[:SS[.frac]]`, `HH:MM[:SS[.frac]]` (today), \
                     an age like `90s`, `10m`, `2h`, `3d`, `1h30m` (optionally followed by `ago`), \
                     `@N` (snapshot N) or `@start` (the start of the last `saferoot run`)";

/// Resolve any TIME a person can type: `@N` (the instant snapshot N was taken), `@start` (the
/// start of the newest `saferoot run` session, current or finished), or anything
/// [`parse_time`] reads. Only the `@` forms look at the store.
pub fn resolve(store: &Store, s: &str, now_ns: i64) -> Result<i64> {
    let input = s.trim();
    let Some(name) = input.strip_prefix('@') else {
        return parse_time(s, now_ns);
    };
    if name == "start" {
        let (records, _) = journal::read(store.dir(), store.dir_path())?;
        return records
            .iter()
            .filter(|r| r.op == Op::Run)
            .map(|r| r.t)
            .max()
            .ok_or_else(|| {
                Error::Invalid(match journal::horizon(&records) {
                    Some((_, r)) => format!(
                        "no `saferoot run` session since the oldest restorable instant: {}",
                        crate::restore::horizon_reason(r)
                    ),
                    None => "no `saferoot run` session recorded yet".into(),
                })
            });
    }
    if !name.is_empty() && name.bytes().all(|c| c.is_ascii_digit()) {
        return match name.parse::<u64>() {
            // Read whole and verified: a damaged manifest's instant is not trusted.
            Ok(n) => manifest::verify(store, n)
                .map(|i| i.t)
                .map_err(|e| collected_snapshot(store, n).unwrap_or(e)),
            Err(_) => Err(Error::Invalid(format!(
                "no snapshot {name}; `saferoot snapshots` lists them"
            ))),
        };
    }
    Err(Error::Invalid(format!(
        "cannot read time {s:?}: after `@` give a snapshot number (`@3`, see `saferoot \
         snapshots`) or `start` (the start of the last `saferoot run`)"
    )))
}

/// If snapshot `n` is missing because `gc` collected it (older than every snapshot left, with
/// a `gc` record in the journal), the error that says so.
fn collected_snapshot(store: &Store, n: u64) -> Option<Error> {
    let oldest_left = manifest::list(store).ok()?.iter().map(|i| i.n).min()?;
    if n >= oldest_left {
        return None;
    }
    let (records, _) = journal::read(store.dir(), store.dir_path()).ok()?;
    let (h, r) = journal::horizon(&records)?;
    Some(Error::Invalid(format!(
        "snapshot {n} is gone: {}; the oldest restorable instant is {}",
        crate::restore::horizon_reason(r),
        format_utc(h)
    )))
}

/// Parse a point in time typed by a person, relative to `now_ns` (UTC ns since the epoch) and
/// in the machine's local time zone (the `TZ` environment variable is honoured). Returns UTC
/// nanoseconds since the Unix epoch.
///
/// An instant after `now_ns` is an error: there is nothing to restore from the future, and a
/// clock-time like `23:00` typed in the morning almost certainly meant yesterday, which must be
/// said explicitly.
pub fn parse_time(s: &str, now_ns: i64) -> Result<i64> {
    parse_time_in(s, now_ns, &Local)
}

/// [`parse_time`] in the time zone `tz` (tests pass a fixed offset).
pub fn parse_time_in<Tz: TimeZone>(s: &str, now_ns: i64, tz: &Tz) -> Result<i64>
where
    Tz::Offset: std::fmt::Display,
{
    let input = s.trim();
    let t = if let Some(age) = parse_age(input) {
        let age = age.ok_or_else(|| {
            Error::Invalid(format!(
                "time {s:?} is too far in the past to be represented"
            ))
        })?;
        now_ns
            .checked_sub(age)
            .ok_or_else(|| Error::Invalid(format!("time {s:?} is too far in the past")))?
    } else if let Some(abs) = parse_absolute(input) {
        let (date, today) = match abs.date {
            Some(d) => (d, false),
            None => (tz.timestamp_nanos(now_ns).date_naive(), true),
        };
        let local = NaiveDateTime::new(date, abs.time);
        let t = match abs.offset_secs {
            Some(off) => {
                // The wall time minus its offset is UTC.
                let utc = local
                    .checked_sub_signed(chrono::TimeDelta::seconds(i64::from(off)))
                    .ok_or_else(|| out_of_range(s))?;
                to_ns(&Utc.from_utc_datetime(&utc), s)?
            }
            None => match tz.from_local_datetime(&local) {
                chrono::LocalResult::Single(dt) => to_ns(&dt, s)?,
                // A wall time seen twice (the hour repeated when clocks go back): the first.
                chrono::LocalResult::Ambiguous(first, _) => to_ns(&first, s)?,
                chrono::LocalResult::None => {
                    return Err(Error::Invalid(format!(
                        "time {s:?} does not exist in the local time zone (skipped by a \
                         daylight-saving change); give an offset, e.g. {}T{}+01:00",
                        date.format("%Y-%m-%d"),
                        abs.time.format("%H:%M:%S")
                    )))
                }
            },
        };
        if today && t > now_ns {
            return Err(Error::Invalid(format!(
                "time {s:?} is in the future (a time without a date means today, {}); \
                 give the date for an earlier day",
                date.format("%Y-%m-%d")
            )));
        }
        t
    } else {
        return Err(Error::Invalid(format!("cannot read time {s:?}: {FORMS}")));
    };
    if t > now_ns {
        return Err(Error::Invalid(format!(
            "time {s:?} is in the future (now is {})",
            format_local_short_in(now_ns, tz)
        )));
    }
    Ok(t)
}

fn to_ns<Tz: TimeZone>(dt: &DateTime<Tz>, shown: &str) -> Result<i64> {
    dt.timestamp_nanos_opt().ok_or_else(|| out_of_range(shown))
}

fn out_of_range(shown: &str) -> Error {
    Error::Invalid(format!(
        "time {shown:?} is outside the representable range (years 1678 to 2261)"
    ))
}

/// `2026-12-03T12:34:56.123456789Z`: always UTC, always nine fraction digits, so the strings
/// sort like the instants and round-trip through [`parse_time`] exactly.
pub fn format_utc(t_ns: i64) -> String {
    let (secs, nanos) = split_ns(t_ns);
    match DateTime::from_timestamp(secs, nanos) {
        Some(dt) => format!("{}.{nanos:09}Z", dt.format("%Y-%m-%dT%H:%M:%S")),
        // Unreachable for any i64 of nanoseconds; never panic on it anyway.
        None => format!("@{t_ns}ns"),
    }
}

/// `2026-12-03 13:34:56.123` in local time, for tables people read.
pub fn format_local_short(t_ns: i64) -> String {
    format_local_short_in(t_ns, &Local)
}

/// [`format_local_short`] in the time zone `tz`.
pub fn format_local_short_in<Tz: TimeZone>(t_ns: i64, tz: &Tz) -> String
where
    Tz::Offset: std::fmt::Display,
{
    tz.timestamp_nanos(t_ns)
        .format("%Y-%m-%d %H:%M:%S%.3f")
        .to_string()
}

fn split_ns(t_ns: i64) -> (i64, u32) {
    (
        t_ns.div_euclid(NS_PER_SEC),
        t_ns.rem_euclid(NS_PER_SEC) as u32,
    )
}

/// `Some(Some(ns))` for a well-formed age, `Some(None)` for one that overflows, `None` if `s`
/// is not an age at all.
fn parse_age(s: &str) -> Option<Option<i64>> {
    let body = match s.strip_suffix("ago") {
        Some(b) if b.ends_with(|c: char| c.is_ascii_whitespace()) => b.trim_end(),
        Some(_) => return None,
        None => s,
    };
    let b = body.as_bytes();
    if b.is_empty() {
        return None;
    }
    let mut total: Option<i64> = Some(0);
    let mut i = 0;
    while i < b.len() {
        let start = i;
        while i < b.len() && b[i].is_ascii_digit() {
            i += 1;
        }
        if i == start || i == b.len() {
            return None;
        }
        let unit: i64 = match b[i] {
            b's' => 1,
            b'm' => 60,
            b'h' => 3600,
            b'd' => 86_400,
            _ => return None,
        };
        i += 1;
        // Only digits before i: parse fails only on overflow.
        let part = body[start..i - 1]
            .parse::<i64>()
            .ok()
            .and_then(|n| n.checked_mul(unit))
            .and_then(|n| n.checked_mul(NS_PER_SEC));
        total = match (total, part) {
            (Some(t), Some(p)) => t.checked_add(p),
            _ => None,
        };
        // "1h 30m" reads naturally too.
        while i < b.len() && b[i] == b' ' {
            i += 1;
        }
    }
    Some(total)
}

struct Absolute {
    date: Option<NaiveDate>,
    time: NaiveTime,
    /// Seconds east of UTC, when the input named its zone.
    offset_secs: Option<i32>,
}

/// A cursor over ASCII input.
struct Cursor<'a> {
    b: &'a [u8],
    i: usize,
}

impl Cursor<'_> {
    /// Exactly `n` digits.
    fn digits(&mut self, n: usize) -> Option<u32> {
        let d = self.b.get(self.i..self.i + n)?;
        if !d.iter().all(u8::is_ascii_digit) {
            return None;
        }
        self.i += n;
        Some(d.iter().fold(0, |a, &c| a * 10 + u32::from(c - b'0')))
    }

    fn eat(&mut self, c: u8) -> bool {
        if self.b.get(self.i) == Some(&c) {
            self.i += 1;
            true
        } else {
            false
        }
    }

    fn peek(&self) -> Option<u8> {
        self.b.get(self.i).copied()
    }

    fn done(&self) -> bool {
        self.i == self.b.len()
    }
}

fn parse_absolute(s: &str) -> Option<Absolute> {
    let mut c = Cursor {
        b: s.as_bytes(),
        i: 0,
    };
    // A date starts with four digits and a dash; a bare time with two digits and a colon.
    let date = if s.len() > 4 && s.as_bytes()[4] == b'-' {
        let y = c.digits(4)?;
        c.eat(b'-').then_some(())?;
        let m = c.digits(2)?;
        c.eat(b'-').then_some(())?;
        let d = c.digits(2)?;
        let date = NaiveDate::from_ymd_opt(y as i32, m, d)?;
        if !(c.eat(b'T') || c.eat(b't') || c.eat(b' ')) {
            return None;
        }
        Some(date)
    } else {
        None
    };
    let h = c.digits(2)?;
    c.eat(b':').then_some(())?;
    let min = c.digits(2)?;
    let mut sec = 0;
    let mut nanos = 0;
    if c.eat(b':') {
        sec = c.digits(2)?;
        if c.eat(b'.') {
            let start = c.i;
            while matches!(c.peek(), Some(b'0'..=b'9')) {
                c.i += 1;
            }
            let frac = &c.b[start..c.i];
            if frac.is_empty() || frac.len() > 9 {
                return None;
            }
            let mut n = 0u32;
            for k in 0..9 {
                n = n * 10 + frac.get(k).map_or(0, |&d| u32::from(d - b'0'));
            }
            nanos = n;
        }
    }
    // No leap seconds: 23:59:60 is not an instant a file system ever recorded.
    let time = NaiveTime::from_hms_nano_opt(h, min, sec, nanos)?;
    let offset_secs = if c.done() {
        None
    } else if date.is_none() {
        // A bare time is always local: "12:00Z" is more likely a typo than a wish.
        return None;
    } else if c.eat(b'Z') || c.eat(b'z') {
        Some(0)
    } else {
        let sign = if c.eat(b'+') {
            1
        } else if c.eat(b'-') {
            -1
        } else {
            return None;
        };
        let oh = c.digits(2)?;
        c.eat(b':');
        let om = c.digits(2)?;
        if oh > 23 || om > 59 {
            return None;
        }
        Some(sign * (oh * 3600 + om * 60) as i32)
    };
    if !c.done() {
        return None;
    }
    Some(Absolute {
        date,
        time,
        offset_secs,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{FixedOffset, MappedLocalTime, NaiveDate};

    const S: i64 = NS_PER_SEC;

    fn utc(y: i32, mo: u32, d: u32, h: u32, mi: u32, s: u32) -> i64 {
        Utc.with_ymd_and_hms(y, mo, d, h, mi, s)
            .unwrap()
            .timestamp_nanos_opt()
            .unwrap()
    }

    fn plus1() -> FixedOffset {
        FixedOffset::east_opt(3600).unwrap()
    }

    /// 2026-12-03T15:00:00Z, i.e. 16:00 at UTC+1.
    fn now() -> i64 {
        utc(2026, 12, 3, 15, 0, 0)
    }

    fn p(s: &str) -> Result<i64> {
        parse_time_in(s, now(), &plus1())
    }

    fn err(s: &str) -> String {
        match p(s) {
            Ok(t) => panic!("{s:?} parsed as {}", format_utc(t)),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn rfc3339_with_z_and_fraction() {
        assert_eq!(
            p("2026-12-03T12:34:56.123456789Z").unwrap(),
            utc(2026, 12, 3, 12, 34, 56) + 123_456_789
        );
        assert_eq!(
            p("2026-12-03t12:34:56.5z").unwrap(),
            utc(2026, 12, 3, 12, 34, 56) + 500_000_000
        );
        assert_eq!(
            p("2026-12-03 12:34:56Z").unwrap(),
            utc(2026, 12, 3, 12, 34, 56)
        );
    }

    #[test]
    fn rfc3339_with_offsets() {
        assert_eq!(
            p("2026-12-03T12:34:56+01:00").unwrap(),
            utc(2026, 12, 3, 11, 34, 56)
        );
        assert_eq!(
            p("2026-12-03T08:34:56-05:30").unwrap(),
            utc(2026, 12, 3, 14, 4, 56)
        );
        assert_eq!(
            p("2026-12-03 12:34:56.25+0200").unwrap(),
            utc(2026, 12, 3, 10, 34, 56) + 250_000_000
        );
        // The offset in the input wins over the local zone.
        assert_eq!(
            parse_time_in(
                "2026-12-03T12:00:00Z",
                now(),
                &FixedOffset::west_opt(8 * 3600).unwrap()
            )
            .unwrap(),
            utc(2026, 12, 3, 12, 0, 0)
        );
    }

    #[test]
    fn local_date_and_time_without_zone() {
        // UTC+1: local 12:34 is 11:34Z.
        assert_eq!(p("2026-12-03 12:34").unwrap(), utc(2026, 12, 3, 11, 34, 0));
        assert_eq!(
            p("2026-12-03 12:34:56.007").unwrap(),
            utc(2026, 12, 3, 11, 34, 56) + 7_000_000
        );
        assert_eq!(p("2026-12-03T12:34").unwrap(), utc(2026, 12, 3, 11, 34, 0));
        assert_eq!(
            p("2026-12-02T23:59:59").unwrap(),
            utc(2026, 12, 2, 22, 59, 59)
        );
    }

    #[test]
    fn clock_time_is_today_in_local_time() {
        assert_eq!(p("12:34").unwrap(), utc(2026, 12, 3, 11, 34, 0));
        assert_eq!(
            p("15:59:59.999999999").unwrap(),
            utc(2026, 12, 3, 14, 59, 59) + 999_999_999
        );
        // "Today" is the local date: at 00:30 local (23:30Z the day before), 00:10 is today.
        let just_after_midnight = utc(2026, 12, 2, 23, 30, 0);
        assert_eq!(
            parse_time_in("00:10", just_after_midnight, &plus1()).unwrap(),
            utc(2026, 12, 2, 23, 10, 0)
        );
        // Now exactly is not the future.
        assert_eq!(p("16:00").unwrap(), now());
    }

    #[test]
    fn clock_time_later_today_is_in_the_future() {
        let e = err("16:00:01");
        assert!(e.contains("\"16:00:01\" is in the future"), "{e}");
        assert!(e.contains("2026-12-03"), "{e}");
    }

    #[test]
    fn ages() {
        assert_eq!(p("90s").unwrap(), now() - 90 * S);
        assert_eq!(p("10m").unwrap(), now() - 600 * S);
        assert_eq!(p("2h").unwrap(), now() - 7200 * S);
        assert_eq!(p("3d").unwrap(), now() - 3 * 86_400 * S);
        assert_eq!(p("1h30m").unwrap(), now() - 5400 * S);
        assert_eq!(p("1h 30m ago").unwrap(), now() - 5400 * S);
        assert_eq!(p("10m ago").unwrap(), now() - 600 * S);
        assert_eq!(p("  2d4h  ").unwrap(), now() - (2 * 86_400 + 4 * 3600) * S);
        assert_eq!(p("0s").unwrap(), now());
    }

    #[test]
    fn bad_ages() {
        for s in [
            "10",
            "m",
            "10x",
            "1h30",
            "ago",
            "10m  agoo",
            "10mago",
            "-5m",
            "1.5h",
        ] {
            let e = err(s);
            assert!(e.contains("cannot read time"), "{s}: {e}");
        }
        let e = err("99999999999999999999d");
        assert!(e.contains("too far in the past"), "{e}");
        let e = err("200000d");
        assert!(e.contains("too far in the past"), "{e}");
    }

    #[test]
    fn absolute_instant_after_now_is_in_the_future() {
        let e = err("2026-12-03T15:00:00.000000001Z");
        assert!(
            e.contains("is in the future (now is 2026-12-03 16:00:00.000)"),
            "{e}"
        );
        let e = err("2027-01-01 00:00");
        assert!(e.contains("in the future"), "{e}");
        assert_eq!(p("2026-12-03T15:00:00Z").unwrap(), now());
    }

    #[test]
    fn malformed_inputs_name_the_input_and_list_the_forms() {
        for s in [
            "",
            "yesterday",
            "2026-12-03",
            "2026-13-03 12:00",
            "2026-02-30 12:00",
            "2026-12-03X12:00",
            "2026-12-03 24:00",
            "2026-12-03 12:60",
            "2026-12-03 12:00:60",
            "2026-12-03 12:00:00.",
            "2026-12-03 12:00:00.1234567891",
            "2026-12-03 12:00:00+25:00",
            "2026-12-03 12:00:00+01:",
            "2026-12-03 12:00:00 UTC",
            "12:00Z",
            "12",
            "1:00",
            "12:0",
        ] {
            let e = err(s);
            assert!(e.contains(&format!("{s:?}")), "{s}: {e}");
            assert!(e.contains("expected RFC 3339"), "{s}: {e}");
            assert!(e.contains("`90s`"), "{s}: {e}");
            assert!(!e.contains('\n'), "{s}: {e}");
        }
    }

    #[test]
    fn out_of_range_years() {
        let e = err("1500-01-01T00:00:00Z");
        assert!(e.contains("outside the representable range"), "{e}");
    }

    /// A zone with a daylight-saving switch on 2026-03-29 (01:00Z: 02:00 local becomes 03:00)
    /// and back on 2026-10-25 (01:00Z: 03:00 local becomes 02:00), like central Europe.
    #[derive(Clone, Copy, Debug)]
    struct Cet;

    impl Cet {
        fn offset_at_utc(utc: &NaiveDateTime) -> FixedOffset {
            let start = NaiveDate::from_ymd_opt(2026, 3, 29)
                .unwrap()
                .and_hms_opt(1, 0, 0)
                .unwrap();
            let end = NaiveDate::from_ymd_opt(2026, 10, 25)
                .unwrap()
                .and_hms_opt(1, 0, 0)
                .unwrap();
            let h = if *utc >= start && *utc < end { 2 } else { 1 };
            FixedOffset::east_opt(h * 3600).unwrap()
        }
    }

    impl TimeZone for Cet {
        type Offset = FixedOffset;
        fn from_offset(_: &FixedOffset) -> Self {
            Cet
        }
        fn offset_from_local_date(&self, _: &NaiveDate) -> MappedLocalTime<FixedOffset> {
            unimplemented!("not used by parse_time")
        }
        fn offset_from_local_datetime(&self, l: &NaiveDateTime) -> MappedLocalTime<FixedOffset> {
            let ok = |h: i32| {
                let off = FixedOffset::east_opt(h * 3600).unwrap();
                (Self::offset_at_utc(&(*l - chrono::Duration::hours(h.into()))) == off)
                    .then_some(off)
            };
            match (ok(2), ok(1)) {
                (Some(a), Some(b)) => MappedLocalTime::Ambiguous(a, b),
                (Some(a), None) | (None, Some(a)) => MappedLocalTime::Single(a),
                (None, None) => MappedLocalTime::None,
            }
        }
        fn offset_from_utc_date(&self, _: &NaiveDate) -> FixedOffset {
            unimplemented!("not used by parse_time")
        }
        fn offset_from_utc_datetime(&self, utc: &NaiveDateTime) -> FixedOffset {
            Self::offset_at_utc(utc)
        }
    }

    #[test]
    fn daylight_saving_gap_and_overlap() {
        let e = parse_time_in("2026-03-29 02:30", now(), &Cet)
            .unwrap_err()
            .to_string();
        assert!(e.contains("does not exist in the local time zone"), "{e}");
        assert!(e.contains("\"2026-03-29 02:30\""), "{e}");
        // The repeated hour resolves to its first occurrence (still on summer time).
        assert_eq!(
            parse_time_in("2026-10-25 02:30", now(), &Cet).unwrap(),
            utc(2026, 10, 25, 0, 30, 0)
        );
        // Either side of the switch.
        assert_eq!(
            parse_time_in("2026-07-01 12:00", now(), &Cet).unwrap(),
            utc(2026, 7, 1, 10, 0, 0)
        );
        assert_eq!(
            parse_time_in("2026-12-01 12:00", now(), &Cet).unwrap(),
            utc(2026, 12, 1, 11, 0, 0)
        );
    }

    #[test]
    fn utc_format_has_nine_digits_and_round_trips() {
        let t = utc(2026, 12, 3, 12, 34, 56) + 123_456_789;
        assert_eq!(format_utc(t), "2026-12-03T12:34:56.123456789Z");
        assert_eq!(
            format_utc(utc(2026, 12, 3, 12, 34, 56)),
            "2026-12-03T12:34:56.000000000Z"
        );
        assert_eq!(format_utc(0), "1970-01-01T00:00:00.000000000Z");
        assert_eq!(format_utc(-1), "1969-12-31T23:59:59.999999999Z");
        assert_eq!(p(&format_utc(t)).unwrap(), t);
        // Never panics, even at the ends of the range.
        assert!(format_utc(i64::MIN).starts_with("1677-"));
        assert!(format_utc(i64::MAX).starts_with("2262-"));
    }

    #[test]
    fn local_short_format() {
        let t = utc(2026, 12, 3, 12, 34, 56) + 123_456_789;
        assert_eq!(
            format_local_short_in(t, &plus1()),
            "2026-12-03 13:34:56.123"
        );
        assert_eq!(format_local_short_in(t, &Utc), "2026-12-03 12:34:56.123");
        // Local-time output parses back to the same millisecond.
        assert_eq!(p(&format_local_short_in(t, &plus1())).unwrap(), t - 456_789);
        assert_eq!(format_local_short(t).len(), "2026-12-03 13:34:56.123".len());
    }

    fn store() -> (tempfile::TempDir, std::os::fd::OwnedFd, Store) {
        let t = tempfile::tempdir().unwrap();
        let fd: std::os::fd::OwnedFd = std::fs::File::open(t.path()).unwrap().into();
        let s = Store::open_or_create(std::os::fd::AsFd::as_fd(&fd), t.path()).unwrap();
        (t, fd, s)
    }

    #[test]
    fn resolve_snapshot_numbers() {
        let (t, _fd, s) = store();
        std::fs::write(t.path().join("f"), b"x").unwrap();
        let one = manifest::take(&s, "manual").unwrap();
        let two = manifest::take(&s, "manual").unwrap();
        assert_eq!((one.n, two.n), (1, 2));
        let now = crate::now_ns();
        assert_eq!(resolve(&s, "@1", now).unwrap(), one.t);
        assert_eq!(resolve(&s, " @2 ", now).unwrap(), two.t);
        for bad in ["@3", "@0", "@99999999999999999999999"] {
            let e = resolve(&s, bad, now).unwrap_err().to_string();
            assert!(
                e.starts_with("no snapshot ") && e.ends_with("; `saferoot snapshots` lists them"),
                "{bad}: {e}"
            );
        }
        assert_eq!(
            resolve(&s, "@3", now).unwrap_err().to_string(),
            "no snapshot 3; `saferoot snapshots` lists them"
        );
        for bad in ["@", "@x", "@1a", "@-1", "@Start"] {
            let e = resolve(&s, bad, now).unwrap_err().to_string();
            assert!(e.contains("after `@` give a snapshot number"), "{bad}: {e}");
        }
    }

    #[test]
    fn resolve_start_is_the_newest_run() {
        let (_t, _fd, s) = store();
        let now = crate::now_ns();
        assert_eq!(
            resolve(&s, "@start", now).unwrap_err().to_string(),
            "no `saferoot run` session recorded yet"
        );
        let run = |t: i64| crate::journal::Record {
            note: Some("pi --yolo".into()),
            ..crate::journal::Record::new(t, Op::Run, ".", 1, "saferoot")
        };
        s.journal().append(&run(now - 300)).unwrap();
        s.journal().append(&run(now - 100)).unwrap();
        // Written later but older (a clock step): the newest instant wins, not the last line.
        s.journal().append(&run(now - 200)).unwrap();
        s.journal()
            .append(&crate::journal::Record::new(
                now - 50,
                Op::Mount,
                ".",
                1,
                "saferoot",
            ))
            .unwrap();
        assert_eq!(resolve(&s, "@start", now).unwrap(), now - 100);
    }

    #[test]
    fn resolve_passes_other_forms_to_parse_time() {
        let (_t, _fd, s) = store();
        let now = now();
        assert_eq!(
            resolve(&s, "10m", now).unwrap(),
            parse_time("10m", now).unwrap()
        );
        assert_eq!(
            resolve(&s, "2026-12-03T12:00:00Z", now).unwrap(),
            utc(2026, 12, 3, 12, 0, 0)
        );
        let e = resolve(&s, "yesterday", now).unwrap_err().to_string();
        assert!(e.contains("cannot read time \"yesterday\""), "{e}");
    }
}
