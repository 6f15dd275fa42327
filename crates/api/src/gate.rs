//! What every `/api/v1` request passes through: authentication, the rate
//! limit, then, after the handler, the request log. One layer, because the
//! log needs the caller the authentication found.

use std::convert::Infallible;
use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use axum::extract::{ConnectInfo, MatchedPath, Request};
use axum::http::{header, Method};
use axum::response::{IntoResponse, Response};
use chrono::Utc;
use lambda_access::{
    client_ip, mask_headers, mask_secrets, Authenticator, Principal, RateKey, RateLimiter,
    RouteClass, TrustedProxies,
};
use lambda_core::{Caller, LogBatcher};
use lambda_runtime::Language;
use lambda_store::{ErrorLog, RequestLog};
use serde_json::{json, Value};
use tower::{Layer, Service};
use uuid::Uuid;

use crate::error::{ApiError, ErrorInfo};
use crate::state::AppState;

/// What the execute handler tells the request log.
#[derive(Debug, Clone)]
pub struct ExecuteLog {
    pub session_id: String,
    pub language_title: Option<String>,
    pub cached: bool,
    pub params: Option<Value>,
}

pub struct Gate {
    pub authenticator: Authenticator,
    pub rate_limiter: RateLimiter,
    pub trusted_proxies: TrustedProxies,
    pub batcher: LogBatcher,
}

/// A verified principal as core's caller.
fn caller_for(principal: &Principal, auth_enabled: bool) -> Caller {
    if !auth_enabled {
        return Caller::anonymous();
    }
    let scopes = &principal.scopes;
    Caller {
        subject: Some(principal.subject.clone()),
        execute_languages: Language::ALL
            .into_iter()
            .filter(|language| scopes.allows_execute(language.as_str()))
            .collect(),
        may_read_functions: scopes.allows_read_functions(),
        may_write_functions: scopes.allows_write_functions(),
        admin: scopes.is_admin(),
    }
}

fn route_class(method: &Method, route: &str) -> RouteClass {
    if route.starts_with("/api/v1/execute") && method == Method::POST {
        RouteClass::Execute
    } else if route.starts_with("/api/v1/functions") {
        RouteClass::Functions
    } else {
        RouteClass::Other
    }
}

/// The gate as a tower layer over every `/api/v1` route. Not
/// `middleware::from_fn`: that costs every request a clone of the inner
/// service, a boxed `Next` and the state extracted from a split request.
/// Here authentication and the rate limit run synchronously in `call`, and
/// only the part that awaits (the handler, the request log) is boxed.
#[derive(Clone)]
pub(crate) struct GateLayer {
    state: AppState,
}

impl GateLayer {
    pub(crate) fn new(state: AppState) -> Self {
        GateLayer { state }
    }
}

impl<S> Layer<S> for GateLayer {
    type Service = GateService<S>;

    fn layer(&self, inner: S) -> GateService<S> {
        GateService {
            inner,
            state: self.state.clone(),
        }
    }
}

#[derive(Clone)]
pub(crate) struct GateService<S> {
    inner: S,
    state: AppState,
}

