//! The state every handler shares.

use std::sync::Arc;

use lambda_core::{Config, Registry, Sessions};
use lambda_runtime::Runtimes;
use lambda_store::Store;
use metrics_exporter_prometheus::PrometheusHandle;

use crate::gate::Gate;

/// Cloned for every request by each layer and handler that takes it, so it
/// is one `Arc`: one reference count to touch instead of one per service
/// (their atomics showed up in the execute profile).
#[derive(Clone)]
pub struct AppState(Arc<Services>);

impl AppState {
    pub fn new(services: Services) -> Self {
        AppState(Arc::new(services))
    }
}

impl std::ops::Deref for AppState {
    type Target = Services;

    fn deref(&self) -> &Services {
        &self.0
    }
}

pub struct Services {
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
