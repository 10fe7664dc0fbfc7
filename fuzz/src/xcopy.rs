//! The `xcopy` target: [`parse`] / [`encode`] of EXTENDED COPY (LID1) parameter lists.
//!
//! Input: the parameter list itself (SPC or Legato format), parsed under the default
//! [`Limits`] and under tiny ones. What `parse` accepts stays within the limits, names only
//! targets it has, and encodes to bytes that parse back to the same list; what it refuses it
//! refuses with a sense the standard names for EXTENDED COPY and a field pointer inside the
//! list.

use cowd::xcopy::params::{CopyList, Format, LOCAL_LU, Limits, ParamError, Segment, encode, parse};

/// `xcopy` fuzz input: a parameter list.
pub fn fuzz_xcopy(data: &[u8]) {
    check_xcopy(data, &Limits::default());
    let tiny = Limits {
        max_target_descriptors: 2,
        max_segment_descriptors: 2,
        max_descriptor_list_length: 120,
        max_segment_length: 4096,
        max_inline_data: 8,
        max_stream_transfer_size: 512,
        fc_n_port_names: true,
    };
    check_xcopy(data, &tiny);
}

/// [`parse`] never panics; an accepted list is within `limits` and round-trips through
/// [`encode`]; a refusal carries an EXTENDED COPY sense and a field pointer inside `list`.
pub fn check_xcopy(list: &[u8], limits: &Limits) {
    match parse(list, limits) {
        Ok(parsed) => check_accepted(list, &parsed, limits),
        Err(e) => check_refused(list, &e),
    }
}

fn check_accepted(list: &[u8], parsed: &CopyList, limits: &Limits) {
    assert!(
        parsed.targets.len() <= usize::from(limits.max_target_descriptors),
        "{} target descriptors accepted",
        parsed.targets.len()
    );
    assert!(
        parsed.segments.len() <= usize::from(limits.max_segment_descriptors),
        "{} segment descriptors accepted",
        parsed.segments.len()
    );
    assert!(parsed.inline.len() as u64 <= u64::from(limits.max_inline_data));
    assert!(
        parsed.inline.len() <= list.len(),
        "more inline data than input"
    );
    if parsed.format == Format::Legato {
        assert!(parsed.inline.is_empty(), "a Legato list with inline data");
    }
    for s in &parsed.segments {
        let (src, dst) = s.ends();
        for end in src.into_iter().chain([dst]) {
            assert!(
                end == LOCAL_LU || usize::from(end) < parsed.targets.len(),
                "segment {s:?} names a target the list does not have"
            );
        }
        // The data a segment writes is in the list, exactly as long as it says.
        let said = match s {
            Segment::InlineToStream { bytes, .. } => Some(*bytes as usize),
            Segment::EmbeddedToStream { bytes, .. } => Some(usize::from(*bytes)),
            _ => None,
        };
        assert_eq!(s.carried(parsed).map(<[u8]>::len), said, "{s:?}");
    }
    let bytes = encode(parsed);
    assert_eq!(
        parse(&bytes, limits).as_ref(),
        Ok(parsed),
        "re-encoding {parsed:?} does not parse back to it"
    );
    assert_eq!(encode(parsed), bytes, "encoding is not deterministic");
}

fn check_refused(list: &[u8], e: &ParamError) {
    let (key, asc, ascq) = e.sense();
    let named = matches!(
        (key, asc, ascq),
        (0x05, 0x1A, 0x00)
            | (0x05, 0x26, 0x00 | 0x06..=0x09 | 0x0B)
            | (0x0A, 0x08, 0x04)
            | (0x0A, 0x26, 0x0B)
    );
    assert!(named, "{e}: sense {key:#04x}/{asc:#04x}/{ascq:#04x}");
    assert!(!list.is_empty(), "an empty list is not an error");
    if let Some(p) = e.field_pointer() {
        assert!(
            usize::from(p) < list.len(),
            "{e}: field pointer {p} outside a list of {} bytes",
            list.len()
        );
        assert_eq!(
            e.sense_key_specific(),
            Some([0x80, (p >> 8) as u8, p as u8])
        );
    }
    assert_eq!(e.segment().is_some(), key == 0x0A, "{e}: segment number");
    assert!(!e.to_string().is_empty());
}
