//! Prune policy: which backups of an export to keep ([`KeepPolicy`] → [`PrunePlan`]).
//!
//! Backups are taken newest first by snapshot time (UTC). `last N` keeps the N newest;
//! `daily N` keeps the newest backup of each of the N most recent days that have backups;
//! `hourly` does the same with hours, `weekly` with ISO weeks (Monday to Sunday, the
//! week-numbering year, so the last days of December may belong to week 1 of the next year),
//! `monthly` with calendar months and `yearly` with calendar years (as restic and Proxmox
//! Backup count). `within SPAN` keeps every backup made within SPAN before the newest one
//! (restic's `--keep-within`: measured from the newest backup, not from now, so a repository
//! nobody backs up to any more keeps its last span). A backup kept by any rule is kept, with
//! every rule that keeps it as a reason. With no rule given everything is kept; a policy whose
//! rules are all 0 is refused (it would remove every backup). Backups made after `now` are kept and not counted by the rules ("after now"),
//! and a backup that a running backup uses as its parent is always kept ("parent of a running
//! backup"). The plan only says; [`Repo::remove_backup`] and [`Repo::gc`] act.

use std::collections::HashSet;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use super::{Repo, RepoError};

pub use cowd_api::repo::{KeepPolicy, KeepWithin};

/// Every reason a plan gives for keeping a backup.
pub const KEEP_REASONS: [&str; 10] = [
    "last",
    "hourly",
    "daily",
    "weekly",
    "monthly",
    "yearly",
    "within",
    "no keep rule",
    "after now",
    "parent of a running backup",
];

/// The outcome of a policy: both lists newest first.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct PrunePlan {
    /// Backups kept, each with the rules that keep it.
    pub keep: Vec<(String, Vec<&'static str>)>,
    /// Backups to remove.
    pub remove: Vec<String>,
}

/// Reasons are read back as the [`KEEP_REASONS`] they name (an unknown one is an error).
impl<'de> Deserialize<'de> for PrunePlan {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<PrunePlan, D::Error> {
        #[derive(Deserialize)]
        struct Raw {
            keep: Vec<(String, Vec<String>)>,
            remove: Vec<String>,
        }
        let raw = Raw::deserialize(d)?;
        let reason = |r: &str| {
            KEEP_REASONS
                .into_iter()
                .find(|k| *k == r)
                .ok_or_else(|| serde::de::Error::custom(format!("unknown keep reason {r:?}")))
        };
        let keep = raw
            .keep
            .into_iter()
            .map(|(id, rs)| Ok((id, rs.iter().map(|r| reason(r)).collect::<Result<_, _>>()?)))
            .collect::<Result<_, D::Error>>()?;
        Ok(PrunePlan {
            keep,
            remove: raw.remove,
        })
    }
}

/// Seconds since 1970-01-01 (UTC) of `t`, rounded down.
fn seconds(t: SystemTime) -> i64 {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => d.as_secs() as i64,
        Err(e) => {
            let d = e.duration();
            -(d.as_secs() as i64) - i64::from(d.subsec_nanos() > 0)
        }
    }
}

/// The start of the span `within` before `t`, in seconds since the epoch: years and months
/// first (the day of the month kept, rolling over past a month's end), then days, then hours.
fn span_start(t: SystemTime, within: &KeepWithin) -> i64 {
    let secs = seconds(t);
    let (day, in_day) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let (y, m, d) = civil_date(day);
    let months =
        y * 12 + i64::from(m) - 1 - i64::from(within.years) * 12 - i64::from(within.months);
    let (y, m) = (months.div_euclid(12), months.rem_euclid(12) as u32 + 1);
    let day = day_of(y, m, d) - i64::from(within.days);
    day * 86_400 + in_day - i64::from(within.hours) * 3_600
}

