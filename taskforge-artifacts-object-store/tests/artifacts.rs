//! The artifact store conformance suite on object_store's in-memory and
//! local-file stores, each with single puts and with multipart uploads;
//! and what only the objects show: the layout, aborted uploads, garbage.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::TryStreamExt;
use object_store::local::LocalFileSystem;
use object_store::memory::InMemory;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt};
use taskforge_artifacts_object_store::ObjectStoreArtifacts;
use taskforge_core::artifact::{ArtifactBody, ArtifactError, ArtifactLimits, ArtifactStore};
use taskforge_core::testing::artifacts::ArtifactFixture;
use taskforge_core::RunId;

/// Every object under `prefix`, sorted.
async fn objects(store: &dyn ObjectStore, prefix: &str) -> Vec<String> {
    let prefix = Path::from(prefix);
    let mut found: Vec<String> = store
        .list(Some(&prefix))
        .map_ok(|meta| meta.location.to_string())
        .try_collect()
        .await
        .expect("list objects");
    found.sort();
    found
}

/// A fixture on `store` under a prefix, counting blobs and temporary
/// uploads; parts of `part_size` bytes if given.
fn fixture(store: Arc<dyn ObjectStore>, part_size: Option<usize>) -> ArtifactFixture {
    let mut artifacts = ObjectStoreArtifacts::new(Arc::clone(&store), "tenant/artifacts");
    if let Some(size) = part_size {
        artifacts = artifacts.with_part_size(size);
    }
    ArtifactFixture::new(artifacts).with_blob_count(move || {
        let store = Arc::clone(&store);
        async move {
            objects(store.as_ref(), "tenant/artifacts/blobs")
                .await
                .len()
                + objects(store.as_ref(), "tenant/artifacts/tmp").await.len()
        }
    })
}

mod memory {
    use super::*;

    taskforge_core::artifact_conformance!(|| async { fixture(Arc::new(InMemory::new()), None) });
}

mod memory_multipart {
    use super::*;

    taskforge_core::artifact_conformance!(|| async {
        fixture(Arc::new(InMemory::new()), Some(64 * 1024))
    });
}

mod local {
    use super::*;

    taskforge_core::artifact_conformance!(|| async {
        let dir = tempfile::tempdir().expect("create a temporary directory");
        let store = LocalFileSystem::new_with_prefix(dir.path()).expect("a local store");
        fixture(Arc::new(store), None).with_guard(dir)
    });
}

mod local_multipart {
    use super::*;

    taskforge_core::artifact_conformance!(|| async {
        let dir = tempfile::tempdir().expect("create a temporary directory");
        let store = LocalFileSystem::new_with_prefix(dir.path()).expect("a local store");
        fixture(Arc::new(store), Some(64 * 1024)).with_guard(dir)
    });
}

fn now() -> chrono::DateTime<chrono::Utc> {
    chrono::DateTime::from_timestamp(1_704_067_200, 0).expect("a valid timestamp")
}

const HELLO: &str = "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824";

#[tokio::test]
async fn layout_is_blobs_refs_and_manifests_under_the_prefix() {
    let store: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
    let artifacts = ObjectStoreArtifacts::new(Arc::clone(&store), "a/b");
    let run = RunId::new();
    let stored = artifacts
        .put(
            run,
            "s",
            "hello.txt",
            "hello".into(),
            &ArtifactLimits::default(),
            now(),
        )
        .await
        .expect("put");
    assert_eq!(stored.sha256, HELLO);
    assert_eq!(
        objects(store.as_ref(), "").await,
        [
            format!("a/b/blobs/{HELLO}"),
            format!("a/b/refs/{HELLO}/{run}/hello.txt"),
            format!("a/b/runs/{run}/hello.txt.json"),
        ]
    );
    let manifest = store
        .get(&Path::from(format!("a/b/runs/{run}/hello.txt.json")))
        .await
        .expect("get")
        .bytes()
        .await
        .expect("read");
    let manifest: taskforge_core::artifact::Artifact =
        serde_json::from_slice(&manifest).expect("a manifest is an Artifact in JSON");
    assert_eq!(manifest, stored);

    // Another prefix on the same store is another artifact store.
    let elsewhere = ObjectStoreArtifacts::new(Arc::clone(&store), "c");
    assert!(elsewhere.runs().await.expect("runs").is_empty());
    assert_eq!(artifacts.runs().await.expect("runs"), [run]);

    assert_eq!(artifacts.delete_run(run).await.expect("delete"), 1);
    assert!(objects(store.as_ref(), "").await.is_empty());
}

