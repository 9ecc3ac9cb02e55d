//! The artifact store conformance suite on [`FsArtifactStore`], and what
//! only a directory shows: the layout, and what a crash leaves behind.

#![cfg(feature = "testing")]

use std::path::{Path, PathBuf};

use futures::StreamExt;

use taskforge_core::artifact::{ArtifactLimits, ArtifactStore, FsArtifactStore};
use taskforge_core::testing::artifacts::ArtifactFixture;
use taskforge_core::RunId;

/// The files under `dir`, recursively, relative to it.
fn files(dir: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(at) = pending.pop() {
        for entry in std::fs::read_dir(&at).expect("read a directory") {
            let path = entry.expect("an entry").path();
            if path.is_dir() {
                pending.push(path);
            } else {
                found.push(path.strip_prefix(dir).expect("under dir").to_path_buf());
            }
        }
    }
    found.sort();
    found
}

/// Blobs and temporary files: what a put that left nothing visible must
/// not leave either.
fn blob_count(root: &Path) -> usize {
    files(&root.join("blobs")).len() + files(&root.join("tmp")).len()
}

taskforge_core::artifact_conformance!(|| async {
    let dir = tempfile::tempdir().expect("create a temporary directory");
    let store = FsArtifactStore::open(dir.path()).expect("open the store");
    let root = dir.path().to_path_buf();
    ArtifactFixture::new(store)
        .with_guard(dir)
        .with_blob_count(move || {
            let root = root.clone();
            async move { blob_count(&root) }
        })
});

fn now() -> chrono::DateTime<chrono::Utc> {
    chrono::DateTime::from_timestamp(1_704_067_200, 0).expect("a valid timestamp")
}

#[tokio::test]
async fn layout_is_blobs_by_hash_and_a_manifest_per_artifact() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = FsArtifactStore::open(dir.path()).expect("open");
    let run = RunId::new();
    let stored = store
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
    let sha = "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824";
    assert_eq!(stored.sha256, sha);
    assert_eq!(
        files(dir.path()),
        [
            PathBuf::from(format!("blobs/2c/{sha}")),
            PathBuf::from(format!("runs/{run}/hello.txt.json")),
        ]
    );
    let manifest: taskforge_core::artifact::Artifact = serde_json::from_slice(
        &std::fs::read(dir.path().join(format!("runs/{run}/hello.txt.json"))).expect("read"),
    )
    .expect("a manifest is an Artifact in JSON");
    assert_eq!(manifest, stored);
    assert_eq!(
        std::fs::read(dir.path().join(format!("blobs/2c/{sha}"))).expect("read"),
        b"hello"
    );
}

#[tokio::test]
async fn reopening_keeps_artifacts_and_their_references() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (first, second) = (RunId::new(), RunId::new());
    {
        let store = FsArtifactStore::open(dir.path()).expect("open");
        for run in [first, second] {
            store
                .put(
                    run,
                    "s",
                    "same",
                    "shared".into(),
                    &ArtifactLimits::default(),
                    now(),
                )
                .await
                .expect("put");
        }
    }
    let store = FsArtifactStore::open(dir.path()).expect("reopen");
    assert_eq!(store.runs().await.expect("runs").len(), 2);
    // The blob is referenced twice: deleting one run keeps it.
    store.delete_run(first).await.expect("delete");
    assert_eq!(
        &store.get(second, "same").await.expect("get").1[..],
        b"shared"
    );
    store.delete_run(second).await.expect("delete");
    assert!(files(dir.path()).is_empty(), "{:?}", files(dir.path()));
}

