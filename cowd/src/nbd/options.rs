//! Parsing of option requests in the fixed newstyle handshake (pure; fuzzed).
//!
//! [`parse_option`] turns an option code and its payload into a [`ClientOption`] or an
//! [`OptionError`] (answered `NBD_REP_ERR_INVALID`). It never panics and never allocates more
//! than the payload it is given.

use super::proto::*;

/// A request for information about an export (`NBD_OPT_INFO` / `NBD_OPT_GO`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InfoRequest {
    pub name: String,
    pub infos: Vec<u16>,
}

/// A metadata context query (`NBD_OPT_LIST_META_CONTEXT` / `NBD_OPT_SET_META_CONTEXT`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetaRequest {
    pub export: String,
    pub queries: Vec<String>,
}

/// One parsed option.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientOption {
    ExportName(String),
    Abort,
    List,
    StartTls,
    Info(InfoRequest),
    Go(InfoRequest),
    StructuredReply,
    ListMetaContext(MetaRequest),
    SetMetaContext(MetaRequest),
    ExtendedHeaders,
    Unknown(u32),
}

/// Why an option payload is malformed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct OptionError(pub &'static str);

struct Cursor<'a>(&'a [u8]);

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], OptionError> {
        if self.0.len() < n {
            return Err(OptionError("option data shorter than its fields say"));
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }

    fn u16(&mut self) -> Result<u16, OptionError> {
        Ok(u16::from_be_bytes(self.take(2)?.try_into().unwrap()))
    }

    fn u32(&mut self) -> Result<u32, OptionError> {
        Ok(u32::from_be_bytes(self.take(4)?.try_into().unwrap()))
    }

    /// A string prefixed by a 32-bit length.
    fn string(&mut self) -> Result<String, OptionError> {
        let n = self.u32()? as usize;
        if n > self.0.len() {
            return Err(OptionError("string length exceeds the option length"));
        }
        parse_string(self.take(n)?)
    }

    fn end(&self) -> Result<(), OptionError> {
        if self.0.is_empty() {
            Ok(())
        } else {
            Err(OptionError("trailing bytes in option data"))
        }
    }
}

/// Validates an NBD string: UTF-8, no NUL, at most 4096 bytes.
pub fn parse_string(b: &[u8]) -> Result<String, OptionError> {
    if b.len() > MAX_STRING_LEN {
        return Err(OptionError("string longer than 4096 bytes"));
    }
    if b.contains(&0) {
        return Err(OptionError("string contains NUL"));
    }
    String::from_utf8(b.to_vec()).map_err(|_| OptionError("string is not UTF-8"))
}

fn empty(data: &[u8]) -> Result<(), OptionError> {
    if data.is_empty() {
        Ok(())
    } else {
        Err(OptionError("option takes no data"))
    }
}

fn info_request(data: &[u8]) -> Result<InfoRequest, OptionError> {
    let mut c = Cursor(data);
    let name = c.string()?;
    let n = c.u16()?;
    let infos = (0..n).map(|_| c.u16()).collect::<Result<Vec<_>, _>>()?;
    c.end()?;
    Ok(InfoRequest { name, infos })
}

fn meta_request(data: &[u8]) -> Result<MetaRequest, OptionError> {
    let mut c = Cursor(data);
    let export = c.string()?;
    let n = c.u32()? as usize;
    if n > c.0.len() / 4 {
        return Err(OptionError("more queries than the option data can hold"));
    }
    let queries = (0..n).map(|_| c.string()).collect::<Result<Vec<_>, _>>()?;
    c.end()?;
    Ok(MetaRequest { export, queries })
}

