//! The daemon's protocol (docs/toolstack.md, "Processes"): one JSON object
//! per line each way over `/run/basalt/basalt.sock`, each with the version
//! `v`. A request names its `op`; a reply holds `ok` or `err`.
//!
//! ```text
//! {"v":1,"op":"define","file":"/tmp/a.toml","toml":"name = ...","start":true}
//! {"v":1,"op":"start","name":"a"}      shutdown, destroy, undefine: the same
//! {"v":1,"op":"list"}
//! {"v":1,"ok":{"message":"...","vms":[{"name":"a","domain":3}]}}
//! {"v":1,"err":{"message":"... (the cause and the fix)"}}
//! ```

use serde::{Deserialize, Serialize};

/// The protocol's version; a peer speaking another is refused.
pub const VERSION: u32 = 1;

/// What the command asks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "lowercase")]
pub enum Op {
    /// Store a definition (`toml`, as read from `file`); with `start`, start
    /// it too, and forget it again if it does not start.
    Define {
        file: String,
        toml: String,
        #[serde(default)]
        start: bool,
    },
    /// Build and start the stored VM's domain.
    Start { name: String },
    /// Press its power button; wait up to `wait_s` seconds for it to end.
    Shutdown { name: String, wait_s: u32 },
    /// End its domain at once.
    Destroy { name: String },
    /// Every stored VM and its state.
    List,
    /// Forget a stopped VM.
    Undefine { name: String },
    /// A VM's stored definition (the answer's message) and state.
    Info { name: String },
}

/// A request on the wire.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Request {
    pub v: u32,
    #[serde(flatten)]
    pub op: Op,
}

/// One stored VM: its domain's id when it runs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Vm {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub domain: Option<u32>,
}

/// A successful answer: what to print, and for `list` the VMs.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Answer {
    #[serde(default)]
    pub message: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub vms: Vec<Vm>,
}

/// A refusal: the cause and the fix, in one message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Failure {
    pub message: String,
}

/// A reply on the wire.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reply {
    pub v: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ok: Option<Answer>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub err: Option<Failure>,
}

impl Reply {
    pub fn new(result: Result<Answer, String>) -> Reply {
        let (ok, err) = match result {
            Ok(a) => (Some(a), None),
            Err(message) => (None, Some(Failure { message })),
        };
        Reply {
            v: VERSION,
            ok,
            err,
        }
    }

    /// The answer, or the refusal's message.
    pub fn result(self) -> Result<Answer, String> {
        match (self.ok, self.err) {
            (_, Some(f)) => Err(f.message),
            (Some(a), None) => Ok(a),
            (None, None) => Err("basaltd's reply holds neither ok nor err".into()),
        }
    }
}

/// `value` as one line (no newline inside: JSON escapes them).
pub fn encode<T: Serialize>(value: &T) -> String {
    let mut line = serde_json::to_string(value).unwrap_or_default();
    line.push('\n');
    line
}

/// A request line; another version or a malformed line is said plainly.
pub fn decode_request(line: &str) -> Result<Request, String> {
    let value: serde_json::Value =
        serde_json::from_str(line).map_err(|e| format!("not a JSON object: {e}"))?;
    check_version(&value, "basalt")?;
    serde_json::from_value(value).map_err(|e| format!("malformed request: {e}"))
}

/// A reply line.
pub fn decode_reply(line: &str) -> Result<Reply, String> {
    let value: serde_json::Value = serde_json::from_str(line)
        .map_err(|e| format!("basaltd's reply is not a JSON object: {e}"))?;
    check_version(&value, "basaltd")?;
    serde_json::from_value(value).map_err(|e| format!("basaltd's reply is malformed: {e}"))
}

fn check_version(value: &serde_json::Value, who: &str) -> Result<(), String> {
    match value.get("v").and_then(serde_json::Value::as_u64) {
        Some(v) if v == u64::from(VERSION) => Ok(()),
        Some(v) => Err(format!(
            "{who} speaks protocol version {v}, this end {VERSION}: use the basalt and basaltd \
             of one build"
        )),
        None => Err("no protocol version (\"v\") in the message".into()),
    }
}

#[cfg(test)]
mod tests;
