//! The captured client requests in `fixtures/clients/`.

use std::path::PathBuf;

use serde::Deserialize;
use serde_json::Value;

#[derive(Debug, Clone, Deserialize)]
pub struct Capture {
    pub client: String,
    pub method: String,
    pub path: String,
    pub query: String,
    pub headers: Vec<(String, String)>,
    pub body: Value,
    #[serde(skip)]
    pub file: String,
}

/// The redacted relay key every capture carries.
pub const CAPTURED_KEY: &str =
    "cr_0000000000000000000000000000000000000000000000000000000000000000";

impl Capture {
    /// The body as the client sent it: compact JSON in the file's key order.
    pub fn body_bytes(&self) -> Vec<u8> {
        match &self.body {
            Value::Null => Vec::new(),
            body => serde_json::to_vec(body).expect("captured bodies serialise"),
        }
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(key, _)| key.eq_ignore_ascii_case(name))
            .map(|(_, value)| value.as_str())
    }

    pub fn path_and_query(&self) -> String {
        if self.query.is_empty() {
            self.path.clone()
        } else {
            format!("{}?{}", self.path, self.query)
        }
    }

    pub fn is_claude_code(&self) -> bool {
        self.client.contains("claude-code")
    }

    /// The captured request against `base`, every header as captured but
    /// those the HTTP layer owns (host, length, connection).
    pub fn request(&self, http: &reqwest::Client, base: &str) -> reqwest::RequestBuilder {
        self.request_with_key(http, base, CAPTURED_KEY)
    }

    /// How the capture sends its key: `x-api-key` or `bearer`.
    pub fn key_header(&self) -> &'static str {
        if self.header("x-api-key").is_some() {
            "x-api-key"
        } else {
            "bearer"
        }
    }

    /// The captured request with `key` in place of the captured key, in the
    /// same header and scheme.
    pub fn request_with_key(
        &self,
        http: &reqwest::Client,
        base: &str,
        key: &str,
    ) -> reqwest::RequestBuilder {
        let method = reqwest::Method::from_bytes(self.method.as_bytes()).expect("method");
        let mut request = http.request(method, format!("{base}{}", self.path_and_query()));
        for (name, value) in &self.headers {
            let lower = name.to_ascii_lowercase();
            if matches!(lower.as_str(), "host" | "content-length" | "connection") {
                continue;
            }
            request = request.header(name.as_str(), value.replace(CAPTURED_KEY, key));
        }
        if !self.body.is_null() {
            request = request.body(self.body_bytes());
        }
        request
    }
}

pub fn dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fixtures/clients")
}

/// Every capture, sorted by file name.
pub fn all() -> Vec<Capture> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir())
        .expect("fixtures/clients exists")
        .filter_map(|entry| entry.ok().map(|entry| entry.path()))
        .filter(|path| path.extension().is_some_and(|ext| ext == "json"))
        .collect();
    files.sort();
    files
        .into_iter()
        .map(|path| {
            let text = std::fs::read_to_string(&path).expect("readable capture");
            let mut capture: Capture = serde_json::from_str(&text).expect("capture format");
            capture.file = path
                .file_name()
                .unwrap_or_default()
                .to_string_lossy()
                .into_owned();
            capture
        })
        .collect()
}