/// Parses option `code` with payload `data`.
pub fn parse_option(code: u32, data: &[u8]) -> Result<ClientOption, OptionError> {
    Ok(match code {
        OPT_EXPORT_NAME => ClientOption::ExportName(parse_string(data)?),
        OPT_ABORT => ClientOption::Abort,
        OPT_LIST => {
            empty(data)?;
            ClientOption::List
        }
        OPT_STARTTLS => ClientOption::StartTls,
        OPT_INFO => ClientOption::Info(info_request(data)?),
        OPT_GO => ClientOption::Go(info_request(data)?),
        OPT_STRUCTURED_REPLY => {
            empty(data)?;
            ClientOption::StructuredReply
        }
        OPT_LIST_META_CONTEXT => ClientOption::ListMetaContext(meta_request(data)?),
        OPT_SET_META_CONTEXT => ClientOption::SetMetaContext(meta_request(data)?),
        OPT_EXTENDED_HEADERS => ClientOption::ExtendedHeaders,
        other => ClientOption::Unknown(other),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info_payload(name: &[u8], infos: &[u16]) -> Vec<u8> {
        let mut v = (name.len() as u32).to_be_bytes().to_vec();
        v.extend_from_slice(name);
        v.extend_from_slice(&(infos.len() as u16).to_be_bytes());
        for i in infos {
            v.extend_from_slice(&i.to_be_bytes());
        }
        v
    }

    #[test]
    fn go_with_info_requests() {
        let p = info_payload(b"disk", &[INFO_BLOCK_SIZE, INFO_NAME]);
        let o = parse_option(OPT_GO, &p).unwrap();
        let want = InfoRequest {
            name: "disk".into(),
            infos: vec![3, 1],
        };
        assert_eq!(o, ClientOption::Go(want));
    }

    #[test]
    fn name_length_beyond_option_is_invalid() {
        let mut p = info_payload(b"disk", &[]);
        p[3] = 200;
        assert!(parse_option(OPT_INFO, &p).is_err());
        let mut p = info_payload(b"disk", &[1]);
        p.pop();
        assert!(parse_option(OPT_GO, &p).is_err(), "truncated info list");
        let mut p = info_payload(b"disk", &[]);
        p.push(0);
        assert!(parse_option(OPT_GO, &p).is_err(), "trailing byte");
        let p = [0xff, 0xff, 0xff, 0xff];
        assert!(parse_option(OPT_GO, &p).is_err(), "name length 0xffffffff");
    }

    #[test]
    fn names_of_0_4096_and_4097_bytes() {
        assert_eq!(
            parse_option(OPT_EXPORT_NAME, b"").unwrap(),
            ClientOption::ExportName("".into())
        );
        let n4096 = vec![b'a'; 4096];
        assert!(parse_option(OPT_GO, &info_payload(&n4096, &[])).is_ok());
        let n4097 = vec![b'a'; 4097];
        assert!(parse_option(OPT_GO, &info_payload(&n4097, &[])).is_err());
        assert!(parse_option(OPT_EXPORT_NAME, &n4097).is_err());
        assert!(parse_option(OPT_EXPORT_NAME, b"a\0b").is_err());
        assert!(parse_option(OPT_EXPORT_NAME, &[0xc3, 0x28]).is_err());
    }

    #[test]
    fn meta_context_queries() {
        let mut p = 4u32.to_be_bytes().to_vec();
        p.extend_from_slice(b"disk");
        p.extend_from_slice(&2u32.to_be_bytes());
        for q in ["base:allocation", "qemu:"] {
            p.extend_from_slice(&(q.len() as u32).to_be_bytes());
            p.extend_from_slice(q.as_bytes());
        }
        let o = parse_option(OPT_SET_META_CONTEXT, &p).unwrap();
        let want = MetaRequest {
            export: "disk".into(),
            queries: vec!["base:allocation".into(), "qemu:".into()],
        };
        assert_eq!(o, ClientOption::SetMetaContext(want));
        let mut huge = 0u32.to_be_bytes().to_vec();
        huge.extend_from_slice(&u32::MAX.to_be_bytes());
        assert!(parse_option(OPT_LIST_META_CONTEXT, &huge).is_err());
    }

    #[test]
    fn data_on_dataless_options_and_unknown_codes() {
        assert!(parse_option(OPT_LIST, &[1]).is_err());
        assert!(parse_option(OPT_STRUCTURED_REPLY, &[1]).is_err());
        assert_eq!(
            parse_option(OPT_ABORT, &[1, 2]).unwrap(),
            ClientOption::Abort
        );
        assert_eq!(parse_option(4, &[]).unwrap(), ClientOption::Unknown(4));
        assert_eq!(
            parse_option(0xdead, &[9; 9]).unwrap(),
            ClientOption::Unknown(0xdead)
        );
    }
}
