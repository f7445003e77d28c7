//! A blocking HTTP client for the cluster's APIs (used by `samza-run` and the
//! job coordinator), with the token on every request and errors that say which
//! endpoint answered what.

use std::time::Duration;

use reqwest::blocking::{RequestBuilder, Response};
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::proto::ErrorBody;

/// `s` as one URL path segment: everything but RFC 3986's unreserved
/// characters percent-encoded.
pub fn encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// An answer other than success, with its status code.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct HttpError {
    pub status: u16,
    pub message: String,
}

impl HttpError {
    /// Whether `e` is a refusal (4xx): retrying the same request will not help.
    pub fn is_refusal(e: &anyhow::Error) -> bool {
        e.downcast_ref::<HttpError>().is_some_and(|h| (400..500).contains(&h.status))
    }
}

#[derive(Clone)]
pub struct Client {
    http: reqwest::blocking::Client,
    base: String,
    token: String,
}

impl Client {
    pub fn new(base: &str, token: &str) -> Client {
        Self::with_timeout(base, token, Duration::from_secs(60))
    }

    /// A client whose calls give up after `timeout` (connecting included).
    pub fn with_timeout(base: &str, token: &str, timeout: Duration) -> Client {
        let http = reqwest::blocking::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout.min(Duration::from_secs(5)))
            .build()
            .expect("an HTTP client with default TLS-less settings builds");
        Client { http, base: base.trim_end_matches('/').to_string(), token: token.to_string() }
    }

    /// A client of another server with the same token and connection pool
    /// (a reqwest client is a thread and a pool: build one, not one per call).
    pub fn at(&self, base: &str) -> Client {
        Client {
            http: self.http.clone(),
            base: base.trim_end_matches('/').to_string(),
            token: self.token.clone(),
        }
    }

    /// The same client with another token.
    pub fn with_token(mut self, token: &str) -> Client {
        self.token = token.to_string();
        self
    }

    pub fn base(&self) -> &str {
        &self.base
    }

    /// Sends `method path` with the token, `build` adding the body; any
    /// answer but a success is an error naming the endpoint.
    fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        build: impl FnOnce(RequestBuilder) -> RequestBuilder,
    ) -> anyhow::Result<Response> {
        let req = self.http.request(method.clone(), format!("{}{path}", self.base)).bearer_auth(&self.token);
        let r = build(req).send().map_err(|e| anyhow::anyhow!("{method} {}{path}: {e}", self.base))?;
        let status = r.status();
        if status.is_success() {
            return Ok(r);
        }
        let body = r.text().unwrap_or_default();
        let message = serde_json::from_str::<ErrorBody>(&body).map(|e| e.error).unwrap_or(body);
        Err(HttpError {
            status: status.as_u16(),
            message: format!("{method} {}{path}: {status}: {message}", self.base),
        }
        .into())
    }

    pub fn get<T: DeserializeOwned>(&self, path: &str) -> anyhow::Result<T> {
        Ok(self.send(reqwest::Method::GET, path, |r| r)?.json()?)
    }

    pub fn get_bytes(&self, path: &str) -> anyhow::Result<Vec<u8>> {
        Ok(self.send(reqwest::Method::GET, path, |r| r)?.bytes()?.to_vec())
    }

    pub fn post<B: Serialize, T: DeserializeOwned>(&self, path: &str, body: &B) -> anyhow::Result<T> {
        Ok(self.send(reqwest::Method::POST, path, |r| r.json(body))?.json()?)
    }

    pub fn put<B: Serialize>(&self, path: &str, body: &B) -> anyhow::Result<()> {
        self.send(reqwest::Method::PUT, path, |r| r.json(body)).map(drop)
    }

    /// Whether `path` exists (HEAD answers 200, not 404).
    pub fn exists(&self, path: &str) -> anyhow::Result<bool> {
        match self.send(reqwest::Method::HEAD, path, |r| r) {
            Ok(_) => Ok(true),
            Err(e) if e.downcast_ref::<HttpError>().is_some_and(|h| h.status == 404) => Ok(false),
            Err(e) => Err(e),
        }
    }

    pub fn put_bytes(&self, path: &str, body: Vec<u8>) -> anyhow::Result<()> {
        self.send(reqwest::Method::PUT, path, |r| r.timeout(Duration::from_secs(600)).body(body)).map(drop)
    }
}
