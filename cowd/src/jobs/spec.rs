//! What a copy job is, in plain data: what to copy from where to where, and how it ended.
//!
//! A [`JobSpec`] names its endpoints ([`EndpointRef`]), never holds them: the job table may
//! live in another process (etcd), and each mover reaches the endpoints itself, a copy target
//! through one of its paths, an export through the daemon (in process, or over NBD from another
//! host). So a spec serialises to JSON and back unchanged.
//!
//! ```text
//!   JobSpec { origin, group, transfers: [ TransferSpec { src: EndpointRef, src_offset,
//!                                                       dst: EndpointRef, dst_offset, bytes } ] }
//!   EndpointRef: Export(name) | CopyTarget(name) | Inline (JobSpec::carried, from src_offset)
//!   Outcome: Done { bytes } | Failed { error: JobError, segment, reason }
//! ```

use std::fmt;

use serde::{Deserialize, Serialize};

/// A job's number in its table.
pub type JobId = u64;

/// Something a mover reads or writes.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind", content = "name")]
pub enum EndpointRef {
    /// An export of the daemon, by name (its whole device stack, so writes to it go through
    /// copy-before-write).
    Export(String),
    /// A configured copy target, by name, reached through one of its paths.
    CopyTarget(String),
    /// The bytes the requester sent with its request (an EXTENDED COPY's inline or embedded
    /// data), carried in the job ([`JobSpec::carried`]): a source only.
    Inline,
}

impl EndpointRef {
    /// The copy target's name, if this is one.
    pub fn copy_target(&self) -> Option<&str> {
        match self {
            EndpointRef::CopyTarget(name) => Some(name),
            EndpointRef::Export(_) | EndpointRef::Inline => None,
        }
    }
}

impl fmt::Display for EndpointRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EndpointRef::Export(name) => write!(f, "export:{name}"),
            EndpointRef::CopyTarget(name) => write!(f, "copy-target:{name}"),
            EndpointRef::Inline => f.write_str("inline data"),
        }
    }
}

/// One segment: `bytes` from `src` at `src_offset` to `dst` at `dst_offset`. A stream side
/// ignores its offset: streams are written and read in order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TransferSpec {
    /// The number of the segment descriptor in its list (0 for a backup).
    pub segment: u16,
    pub src: EndpointRef,
    pub src_offset: u64,
    pub dst: EndpointRef,
    pub dst_offset: u64,
    pub bytes: u64,
}

/// Who asked for the job.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum Origin {
    /// An EXTENDED COPY received by the unit of `export` (LIST IDENTIFIER `list_id`).
    ExtendedCopy { export: String, list_id: u8 },
    /// `cowctl start-backup EXPORT --to copy-target:NAME`.
    Backup { export: String, backup: String },
    /// A test or a tool.
    Other { what: String },
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Origin::ExtendedCopy { export, list_id } => {
                write!(f, "EXTENDED COPY on {export} (list {list_id})")
            }
            Origin::Backup { backup, .. } => write!(f, "backup {backup}"),
            Origin::Other { what } => f.write_str(what),
        }
    }
}

/// A copy job: what the requester asked for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobSpec {
    pub origin: Origin,
    /// The port group of the target port the request came in on: only movers' initiator ports
    /// of this group may serve it. `None`: every initiator port.
    pub group: Option<String>,
    pub transfers: Vec<TransferSpec>,
    /// The bytes the request carried (an EXTENDED COPY's inline data, then its segments'
    /// embedded data), once for all its [`EndpointRef::Inline`] sources. Base64 in JSON,
    /// left out when empty.
    #[serde(default, skip_serializing_if = "Vec::is_empty", with = "base64_bytes")]
    pub carried: Vec<u8>,
}

impl JobSpec {
    /// Total bytes to copy.
    pub fn bytes(&self) -> u64 {
        self.transfers.iter().map(|t| t.bytes).sum()
    }

    /// The copy targets the job needs, each once, in the order first named.
    pub fn copy_targets(&self) -> Vec<&str> {
        let mut out: Vec<&str> = Vec::new();
        for t in &self.transfers {
            for e in [&t.src, &t.dst] {
                if let Some(name) = e.copy_target()
                    && !out.contains(&name)
                {
                    out.push(name);
                }
            }
        }
        out
    }
}

/// Why a job failed, in the classes the requester maps to sense data.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JobError {
    /// No mover reached a copy target through any path (COPY TARGET DEVICE NOT REACHABLE).
    NotReachable,
    /// A device failed while copying (THIRD PARTY DEVICE FAILURE).
    DeviceFailure,
    /// A copy target is not what the job needs (INCORRECT COPY TARGET DEVICE TYPE).
    DeviceType,
    /// Cancelled by the requester or the operator.
    Cancelled,
}

impl fmt::Display for JobError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            JobError::NotReachable => "copy target not reachable",
            JobError::DeviceFailure => "device failure",
            JobError::DeviceType => "incorrect copy target device type",
            JobError::Cancelled => "cancelled",
        })
    }
}

/// How a job ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "result")]
pub enum Outcome {
    Done {
        bytes: u64,
    },
    Failed {
        error: JobError,
        /// The segment that failed.
        segment: u16,
        /// Which side failed: `true` the source.
        source: bool,
        /// For people: every path tried and why each failed, or the device error.
        reason: String,
    },
}

impl Outcome {
    pub fn is_done(&self) -> bool {
        matches!(self, Outcome::Done { .. })
    }
}

/// Bytes as base64 text (the JSON a job table stores stays compact and readable).
mod base64_bytes {
    use base64::Engine as _;
    use base64::engine::general_purpose::STANDARD;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(bytes: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&STANDARD.encode(bytes))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let text = String::deserialize(d)?;
        STANDARD.decode(text).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_and_carried_bytes_are_json_as_the_job_tables_store_them() {
        let cases = [
            (
                EndpointRef::Export("db".into()),
                r#"{"kind":"export","name":"db"}"#,
            ),
            (
                EndpointRef::CopyTarget("vault".into()),
                r#"{"kind":"copy_target","name":"vault"}"#,
            ),
            (EndpointRef::Inline, r#"{"kind":"inline"}"#),
        ];
        for (ep, json) in cases {
            assert_eq!(serde_json::to_string(&ep).unwrap(), json);
            assert_eq!(serde_json::from_str::<EndpointRef>(json).unwrap(), ep);
        }
        let mut spec = crate::jobs::testing::spec(7);
        let plain = serde_json::to_value(&spec).unwrap();
        assert!(plain.get("carried").is_none(), "{plain}");
        spec.carried = b"label\0\xff".to_vec();
        let json = serde_json::to_value(&spec).unwrap();
        assert_eq!(json["carried"], "bGFiZWwA/w==");
        assert_eq!(
            serde_json::from_value::<JobSpec>(json.clone()).unwrap(),
            spec
        );
        let mut bad = json;
        bad["carried"] = "not base64!".into();
        assert!(serde_json::from_value::<JobSpec>(bad).is_err());
        // A spec stored before `carried` existed reads as carrying nothing.
        let old = serde_json::from_value::<JobSpec>(plain).unwrap();
        assert!(old.carried.is_empty());
    }
}
