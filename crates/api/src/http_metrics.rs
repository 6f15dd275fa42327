//! Request counts and latency by route, method and status, for every route.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, RwLock};
use std::task::{ready, Context, Poll};
use std::time::Instant;

use axum::extract::MatchedPath;
use axum::http::{Method, Request};
use axum::response::Response;
use metrics::{Counter, Histogram};
use pin_project_lite::pin_project;
use tower::{Layer, Service};

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
    fn record(&self, route: &str, method: &'static str, status: u16, seconds: f64) {
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

/// Times every request and records it under its route. A tower layer
/// rather than `middleware::from_fn`: that one costs every request a clone
/// of the inner service, a boxed `Next` and a boxed future, and this layer
/// sits in front of every route.
#[derive(Clone, Default)]
pub struct HttpMetricsLayer {
    metrics: Arc<HttpMetrics>,
}

impl<S> Layer<S> for HttpMetricsLayer {
    type Service = TrackHttp<S>;

    fn layer(&self, inner: S) -> TrackHttp<S> {
        TrackHttp {
            inner,
            metrics: Arc::clone(&self.metrics),
        }
    }
}

#[derive(Clone)]
pub struct TrackHttp<S> {
    inner: S,
    metrics: Arc<HttpMetrics>,
}

impl<S, B> Service<Request<B>> for TrackHttp<S>
where
    S: Service<Request<B>, Response = Response>,
{
    type Response = Response;
    type Error = S::Error;
    type Future = Tracked<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        // Before the inner call: the gate does its authentication and rate
        // limit synchronously in `call`, and that is part of the request.
        let started = Instant::now();
        let route = request.extensions().get::<MatchedPath>().cloned();
        let method = method_label(request.method());
        Tracked {
            inner: self.inner.call(request),
            metrics: Arc::clone(&self.metrics),
            route,
            method,
            started,
        }
    }
}

pin_project! {
    /// The inner service's response future, recorded when it completes.
    pub struct Tracked<F> {
        #[pin]
        inner: F,
        metrics: Arc<HttpMetrics>,
        route: Option<MatchedPath>,
        method: &'static str,
        started: Instant,
    }
}

impl<F, E> Future for Tracked<F>
where
    F: Future<Output = Result<Response, E>>,
{
    type Output = Result<Response, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let result = ready!(this.inner.poll(cx));
        if let Ok(response) = &result {
            let route = this.route.as_ref().map_or(UNMATCHED, MatchedPath::as_str);
            this.metrics.record(
                route,
                this.method,
                response.status().as_u16(),
                this.started.elapsed().as_secs_f64(),
            );
        }
        Poll::Ready(result)
    }
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
