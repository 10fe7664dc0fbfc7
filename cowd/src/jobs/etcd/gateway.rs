//! etcd v3 through its JSON gRPC gateway: the few calls the job table makes, over blocking
//! HTTP/1.1.
//!
//! ```text
//!   POST /v3/kv/range          { key, range_end?, keys_only? }         -> { kvs: [KeyValue] }
//!   POST /v3/kv/txn            { compare: [..], success: [RequestOp], failure: [RequestOp] }
//!                                                                      -> { succeeded?, responses }
//!   POST /v3/lease/grant       { TTL }                                 -> { ID, TTL }
//!   POST /v3/lease/keepalive   { ID }                                  -> { result: { ID, TTL? } }
//!   POST /v3/lease/revoke      { ID }
//! ```
//!
//! The gateway speaks proto3's JSON mapping: `bytes` fields (keys, values) are base64, 64-bit
//! integers are decimal strings, and a field at its default value (0, false, empty) is left
//! out: a missing `succeeded` is false, a keepalive without `TTL` means the lease is gone. A
//! gRPC error comes back as an HTTP error status with `{ error, message, code }` (code 5,
//! NOT_FOUND, for a lease that does not exist). etcd 3.4 (Debian's etcd-server) serves these
//! paths; later versions keep them.
//!
//! Why `ureq`: the table is called from plain threads (movers, the copy manager) that must not
//! need a runtime, and every call is one small request and answer. hyper, already in the
//! workspace, is asynchronous and would need a runtime per caller or a bridge to one; ureq is
//! a small, well-kept synchronous client with per-call timeouts and a connection pool, built
//! here without TLS, compression or proxy support (etcd is reached over plain http).

use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use serde_json::{Value, json};

/// The largest answer read (a range over the whole table).
const MAX_ANSWER: u64 = 64 << 20;

/// A lease, as etcd numbers it.
pub type LeaseId = i64;

/// Why a call to etcd failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GatewayError {
    /// Nothing answered in time (connection refused, timeout, reset).
    #[error("etcd at {endpoint} not reached ({path}): {reason}")]
    Unreachable {
        endpoint: String,
        path: &'static str,
        reason: String,
    },
    /// etcd answered with a gRPC error.
    #[error("etcd at {endpoint} refused {path}: {message} (gRPC code {code})")]
    Refused {
        endpoint: String,
        path: &'static str,
        code: u32,
        message: String,
    },
    /// The answer is not what the gateway sends.
    #[error("etcd at {endpoint}: {path}: unexpected answer: {reason}")]
    Protocol {
        endpoint: String,
        path: &'static str,
        reason: String,
    },
}

/// gRPC's NOT_FOUND: what etcd answers when a request names a lease that does not exist.
const GRPC_NOT_FOUND: u32 = 5;

impl GatewayError {
    /// A request named a lease that has expired or was revoked.
    pub fn lease_not_found(&self) -> bool {
        matches!(self, GatewayError::Refused { code, .. } if *code == GRPC_NOT_FOUND)
    }
}

/// One key and its value, with the revisions etcd keeps for it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Kv {
    pub key: Vec<u8>,
    pub value: Vec<u8>,
    pub create_revision: i64,
    pub mod_revision: i64,
    /// Puts since the key was created (1 after the first).
    pub version: i64,
    pub lease: LeaseId,
}

/// A condition of a transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cmp {
    /// The key does not exist (`create_revision == 0`).
    Absent(Vec<u8>),
    /// The key exists.
    Present(Vec<u8>),
    /// The key exists and holds this value.
    ValueIs(Vec<u8>, Vec<u8>),
    /// The key was last changed at this revision (compare-and-swap).
    ModRevision(Vec<u8>, i64),
    /// Every key starting with this prefix was last changed before this revision (none
    /// created or changed since a read at the revision before it).
    PrefixModBelow(Vec<u8>, i64),
}

