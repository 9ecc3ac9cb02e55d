//! Heap bytes kept per completed run on the memory store, counted by a
//! counting global allocator. Run by the headline binary (a separate
//! process, so the allocator's counting slows no other figure):
//!
//! ```text
//! cargo run --release -p taskforge-benches --bin footprint -- --runs N --stored S
//! ```
//!
//! Prints `bytes_per_run X` (live heap bytes after the runs minus before,
//! over N) and `rss_per_run Y` (the same from `/proc/self/statm`, for
//! comparison).

use std::alloc::System;
use std::time::Duration;

use stats_alloc::{Region, StatsAlloc, INSTRUMENTED_SYSTEM};
use taskforge_benches::{prefill_history, runs_per_s};
use taskforge_store_memory::MemoryStore;

#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

const IN_FLIGHT: usize = 256;

fn arg(name: &str, default: usize) -> usize {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .map_or(default, |v| v.parse().expect("a number"))
}

/// Resident bytes of this process.
fn rss() -> f64 {
    std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| {
            s.split_whitespace()
                .nth(1)
                .and_then(|p| p.parse::<f64>().ok())
        })
        .map_or(f64::NAN, |pages| pages * 4096.0)
}

fn main() {
    let runs = arg("--runs", 10_000).max(1);
    let stored = arg("--stored", 1_000);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    rt.block_on(async {
        let store = MemoryStore::new();
        prefill_history(&store, stored).await.expect("prefill");
        // Warm the engine's caches and the runtime outside the region.
        runs_per_s(store.clone(), 3, IN_FLIGHT, IN_FLIGHT)
            .await
            .expect("warm-up");
        let rss_before = rss();
        let region = Region::new(GLOBAL);
        runs_per_s(store.clone(), 3, runs, IN_FLIGHT)
            .await
            .expect("closed loop");
        // Let the runtime drop finished tasks.
        tokio::time::sleep(Duration::from_millis(50)).await;
        let change = region.change();
        let live = change.bytes_allocated as f64 - change.bytes_deallocated as f64
            + change.bytes_reallocated as f64;
        println!("bytes_per_run {:.1}", live / runs as f64);
        println!("rss_per_run {:.1}", (rss() - rss_before) / runs as f64);
        drop(store);
    });
}