#[tokio::test]
async fn open_removes_what_a_crash_left() {
    let dir = tempfile::tempdir().expect("tempdir");
    let run = RunId::new();
    {
        let store = FsArtifactStore::open(dir.path()).expect("open");
        store
            .put(
                run,
                "s",
                "kept",
                "kept".into(),
                &ArtifactLimits::default(),
                now(),
            )
            .await
            .expect("put");
    }
    // A crash mid-upload, mid-manifest, and between a blob's rename and its
    // manifest's.
    std::fs::write(dir.path().join("tmp/0190-upload.blob"), b"half an upl").expect("write");
    std::fs::write(dir.path().join("tmp/0190-manifest.json"), b"{\"run_id\":").expect("write");
    let orphan = "ab".repeat(32);
    std::fs::create_dir_all(dir.path().join("blobs/ab")).expect("mkdir");
    std::fs::write(dir.path().join(format!("blobs/ab/{orphan}")), b"orphan").expect("write");

    let store = FsArtifactStore::open(dir.path()).expect("reopen");
    let left: Vec<PathBuf> = files(dir.path());
    assert_eq!(
        left.len(),
        2,
        "only the artifact's blob and manifest: {left:?}"
    );
    assert!(!left.iter().any(|p| p.starts_with("tmp")));
    assert_eq!(&store.get(run, "kept").await.expect("get").1[..], b"kept");
    assert_eq!(store.list(run).await.expect("list").len(), 1);
}

#[tokio::test]
async fn collect_garbage_removes_strays_but_not_uploads_or_artifacts() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = FsArtifactStore::open(dir.path()).expect("open");
    let run = RunId::new();
    store
        .put(
            run,
            "s",
            "kept",
            "kept".into(),
            &ArtifactLimits::default(),
            now(),
        )
        .await
        .expect("put");
    std::fs::write(dir.path().join("tmp/stray.blob"), b"stray").expect("write");
    let orphan = "cd".repeat(32);
    std::fs::create_dir_all(dir.path().join("blobs/cd")).expect("mkdir");
    std::fs::write(dir.path().join(format!("blobs/cd/{orphan}")), b"orphan").expect("write");
    assert_eq!(store.collect_garbage().await.expect("gc"), 2);
    assert_eq!(files(dir.path()).len(), 2);
    assert_eq!(&store.get(run, "kept").await.expect("get").1[..], b"kept");
}

#[tokio::test]
async fn damaged_content_is_an_error_not_data() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = FsArtifactStore::open(dir.path()).expect("open");
    let run = RunId::new();
    let stored = store
        .put(
            run,
            "s",
            "data",
            "original".into(),
            &ArtifactLimits::default(),
            now(),
        )
        .await
        .expect("put");
    let blob = dir
        .path()
        .join("blobs")
        .join(&stored.sha256[..2])
        .join(&stored.sha256);
    std::fs::write(&blob, b"tampered").expect("write");
    let err = store.get(run, "data").await.expect_err("a changed blob");
    assert!(
        matches!(err, taskforge_core::artifact::ArtifactError::Storage { .. }),
        "{err:?}"
    );
    std::fs::write(&blob, b"short").expect("write");
    let (_, stream) = store.open(run, "data").await.expect("open");
    let read: Result<Vec<_>, _> = futures::TryStreamExt::try_collect(stream).await;
    assert!(read.is_err(), "a short blob ends the stream in an error");
}

#[tokio::test]
async fn a_dropped_put_leaves_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = FsArtifactStore::open(dir.path()).expect("open");
    let run = RunId::new();
    // A stream that never ends and never yields past its first chunk: the
    // put is abandoned (a step timing out) mid-upload.
    let body = taskforge_core::artifact::ArtifactBody::stream(
        futures::stream::once(async { Ok(bytes::Bytes::from_static(b"first chunk")) })
            .chain(futures::stream::pending()),
    );
    let limits = ArtifactLimits::default();
    let put = store.put(run, "s", "stuck", body, &limits, now());
    let timed_out = tokio::time::timeout(std::time::Duration::from_millis(200), put).await;
    assert!(timed_out.is_err());
    assert!(store.list(run).await.expect("list").is_empty());
    assert!(files(dir.path()).is_empty(), "{:?}", files(dir.path()));
}