/// An operation of a transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    Put {
        key: Vec<u8>,
        value: Vec<u8>,
        /// Deleted when this lease ends.
        lease: Option<LeaseId>,
    },
    /// Deletes one key.
    Delete(Vec<u8>),
    /// Deletes every key starting with this prefix.
    DeletePrefix(Vec<u8>),
    /// Reads one key.
    Get(Vec<u8>),
    /// Reads every key starting with this prefix.
    GetPrefix(Vec<u8>),
    /// Reads the names of the keys starting with this prefix (their values left empty).
    Keys(Vec<u8>),
}

impl Op {
    /// Puts without a lease.
    pub fn put(key: Vec<u8>, value: Vec<u8>) -> Op {
        Op::Put {
            key,
            value,
            lease: None,
        }
    }
}

/// A transaction: if every condition of `when` holds, `then`, else `otherwise`, atomically.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Txn {
    pub when: Vec<Cmp>,
    pub then: Vec<Op>,
    pub otherwise: Vec<Op>,
}

/// What a transaction did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TxnResult {
    /// `when` held: `then` ran.
    pub succeeded: bool,
    /// The keys read by the branch that ran, in the order of its operations.
    pub kvs: Vec<Kv>,
    /// The store's revision the transaction saw (or made).
    pub revision: i64,
}

fn b64(bytes: &[u8]) -> String {
    B64.encode(bytes)
}

/// The first key after every key starting with `prefix` (etcd's `range_end` of a prefix).
pub fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    // Every byte 0xff (or empty): to the end of the key space.
    vec![0]
}

impl Cmp {
    pub fn to_json(&self) -> Value {
        match self {
            Cmp::Absent(k) => json!({
                "key": b64(k), "target": "CREATE", "result": "EQUAL", "create_revision": "0"
            }),
            Cmp::Present(k) => json!({
                "key": b64(k), "target": "CREATE", "result": "GREATER", "create_revision": "0"
            }),
            Cmp::ValueIs(k, v) => json!({
                "key": b64(k), "target": "VALUE", "result": "EQUAL", "value": b64(v)
            }),
            Cmp::ModRevision(k, rev) => json!({
                "key": b64(k), "target": "MOD", "result": "EQUAL", "mod_revision": rev.to_string()
            }),
            Cmp::PrefixModBelow(p, rev) => json!({
                "key": b64(p), "range_end": b64(&prefix_end(p)),
                "target": "MOD", "result": "LESS", "mod_revision": rev.to_string()
            }),
        }
    }
}

impl Op {
    pub fn to_json(&self) -> Value {
        match self {
            Op::Put { key, value, lease } => {
                let mut put = json!({ "key": b64(key), "value": b64(value) });
                if let Some(l) = lease {
                    put["lease"] = Value::String(l.to_string());
                }
                json!({ "request_put": put })
            }
            Op::Delete(k) => json!({ "request_delete_range": { "key": b64(k) } }),
            Op::DeletePrefix(p) => json!({
                "request_delete_range": { "key": b64(p), "range_end": b64(&prefix_end(p)) }
            }),
            Op::Get(k) => json!({ "request_range": { "key": b64(k) } }),
            Op::GetPrefix(p) => json!({
                "request_range": { "key": b64(p), "range_end": b64(&prefix_end(p)) }
            }),
            Op::Keys(p) => json!({
                "request_range": {
                    "key": b64(p), "range_end": b64(&prefix_end(p)), "keys_only": true
                }
            }),
        }
    }
}

impl Txn {
    pub fn to_json(&self) -> Value {
        json!({
            "compare": self.when.iter().map(Cmp::to_json).collect::<Vec<_>>(),
            "success": self.then.iter().map(Op::to_json).collect::<Vec<_>>(),
            "failure": self.otherwise.iter().map(Op::to_json).collect::<Vec<_>>(),
        })
    }
}

