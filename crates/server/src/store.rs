//! Opening the configured store and bringing its schema up to date.

use std::sync::Arc;

use anyhow::Context;
use lambda_core::Config;
use lambda_store::{PostgresStore, SqliteStore, Store};

/// PostgreSQL when `DATABASE_URL` is set, else the embedded SQLite file in
/// `DATA_DIR`; migrated and verified either way.
pub async fn open(config: &Config) -> anyhow::Result<Arc<dyn Store>> {
    let store: Arc<dyn Store> = match &config.database_url {
        Some(url) => Arc::new(
            PostgresStore::connect(url)
                .await
                .context("cannot connect to DATABASE_URL")?,
        ),
        None => {
            std::fs::create_dir_all(&config.data_dir)
                .with_context(|| format!("cannot create DATA_DIR {}", config.data_dir.display()))?;
            Arc::new(
                SqliteStore::open_in_dir(&config.data_dir)
                    .await
                    .context("cannot open the embedded SQLite store in DATA_DIR")?,
            )
        }
    };
    store
        .migrate()
        .await
        .context("cannot apply the database schema")?;
    tracing::info!(backend = store.backend(), "store ready");
    Ok(store)
}
