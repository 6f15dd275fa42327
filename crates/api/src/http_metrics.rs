//! Request counts and latency by route, method and status, for every route.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::http::Method;
use axum::middleware::Next;
use axum::response::Response;
use metrics::{Counter, Histogram};

/// The label of requests that matched no route.
const UNMATCHED: &str = "unmatched";

/// The metric handles of each (route, method, status) seen so far.
/// Building the labelled key and finding it in the recorder cost every
/// request three `String`s and two hash lookups; a handle found here costs
/// a read lock and two lookups that allocate nothing. Routes, methods (see
/// [`method_label`]) and statuses are finite sets, so this stays small.
#[derive(Default)]
pub struct HttpMetrics {
    handles: RwLock<HashMap<String, ByMethodAndStatus>>,
}

/// One route's handles, by method label and status.
type ByMethodAndStatus = HashMap<(&'static str, u16), Handles>;

struct Handles {
    requests: Counter,
    duration: Histogram,
}

impl HttpMetrics {
    fn record(&self, route: &str, method: &Method, status: u16, seconds: f64) {
        let method = method_label(method);
        let known = self
            .handles
            .read()
            .unwrap_or_else(|poison| poison.into_inner());
        if let Some(handles) = known
            .get(route)
            .and_then(|by_status| by_status.get(&(method, status)))
        {
            handles.record(seconds);
            return;
        }
        drop(known);
        let labels = [
            ("route", route.to_string()),
            ("method", method.to_string()),
            ("status", status.to_string()),
        ];
        let handles = Handles {
            requests: metrics::counter!("lambda_http_requests_total", &labels),
            duration: metrics::histogram!("lambda_http_request_duration_seconds", &labels),
        };
        handles.record(seconds);
        self.handles
            .write()
            .unwrap_or_else(|poison| poison.into_inner())
            .entry(route.to_string())
            .or_default()
            .insert((method, status), handles);
    }
}

impl Handles {
    fn record(&self, seconds: f64) {
        self.requests.increment(1);
        self.duration.record(seconds);
    }
}

/// A client may send any method name; each would otherwise become a label
/// value of its own (and a series in the recorder, kept for ever).
fn method_label(method: &Method) -> &'static str {
    match *method {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::PATCH => "PATCH",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        _ => "OTHER",
    }
}

/// The middleware: times the request and records it under its route.
pub async fn track_http(
    State(metrics): State<Arc<HttpMetrics>>,
    request: Request,
    next: Next,
) -> Response {
    let started = Instant::now();
    let route = request.extensions().get::<MatchedPath>().cloned();
    let method = request.method().clone();
    let response = next.run(request).await;
    let route = route.as_ref().map_or(UNMATCHED, MatchedPath::as_str);
    metrics.record(
        route,
        &method,
        response.status().as_u16(),
        started.elapsed().as_secs_f64(),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unusual_methods_share_one_label() {
        for name in ["FROBNICATE", "PROPFIND", "X1", "CONNECT", "TRACE"] {
            let method = Method::from_bytes(name.as_bytes()).expect("a valid method name");
            assert_eq!(method_label(&method), "OTHER", "{name}");
        }
        for method in [Method::GET, Method::POST, Method::PUT, Method::DELETE] {
            assert_eq!(method_label(&method), method.as_str());
        }
    }
}