/// (year, month 1-12, day 1-31) of day number `days` (proleptic Gregorian calendar).
pub(crate) fn civil_date(days: i64) -> (i64, u32, u32) {
    // Shift to a calendar starting on 0000-03-01, so the leap day ends each 4/100/400-year era.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097; // day of era, 0..146096
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365; // year of era, 0..399
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100); // day of year from March 1st, 0..365
    let mp = (5 * doy + 2) / 153; // month from March, 0..11
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// Day number of (year, month, day): the inverse of [`civil_date`].
pub(crate) fn day_of(year: i64, month: u32, day: u32) -> i64 {
    let y = year - i64::from(month <= 2);
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = i64::from((month + 9) % 12);
    let doy = (153 * mp + 2) / 5 + i64::from(day) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// ISO 8601 (week-numbering year, week 1-53) of day number `days`.
pub(crate) fn iso_week(days: i64) -> (i64, u32) {
    let weekday = (days + 3).rem_euclid(7); // Monday = 0 (1970-01-01 was a Thursday)
    let thursday = days - weekday + 3; // the week belongs to the year of its Thursday
    let (year, _, _) = civil_date(thursday);
    let week = (thursday - day_of(year, 1, 1)) / 7 + 1;
    (year, week as u32)
}

/// The plan for `backups` (id, snapshot time) under `keep` at `now`, before pins.
pub(crate) fn plan(
    backups: &[(String, SystemTime)],
    keep: &KeepPolicy,
    now: SystemTime,
) -> Result<PrunePlan, RepoError> {
    let within = keep.within.map(|w| !w.is_zero() as u32);
    let rules = [
        keep.last,
        keep.hourly,
        keep.daily,
        keep.weekly,
        keep.monthly,
        keep.yearly,
        within,
    ];
    if rules.iter().any(Option::is_some) && rules.iter().all(|r| r.is_none_or(|n| n == 0)) {
        return Err(RepoError::Invalid(
            "the keep policy keeps no backup (every rule is 0); remove backups one by one instead"
                .into(),
        ));
    }
    let mut order: Vec<&(String, SystemTime)> = backups.iter().collect();
    order.sort_by(|a, b| (b.1, &b.0).cmp(&(a.1, &a.0)));
    let mut reasons: Vec<Vec<&'static str>> = vec![Vec::new(); order.len()];
    let counted: Vec<usize> = (0..order.len()).filter(|&i| order[i].1 <= now).collect();
    for (i, r) in reasons.iter_mut().enumerate() {
        if order[i].1 > now {
            r.push("after now");
        } else if rules.iter().all(Option::is_none) {
            r.push("no keep rule");
        }
    }
    for &i in counted.iter().take(keep.last.unwrap_or(0) as usize) {
        reasons[i].push("last");
    }
    if let (Some(w), Some(&newest)) = (keep.within, counted.first()) {
        let start = span_start(order[newest].1, &w);
        for &i in counted.iter().take_while(|&&i| seconds(order[i].1) > start) {
            reasons[i].push("within");
        }
    }
    // Each rule's bucket of a time: (seconds since the epoch) -> a key equal within a bucket.
    type Bucket = fn(i64) -> (i64, u32);
    let buckets: [(&'static str, Option<u32>, Bucket); 5] = [
        ("hourly", keep.hourly, |s| (s.div_euclid(3_600), 0)),
        ("daily", keep.daily, |s| (s.div_euclid(86_400), 0)),
        ("weekly", keep.weekly, |s| iso_week(s.div_euclid(86_400))),
        ("monthly", keep.monthly, |s| {
            let (y, m, _) = civil_date(s.div_euclid(86_400));
            (y, m)
        }),
        ("yearly", keep.yearly, |s| {
            (civil_date(s.div_euclid(86_400)).0, 0)
        }),
    ];
    for (name, n, bucket) in buckets {
        let n = n.unwrap_or(0) as usize;
        let mut seen = 0;
        let mut current = None;
        for &i in &counted {
            if seen == n {
                break;
            }
            let b = bucket(seconds(order[i].1));
            if current != Some(b) {
                current = Some(b);
                seen += 1;
                reasons[i].push(name);
            }
        }
    }
    let mut out = PrunePlan::default();
    for (b, r) in order.into_iter().zip(reasons) {
        if r.is_empty() {
            out.remove.push(b.0.clone());
        } else {
            out.keep.push((b.0.clone(), r));
        }
    }
    Ok(out)
}

impl Repo {
    /// Which complete backups of `export` to keep and which to remove under `keep` at `now`.
    pub fn prune_plan(
        &self,
        export: &str,
        keep: &KeepPolicy,
        now: SystemTime,
    ) -> Result<PrunePlan, RepoError> {
        let backups: Vec<(String, SystemTime)> = self
            .backups()?
            .into_iter()
            .filter(|m| m.export == export)
            .map(|m| (m.id, m.snapshot_time))
            .collect();
        let mut p = plan(&backups, keep, now)?;
        let parents: HashSet<String> = self
            .in_progress()?
            .into_iter()
            .filter_map(|p| p.parent)
            .collect();
        let (pinned, remove): (Vec<String>, Vec<String>) =
            p.remove.into_iter().partition(|id| parents.contains(id));
        let (leased, remove): (Vec<String>, Vec<String>) = remove
            .into_iter()
            .partition(|id| self.leased_by(id).is_some());
        p.remove = remove;
        for id in pinned {
            p.keep.push((id, vec!["parent of a running backup"]));
        }
        for id in leased {
            p.keep
                .push((id, vec!["in use by a restore or a served export"]));
        }
        let time: std::collections::HashMap<&str, SystemTime> =
            backups.iter().map(|(id, t)| (id.as_str(), *t)).collect();
        p.keep
            .sort_by(|a, b| (time[b.0.as_str()], &b.0).cmp(&(time[a.0.as_str()], &a.0)));
        Ok(p)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn at(s: &str) -> SystemTime {
        humantime::parse_rfc3339(s).unwrap()
    }

    fn set(list: &[(&str, &str)]) -> Vec<(String, SystemTime)> {
        list.iter().map(|(id, t)| (id.to_string(), at(t))).collect()
    }

    fn kept(p: &PrunePlan) -> Vec<&str> {
        p.keep.iter().map(|(id, _)| id.as_str()).collect()
    }

    /// Days since 1970-01-01 (UTC) of `t`, rounded down.
    fn day_number(t: SystemTime) -> i64 {
        seconds(t).div_euclid(86_400)
    }

    fn far() -> SystemTime {
        at("2100-01-01T00:00:00Z")
    }

    #[test]
    fn calendar_matches_humantime_and_iso_weeks() {
        let mut d = day_of(1969, 1, 1);
        while d < day_of(2101, 1, 1) {
            let (y, m, dd) = civil_date(d);
            assert_eq!(day_of(y, m, dd), d);
            if y >= 1970 {
                let t = UNIX_EPOCH + Duration::from_secs(d as u64 * 86_400 + 43_210);
                let s = humantime::format_rfc3339_seconds(t).to_string();
                assert_eq!(&s[..10], format!("{y:04}-{m:02}-{dd:02}"));
                assert_eq!(day_number(t), d);
            }
            d += 1;
        }
        let w = |s: &str| iso_week(day_number(at(s)));
        assert_eq!(w("2020-12-31T12:00:00Z"), (2020, 53));
        assert_eq!(w("2021-01-03T23:59:59Z"), (2020, 53));
        assert_eq!(w("2021-01-04T00:00:00Z"), (2021, 1));
        assert_eq!(w("2024-12-30T00:00:00Z"), (2025, 1));
        assert_eq!(w("2018-12-31T00:00:00Z"), (2019, 1));
        assert_eq!(w("2027-01-01T00:00:00Z"), (2026, 53));
        assert_eq!(w("1970-01-01T00:00:00Z"), (1970, 1));
        assert_eq!(day_number(UNIX_EPOCH - Duration::from_nanos(1)), -1);
    }

    #[test]
    fn plan_json_round_trip() {
        let p = PrunePlan {
            keep: KEEP_REASONS
                .iter()
                .map(|r| (r.to_string(), vec![*r, "last"]))
                .collect(),
            remove: vec!["x".into()],
        };
        let json = serde_json::to_string(&p).unwrap();
        assert_eq!(serde_json::from_str::<PrunePlan>(&json).unwrap(), p);
        let bad = r#"{"keep":[["a",["because"]]],"remove":[]}"#;
        let e = serde_json::from_str::<PrunePlan>(bad).unwrap_err();
        assert!(e.to_string().contains("unknown keep reason"), "{e}");
    }

    #[test]
    fn last_three() {
        let b = set(&[
            ("a", "2024-01-01T00:00:00Z"),
            ("b", "2024-01-02T00:00:00Z"),
            ("c", "2024-01-03T00:00:00Z"),
            ("d", "2024-01-04T00:00:00Z"),
            ("e", "2024-01-05T00:00:00Z"),
        ]);
        let keep = KeepPolicy {
            last: Some(3),
            ..KeepPolicy::default()
        };
        let p = plan(&b, &keep, far()).unwrap();
        assert_eq!(kept(&p), ["e", "d", "c"]);
        assert_eq!(p.remove, ["b", "a"]);
        assert!(p.keep.iter().all(|(_, r)| r == &["last"]));
    }

    #[test]
    fn daily_seven_with_several_per_day() {
        // Days 1..=9 of March with 3 backups each (02:00, 10:00, 23:59:59), none on day 5.
        let mut b = Vec::new();
        for day in (1..=9).filter(|d| *d != 5) {
            for (n, hm) in ["02:00:00", "10:00:00", "23:59:59"].iter().enumerate() {
                b.push((format!("d{day}-{n}"), at(&format!("2024-03-0{day}T{hm}Z"))));
            }
        }
        let keep = KeepPolicy {
            daily: Some(7),
            ..KeepPolicy::default()
        };
        let p = plan(&b, &keep, far()).unwrap();
        // The 7 most recent days with backups are 9,8,7,6,4,3,2; the newest of each.
        assert_eq!(
            kept(&p),
            ["d9-2", "d8-2", "d7-2", "d6-2", "d4-2", "d3-2", "d2-2"]
        );
        assert_eq!(p.remove.len(), b.len() - 7);
        assert!(p.remove.contains(&"d1-2".to_string()));
    }

    #[test]
    fn weekly_across_a_year_boundary() {
        let b = set(&[
            ("mon-w52", "2024-12-23T08:00:00Z"),  // 2024-W52
            ("sun-w52", "2024-12-29T08:00:00Z"),  // 2024-W52
            ("mon-w01", "2024-12-30T08:00:00Z"),  // 2025-W01
            ("new-year", "2025-01-01T08:00:00Z"), // 2025-W01
            ("sun-w01", "2025-01-05T20:00:00Z"),  // 2025-W01
            ("mon-w02", "2025-01-06T01:00:00Z"),  // 2025-W02
        ]);
        let keep = KeepPolicy {
            weekly: Some(2),
            ..KeepPolicy::default()
        };
        let p = plan(&b, &keep, far()).unwrap();
        assert_eq!(kept(&p), ["mon-w02", "sun-w01"]);
        let keep = KeepPolicy {
            weekly: Some(3),
            ..KeepPolicy::default()
        };
        let p = plan(&b, &keep, far()).unwrap();
        assert_eq!(kept(&p), ["mon-w02", "sun-w01", "sun-w52"]);
        assert_eq!(p.remove, ["new-year", "mon-w01", "mon-w52"]);
    }

    #[test]
    fn monthly_across_a_year_boundary() {
        let b = set(&[
            ("nov", "2023-11-15T00:00:00Z"),
            ("dec-a", "2023-12-01T00:00:00Z"),
            ("dec-b", "2023-12-31T23:59:59Z"),
            ("jan-a", "2024-01-01T00:00:00Z"),
            ("jan-b", "2024-01-20T00:00:00Z"),
            ("mar", "2024-03-02T00:00:00Z"),
        ]);
        let keep = KeepPolicy {
            monthly: Some(3),
            ..KeepPolicy::default()
        };
        let p = plan(&b, &keep, far()).unwrap();
        assert_eq!(kept(&p), ["mar", "jan-b", "dec-b"]);
        assert_eq!(p.remove, ["jan-a", "dec-a", "nov"]);
    }

    #[test]
    fn combined_rules_union_with_reasons() {
        let b = set(&[
            ("y1", "2023-06-10T00:00:00Z"),
            ("y2", "2023-07-10T00:00:00Z"),
            ("w1", "2024-02-20T00:00:00Z"),
            ("w2", "2024-02-27T00:00:00Z"),
            ("d1", "2024-03-04T06:00:00Z"),
            ("d2", "2024-03-04T18:00:00Z"),
            ("d3", "2024-03-05T06:00:00Z"),
            ("d4", "2024-03-05T18:00:00Z"),
        ]);
        let keep = KeepPolicy {
            last: Some(1),
            daily: Some(2),
            weekly: Some(2),
            monthly: Some(3),
            ..KeepPolicy::default()
        };
        let p = plan(&b, &keep, far()).unwrap();
        let reasons: Vec<(&str, Vec<&str>)> = p
            .keep
            .iter()
            .map(|(id, r)| (id.as_str(), r.clone()))
            .collect();
        assert_eq!(
            reasons,
            vec![
                ("d4", vec!["last", "daily", "weekly", "monthly"]),
                ("d2", vec!["daily"]),
                ("w2", vec!["weekly", "monthly"]),
                ("y2", vec!["monthly"]),
            ]
        );
        assert_eq!(p.remove, ["d3", "d1", "w1", "y1"]);
    }

    #[test]
    fn no_rule_keeps_everything_zero_rules_refused_future_kept() {
        let b = set(&[("a", "2024-01-01T00:00:00Z"), ("b", "2024-01-02T00:00:00Z")]);
        let p = plan(&b, &KeepPolicy::default(), far()).unwrap();
        assert_eq!(kept(&p), ["b", "a"]);
        assert!(p.remove.is_empty());
        let zero = KeepPolicy {
            last: Some(0),
            daily: Some(0),
            ..KeepPolicy::default()
        };
        assert!(plan(&b, &zero, far()).is_err());
        // As of Jan 1st noon, "b" is in the future: kept, not counted by "last 1".
        let keep = KeepPolicy {
            last: Some(1),
            ..KeepPolicy::default()
        };
        let p = plan(&b, &keep, at("2024-01-01T12:00:00Z")).unwrap();
        assert_eq!(
            p.keep,
            vec![("b".into(), vec!["after now"]), ("a".into(), vec!["last"])]
        );
        assert!(plan(&[], &keep, far()).unwrap().keep.is_empty());
        let never = KeepPolicy {
            within: Some("0d".parse().unwrap()),
            hourly: Some(0),
            ..KeepPolicy::default()
        };
        assert!(
            plan(&b, &never, far()).is_err(),
            "a span of nothing keeps nothing"
        );
    }

    #[test]
    fn hourly_and_yearly_buckets() {
        let b = set(&[
            ("h1", "2024-03-05T10:05:00Z"),
            ("h2", "2024-03-05T10:55:00Z"),
            ("h3", "2024-03-05T11:00:00Z"),
            ("h4", "2024-03-05T11:59:59Z"),
            ("y0", "2022-12-31T23:59:59Z"),
            ("y1", "2023-01-01T00:00:00Z"),
            ("y2", "2023-12-31T00:00:00Z"),
        ]);
        let hourly = KeepPolicy {
            hourly: Some(2),
            ..KeepPolicy::default()
        };
        assert_eq!(kept(&plan(&b, &hourly, far()).unwrap()), ["h4", "h2"]);
        let yearly = KeepPolicy {
            yearly: Some(3),
            ..KeepPolicy::default()
        };
        let p = plan(&b, &yearly, far()).unwrap();
        assert_eq!(kept(&p), ["h4", "y2", "y0"]);
        assert!(p.keep.iter().all(|(_, r)| r == &["yearly"]));
    }

    #[test]
    fn within_counts_back_from_the_newest_backup_as_a_calendar_does() {
        let w = |s: &str| KeepPolicy {
            within: Some(s.parse().unwrap()),
            ..KeepPolicy::default()
        };
        let b = set(&[
            ("new", "2023-03-31T12:00:00Z"),
            ("mar3", "2023-03-03T12:00:01Z"),
            ("mar3b", "2023-03-03T12:00:00Z"),
            ("feb", "2023-02-28T12:00:00Z"),
            ("old", "2021-03-31T12:00:00Z"),
        ]);
        // From now or from the newest backup: a repository left alone keeps its last month.
        let p = plan(&b, &w("1m"), far()).unwrap();
        // A month before March 31st is "February 31st": March 3rd (2023 is a common year);
        // only what is after that instant is within.
        assert_eq!(kept(&p), ["new", "mar3"]);
        assert!(p.keep.iter().all(|(_, r)| r == &["within"]));
        assert_eq!(
            kept(&plan(&b, &w("28d12h"), far()).unwrap()),
            ["new", "mar3", "mar3b"]
        );
        assert_eq!(kept(&plan(&b, &w("2y1h"), far()).unwrap()).len(), 5);
        assert_eq!(
            kept(&plan(&b, &w("2y"), far()).unwrap()),
            ["new", "mar3", "mar3b", "feb"],
            "the start of the span itself is not within"
        );
    }
}
