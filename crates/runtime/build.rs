// The worker programs under `runtimes/` are embedded with `include_str!`.
// They sit outside this package, so rustc records them by absolute path:
// with a target directory shared between checkouts (as `.ci/run` sets up),
// an edit to a worker in one checkout went unnoticed while another
// checkout's older copy still existed, and tests ran the stale worker.
// Watched from here, by a path relative to the package, any change to them
// rebuilds this crate.
fn main() {
    println!("cargo:rerun-if-changed=../../runtimes");
}
