//! Workers still start when the service holds many descriptors: the
//! sandbox's RLIMIT_NOFILE (256) must only bind the worker, never the
//! descriptor juggling before its exec. Its own test binary, because the
//! descriptors it holds would crowd every other test in the process.

mod support;

use std::fs::File;
use std::os::fd::OwnedFd;

use lambda_runtime::{Language, LanguageRuntime};
use serde_json::json;
use support::*;

/// Far more than the workers' RLIMIT_NOFILE of 256, so the lowest free
/// descriptor of the service is above it.
const HELD: usize = 400;

fn hold_descriptors() -> Vec<OwnedFd> {
    let null = File::open("/dev/null").expect("/dev/null opens");
    (0..HELD)
        .map(|_| OwnedFd::from(null.try_clone().expect("dup /dev/null")))
        .collect()
}

async fn runs_while_holding_many_descriptors(language: Language) {
    let held = hold_descriptors();
    let config = config();
    let rt = runtime(language, &config);
    let out = run(&rt, language, doubler(language), json!({"a": 21}))
        .await
        .unwrap_or_else(|e| panic!("{language} worker starts with {HELD} fds open: {e}"));
    assert_eq!(out.result, json!(42));
    rt.shutdown().await;
    drop(held);
}

// One test for both languages: two tests in parallel would free each
// other's low descriptors when one fails, hiding the failure of the other.
#[tokio::test]
async fn workers_start_with_many_descriptors_open() {
    for language in [Language::Nodejs, Language::Python] {
        runs_while_holding_many_descriptors(language).await;
    }
}