impl<S> Service<Request> for GateService<S>
where
    S: Service<Request, Response = Response, Error = Infallible>,
    S::Future: Send + 'static,
{
    type Response = Response;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Response, Infallible>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request) -> Self::Future {
        let started = Instant::now();
        let gate = &self.state.gate;
        // `MatchedPath` is shared, not copied. The gate is a route layer, so
        // a request here has matched a route; the path is only a fallback.
        let matched = request.extensions().get::<MatchedPath>().cloned();
        let unmatched = matched.is_none().then(|| request.uri().path().to_string());
        let peer = request
            .extensions()
            .get::<ConnectInfo<SocketAddr>>()
            .map(|info| info.0)
            .unwrap_or_else(|| SocketAddr::from((Ipv4Addr::LOCALHOST, 0)));
        let forwarded = request
            .headers()
            .get("x-forwarded-for")
            .and_then(|value| value.to_str().ok());
        let client = client_ip(peer, forwarded, &gate.trusted_proxies);
        // Headers are kept (masked) only for requests that end in an error:
        // copying them for every execute cost more than the execute's own
        // log row.
        let headers = gate
            .batcher
            .logs_requests()
            .then(|| request.headers().clone());
        let mut log = PendingLog {
            gate: Arc::clone(gate),
            matched,
            unmatched,
            client,
            subject: None,
            headers,
            started,
        };

        let authorization = request
            .headers()
            .get(header::AUTHORIZATION)
            .map(|value| value.to_str())
            .transpose();
        let principal = match authorization {
            Err(_) => Err(ApiError::unauthorized(
                "the Authorization header is not valid text",
            )),
            Ok(authorization) => gate.authenticator.verify(authorization).map_err(|error| {
                ApiError::unauthorized(error.message())
                    .with_header(header::WWW_AUTHENTICATE, error.www_authenticate())
            }),
        };
        let principal = match principal {
            Ok(principal) => principal,
            Err(error) => {
                return Box::pin(async move {
                    let response = refuse(request, error.into_response()).await;
                    Ok(log.finish(response).await)
                })
            }
        };

        log.subject = (!principal.is_anonymous()).then(|| principal.subject.clone());
        let decision = gate.rate_limiter.check(
            route_class(request.method(), log.route()),
            &RateKey::for_request(&principal, client),
            Instant::now(),
        );
        if !decision.allowed {
            return Box::pin(async move {
                let retry_after = decision
                    .retry_after
                    .map(|wait| wait.as_secs().max(1))
                    .unwrap_or(1);
                let mut refused = ApiError::new(
                    axum::http::StatusCode::TOO_MANY_REQUESTS,
                    "RATE_LIMITED",
                    format!("rate limit exceeded; retry after {retry_after} s"),
                )
                .into_response();
                decision.apply_headers(refused.headers_mut());
                let response = refuse(request, refused).await;
                Ok(log.finish(response).await)
            });
        }
        if let Some(mut refused) = declared_oversize(&request, &self.state) {
            decision.apply_headers(refused.headers_mut());
            return Box::pin(async move { Ok(log.finish(refused).await) });
        }
        request
            .extensions_mut()
            .insert(caller_for(&principal, gate.authenticator.is_enabled()));
        let handled = self.inner.call(request);
        Box::pin(async move {
            let mut response = match handled.await {
                Ok(response) => response,
                Err(never) => match never {},
            };
            decision.apply_headers(response.headers_mut());
            Ok(log.finish(response).await)
        })
    }
}

/// A refused request's answer: its small body is read first so that the
/// client's keep-alive connection stays usable, or else the connection is
/// marked as ending with this answer.
async fn refuse(request: Request, response: Response) -> Response {
    if drain_small_body(request).await {
        response
    } else {
        close_connection(response)
    }
}

/// What the request log row needs from the request, kept until the answer.
struct PendingLog {
    gate: Arc<Gate>,
    matched: Option<MatchedPath>,
    unmatched: Option<String>,
    client: IpAddr,
    subject: Option<String>,
    headers: Option<axum::http::HeaderMap>,
    started: Instant,
}

impl PendingLog {
    fn route(&self) -> &str {
        self.matched
            .as_ref()
            .map(MatchedPath::as_str)
            .or(self.unmatched.as_deref())
            .unwrap_or_default()
    }

    /// Queues the row (if this request gets one) and hands the answer back.
    async fn finish(mut self, mut response: Response) -> Response {
        let subject = self.subject.take();
        if let Some(row) = request_log(
            self.route(),
            self.client,
            subject,
            self.headers.as_ref(),
            self.started,
            &mut response,
        ) {
            self.gate.batcher.log_request(row).await;
        }
        response
    }
}

