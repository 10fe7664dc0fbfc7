//! Copy targets: the backup devices data movers copy to (and restore from), by name, with the
//! designators EXTENDED COPY target descriptors match and the paths that reach them.
//!
//! ```toml
//! [[copy_target]]
//! name = "vault"
//! naa = "6001405a1b2c3d4e"            # E4h identification descriptors (NAA, 8 or 16 bytes)
//! fc_name = "50:01:43:80:12:34:56:78" # E0h N_Port_Name descriptors (and so Legato's lists)
//! kind = "block"                      # or "stream" (a tape, a FIFO, an append-only file)
//! paths = [
//!   { via = "nbd://10.0.1.2/vault", port = "be0" },  # tried only from initiator port be0
//!   "nbd://10.0.2.2/vault",                          # tried from any initiator port
//! ]
//!
//! [[copy_target]]
//! name = "tape"
//! naa = "3000000000000b0b"
//! kind = "stream"
//! paths = ["tape:/dev/nst0"]
//! media = ["tape:/dev/nst1"]          # written next when a medium is full
//! ```
//!
//! A mover tries paths in the order listed, for each of its initiator ports in turn (see
//! [`crate::jobs::mover`]). Checked when the daemon starts: names unique and not empty,
//! designators well formed and unique, at least one path, every path parses, a path's port
//! is an initiator port.

use serde::Deserialize;

use super::paths::PathSpec;

/// A copy target as written in cowd.toml.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CopyTargetSetting {
    pub name: String,
    pub naa: Option<String>,
    pub fc_name: Option<String>,
    #[serde(default)]
    pub kind: TargetKind,
    /// Stream targets: bytes per record on the medium (default 64 KiB).
    pub record_size: Option<u32>,
    pub paths: Vec<PathSetting>,
    /// Stream targets: the next media, in order, for when the one written is full.
    #[serde(default)]
    pub media: Vec<String>,
}

/// Whether a copy target is addressed by block or written in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum TargetKind {
    #[default]
    Block,
    Stream,
}

/// One path: a URI or device, optionally only from one initiator port.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(untagged)]
pub enum PathSetting {
    Any(String),
    Through { via: String, port: Option<String> },
}

/// A checked copy target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CopyTarget {
    pub name: String,
    pub naa: Option<Vec<u8>>,
    pub fc_name: Option<[u8; 8]>,
    pub kind: TargetKind,
    pub record_size: u32,
    pub paths: Vec<TargetPath>,
    /// Stream targets: further media (tape: or stream: paths) after the one a path reached.
    pub media: Vec<PathSpec>,
}

/// A checked path of a copy target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TargetPath {
    pub spec: PathSpec,
    /// Only from this initiator port; `None`: from any.
    pub port: Option<String>,
}

/// Default record size of stream targets.
pub const DEFAULT_RECORD_SIZE: u32 = 64 << 10;