/// A proto3 JSON int64: a decimal string (or a plain number); missing is 0.
fn int(v: &Value) -> Result<i64, String> {
    match v {
        Value::Null => Ok(0),
        Value::String(s) => s.parse().map_err(|_| format!("{s:?} is not an integer")),
        Value::Number(n) => n.as_i64().ok_or_else(|| format!("{n} is not an int64")),
        other => Err(format!("{other} is not an integer")),
    }
}

fn bytes(v: &Value) -> Result<Vec<u8>, String> {
    match v {
        Value::Null => Ok(Vec::new()),
        Value::String(s) => B64
            .decode(s)
            .map_err(|e| format!("{s:?} is not base64: {e}")),
        other => Err(format!("{other} is not base64 text")),
    }
}

/// The `kvs` of a range answer.
pub fn parse_kvs(answer: &Value) -> Result<Vec<Kv>, String> {
    let Some(kvs) = answer.get("kvs") else {
        return Ok(Vec::new());
    };
    let kvs = kvs.as_array().ok_or("kvs is not a list")?;
    kvs.iter()
        .map(|kv| {
            Ok(Kv {
                key: bytes(&kv["key"])?,
                value: bytes(&kv["value"])?,
                create_revision: int(&kv["create_revision"])?,
                mod_revision: int(&kv["mod_revision"])?,
                version: int(&kv["version"])?,
                lease: int(&kv["lease"])?,
            })
        })
        .collect()
}

/// Whether a transaction's `when` held, and the keys its range operations read.
pub fn parse_txn(answer: &Value) -> Result<TxnResult, String> {
    let succeeded = answer
        .get("succeeded")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    let mut kvs = Vec::new();
    if let Some(responses) = answer.get("responses") {
        for r in responses.as_array().ok_or("responses is not a list")? {
            if let Some(range) = r.get("response_range") {
                kvs.extend(parse_kvs(range)?);
            }
        }
    }
    let revision = int(&answer["header"]["revision"])?;
    Ok(TxnResult {
        succeeded,
        kvs,
        revision,
    })
}

/// The TTL a keepalive answer gives the lease; 0 when the lease is gone.
pub fn parse_keepalive(body: &str) -> Result<i64, String> {
    // A stream of messages, one per request sent: one here.
    let first = serde_json::Deserializer::from_str(body)
        .into_iter::<Value>()
        .next()
        .ok_or("an empty answer")?
        .map_err(|e| e.to_string())?;
    if let Some(err) = first.get("error") {
        return Err(format!("{err}"));
    }
    int(&first["result"]["TTL"])
}

/// A gRPC error answer: its code and message.
fn parse_error(body: &str) -> Option<(u32, String)> {
    let first = serde_json::Deserializer::from_str(body)
        .into_iter::<Value>()
        .next()?
        .ok()?;
    // Streaming calls wrap it: { "error": { "grpc_code", "message", .. } }.
    let e = match first.get("error") {
        Some(inner @ Value::Object(_)) => inner,
        _ => &first,
    };
    let code = e
        .get("code")
        .or_else(|| e.get("grpc_code"))
        .and_then(Value::as_u64)?;
    let message = e
        .get("message")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned();
    Some((code as u32, message))
}

/// etcd's gateway at one client URL.
#[derive(Debug)]
pub struct Gateway {
    /// `http://HOST:PORT`, without a trailing slash.
    endpoint: String,
    agent: ureq::Agent,
}

