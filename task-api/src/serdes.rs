//! Serdes: how message keys and values turn into bytes and back.
//!
//! Built-in serdes have names used in `job.toml` (`key-serde`, `msg-serde`, per
//! system and per stream): `string`, `json`, `i64`, `i32`, `bytes`. When a
//! stream has a serde configured, the runtime checks every incoming key/message
//! decodes with it before `process` sees it, and fails with an error naming the
//! partition and offset otherwise. Tasks read typed values with the envelope
//! helpers (`message_json`, `message_str`, ...) or any [`Serde`].

use bytes::Bytes;
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::TaskError;

/// Converts values of `T` to and from bytes.
pub trait Serde<T>: Send + Sync {
    fn to_bytes(&self, value: &T) -> Result<Bytes, TaskError>;
    fn from_bytes(&self, bytes: &[u8]) -> Result<T, TaskError>;

    /// Appends the encoding of `value` to `out`; stores call this with a reused
    /// buffer, so serdes that can encode in place should.
    fn write_to(&self, value: &T, out: &mut Vec<u8>) -> Result<(), TaskError> {
        out.extend_from_slice(&self.to_bytes(value)?);
        Ok(())
    }
}

/// UTF-8 text.
#[derive(Clone, Copy, Debug, Default)]
pub struct StringSerde;

impl Serde<String> for StringSerde {
    fn to_bytes(&self, value: &String) -> Result<Bytes, TaskError> {
        Ok(Bytes::copy_from_slice(value.as_bytes()))
    }

    fn write_to(&self, value: &String, out: &mut Vec<u8>) -> Result<(), TaskError> {
        out.extend_from_slice(value.as_bytes());
        Ok(())
    }

    fn from_bytes(&self, bytes: &[u8]) -> Result<String, TaskError> {
        std::str::from_utf8(bytes)
            .map(str::to_string)
            .map_err(|e| TaskError::serde(format!("not utf-8: {e}")))
    }
}

/// JSON through serde.
#[derive(Clone, Copy, Debug, Default)]
pub struct JsonSerde;

impl<T: Serialize + DeserializeOwned> Serde<T> for JsonSerde {
    fn to_bytes(&self, value: &T) -> Result<Bytes, TaskError> {
        serde_json::to_vec(value)
            .map(Bytes::from)
            .map_err(|e| TaskError::serde(format!("cannot encode json: {e}")))
    }

    fn write_to(&self, value: &T, out: &mut Vec<u8>) -> Result<(), TaskError> {
        serde_json::to_writer(out, value).map_err(|e| TaskError::serde(format!("cannot encode json: {e}")))
    }

    fn from_bytes(&self, bytes: &[u8]) -> Result<T, TaskError> {
        serde_json::from_slice(bytes).map_err(|e| TaskError::serde(format!("invalid json: {e}")))
    }
}

/// 64-bit signed integers, 8 bytes big-endian (as Samza's LongSerde).
#[derive(Clone, Copy, Debug, Default)]
pub struct I64Serde;

impl Serde<i64> for I64Serde {
    fn to_bytes(&self, value: &i64) -> Result<Bytes, TaskError> {
        Ok(Bytes::copy_from_slice(&value.to_be_bytes()))
    }

    fn write_to(&self, value: &i64, out: &mut Vec<u8>) -> Result<(), TaskError> {
        out.extend_from_slice(&value.to_be_bytes());
        Ok(())
    }

    fn from_bytes(&self, bytes: &[u8]) -> Result<i64, TaskError> {
        let arr: [u8; 8] = bytes
            .try_into()
            .map_err(|_| TaskError::serde(format!("i64 needs 8 bytes, got {}", bytes.len())))?;
        Ok(i64::from_be_bytes(arr))
    }
}

/// 32-bit signed integers, 4 bytes big-endian.
#[derive(Clone, Copy, Debug, Default)]
pub struct I32Serde;

impl Serde<i32> for I32Serde {
    fn to_bytes(&self, value: &i32) -> Result<Bytes, TaskError> {
        Ok(Bytes::copy_from_slice(&value.to_be_bytes()))
    }

    fn write_to(&self, value: &i32, out: &mut Vec<u8>) -> Result<(), TaskError> {
        out.extend_from_slice(&value.to_be_bytes());
        Ok(())
    }

    fn from_bytes(&self, bytes: &[u8]) -> Result<i32, TaskError> {
        let arr: [u8; 4] = bytes
            .try_into()
            .map_err(|_| TaskError::serde(format!("i32 needs 4 bytes, got {}", bytes.len())))?;
        Ok(i32::from_be_bytes(arr))
    }
}

/// Raw bytes, unchanged.
#[derive(Clone, Copy, Debug, Default)]
pub struct BytesSerde;

impl Serde<Bytes> for BytesSerde {
    fn to_bytes(&self, value: &Bytes) -> Result<Bytes, TaskError> {
        Ok(value.clone())
    }