impl CopyTargetSetting {
    /// Checks one target; `initiator_ports` are the names a path may name.
    pub fn check(&self, initiator_ports: &[String]) -> Result<CopyTarget, String> {
        let name = &self.name;
        if name.is_empty() || name.contains(['/', ' ', ':']) {
            return Err(format!(
                "copy_target {name:?}: a name is not empty and has no '/', ':' or space"
            ));
        }
        let naa = self
            .naa
            .as_deref()
            .map(|s| parse_naa(s).map_err(|e| format!("copy_target {name}: naa {s:?}: {e}")))
            .transpose()?;
        let fc_name = self
            .fc_name
            .as_deref()
            .map(|s| parse_wwn(s).map_err(|e| format!("copy_target {name}: fc_name {s:?}: {e}")))
            .transpose()?;
        if naa.is_none() && fc_name.is_none() {
            return Err(format!(
                "copy_target {name}: give naa or fc_name (or both): EXTENDED COPY names a target by one"
            ));
        }
        if self.paths.is_empty() {
            return Err(format!("copy_target {name}: no paths"));
        }
        let record_size = self.record_size.unwrap_or(DEFAULT_RECORD_SIZE);
        if record_size < 512 || record_size % 512 != 0 || record_size > 16 << 20 {
            return Err(format!(
                "copy_target {name}: record_size {record_size}: a multiple of 512 up to 16 MiB"
            ));
        }
        let paths = self
            .paths
            .iter()
            .map(|p| {
                let (via, port) = match p {
                    PathSetting::Any(via) => (via, None),
                    PathSetting::Through { via, port } => (via, port.clone()),
                };
                let spec: PathSpec = via
                    .parse()
                    .map_err(|e| format!("copy_target {name}: path {via:?}: {e}"))?;
                if let Some(p) = &port
                    && !initiator_ports.contains(p)
                {
                    return Err(format!(
                        "copy_target {name}: path {via:?}: port {p:?} is not an initiator port"
                    ));
                }
                if spec.is_stream() != (self.kind == TargetKind::Stream) {
                    return Err(format!(
                        "copy_target {name}: path {via:?} is a {} path, the target is kind = \"{}\"",
                        if spec.is_stream() { "stream" } else { "block" },
                        if self.kind == TargetKind::Stream { "stream" } else { "block" },
                    ));
                }
                Ok(TargetPath { spec, port })
            })
            .collect::<Result<_, String>>()?;
        let media = self
            .media
            .iter()
            .map(|m| {
                let spec: PathSpec = m
                    .parse()
                    .map_err(|e| format!("copy_target {name}: medium {m:?}: {e}"))?;
                if spec.is_stream() && self.kind == TargetKind::Stream {
                    Ok(spec)
                } else {
                    Err(format!(
                        "copy_target {name}: medium {m:?}: media are for kind = \"stream\" targets, and are tape: or stream: paths"
                    ))
                }
            })
            .collect::<Result<_, String>>()?;
        Ok(CopyTarget {
            media,
            name: name.clone(),
            naa,
            fc_name,
            kind: self.kind,
            record_size,
            paths,
        })
    }
}

/// Checks every target, and that names and designators are unique.
pub fn check_all(
    settings: &[CopyTargetSetting],
    initiator_ports: &[String],
) -> Result<Vec<CopyTarget>, String> {
    let targets = settings
        .iter()
        .map(|s| s.check(initiator_ports))
        .collect::<Result<Vec<_>, _>>()?;
    for (i, a) in targets.iter().enumerate() {
        for b in &targets[..i] {
            if a.name == b.name {
                return Err(format!("copy_target {}: named twice", a.name));
            }
            if a.naa.is_some() && a.naa == b.naa {
                return Err(format!(
                    "copy_targets {} and {}: the same naa",
                    b.name, a.name
                ));
            }
            if a.fc_name.is_some() && a.fc_name == b.fc_name {
                return Err(format!(
                    "copy_targets {} and {}: the same fc_name",
                    b.name, a.name
                ));
            }
        }
    }
    Ok(targets)
}

/// An NAA designator in hex (8 or 16 bytes, `0x` and `:`/`-` separators allowed); its first
/// nibble is the NAA type (2, 3, 5 or 6).
pub fn parse_naa(s: &str) -> Result<Vec<u8>, String> {
    let bytes = hex(s)?;
    if bytes.len() != 8 && bytes.len() != 16 {
        return Err(format!(
            "{} bytes; an NAA designator has 8 or 16",
            bytes.len()
        ));
    }
    let naa = bytes[0] >> 4;
    let fits = if bytes.len() == 16 {
        naa == 6
    } else {
        (2..=5).contains(&naa)
    };
    if !fits {
        return Err(format!("NAA type {naa} does not fit {} bytes", bytes.len()));
    }
    Ok(bytes)
}

/// A Fibre Channel world-wide name: 8 bytes in hex, `50:01:43:80:12:34:56:78` or plain.
pub fn parse_wwn(s: &str) -> Result<[u8; 8], String> {
    let bytes = hex(s)?;
    bytes
        .try_into()
        .map_err(|b: Vec<u8>| format!("{} bytes; a world-wide name has 8", b.len()))
}

/// Formats a world-wide name as `50:01:43:80:12:34:56:78`.
pub fn wwn_string(w: &[u8]) -> String {
    w.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

fn hex(s: &str) -> Result<Vec<u8>, String> {
    let s = s.trim();
    let s = s.strip_prefix("0x").unwrap_or(s);
    let digits: String = s.chars().filter(|c| !matches!(c, ':' | '-')).collect();
    if digits.is_empty() || digits.len() % 2 != 0 {
        return Err("not an even number of hex digits".into());
    }
    (0..digits.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&digits[i..i + 2], 16).map_err(|_| "not hex".to_owned()))
        .collect()
}

#[cfg(test)]
#[path = "copy_targets_tests.rs"]
mod tests;
