//! The units operators type and read, parsed the same way by the daemon (flags, settings
//! file) and by `cowctl` (flags): byte sizes (`64K`, `1.5G`), durations (`3`, `500ms`,
//! `1m 30s`) and times (RFC 3339 UTC, as files and reports write them).

use std::time::Duration;

use serde::Deserialize;

/// A byte size written as a number or with a unit suffix.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(try_from = "SizeRepr")]
pub struct Size(pub u64);

#[derive(Deserialize)]
#[serde(untagged)]
enum SizeRepr {
    Bytes(u64),
    Text(String),
}

impl TryFrom<SizeRepr> for Size {
    type Error = String;
    fn try_from(r: SizeRepr) -> Result<Size, String> {
        match r {
            SizeRepr::Bytes(b) => Ok(Size(b)),
            SizeRepr::Text(t) => parse_size(&t).map(Size),
        }
    }
}

/// `x` rounded to thousandths: reports carry measurements, not floating-point noise
/// (`0.263`, not `0.26276499999999997`).
pub fn thousandths(x: f64) -> f64 {
    (x * 1e3).round() / 1e3
}

/// Parses `65536`, `64K`, `64KiB`, `1.5G`, `2T` (binary units).
pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let shift = match unit
        .trim()
        .to_ascii_uppercase()
        .trim_end_matches("IB")
        .trim_end_matches('B')
    {
        "" => 0,
        "K" => 10,
        "M" => 20,
        "G" => 30,
        "T" => 40,
        "P" => 50,
        _ => return Err(format!("{s}: unknown size unit (use K, M, G, T)")),
    };
    let n: f64 = num.parse().map_err(|_| format!("{s}: not a size"))?;
    let bytes = n * (1u64 << shift) as f64;
    if !(0.0..1.8e19).contains(&bytes) {
        return Err(format!("{s}: size out of range"));
    }
    Ok(bytes as u64)
}

/// A duration written as a number of seconds or with units (`3`, `1.5`, `500ms`, `3s`,
/// `1m 30s`, `2h`), as in flags and the settings file.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(try_from = "SecsRepr")]
pub struct Secs(pub f64);

#[derive(Deserialize)]
#[serde(untagged)]
enum SecsRepr {
    Number(f64),
    Text(String),
}

impl TryFrom<SecsRepr> for Secs {
    type Error = String;
    fn try_from(r: SecsRepr) -> Result<Secs, String> {
        match r {
            SecsRepr::Number(n) => parse_duration(&n.to_string()).map(Secs),
            SecsRepr::Text(t) => parse_duration(&t).map(Secs),
        }
    }
}

/// Parses a duration into seconds: a bare number is seconds (`2.5`); otherwise units as
/// humantime reads them (`500ms`, `3s`, `1m 30s`, `2h`).
pub fn parse_duration(s: &str) -> Result<f64, String> {
    let t = s.trim();
    let secs = match t.parse::<f64>() {
        Ok(n) => n,
        Err(_) => humantime::parse_duration(t)
            .map_err(|_| format!("{s}: not a duration (e.g. 30, 30s, 500ms, 1m 30s)"))?
            .as_secs_f64(),
    };
    if secs.is_finite() && secs >= 0.0 && Duration::try_from_secs_f64(secs).is_ok() {
        Ok(secs)
    } else {
        Err(format!("{s}: not a duration (e.g. 30, 30s, 500ms, 1m 30s)"))
    }
}

/// Serde for `SystemTime` as RFC 3339 UTC with microseconds (`2024-05-01T12:00:00.123456Z`),
/// the form of every time in a manifest.
pub mod rfc3339 {
    use std::time::SystemTime;

    use serde::{Deserialize, Deserializer, Serializer};

    /// The text form.
    pub fn format(t: SystemTime) -> String {
        humantime::format_rfc3339_micros(t).to_string()
    }

    /// Parses the text form.
    pub fn parse(s: &str) -> Result<SystemTime, humantime::TimestampError> {
        humantime::parse_rfc3339(s)
    }

    pub fn serialize<S: Serializer>(t: &SystemTime, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format(*t))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<SystemTime, D::Error> {
        let s = String::deserialize(d)?;
        parse(&s).map_err(|e| serde::de::Error::custom(format!("time {s:?}: {e}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("65536"), Ok(65536));
        assert_eq!(parse_size("64K"), Ok(65536));
        assert_eq!(parse_size("64KiB"), Ok(65536));
        assert_eq!(parse_size("1.5G"), Ok(3 << 29));
        assert_eq!(parse_size("2t"), Ok(2 << 40));
        assert!(parse_size("12Q").is_err());
        assert!(parse_size("x").is_err());
        let s: Vec<Size> = serde_json::from_str(r#"[4096, "64K"]"#).unwrap();
        assert_eq!(s, [Size(4096), Size(65536)]);
        assert!(serde_json::from_str::<Size>(r#""lots""#).is_err());
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("2.5"), Ok(2.5));
        assert_eq!(parse_duration("500ms"), Ok(0.5));
        assert_eq!(parse_duration("1m 30s"), Ok(90.0));
        assert!(parse_duration("-1").is_err() && parse_duration("soon").is_err());
        assert!(parse_duration("1e30").is_err() && parse_duration("NaN").is_err());
        let s: Vec<Secs> = serde_json::from_str(r#"[5, 60.5, "2s"]"#).unwrap();
        assert_eq!(s, [Secs(5.0), Secs(60.5), Secs(2.0)]);
        let bad = serde_json::from_str::<Secs>(r#""soon""#).unwrap_err();
        assert!(bad.to_string().contains("not a duration"), "{bad}");
    }

    #[test]
    fn times() {
        let t = rfc3339::parse("2024-05-01T12:00:00.123456Z").unwrap();
        assert_eq!(rfc3339::format(t), "2024-05-01T12:00:00.123456Z");
        assert!(rfc3339::parse("yesterday").is_err());
    }
}
