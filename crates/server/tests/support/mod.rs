//! Shared helpers for the black-box tests: a real service process, a real
//! database, real HTTP.
#![allow(dead_code)]

use std::path::Path;

use lambda_testkit::postgres::TestDatabase;
pub mod proxy;

pub use lambda_testkit::service::{ServiceOptions, TestService};
use reqwest::Method;
use serde_json::{json, Value};

pub fn binary() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_lambda-microservice"))
}

/// Which store a test runs on.
#[derive(Debug, Clone, Copy)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// A service on the chosen backend; keeps its database alive as long as it is.
pub struct Harness {
    pub service: TestService,
    pub database: Option<TestDatabase>,
    pub api: Api,
}

impl Harness {
    pub async fn start(backend: Backend, env: &[(&str, &str)]) -> Harness {
        let database = match backend {
            Backend::Sqlite => None,
            Backend::Postgres => Some(TestDatabase::create().await.expect("test database")),
        };
        let mut options = match &database {
            Some(database) => ServiceOptions::postgres(database.url()),
            None => ServiceOptions::default(),
        };
        for (name, value) in env {
            options = options.with_env(name, value);
        }
        let service = TestService::start(binary(), options)
            .await
            .expect("service starts");
        let api = Api::new(&service.base_url);
        Harness {
            service,
            database,
            api,
        }
    }
}

/// A thin HTTP client that returns (status, JSON body, headers).
#[derive(Clone)]
pub struct Api {
    pub base_url: String,
    pub client: reqwest::Client,
    pub token: Option<String>,
}

pub struct Reply {
    pub status: u16,
    pub body: Value,
    pub headers: reqwest::header::HeaderMap,
}

impl Reply {
    /// The API error code, or "" when the body has none.
    pub fn code(&self) -> &str {
        self.body["error"]["code"].as_str().unwrap_or("")
    }

    /// Asserts the status and API error code, printing the reply if not.
    #[track_caller]
    pub fn assert_error(&self, status: u16, code: &str, context: &str) {
        assert_eq!(
            (self.status, self.code()),
            (status, code),
            "{context}: {self:?}"
        );
    }
}

impl std::fmt::Debug for Reply {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.status, self.body)
    }
}

impl Api {
    pub fn new(base_url: &str) -> Api {
        Api {
            base_url: base_url.to_string(),
            client: reqwest::Client::new(),
            token: None,
        }
    }

    pub fn with_token(&self, token: &str) -> Api {
        Api {
            token: Some(token.to_string()),
            ..self.clone()
        }
    }

    pub async fn send(
        &self,
        method: Method,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<Vec<u8>>,
    ) -> Reply {
        let mut request = self
            .client
            .request(method, format!("{}{path}", self.base_url));
        if let Some(token) = &self.token {
            request = request.bearer_auth(token);
        }
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        if let Some(body) = body {
            request = request
                .header("content-type", "application/json")
                .body(body);
        }
        let response = request.send().await.expect("request sent");
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let bytes = response.bytes().await.expect("body read");
        let body = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes)
                .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into()))
        };
        Reply {
            status,
            body,
            headers,
        }
    }

    pub async fn post(&self, path: &str, headers: &[(&str, &str)], body: &Value) -> Reply {
        self.send(
            Method::POST,
            path,
            headers,
            Some(body.to_string().into_bytes()),
        )
        .await
    }

    pub async fn get(&self, path: &str) -> Reply {
        self.send(Method::GET, path, &[], None).await
    }

    /// The Prometheus text of `/metrics` (no token needed).
    pub async fn metrics_text(&self) -> String {
        self.client
            .get(format!("{}/metrics", self.base_url))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }

    pub async fn delete(&self, path: &str) -> Reply {
        self.send(Method::DELETE, path, &[], None).await
    }

    /// The raw reply to an initialize.
    pub async fn initialize_reply(&self, language_title: &str, body: &Value) -> Reply {
        self.post(
            "/api/v1/initialize",
            &[("Language-Title", language_title)],
            body,
        )
        .await
    }

    /// Initializes a session and returns its id, panicking with the body on failure.
    pub async fn initialize(&self, language_title: &str, body: Value) -> String {
        let reply = self.initialize_reply(language_title, &body).await;
        assert_eq!(reply.status, 200, "initialize {language_title}: {reply:?}");
        reply.body["request_id"]
            .as_str()
            .expect("request_id")
            .to_string()
    }

    pub async fn initialize_script(&self, language_title: &str, script: &str) -> String {
        self.initialize(language_title, json!({ "script_content": script }))
            .await
    }

    pub async fn execute(&self, request_id: &str, params: Value) -> Reply {
        self.post(
            &format!("/api/v1/execute/{request_id}"),
            &[],
            &json!({ "params": params }),
        )
        .await
    }
}

/// Runs an async test body once per backend.
#[macro_export]
macro_rules! on_both_stores {
    ($name:ident, $body:expr) => {
        mod $name {
            use super::*;
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                ($body)(Backend::Sqlite).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                ($body)(Backend::Postgres).await
            }
        }
    };
}
