//! The third-party copy descriptors of the Third-party Copy VPD page (8Fh) of a copy manager
//! that serves EXTENDED COPY (LID1). Pure; `scsi::inquiry` adds the page header.
//!
//! | type  | descriptor                    | content                                        |
//! |-------|-------------------------------|------------------------------------------------|
//! | 0001h | Supported Commands            | 83h: 00h (LID1); 84h: 00h, 03h, 04h            |
//! | 0004h | Parameter Data                | descriptor counts, list and inline lengths     |
//! | 0008h | Supported Descriptors         | the implemented descriptor type codes          |
//! | 000Ch | Supported CSCD Descriptor IDs | FFFFh (the unit that received the command)     |
//! | 8001h | General Copy Operations       | concurrent copies, segment length, granularity |
//!
//! These are the SPC-4 descriptors for EXTENDED COPY (LID1): the ones FreeBSD CTL returns
//! (`ctl_inquiry_evpd_tpc`, `scsi_vpd_tpc_*` in `scsi_all.h`) less its ROD token ones, in
//! ascending order of type. Each is TYPE (2 bytes), LENGTH (2 bytes: what follows, padded to
//! a multiple of 4), then its body. libiscsi reads the Supported Commands descriptor to learn
//! whether RECEIVE COPY RESULTS with COPY STATUS is there.

use super::params::{LOCAL_LU, Limits};
use super::results::{SA_COPY_STATUS, SA_FAILED_SEGMENT_DETAILS, SA_OPERATING_PARAMETERS};

const SUPPORTED_COMMANDS: u16 = 0x0001;
const PARAMETER_DATA: u16 = 0x0004;
const SUPPORTED_DESCRIPTORS: u16 = 0x0008;
const SUPPORTED_CSCD_IDS: u16 = 0x000C;
const GENERAL_COPY_OPERATIONS: u16 = 0x8001;

const EXTENDED_COPY: u8 = 0x83;
const RECEIVE_COPY_RESULTS: u8 = 0x84;
/// EXTENDED COPY service action 00h: LID1.
const SA_LID1: u8 = 0x00;

/// The descriptors of a copy manager that parses with `limits` and runs up to `concurrent`
/// lists at once.
pub fn descriptors(limits: &Limits, concurrent: u32) -> Vec<u8> {
    let mut page = Vec::new();

    let commands: [(u8, &[u8]); 2] = [
        (EXTENDED_COPY, &[SA_LID1]),
        (
            RECEIVE_COPY_RESULTS,
            &[
                SA_COPY_STATUS,
                SA_OPERATING_PARAMETERS,
                SA_FAILED_SEGMENT_DETAILS,
            ],
        ),
    ];
    let mut list = Vec::new();
    for (opcode, actions) in commands {
        list.push(opcode);
        list.push(actions.len() as u8);
        list.extend_from_slice(actions);
    }
    let mut body = vec![list.len() as u8];
    body.extend_from_slice(&list);
    descriptor(&mut page, SUPPORTED_COMMANDS, &body);

    let mut body = vec![0u8; 4];
    body.extend_from_slice(&limits.max_target_descriptors.to_be_bytes());
    body.extend_from_slice(&limits.max_segment_descriptors.to_be_bytes());
    body.extend_from_slice(&limits.max_descriptor_list_length.to_be_bytes());
    body.extend_from_slice(&limits.max_inline_data.to_be_bytes());
    body.resize(28, 0);
    descriptor(&mut page, PARAMETER_DATA, &body);

    let codes = limits.implemented_descriptor_codes();
    let mut body = vec![codes.len() as u8];
    body.extend_from_slice(&codes);
    descriptor(&mut page, SUPPORTED_DESCRIPTORS, &body);

    let mut body = 2u16.to_be_bytes().to_vec();
    body.extend_from_slice(&LOCAL_LU.to_be_bytes());
    descriptor(&mut page, SUPPORTED_CSCD_IDS, &body);

    let mut body = concurrent.to_be_bytes().to_vec();
    body.extend_from_slice(&concurrent.to_be_bytes());
    body.extend_from_slice(&limits.max_segment_length.to_be_bytes());
    // DATA SEGMENT GRANULARITY, INLINE DATA GRANULARITY (log2): byte granular.
    body.extend_from_slice(&[0, 0]);
    body.resize(32, 0);
    descriptor(&mut page, GENERAL_COPY_OPERATIONS, &body);

    page
}

/// Appends one descriptor: type, length, `body` padded with zeroes to a multiple of 4.
fn descriptor(page: &mut Vec<u8>, kind: u16, body: &[u8]) {
    let len = body.len().next_multiple_of(4);
    page.extend_from_slice(&kind.to_be_bytes());
    page.extend_from_slice(&(len as u16).to_be_bytes());
    page.extend_from_slice(body);
    page.resize(page.len() + len - body.len(), 0);
}
