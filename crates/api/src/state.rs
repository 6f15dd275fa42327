//! The state every handler shares.

use std::sync::Arc;

use lambda_core::{Config, Registry, Sessions};
use lambda_runtime::Runtimes;
use lambda_store::Store;
use metrics_exporter_prometheus::PrometheusHandle;

use crate::gate::Gate;

#[derive(Clone)]
pub struct AppState {
    pub sessions: Arc<Sessions>,
    pub registry: Arc<Registry>,
    pub store: Arc<dyn Store>,
    pub runtimes: Runtimes,
    pub config: Arc<Config>,
    /// `None` when no Prometheus recorder is installed (e.g. in-process tests).
    pub metrics: Option<PrometheusHandle>,
    /// Authentication, rate limits and request logging.
    pub gate: Arc<Gate>,
}
