//! The HTTP layer: routing, the request gate (auth, rate limits, request
//! logs), errors, OpenAPI and the metrics endpoint.
//!
//! Handlers only translate between HTTP and `lambda-core`; every error
//! becomes a status and code in one place ([`error`]).
//!
//! Invariant: nothing here decides how a session runs; nothing below this
//! crate knows about HTTP.

use axum::extract::DefaultBodyLimit;
use axum::http::{header, HeaderName, HeaderValue, Method};
use axum::routing::{get, post};
use axum::Router;
use tower_http::cors::{AllowOrigin, CorsLayer};
use utoipa::OpenApi;

pub mod dto;
pub mod error;
pub mod extract;
pub mod gate;
mod http_metrics;
mod routes;
pub mod state;

pub use error::ApiError;
pub use gate::Gate;
pub use routes::system::metrics as metrics_handler;
pub use state::{AppState, Services};

/// Room for the JSON around a script of `MAX_SCRIPT_SIZE`, so the precise
/// check (naming the script's size) is the one that answers.
const BODY_OVERHEAD: usize = 64 * 1024;

/// The body limit of the routes that carry a script (initialize and the
/// function registry); executes are held to `max_params_size`. Both the
/// streaming limit below and the gate's declared-size check use it.
pub(crate) fn script_body_limit(config: &lambda_core::Config) -> usize {
    config.max_script_size + BODY_OVERHEAD
}

#[derive(OpenApi)]
#[openapi(
    info(title = "Lambda Microservice", description = "Run Node.js, Python, Rust and WebAssembly functions, fast and sandboxed."),
    paths(
        routes::sessions::initialize,
        routes::sessions::execute,
        routes::sessions::get_session,
        routes::sessions::delete_session,
        routes::functions::list,
        routes::functions::detail,
        routes::functions::register,
        routes::functions::update,
        routes::functions::retire,
        routes::system::health,
        routes::system::metrics,
        routes::system::openapi,
    ),
    components(schemas(dto::ErrorBody, dto::ErrorDetail)),
    modifiers(&BearerAuth),
    security(("bearer" = []))
)]
pub struct ApiDoc;

struct BearerAuth;

impl utoipa::Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT")
                    .build(),
            ),
        );
    }
}

/// `None` when no origin is configured: the layer would allow nothing, yet
/// cost every response a `Vary` header built afresh (and a layer).
fn cors(origins: &[String]) -> Option<CorsLayer> {
    let origins: Vec<HeaderValue> = origins
        .iter()
        .filter_map(|origin| HeaderValue::from_str(origin).ok())
        .collect();
    if origins.is_empty() {
        return None;
    }
    let layer = CorsLayer::new()
        .allow_origin(AllowOrigin::list(origins))
        .allow_methods([
            Method::GET,
            Method::POST,
            Method::PUT,
            Method::DELETE,
            Method::OPTIONS,
        ])
        .allow_headers([
            header::CONTENT_TYPE,
            header::AUTHORIZATION,
            HeaderName::from_static("language-title"),
            HeaderName::from_static("x-request-id"),
            HeaderName::from_static("x-cache-control"),
        ])
        .max_age(std::time::Duration::from_secs(86400));
    Some(layer)
}

/// The whole service's router.
pub fn app(state: AppState) -> Router {
    use routes::{functions, sessions, system};
    let script_limit = DefaultBodyLimit::max(script_body_limit(&state.config));
    let params_limit = DefaultBodyLimit::max(state.config.max_params_size);
    let api = Router::new()
        .route(
            "/api/v1/initialize",
            post(sessions::initialize).layer(script_limit),
        )
        .route(
            "/api/v1/execute/{request_id}",
            post(sessions::execute).layer(params_limit),
        )
        .route(
            "/api/v1/sessions/{request_id}",
            get(sessions::get_session).delete(sessions::delete_session),
        )
        .route(
            "/api/v1/functions",
            get(functions::list)
                .post(functions::register)
                .layer(script_limit),
        )
        .route(
            "/api/v1/functions/{language_title}",
            get(functions::detail)
                .put(functions::update)
                .delete(functions::retire)
                .layer(script_limit),
        )
        // The gate (auth, rate limit, declared body size, log) sees every
        // request to these routes.
        .route_layer(gate::GateLayer::new(state.clone()));
    let app = Router::new()
        .merge(api)
        .route("/health", get(system::health))
        .route("/metrics", get(system::metrics))
        .route("/api/v1/openapi.json", get(system::openapi))
        .fallback(gate::not_found)
        .layer(http_metrics::HttpMetricsLayer::default());
    let app = match cors(&state.config.cors_allowed_origins) {
        Some(cors) => app.layer(cors),
        None => app,
    };
    app.with_state(state)
}
