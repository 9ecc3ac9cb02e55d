//! Micro-benchmarks of store writes on every backend: `insert_run`,
//! `commit` of one step attempt, and `insert_event` of a duplicate dedup
//! key (which writes nothing). Sled runs durable and relaxed, each in a
//! fresh temporary directory.

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use chrono::Utc;
use criterion::{criterion_group, criterion_main, BatchSize, Criterion};
use taskforge_benches::{catalog, definition, payload, webhook_event, NOOP};
use taskforge_core::store::{EventInsert, Fence};
use taskforge_core::{RunStatus, StepRun, Store, TriggerId, WorkflowRun, WorkflowVersion};
use taskforge_store_memory::MemoryStore;
use taskforge_store_sled::{Durability, SledConfig, SledStore};
use tokio::runtime::Runtime;

fn runtime() -> Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime")
}

/// A version to make runs of, and a claimed, started run to commit to.
fn setup<S: Store>(rt: &Runtime, store: &S) -> (WorkflowVersion, Fence) {
    rt.block_on(async {
        let (_, version) = catalog(store, "writes", definition(3, NOOP))
            .await
            .expect("catalog");
        let mut run = WorkflowRun::new(&version, payload(0), Utc::now());
        store.insert_run(&run).await.expect("insert run");
        let now = Utc::now();
        run = store
            .claim_run(run.id, "bench", now, now + chrono::TimeDelta::hours(1))
            .await
            .expect("claim");
        let fence = run.fence();
        run.transition(taskforge_core::store::RunTransition::Start, now)
            .expect("start");
        store
            .commit(fence, Some(&run), &[])
            .await
            .expect("commit start");
        (version, run.fence())
    })
}

fn bench_store<S: Store>(c: &mut Criterion, name: &str, store: &S, slow: bool) {
    let rt = runtime();
    let (version, fence) = setup(&rt, store);
    let mut group = c.benchmark_group(format!("store_writes/{name}"));
    if slow {
        // Each write waits for an fsync: fewer, longer samples.
        group.sample_size(20);
        group.measurement_time(Duration::from_secs(4));
        group.warm_up_time(Duration::from_secs(1));
    }

    group.bench_function("insert_run", |b| {
        b.iter_batched(
            || WorkflowRun::new(&version, payload(1), Utc::now()),
            |run| rt.block_on(store.insert_run(&run)).expect("insert run"),
            BatchSize::SmallInput,
        );
    });

    let attempt = AtomicU32::new(1);
    group.bench_function("commit one step attempt", |b| {
        b.iter_batched(
            || {
                let n = attempt.fetch_add(1, Ordering::Relaxed);
                StepRun::start(fence.run_id, "s0", 0, n, Utc::now())
            },
            |step| {
                rt.block_on(store.commit(fence, None, std::slice::from_ref(&step)))
                    .expect("commit");
            },
            BatchSize::SmallInput,
        );
    });

    let run = WorkflowRun::new(&version, payload(2), Utc::now());
    let event = webhook_event(
        version.workflow_id,
        TriggerId::new(),
        "delivery-1".into(),
        &run,
    );
    let first = rt
        .block_on(store.insert_event(&event, Some(&run)))
        .expect("first delivery");
    assert_eq!(first, EventInsert::Inserted);
    group.bench_function("insert_event, duplicate key", |b| {
        b.iter(|| {
            let out = rt
                .block_on(store.insert_event(&event, Some(&run)))
                .expect("insert event");
            assert!(matches!(out, EventInsert::Duplicate(_)));
        });
    });
    group.finish();
    assert_eq!(fence.status, RunStatus::Running);
}

fn memory(c: &mut Criterion) {
    bench_store(c, "memory", &MemoryStore::new(), false);
}

fn sled(c: &mut Criterion) {
    for (name, durability) in [
        ("sled_relaxed", Durability::Relaxed),
        ("sled_durable", Durability::Durable),
    ] {
        let dir = tempfile::tempdir().expect("temp dir");
        let config = SledConfig {
            durability,
            ..SledConfig::default()
        };
        let store = SledStore::open_with(dir.path().join("db"), config).expect("open sled");
        bench_store(c, name, &store, durability == Durability::Durable);
        drop(store);
    }
}

// In a private module: the function the macro makes needs no docs there.
mod group {
    use super::*;
    criterion_group!(benches, memory, sled);
}
criterion_main!(group::benches);