/// A declared `Content-Length` over the route's limit is refused before any
/// of the body is read (`DefaultBodyLimit` still cuts off streamed bodies).
/// Here rather than in a middleware of its own: each layer costs every
/// request a clone of the inner service and a boxed future.
fn declared_oversize(request: &Request, state: &AppState) -> Option<Response> {
    let limit = if request.uri().path().starts_with("/api/v1/execute/") {
        state.config.max_params_size
    } else {
        crate::script_body_limit(&state.config)
    };
    let length = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.parse::<u64>().ok())?;
    // The body stays unread, so this connection cannot carry another
    // request: say so, or a client may reuse it and fail.
    (length > limit as u64).then(|| {
        close_connection(
            ApiError::payload_too_large(format!(
                "request body of {length} bytes is over the limit of {limit} bytes"
            ))
            .into_response(),
        )
    })
}

/// Reads (and drops) a refused request's body when it is small, so the
/// client's keep-alive connection stays usable: a connection whose request
/// body was left unread is closed, and a client that already reused it sees
/// a transport error instead of our answer.
async fn drain_small_body(request: Request) -> bool {
    const DRAIN_LIMIT: usize = 64 * 1024;
    axum::body::to_bytes(request.into_body(), DRAIN_LIMIT)
        .await
        .is_ok()
}

/// Marks a response as the last on its connection (its request body was
/// left unread).
fn close_connection(mut response: Response) -> Response {
    response.headers_mut().insert(
        header::CONNECTION,
        axum::http::HeaderValue::from_static("close"),
    );
    response
}

/// Every execute and every error becomes a request log row.
fn request_log(
    route: &str,
    client: IpAddr,
    subject: Option<String>,
    headers: Option<&axum::http::HeaderMap>,
    started: Instant,
    response: &mut Response,
) -> Option<RequestLog> {
    // Headers are only captured when request logging is on.
    let headers = headers?;
    // Taken, not cloned: its params move into the log row.
    let execute = response.extensions_mut().remove::<ExecuteLog>();
    let error = response.extensions().get::<ErrorInfo>();
    if execute.is_none() && error.is_none() {
        return None;
    }
    let status_code = i32::from(response.status().as_u16());
    let (request_id, language_title, cached, params) = match execute {
        Some(log) => (
            log.session_id,
            log.language_title.unwrap_or_default(),
            log.cached,
            log.params,
        ),
        None => (String::new(), String::new(), false, None),
    };
    let request_payload = params.map(|mut params| {
        mask_secrets(&mut params);
        // Moved in: `json!` would serialize a deep copy of the params (about 3% of
        // the service's CPU on a result-cache hit) and then drop both.
        let mut payload = serde_json::Map::new();
        payload.insert("params".to_owned(), params);
        Value::Object(payload)
    });
    let error_log = error.map(|info| ErrorLog {
        id: Uuid::now_v7(),
        error_code: info.code.to_string(),
        error_message: info.message.clone(),
        stack_trace: info.stack_trace.clone(),
        context: Some(json!({ "route": route })),
    });
    Some(RequestLog {
        id: Uuid::now_v7(),
        request_id,
        language_title,
        timestamp: Utc::now(),
        client_ip: Some(client.to_string()),
        user_id: subject,
        request_headers: error.map(|_| mask_headers(headers)),
        request_payload,
        response_payload: None,
        status_code,
        duration_ms: i32::try_from(started.elapsed().as_millis()).unwrap_or(i32::MAX),
        cached,
        error_details: error.map(|info| json!({"code": info.code, "message": info.message})),
        runtime_metrics: error.map(|_| json!({ "route": route })),
        error: error_log,
    })
}

/// Any path we do not serve: the API's 404 shape rather than an empty body.
pub async fn not_found() -> Response {
    ApiError::new(
        axum::http::StatusCode::NOT_FOUND,
        "NOT_FOUND",
        "no such endpoint",
    )
    .into_response()
}
