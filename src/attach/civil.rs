//! UTC calendar arithmetic on Unix times: the stamp in stored file names and
//! HTTP dates. Pure; no time zones, no leap seconds (Unix time has none).

pub use crate::time::civil_from_days;

/// A moment in UTC, split into calendar fields.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UtcDateTime {
    pub year: i64,
    pub month: u32,
    pub day: u32,
    pub hour: u32,
    pub minute: u32,
    pub second: u32,
    /// 0 = Sunday.
    pub weekday: u32,
}

impl UtcDateTime {
    /// The UTC calendar fields of a Unix time in whole seconds.
    pub fn from_unix_secs(secs: i64) -> UtcDateTime {
        let days = secs.div_euclid(86_400);
        let of_day = secs.rem_euclid(86_400);
        let (year, month, day) = civil_from_days(days);
        UtcDateTime {
            year,
            month,
            day,
            hour: (of_day / 3600) as u32,
            minute: (of_day / 60 % 60) as u32,
            second: (of_day % 60) as u32,
            // 1970-01-01 was a Thursday.
            weekday: (days + 4).rem_euclid(7) as u32,
        }
    }

    /// `YYYYMMDD_HHMMSS`, as in stored file names.
    pub fn file_stamp(&self) -> String {
        format!("{:04}{:02}{:02}_{:02}{:02}{:02}", self.year, self.month, self.day, self.hour, self.minute, self.second)
    }

    /// IMF-fixdate of RFC 9110, e.g. `Sun, 06 Nov 1994 08:49:37 GMT`.
    pub fn http_date(&self) -> String {
        const DAYS: [&str; 7] = ["Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"];
        const MONTHS: [&str; 12] = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];
        format!(
            "{}, {:02} {} {:04} {:02}:{:02}:{:02} GMT",
            DAYS[self.weekday as usize % 7],
            self.day,
            MONTHS[(self.month as usize + 11) % 12],
            self.year,
            self.hour,
            self.minute,
            self.second
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(secs: i64, stamp: &str, http: &str) {
        let t = UtcDateTime::from_unix_secs(secs);
        assert_eq!(t.file_stamp(), stamp, "{secs}");
        assert_eq!(t.http_date(), http, "{secs}");
    }

    #[test]
    fn known_dates_format_as_stamps_and_http_dates() {
        check(0, "19700101_000000", "Thu, 01 Jan 1970 00:00:00 GMT");
        check(784_111_777, "19941106_084937", "Sun, 06 Nov 1994 08:49:37 GMT");
        check(1_704_110_400, "20240101_120000", "Mon, 01 Jan 2024 12:00:00 GMT");
        // A leap day and the day after it.
        check(1_709_164_800, "20240229_000000", "Thu, 29 Feb 2024 00:00:00 GMT");
        check(1_709_251_199, "20240229_235959", "Thu, 29 Feb 2024 23:59:59 GMT");
        check(951_782_400, "20000229_000000", "Tue, 29 Feb 2000 00:00:00 GMT");
        check(-1, "19691231_235959", "Wed, 31 Dec 1969 23:59:59 GMT");
        check(4_102_444_800, "21000101_000000", "Fri, 01 Jan 2100 00:00:00 GMT");
    }

    #[test]
    fn every_day_follows_the_previous_one() {
        let mut previous = civil_from_days(-800_000);
        for days in -799_999..800_000 {
            let (y, m, d) = civil_from_days(days);
            let (py, pm, pd) = previous;
            let next_day = y == py && m == pm && d == pd + 1;
            let next_month = y == py && m == pm + 1 && d == 1;
            let next_year = y == py + 1 && m == 1 && d == 1 && pm == 12 && pd == 31;
            assert!(next_day || next_month || next_year, "{days}: {previous:?} -> {:?}", (y, m, d));
            previous = (y, m, d);
        }
    }
}