    fn from_bytes(&self, bytes: &[u8]) -> Result<Bytes, TaskError> {
        Ok(Bytes::copy_from_slice(bytes))
    }
}

/// A built-in serde by its `job.toml` name, used by runtimes to check input.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SerdeName {
    String,
    Json,
    I64,
    I32,
    Bytes,
}

impl SerdeName {
    /// Checks that `bytes` decode with this serde.
    pub fn check(self, bytes: &[u8]) -> Result<(), TaskError> {
        match self {
            SerdeName::String => StringSerde.from_bytes(bytes).map(drop),
            SerdeName::Json => serde_json::from_slice::<serde::de::IgnoredAny>(bytes)
                .map(drop)
                .map_err(|e| TaskError::serde(format!("invalid json: {e}"))),
            SerdeName::I64 => I64Serde.from_bytes(bytes).map(drop),
            SerdeName::I32 => I32Serde.from_bytes(bytes).map(drop),
            SerdeName::Bytes => Ok(()),
        }
    }

    /// Encodes a key or value typed by a person (a command line, a URL):
    /// `42` for i64/i32, JSON text for json, the text itself otherwise.
    pub fn encode_text(self, text: &str) -> Result<Bytes, TaskError> {
        match self {
            SerdeName::String | SerdeName::Bytes => Ok(Bytes::copy_from_slice(text.as_bytes())),
            SerdeName::Json => {
                let v: serde_json::Value = serde_json::from_str(text)
                    .map_err(|e| TaskError::serde(format!("{text:?} is not JSON: {e}")))?;
                JsonSerde.to_bytes(&v)
            }
            SerdeName::I64 => I64Serde.to_bytes(
                &text.trim().parse().map_err(|e| TaskError::serde(format!("{text:?} is not an i64: {e}")))?,
            ),
            SerdeName::I32 => I32Serde.to_bytes(
                &text.trim().parse().map_err(|e| TaskError::serde(format!("{text:?} is not an i32: {e}")))?,
            ),
        }
    }

    /// Decodes stored bytes for a person or a JSON client: numbers, JSON,
    /// text; bytes as text when they are UTF-8, else as hex (`0x...`).
    pub fn decode_json(self, bytes: &[u8]) -> Result<serde_json::Value, TaskError> {
        Ok(match self {
            SerdeName::String => StringSerde.from_bytes(bytes)?.into(),
            SerdeName::Json => serde_json::from_slice(bytes)
                .map_err(|e| TaskError::serde(format!("stored value is not JSON: {e}")))?,
            SerdeName::I64 => I64Serde.from_bytes(bytes)?.into(),
            SerdeName::I32 => I32Serde.from_bytes(bytes)?.into(),
            SerdeName::Bytes => match std::str::from_utf8(bytes) {
                Ok(s) => s.into(),
                Err(_) => {
                    format!("0x{}", bytes.iter().map(|b| format!("{b:02x}")).collect::<String>()).into()
                }
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_for_tools_round_trips_through_the_serdes() {
        let i = SerdeName::I64.encode_text("42").unwrap();
        assert_eq!(i, I64Serde.to_bytes(&42).unwrap());
        assert_eq!(SerdeName::I64.decode_json(&i).unwrap(), serde_json::json!(42));
        assert!(SerdeName::I64.encode_text("x").unwrap_err().to_string().contains("not an i64"));
        assert_eq!(SerdeName::Json.decode_json(br#"{"a":1}"#).unwrap(), serde_json::json!({"a": 1}));
        assert_eq!(SerdeName::Bytes.decode_json(&[0xff, 1]).unwrap(), serde_json::json!("0xff01"));
        assert_eq!(SerdeName::String.encode_text("user-7").unwrap(), Bytes::from_static(b"user-7"));
    }

    #[test]
    fn round_trips() {
        assert_eq!(I64Serde.from_bytes(&I64Serde.to_bytes(&-5).unwrap()).unwrap(), -5);
        assert_eq!(I32Serde.from_bytes(&I32Serde.to_bytes(&7).unwrap()).unwrap(), 7);
        let s = "héllo".to_string();
        assert_eq!(StringSerde.from_bytes(&StringSerde.to_bytes(&s).unwrap()).unwrap(), s);
        let v: Vec<u32> = JsonSerde.from_bytes(b"[1,2]").unwrap();
        let mut out = b"x".to_vec();
        JsonSerde.write_to(&v, &mut out).unwrap();
        I64Serde.write_to(&258, &mut out).unwrap();
        StringSerde.write_to(&s, &mut out).unwrap();
        assert_eq!(out, [&b"x[1,2]\0\0\0\0\0\0\x01\x02"[..], s.as_bytes()].concat());
        assert_eq!(v, vec![1, 2]);
        assert!(SerdeName::Json.check(b"{oops").unwrap_err().to_string().contains("invalid json"));
        assert!(SerdeName::I64.check(b"abc").is_err());
        assert!(SerdeName::String.check(&[0xff]).is_err());
    }
}
