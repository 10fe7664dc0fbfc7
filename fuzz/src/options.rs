//! The `options` target: [`parse_option`] on any option code and payload.
//!
//! Input: a big-endian u32 option code, then the payload. What `parse_option` accepts must be
//! well-formed and re-encode to the payload; EXPORT_NAME, LIST and STRUCTURED_REPLY are
//! accepted exactly when their payload is valid.

use cowd::nbd::options::{ClientOption, parse_option};
use cowd::nbd::proto::*;

use super::wire::{info_payload, meta_payload};

const KNOWN_OPTIONS: [u32; 10] = [
    OPT_EXPORT_NAME,
    OPT_ABORT,
    OPT_LIST,
    OPT_STARTTLS,
    OPT_INFO,
    OPT_GO,
    OPT_STRUCTURED_REPLY,
    OPT_LIST_META_CONTEXT,
    OPT_SET_META_CONTEXT,
    OPT_EXTENDED_HEADERS,
];

/// `options` fuzz input: a big-endian u32 option code, then the payload.
pub fn fuzz_options(data: &[u8]) {
    if let Some((code, payload)) = data.split_first_chunk::<4>() {
        check_options(u32::from_be_bytes(*code), payload);
    }
}

/// [`parse_option`] never panics; what it accepts is well-formed and re-encodes to the payload
/// it was given; it refuses only options that carry a payload, and it accepts EXPORT_NAME,
/// LIST and STRUCTURED_REPLY exactly when their payload is valid.
pub fn check_options(code: u32, data: &[u8]) {
    let parsed = parse_option(code, data);
    match &parsed {
        Ok(opt) => check_parsed_option(code, data, opt),
        Err(e) => {
            let payload_options = [
                OPT_EXPORT_NAME,
                OPT_LIST,
                OPT_INFO,
                OPT_GO,
                OPT_STRUCTURED_REPLY,
                OPT_LIST_META_CONTEXT,
                OPT_SET_META_CONTEXT,
            ];
            assert!(
                payload_options.contains(&code),
                "option {code} has no payload to check, yet was refused: {e}"
            );
            assert!(!e.0.is_empty(), "refusal without a message");
        }
    }
    match code {
        OPT_EXPORT_NAME => {
            let valid = data.len() <= MAX_STRING_LEN
                && !data.contains(&0)
                && std::str::from_utf8(data).is_ok();
            assert_eq!(
                parsed.is_ok(),
                valid,
                "EXPORT_NAME must be accepted exactly when its payload is a valid name"
            );
        }
        OPT_LIST | OPT_STRUCTURED_REPLY => assert_eq!(
            parsed.is_ok(),
            data.is_empty(),
            "option {code} must be accepted exactly when it has no payload"
        ),
        _ => {}
    }
}

fn assert_nbd_string(s: &str) {
    assert!(
        s.len() <= MAX_STRING_LEN,
        "a string of {} bytes was accepted",
        s.len()
    );
    assert!(!s.contains('\0'), "a string with NUL was accepted: {s:?}");
}

fn check_parsed_option(code: u32, data: &[u8], opt: &ClientOption) {
    // The option code the variant stands for, and the payload that encodes it (None: the
    // payload is ignored).
    let (want_code, encoded) = match opt {
        ClientOption::ExportName(name) => {
            assert_nbd_string(name);
            (OPT_EXPORT_NAME, Some(name.as_bytes().to_vec()))
        }
        ClientOption::Abort => (OPT_ABORT, None),
        ClientOption::List => (OPT_LIST, Some(Vec::new())),
        ClientOption::StartTls => (OPT_STARTTLS, None),
        ClientOption::StructuredReply => (OPT_STRUCTURED_REPLY, Some(Vec::new())),
        ClientOption::ExtendedHeaders => (OPT_EXTENDED_HEADERS, None),
        ClientOption::Info(r) | ClientOption::Go(r) => {
            assert_nbd_string(&r.name);
            let c = if matches!(opt, ClientOption::Info(_)) {
                OPT_INFO
            } else {
                OPT_GO
            };
            (c, Some(info_payload(r.name.as_bytes(), &r.infos)))
        }
        ClientOption::ListMetaContext(m) | ClientOption::SetMetaContext(m) => {
            assert_nbd_string(&m.export);
            for q in &m.queries {
                assert_nbd_string(q);
            }
            assert!(
                m.queries.len() <= data.len() / 4,
                "more queries than the payload can hold"
            );
            let c = if matches!(opt, ClientOption::ListMetaContext(_)) {
                OPT_LIST_META_CONTEXT
            } else {
                OPT_SET_META_CONTEXT
            };
            (c, Some(meta_payload(m.export.as_bytes(), &m.queries)))
        }
        ClientOption::Unknown(c) => {
            assert!(
                !KNOWN_OPTIONS.contains(c),
                "known option {c} parsed as unknown"
            );
            (*c, None)
        }
    };
    assert_eq!(code, want_code, "option {code} parsed as {opt:?}");
    if let Some(encoded) = encoded {
        assert_eq!(
            encoded, data,
            "re-encoding {opt:?} does not give back its payload"
        );
    }
}
