//! The baseline: a minimal axum server that does the trivial handler's work
//! (add two numbers) in-process, with the service's execute JSON shapes.
//! Every service figure is reported as a ratio to this one, measured in the
//! same run by the same load generator.

use std::net::SocketAddr;
use std::time::Instant;

use anyhow::Context;
use axum::extract::Path;
use axum::routing::post;
use axum::{Json, Router};
use serde::{Deserialize, Serialize};

#[derive(Deserialize)]
struct ExecuteBody {
    #[serde(default)]
    params: AddParams,
}

#[derive(Deserialize, Default)]
struct AddParams {
    #[serde(default)]
    a: i64,
    #[serde(default)]
    b: i64,
}

#[derive(Serialize)]
struct ExecuteResponse {
    request_id: String,
    language_title: &'static str,
    execution_time: u64,
    cached: bool,
    result: i64,
}

async fn execute(
    Path(request_id): Path<String>,
    Json(body): Json<ExecuteBody>,
) -> Json<ExecuteResponse> {
    let started = Instant::now();
    let result = body.params.a.wrapping_add(body.params.b);
    Json(ExecuteResponse {
        request_id,
        language_title: "baseline-add",
        execution_time: started.elapsed().as_millis() as u64,
        cached: false,
        result,
    })
}

pub fn router() -> Router {
    Router::new()
        .route("/api/v1/execute/{request_id}", post(execute))
        .route(
            "/health",
            axum::routing::get(|| async { "{\"status\":\"ok\"}" }),
        )
}

/// The `baseline` subcommand: serve on `addr` until killed.
pub fn main(addr: SocketAddr) -> anyhow::Result<()> {
    anyhow::ensure!(
        addr.ip().is_loopback(),
        "the baseline only listens on loopback"
    );
    crate::procfs::raise_fd_limit();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("cannot listen on {addr}"))?;
        axum::serve(listener, router())
            .await
            .context("baseline server failed")
    })
}