impl Gateway {
    /// A gateway at `endpoint` (`http://HOST:PORT`); every call gives up after `timeout`.
    pub fn new(endpoint: &str, timeout: Duration) -> Gateway {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .timeout_global(Some(timeout))
            .http_status_as_error(false)
            // etcd is on the storage network: never through a proxy from the environment.
            .proxy(None)
            .build()
            .into();
        Gateway {
            endpoint: endpoint.trim_end_matches('/').to_owned(),
            agent,
        }
    }

    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// POSTs `body` to `path`; the answer's text, or the gRPC error it carries.
    fn call_text(&self, path: &'static str, body: &Value) -> Result<String, GatewayError> {
        let unreachable = |reason: String| GatewayError::Unreachable {
            endpoint: self.endpoint.clone(),
            path,
            reason,
        };
        let mut answer = self
            .agent
            .post(format!("{}{path}", self.endpoint))
            .content_type("application/json")
            .send(body.to_string())
            .map_err(|e| unreachable(e.to_string()))?;
        let status = answer.status().as_u16();
        let text = answer
            .body_mut()
            .with_config()
            .limit(MAX_ANSWER)
            .read_to_string()
            .map_err(|e| unreachable(e.to_string()))?;
        if status != 200 {
            let (code, message) =
                parse_error(&text).unwrap_or((0, format!("HTTP {status}: {}", text.trim())));
            return Err(GatewayError::Refused {
                endpoint: self.endpoint.clone(),
                path,
                code,
                message,
            });
        }
        Ok(text)
    }

    fn call(&self, path: &'static str, body: &Value) -> Result<Value, GatewayError> {
        let text = self.call_text(path, body)?;
        serde_json::from_str(&text).map_err(|e| self.protocol(path, e.to_string()))
    }

    fn protocol(&self, path: &'static str, reason: String) -> GatewayError {
        GatewayError::Protocol {
            endpoint: self.endpoint.clone(),
            path,
            reason,
        }
    }

    /// One key, if it exists.
    pub fn get(&self, key: &[u8]) -> Result<Option<Kv>, GatewayError> {
        const PATH: &str = "/v3/kv/range";
        let answer = self.call(PATH, &json!({ "key": b64(key) }))?;
        let mut kvs = parse_kvs(&answer).map_err(|e| self.protocol(PATH, e))?;
        Ok(kvs.pop())
    }

    /// The keys starting with `prefix`, in key order, without their values.
    pub fn keys(&self, prefix: &[u8]) -> Result<Vec<Kv>, GatewayError> {
        const PATH: &str = "/v3/kv/range";
        let req = json!({
            "key": b64(prefix), "range_end": b64(&prefix_end(prefix)), "keys_only": true
        });
        let answer = self.call(PATH, &req)?;
        parse_kvs(&answer).map_err(|e| self.protocol(PATH, e))
    }

    pub fn txn(&self, txn: &Txn) -> Result<TxnResult, GatewayError> {
        const PATH: &str = "/v3/kv/txn";
        let answer = self.call(PATH, &txn.to_json())?;
        parse_txn(&answer).map_err(|e| self.protocol(PATH, e))
    }

    /// A new lease of `ttl` seconds (etcd may make it longer: its minimum is about 2 s).
    pub fn grant(&self, ttl: i64) -> Result<LeaseId, GatewayError> {
        const PATH: &str = "/v3/lease/grant";
        let answer = self.call(PATH, &json!({ "TTL": ttl.to_string() }))?;
        match int(&answer["ID"]) {
            Ok(id) if id != 0 => Ok(id),
            Ok(_) => Err(self.protocol(PATH, "no lease ID".into())),
            Err(e) => Err(self.protocol(PATH, e)),
        }
    }

    /// Renews `lease`: its TTL from now, or 0 when it has expired or was revoked.
    pub fn keepalive(&self, lease: LeaseId) -> Result<i64, GatewayError> {
        const PATH: &str = "/v3/lease/keepalive";
        let text = self.call_text(PATH, &json!({ "ID": lease.to_string() }))?;
        parse_keepalive(&text).map_err(|e| self.protocol(PATH, e))
    }

    /// Ends `lease` now: the keys put with it are deleted.
    pub fn revoke(&self, lease: LeaseId) -> Result<(), GatewayError> {
        match self.call("/v3/lease/revoke", &json!({ "ID": lease.to_string() })) {
            Err(e) if e.lease_not_found() => Ok(()),
            other => other.map(drop),
        }
    }
}
