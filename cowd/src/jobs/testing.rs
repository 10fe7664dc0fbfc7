//! Fixtures of the job table's and the movers' tests.

use super::spec::{EndpointRef, JobSpec, Origin, TransferSpec};

/// A job of `bytes` bytes from export `src` to copy target `vault`.
pub fn spec(bytes: u64) -> JobSpec {
    JobSpec {
        origin: Origin::Other {
            what: "test".into(),
        },
        group: None,
        transfers: vec![TransferSpec {
            segment: 0,
            src: EndpointRef::Export("src".into()),
            src_offset: 0,
            dst: EndpointRef::CopyTarget("vault".into()),
            dst_offset: 0,
            bytes,
        }],
        carried: Vec::new(),
    }
}
