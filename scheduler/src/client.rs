//! A blocking HTTP client for the cluster's APIs (used by `samza-run` and the
//! job coordinator), with the token on every request and errors that say which
//! endpoint answered what.

use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::proto::ErrorBody;

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
        let http = reqwest::blocking::Client::builder()
            .timeout(Duration::from_secs(60))
            .connect_timeout(Duration::from_secs(5))
            .build()
            .expect("an HTTP client with default TLS-less settings builds");
        Client { http, base: base.trim_end_matches('/').to_string(), token: token.to_string() }
    }

    pub fn base(&self) -> &str {
        &self.base
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    fn check(
        &self,
        what: &str,
        path: &str,
        r: reqwest::blocking::Response,
    ) -> anyhow::Result<reqwest::blocking::Response> {
        let status = r.status();
        if status.is_success() {
            return Ok(r);
        }
        let body = r.text().unwrap_or_default();
        let message = serde_json::from_str::<ErrorBody>(&body).map(|e| e.error).unwrap_or(body);
        Err(HttpError {
            status: status.as_u16(),
            message: format!("{what} {}{path}: {status}: {message}", self.base),
        }
        .into())
    }

    pub fn get<T: DeserializeOwned>(&self, path: &str) -> anyhow::Result<T> {
        let r = self
            .http
            .get(self.url(path))
            .bearer_auth(&self.token)
            .send()
            .map_err(|e| anyhow::anyhow!("GET {}{path}: {e}", self.base))?;
        Ok(self.check("GET", path, r)?.json()?)
    }

    pub fn get_bytes(&self, path: &str) -> anyhow::Result<Vec<u8>> {
        let r = self
            .http
            .get(self.url(path))
            .bearer_auth(&self.token)
            .send()
            .map_err(|e| anyhow::anyhow!("GET {}{path}: {e}", self.base))?;
        Ok(self.check("GET", path, r)?.bytes()?.to_vec())
    }

    pub fn post<B: Serialize, T: DeserializeOwned>(&self, path: &str, body: &B) -> anyhow::Result<T> {
        let r = self
            .http
            .post(self.url(path))
            .bearer_auth(&self.token)
            .json(body)
            .send()
            .map_err(|e| anyhow::anyhow!("POST {}{path}: {e}", self.base))?;
        Ok(self.check("POST", path, r)?.json()?)
    }

    pub fn put<B: Serialize>(&self, path: &str, body: &B) -> anyhow::Result<()> {
        let r = self
            .http
            .put(self.url(path))
            .bearer_auth(&self.token)
            .json(body)
            .send()
            .map_err(|e| anyhow::anyhow!("PUT {}{path}: {e}", self.base))?;
        self.check("PUT", path, r).map(drop)
    }

    /// Whether `path` exists (HEAD answers 200).
    pub fn exists(&self, path: &str) -> anyhow::Result<bool> {
        let r = self
            .http
            .head(self.url(path))
            .bearer_auth(&self.token)
            .send()
            .map_err(|e| anyhow::anyhow!("HEAD {}{path}: {e}", self.base))?;
        match r.status().as_u16() {
            404 => Ok(false),
            _ => self.check("HEAD", path, r).map(|_| true),
        }
    }

    pub fn put_bytes(&self, path: &str, body: Vec<u8>) -> anyhow::Result<()> {
        let r = self
            .http
            .put(self.url(path))
            .bearer_auth(&self.token)
            .timeout(Duration::from_secs(600))
            .body(body)
            .send()
            .map_err(|e| anyhow::anyhow!("PUT {}{path}: {e}", self.base))?;
        self.check("PUT", path, r).map(drop)
    }
}