#[tokio::test]
async fn a_multipart_upload_over_the_limit_is_aborted() {
    let store: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
    let artifacts = ObjectStoreArtifacts::new(Arc::clone(&store), "").with_part_size(4096);
    let run = RunId::new();
    let chunk = Bytes::from(vec![1u8; 1000]);
    let endless = ArtifactBody::stream(futures::stream::repeat_with(move || Ok(chunk.clone())));
    let limits = ArtifactLimits {
        max_artifact_bytes: 10_000,
        max_run_bytes: 1 << 30,
    };
    let err = artifacts
        .put(run, "s", "endless", endless, &limits, now())
        .await
        .expect_err("an endless stream");
    assert!(
        matches!(
            err,
            ArtifactError::TooLarge {
                received: 11_000,
                ..
            }
        ),
        "{err:?}"
    );
    // Two parts were sent; the upload was never completed.
    assert!(objects(store.as_ref(), "").await.is_empty());
}

#[tokio::test]
async fn collect_garbage_removes_stale_leftovers_only() {
    let store: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
    let artifacts = ObjectStoreArtifacts::new(Arc::clone(&store), "p");
    let run = RunId::new();
    artifacts
        .put(
            run,
            "s",
            "kept",
            "hello".into(),
            &ArtifactLimits::default(),
            now(),
        )
        .await
        .expect("put");
    // What crashes leave: an upload not yet copied, a ref whose manifest
    // was never written, and the blob it was for.
    let orphan = "ab".repeat(32);
    for leftover in [
        "p/tmp/0190-upload".to_owned(),
        format!("p/refs/{orphan}/{run}/lost"),
        format!("p/blobs/{orphan}"),
    ] {
        store
            .put(&Path::from(leftover), "x".into())
            .await
            .expect("put a leftover");
    }

    // Young leftovers may be another process's upload in progress.
    assert_eq!(artifacts.collect_garbage().await.expect("gc"), 0);
    assert_eq!(objects(store.as_ref(), "p").await.len(), 6);

    let eager = ObjectStoreArtifacts::new(Arc::clone(&store), "p").with_stale_after(Duration::ZERO);
    assert_eq!(eager.collect_garbage().await.expect("gc"), 3);
    assert_eq!(
        objects(store.as_ref(), "p").await,
        [
            format!("p/blobs/{HELLO}"),
            format!("p/refs/{HELLO}/{run}/kept"),
            format!("p/runs/{run}/kept.json"),
        ]
    );
    assert_eq!(&eager.get(run, "kept").await.expect("get").1[..], b"hello");
}

#[tokio::test]
async fn damaged_content_is_an_error_not_data() {
    let store: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
    let artifacts = ObjectStoreArtifacts::new(Arc::clone(&store), "");
    let run = RunId::new();
    artifacts
        .put(
            run,
            "s",
            "data",
            "hello".into(),
            &ArtifactLimits::default(),
            now(),
        )
        .await
        .expect("put");
    let blob = Path::from(format!("blobs/{HELLO}"));
    store.put(&blob, "jello".into()).await.expect("tamper");
    let err = artifacts
        .get(run, "data")
        .await
        .expect_err("changed content");
    assert!(matches!(err, ArtifactError::Storage { .. }), "{err:?}");
    store.put(&blob, "hell".into()).await.expect("tamper");
    let (_, stream) = artifacts.open(run, "data").await.expect("open");
    let read: Result<Vec<Bytes>, _> = stream.try_collect().await;
    assert!(read.is_err(), "a short blob ends the stream in an error");
}
