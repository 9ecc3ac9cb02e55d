//! The artifact store conformance suite: one case per clause of the
//! `# Contract`s of [`ArtifactStore`].
//!
//! A backend runs it with one macro call,
//! [`artifact_conformance!`](crate::artifact_conformance), usually in its
//! `tests/artifacts.rs`:
//!
//! ```ignore
//! taskforge_core::artifact_conformance!(|| async {
//!     let dir = tempfile::tempdir().expect("create a temporary directory");
//!     let store = FsArtifactStore::open(dir.path()).expect("open the store");
//!     ArtifactFixture::new(store).with_guard(dir)
//! });
//! ```
//!
//! The argument is a factory: a closure without arguments returning a
//! future, called once per case so that every case gets a fresh, empty
//! store. The future's output is the store itself or an [`ArtifactFixture`]:
//! the store with a guard that lives until the case ends (a temporary
//! directory) and, optionally, a way to count the blobs the store holds
//! ([`ArtifactFixture::with_blob_count`]), with which the cases also check
//! that content is stored once and that nothing is left behind by a
//! refused or failed put or a deleted run.
//!
//! Each case takes the store as an `Arc<dyn ArtifactStore>`, so the suite
//! also checks that the trait is object-safe. Cases that race spawn tasks,
//! so run them on a multi-threaded runtime (as the macro does).

use std::any::Any;
use std::fmt;
use std::future::Future;
use std::io;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use chrono::{DateTime, Utc};
use futures::future::BoxFuture;
use futures::{FutureExt, TryStreamExt};

use crate::artifact::{
    sha256_hex, Artifact, ArtifactBody, ArtifactError, ArtifactLimits, ArtifactStore,
    MAX_ARTIFACT_NAME_LEN,
};
use crate::id::RunId;

type BlobCount = Arc<dyn Fn() -> BoxFuture<'static, usize> + Send + Sync>;

/// An artifact store under test, what must outlive it, and optionally how
/// to count its blobs.
pub struct ArtifactFixture {
    store: Arc<dyn ArtifactStore>,
    blob_count: Option<BlobCount>,
    guard: Box<dyn Any + Send>,
}

impl ArtifactFixture {
    /// A store without a guard, whose blobs are not counted.
    #[must_use]
    pub fn new(store: impl ArtifactStore) -> Self {
        Self {
            store: Arc::new(store),
            blob_count: None,
            guard: Box::new(()),
        }
    }

    /// The same, with a guard (such as a `tempfile::TempDir`) dropped only
    /// after the case is done.
    #[must_use]
    pub fn with_guard(mut self, guard: impl Any + Send) -> Self {
        self.guard = Box::new(guard);
        self
    }

    /// The same, with a function counting the blobs (stored contents,
    /// temporary uploads included) the store holds.
    #[must_use]
    pub fn with_blob_count<F, Fut>(mut self, count: F) -> Self
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = usize> + Send + 'static,
    {
        self.blob_count = Some(Arc::new(move || count().boxed()));
        self
    }

    /// The store.
    #[must_use]
    pub fn store(&self) -> &Arc<dyn ArtifactStore> {
        &self.store
    }

    /// How many blobs the store holds, if the fixture can tell.
    pub async fn blob_count(&self) -> Option<usize> {
        match &self.blob_count {
            Some(count) => Some(count().await),
            None => None,
        }
    }

    /// Asserts that the store holds `expected` blobs, if the fixture can tell.
    pub async fn assert_blobs(&self, expected: usize, when: &str) {
        if let Some(count) = self.blob_count().await {
            assert_eq!(count, expected, "blobs held {when}");
        }
    }
}

impl fmt::Debug for ArtifactFixture {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ArtifactFixture")
            .field("counts_blobs", &self.blob_count.is_some())
            .finish_non_exhaustive()
    }
}

/// What an artifact conformance factory may return: a store, or an
/// [`ArtifactFixture`].
pub trait IntoArtifactFixture {
    /// The store with its guard.
    fn into_artifact_fixture(self) -> ArtifactFixture;
}

impl<S: ArtifactStore> IntoArtifactFixture for S {
    fn into_artifact_fixture(self) -> ArtifactFixture {
        ArtifactFixture::new(self)
    }
}

impl IntoArtifactFixture for ArtifactFixture {
    fn into_artifact_fixture(self) -> ArtifactFixture {
        self
    }
}

/// Runs one case on a fresh store from `factory`. Used by
/// [`artifact_conformance!`](crate::artifact_conformance).
// Not an `async fn`: every `pub async fn` of this file is a case.
#[allow(clippy::manual_async_fn)]
pub fn run_case<F, Fut, C, CFut>(factory: F, case: C) -> impl Future<Output = ()>
where
    F: FnOnce() -> Fut,
    Fut: Future,
    Fut::Output: IntoArtifactFixture,
    C: FnOnce(ArtifactFixture) -> CFut,
    CFut: Future<Output = ()>,
{
    async move {
        let fixture = factory().await.into_artifact_fixture();
        case(fixture).await;
    }
}

/// The text of this suite's source, for
/// [`assert_every_case_listed`](crate::testing::assert_every_case_listed).
#[must_use]
pub fn artifact_case_sources() -> &'static [&'static str] {
    &[include_str!("artifacts.rs")]
}

/// Expands to one `#[tokio::test]` per case of the artifact store
/// conformance suite, each on a fresh store from the factory, and one
/// `#[test]` `every_artifact_case_is_listed`. See the
/// [module docs](crate::testing::artifacts).
///
/// ```ignore
/// taskforge_core::artifact_conformance!(|| async { MyArtifactStore::new() });
/// ```
#[macro_export]
macro_rules! artifact_conformance {
    (@cases $factory:expr; $($case:ident),* $(,)?) => {
        $(
            #[::tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn $case() {
                $crate::testing::artifacts::run_case(
                    $factory,
                    $crate::testing::artifacts::$case,
                )
                .await;
            }
        )*

        #[test]
        fn every_artifact_case_is_listed() {
            $crate::testing::assert_every_case_listed(
                &[$(stringify!($case)),*],
                $crate::testing::artifacts::artifact_case_sources(),
            );
        }
    };
    ($factory:expr $(,)?) => {
        $crate::artifact_conformance!(@cases $factory;
            bytes_round_trip,
            every_body_form_stores_the_same,
            stream_round_trip,
            empty_artifacts_round_trip,
            list_is_ordered_by_name,
            same_step_replaces_its_artifact,
            another_step_is_refused,
            too_large_bytes_are_refused,
            too_large_stream_is_refused_as_it_crosses,
            run_limit_is_refused,
            run_limit_on_a_stream_is_refused_as_it_crosses,
            failing_stream_leaves_nothing,
            failed_replacement_keeps_the_old_artifact,
            names_are_validated,
            missing_artifacts_are_not_found,
            delete_run_removes_listing_and_content,
            runs_lists_runs_with_artifacts,
            concurrent_puts_of_different_names_all_land,
            concurrent_puts_respect_the_run_limit,
            identical_content_is_stored_once,
            collect_garbage_keeps_stored_artifacts,
        );
    };
}

/// SHA-256 of `hello`.
const HELLO_SHA256: &str = "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824";

/// SHA-256 of nothing.
const EMPTY_SHA256: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

/// SHA-256 of [`pattern`]`(1 << 20)`.
const PATTERN_MIB_SHA256: &str = "631b84027d6b9e52b539c4e8373622d23032dfadc64d60af87339c9037e4f769";

/// A fixed instant, so that cases control time without a clock.
fn t0() -> DateTime<Utc> {
    DateTime::from_timestamp(1_704_067_200, 0).expect("2024-01-01 is a valid timestamp")
}

/// `len` bytes: 0, 1, ... 250, 0, 1, ...
fn pattern(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i % 251) as u8).collect()
}

/// `bytes` as a stream of chunks of uneven sizes (1, 2, 3, ... bytes, then
/// up to 64 KiB), with an empty chunk among them.
fn chunked(bytes: Vec<u8>) -> ArtifactBody {
    let bytes = Bytes::from(bytes);
    let mut chunks = vec![Bytes::new()];
    let mut at = 0;
    let mut size = 1;
    while at < bytes.len() {
        let end = (at + size).min(bytes.len());
        chunks.push(bytes.slice(at..end));
        at = end;
        size = (size * 3 + 1).min(64 * 1024);
    }
    ArtifactBody::stream(futures::stream::iter(chunks.into_iter().map(Ok)))
}

/// A stream of `chunk`-byte chunks that never ends, counting how many
/// chunks were pulled from it.
fn endless(chunk: usize, pulled: Arc<AtomicUsize>) -> ArtifactBody {
    let data = Bytes::from(vec![7u8; chunk]);
    ArtifactBody::stream(futures::stream::repeat_with(move || {
        pulled.fetch_add(1, Ordering::SeqCst);
        Ok(data.clone())
    }))
}

fn limits(max_artifact_bytes: u64, max_run_bytes: u64) -> ArtifactLimits {
    ArtifactLimits {
        max_artifact_bytes,
        max_run_bytes,
    }
}

async fn put(
    store: &dyn ArtifactStore,
    run: RunId,
    step: &str,
    name: &str,
    body: impl Into<ArtifactBody>,
) -> Artifact {
    store
        .put(
            run,
            step,
            name,
            body.into(),
            &ArtifactLimits::default(),
            t0(),
        )
        .await
        .unwrap_or_else(|e| panic!("put {name:?}: {e}"))
}

async fn read(store: &dyn ArtifactStore, run: RunId, name: &str) -> (Artifact, Bytes) {
    store
        .get(run, name)
        .await
        .unwrap_or_else(|e| panic!("get {name:?}: {e}"))
}

/// The content of `name` read with `open`, whole.
async fn read_streamed(store: &dyn ArtifactStore, run: RunId, name: &str) -> (Artifact, Vec<u8>) {
    let (artifact, stream) = store
        .open(run, name)
        .await
        .unwrap_or_else(|e| panic!("open {name:?}: {e}"));
    let chunks: Vec<Bytes> = stream.try_collect().await.expect("read the stream");
    (artifact, chunks.concat())
}

fn names(artifacts: &[Artifact]) -> Vec<&str> {
    artifacts.iter().map(|a| a.name.as_str()).collect()
}

fn assert_not_found(result: Result<impl fmt::Debug, ArtifactError>, what: &str) {
    match result {
        Err(ArtifactError::NotFound { .. }) => {}
        other => panic!("{what}: expected NotFound, got {other:?}"),
    }
}

/// Bytes stored come back the same, with their size, SHA-256, step and time.
pub async fn bytes_round_trip(fixture: ArtifactFixture) {
    let store = fixture.store().as_ref();
    let run = RunId::new();
    let stored = put(store, run, "greet", "hello.txt", b"hello".to_vec()).await;
    assert_eq!(
        stored,
        Artifact {
            run_id: run,
            step_key: "greet".into(),
            name: "hello.txt".into(),
            size: 5,
            sha256: HELLO_SHA256.into(),
            created_at: t0(),
        }
    );
    let (artifact, bytes) = read(store, run, "hello.txt").await;
    assert_eq!((artifact, &bytes[..]), (stored.clone(), &b"hello"[..]));
    let (artifact, bytes) = read_streamed(store, run, "hello.txt").await;
    assert_eq!((artifact, &bytes[..]), (stored.clone(), &b"hello"[..]));
    assert_eq!(store.list(run).await.expect("list"), vec![stored]);
    fixture.assert_blobs(1, "after one put").await;
}

/// Every form of body (`Vec`, `Bytes`, `&'static [u8]`, `String`, `&str`,
/// stream) stores the same artifact.
pub async fn every_body_form_stores_the_same(fixture: ArtifactFixture) {
    let store = fixture.store().as_ref();
    let run = RunId::new();
    let bodies: Vec<(&str, ArtifactBody)> = vec![
        ("vec", b"hello".to_vec().into()),
        ("bytes", Bytes::from_static(b"hello").into()),
        ("slice", (&b"hello"[..]).into()),
        ("string", String::from("hello").into()),
        ("str", "hello".into()),
        ("stream", chunked(b"hello".to_vec())),
    ];
    for (name, body) in bodies {
        let stored = store
            .put(run, "s", name, body, &ArtifactLimits::default(), t0())
            .await
            .unwrap_or_else(|e| panic!("put {name}: {e}"));
        assert_eq!(
            (stored.size, stored.sha256.as_str()),
            (5, HELLO_SHA256),
            "{name}"
        );
        assert_eq!(&read(store, run, name).await.1[..], b"hello", "{name}");
    }
    assert_eq!(store.list(run).await.expect("list").len(), 6);
    fixture
        .assert_blobs(1, "after six puts of one content")
        .await;
}

/// A streamed body of 1 MiB in uneven chunks is stored whole, with the
/// SHA-256 of its content, and reads back the same with `get` and `open`.
pub async fn stream_round_trip(fixture: ArtifactFixture) {
    let store = fixture.store().as_ref();
    let run = RunId::new();
    let content = pattern(1 << 20);
    let stored = put(store, run, "s", "big.bin", chunked(content.clone())).await;
    assert_eq!(stored.size, 1 << 20);
    assert_eq!(stored.sha256, PATTERN_MIB_SHA256);
    assert_eq!(sha256_hex(&content), PATTERN_MIB_SHA256);
    let (artifact, bytes) = read(store, run, "big.bin").await;
    assert_eq!(artifact, stored);
    assert!(bytes[..] == content[..], "get returns the content");
    let (artifact, bytes) = read_streamed(store, run, "big.bin").await;
    assert_eq!(artifact, stored);
    assert!(bytes == content, "open streams the content");
}

/// An empty artifact, as bytes or as a stream without chunks, is stored
/// and read back.
pub async fn empty_artifacts_round_trip(fixture: ArtifactFixture) {
    let store = fixture.store().as_ref();
    let run = RunId::new();
    let stored = put(store, run, "s", "empty", Vec::new()).await;
    assert_eq!((stored.size, stored.sha256.as_str()), (0, EMPTY_SHA256));
    let streamed = put(
        store,
        run,
        "s",
        "empty-stream",
        ArtifactBody::stream(futures::stream::empty()),
    )
    .await;
    assert_eq!((streamed.size, streamed.sha256.as_str()), (0, EMPTY_SHA256));
    assert!(read(store, run, "empty").await.1.is_empty());
    assert!(read_streamed(store, run, "empty-stream").await.1.is_empty());
}

/// `list` orders a run's artifacts by name (byte order) and holds only that
/// run's; a run without artifacts lists none.
pub async fn list_is_ordered_by_name(fixture: ArtifactFixture) {
    let store = fixture.store().as_ref();
    let run = RunId::new();
    let other = RunId::new();
    for name in ["b", "a.txt", "C", "a-1", "_x", "a"] {
        put(store, run, "s", name, name.as_bytes().to_vec()).await;
    }
    put(store, other, "s", "elsewhere", b"x".to_vec()).await;
    let listed = store.list(run).await.expect("list");
    assert_eq!(names(&listed), ["C", "_x", "a", "a-1", "a.txt", "b"]);
    for artifact in &listed {
        assert_eq!(artifact.run_id, run);
        assert_eq!(artifact.sha256, sha256_hex(artifact.name.as_bytes()));
    }
    assert!(store.list(RunId::new()).await.expect("list").is_empty());
}

/// The step that stored an artifact replaces it by storing it again (a
/// retried attempt): one artifact, the new content, the old content gone.
pub async fn same_step_replaces_its_artifact(fixture: ArtifactFixture) {
    let store = fixture.store().as_ref();
    let run = RunId::new();
    put(store, run, "s", "out", b"first attempt".to_vec()).await;
    let second = store
        .put(
            run,
            "s",
            "out",
            "second".into(),
            &ArtifactLimits::default(),
            t0() + chrono::TimeDelta::seconds(5),
        )
        .await
        .expect("the same step replaces its artifact");
    assert_eq!(second.size, 6);
    assert_eq!(store.list(run).await.expect("list"), vec![second.clone()]);
    assert_eq!(
        read(store, run, "out").await,
        (second, Bytes::from("second"))
    );
    fixture.assert_blobs(1, "after a replacement").await;
}

/// Another step cannot store an artifact of a name the run has; the
/// artifact is unchanged.
pub async fn another_step_is_refused(fixture: ArtifactFixture) {
    let store = fixture.store().as_ref();
    let run = RunId::new();
    let first = put(store, run, "a", "out", b"from a".to_vec()).await;
    let err = store
        .put(
            run,
            "b",
            "out",
            b"from b".to_vec().into(),
            &ArtifactLimits::default(),
            t0(),
        )
        .await
        .expect_err("another step's name");
    match err {
        ArtifactError::TakenByAnotherStep {
            run_id,
            name,
            owner,
        } => assert_eq!((run_id, name.as_str(), owner.as_str()), (run, "out", "a")),
        other => panic!("expected TakenByAnotherStep, got {other:?}"),
    }
    assert_eq!(
        read(store, run, "out").await,
        (first, Bytes::from("from a"))
    );
    // The same name in another run is another artifact.
    put(store, RunId::new(), "b", "out", b"from b".to_vec()).await;
}

/// Bytes over the per-artifact limit are refused with `TooLarge`, leaving
/// nothing; bytes at the limit are stored.
pub async fn too_large_bytes_are_refused(fixture: ArtifactFixture) {
    let store = fixture.store().as_ref();
    let run = RunId::new();
    let limits = limits(10, 1000);
    let err = store
        .put(run, "s", "big", pattern(11).into(), &limits, t0())
        .await
        .expect_err("11 bytes over a limit of 10");
    assert!(
        matches!(
            &err,
            ArtifactError::TooLarge { name, limit: 10, received: 11 } if name == "big"
        ),
        "{err:?}"
    );
    assert!(store.list(run).await.expect("list").is_empty());
    assert_not_found(store.get(run, "big").await, "get after a refusal");
    fixture.assert_blobs(0, "after a refused put").await;
    let stored = store
        .put(run, "s", "big", pattern(10).into(), &limits, t0())
        .await
        .expect("10 bytes at a limit of 10");
    assert_eq!(stored.size, 10);
}

/// A stream is refused as soon as it crosses the per-artifact limit (it is
/// not read to its end, which here never comes), leaving nothing.
pub async fn too_large_stream_is_refused_as_it_crosses(fixture: ArtifactFixture) {
    let store = fixture.store().as_ref();
    let run = RunId::new();
    let pulled = Arc::new(AtomicUsize::new(0));
    let err = store
        .put(
            run,
            "s",
            "endless",
            endless(1000, Arc::clone(&pulled)),
            &limits(10_500, 1 << 30),
            t0(),
        )
        .await
        .expect_err("an endless stream");
    assert!(
        matches!(
            err,
            ArtifactError::TooLarge {
                limit: 10_500,
                received: 11_000,
                ..
            }
        ),
        "{err:?}"
    );
    assert_eq!(pulled.load(Ordering::SeqCst), 11, "chunks read");
    assert!(store.list(run).await.expect("list").is_empty());
    assert_not_found(store.get(run, "endless").await, "get after a refusal");
    fixture.assert_blobs(0, "after a refused stream").await;
}

/// The per-run limit counts the run's other artifacts, not one being
/// replaced; crossing it is refused with `RunOverLimit`, leaving nothing.
pub async fn run_limit_is_refused(fixture: ArtifactFixture) {
    let store = fixture.store().as_ref();
    let run = RunId::new();
    let limits = limits(15, 20);
    let put = |name: &'static str, len: usize| async move {
        store
            .put(run, "s", name, pattern(len).into(), &limits, t0())
            .await
    };
    put("a", 10).await.expect("10 of 20");
    let err = put("b", 11).await.expect_err("21 of 20");
    assert!(
        matches!(
            &err,
            ArtifactError::RunOverLimit { run_id, name, limit: 20, others: 10, received: 11 }
                if *run_id == run && name == "b"
        ),
        "{err:?}"
    );
    assert_eq!(names(&store.list(run).await.expect("list")), ["a"]);
    // Replacing `a` does not count `a` twice.
    put("a", 15).await.expect("a replaced: 15 of 20");
    put("b", 5).await.expect("20 of 20");
    assert!(matches!(
        put("c", 1).await,
        Err(ArtifactError::RunOverLimit {
            others: 20,
            received: 1,
            ..
        })
    ));
    // Other runs have their own budget.
    store
        .put(RunId::new(), "s", "a", pattern(15).into(), &limits, t0())
        .await
        .expect("another run");
    let listed = store.list(run).await.expect("list");
    assert_eq!(names(&listed), ["a", "b"]);
    assert_eq!(listed.iter().map(|a| a.size).sum::<u64>(), 20);
    // `a` of both runs has one content, `b` another.
    fixture.assert_blobs(2, "after refused puts").await;
}

/// A stream that would take its run over the limit is refused as soon as
/// it crosses, not at its end.
pub async fn run_limit_on_a_stream_is_refused_as_it_crosses(fixture: ArtifactFixture) {
    let store = fixture.store().as_ref();
    let run = RunId::new();
    let limits = limits(1 << 30, 5_000);
    store
        .put(run, "s", "first", pattern(2_000).into(), &limits, t0())
        .await
        .expect("2,000 of 5,000");
    let pulled = Arc::new(AtomicUsize::new(0));
    let err = store
        .put(
            run,
            "s",
            "endless",
            endless(1000, Arc::clone(&pulled)),
            &limits,
            t0(),
        )
        .await
        .expect_err("an endless stream");
    assert!(
        matches!(
            err,
            ArtifactError::RunOverLimit {
                limit: 5_000,
                others: 2_000,
                received: 4_000,
                ..
            }
        ),
        "{err:?}"
    );
    assert_eq!(pulled.load(Ordering::SeqCst), 4, "chunks read");
    assert_eq!(names(&store.list(run).await.expect("list")), ["first"]);
    fixture.assert_blobs(1, "after a refused stream").await;
}

/// A stream that fails midway fails the put with `Body` and stores nothing.
pub async fn failing_stream_leaves_nothing(fixture: ArtifactFixture) {
    let store = fixture.store().as_ref();
    let run = RunId::new();
    let chunks = vec![
        Ok(Bytes::from(pattern(100_000))),
        Ok(Bytes::from(pattern(100_000))),
        Err(io::Error::new(
            io::ErrorKind::ConnectionReset,
            "the source went away",
        )),
        Ok(Bytes::from_static(b"never read")),
    ];
    let err = store
        .put(
            run,
            "s",
            "broken",
            ArtifactBody::stream(futures::stream::iter(chunks)),
            &ArtifactLimits::default(),
            t0(),
        )
        .await
        .expect_err("a failing stream");
    assert!(
        matches!(&err, ArtifactError::Body(e) if e.kind() == io::ErrorKind::ConnectionReset),
        "{err:?}"
    );
    assert!(store.list(run).await.expect("list").is_empty());
    assert_not_found(store.get(run, "broken").await, "get after a failed put");
    assert_not_found(
        store.open(run, "broken").await.map(|(a, _)| a),
        "open after a failed put",
    );
    fixture.assert_blobs(0, "after a failed stream").await;
}

/// A replacement that fails (a failing stream, a limit) leaves the artifact
/// it would have replaced as it was.
pub async fn failed_replacement_keeps_the_old_artifact(fixture: ArtifactFixture) {
    let store = fixture.store().as_ref();
    let run = RunId::new();
    let first = put(store, run, "s", "out", b"hello".to_vec()).await;
    let failing = futures::stream::iter(vec![
        Ok(Bytes::from_static(b"partial")),
        Err(io::Error::other("failed")),
    ]);
    let err = store
        .put(
            run,
            "s",
            "out",
            ArtifactBody::stream(failing),
            &ArtifactLimits::default(),
            t0(),
        )
        .await
        .expect_err("a failing stream");
    assert!(matches!(err, ArtifactError::Body(_)), "{err:?}");
    let err = store
        .put(
            run,
            "s",
            "out",
            pattern(100).into(),
            &limits(50, 1000),
            t0(),
        )
        .await
        .expect_err("over the limit");
    assert!(matches!(err, ArtifactError::TooLarge { .. }), "{err:?}");
    assert_eq!(store.list(run).await.expect("list"), vec![first.clone()]);
    assert_eq!(read(store, run, "out").await, (first, Bytes::from("hello")));
    fixture.assert_blobs(1, "after failed replacements").await;
}

/// Names are checked by every method that takes one.
pub async fn names_are_validated(fixture: ArtifactFixture) {
    let store = fixture.store().as_ref();
    let run = RunId::new();
    let too_long = "x".repeat(MAX_ARTIFACT_NAME_LEN + 1);
    for name in [
        "",
        ".",
        "..",
        ".hidden",
        "a/b",
        "../escape",
        "a b",
        "ü",
        "a\\b",
        &too_long,
    ] {
        let put = store
            .put(
                run,
                "s",
                name,
                b"x".to_vec().into(),
                &ArtifactLimits::default(),
                t0(),
            )
            .await;
        assert!(
            matches!(put, Err(ArtifactError::InvalidName(_))),
            "put {name:?}: {put:?}"
        );
        let got = store.get(run, name).await;
        assert!(
            matches!(got, Err(ArtifactError::InvalidName(_))),
            "get {name:?}"
        );
        let opened = store.open(run, name).await.map(|(a, _)| a);
        assert!(
            matches!(opened, Err(ArtifactError::InvalidName(_))),
            "open {name:?}"
        );
    }
    assert!(store.list(run).await.expect("list").is_empty());
    fixture.assert_blobs(0, "after invalid names").await;
    let longest = "y".repeat(MAX_ARTIFACT_NAME_LEN);
    put(store, run, "s", &longest, b"x".to_vec()).await;
    put(store, run, "s", "a..b-c_d.E9", b"x".to_vec()).await;
    assert_eq!(store.list(run).await.expect("list").len(), 2);
}

/// Missing artifacts are `NotFound`; deleting a run without any removes 0.
pub async fn missing_artifacts_are_not_found(fixture: ArtifactFixture) {
    let store = fixture.store().as_ref();
    let run = RunId::new();
    assert_not_found(store.get(run, "nothing").await, "get in an unknown run");
    put(store, run, "s", "something", b"x".to_vec()).await;
    assert_not_found(store.get(run, "nothing").await, "get of an unknown name");
    assert_not_found(store.open(run, "nothing").await.map(|(a, _)| a), "open");
    assert_not_found(
        store.get(RunId::new(), "something").await,
        "another run's name",
    );
    assert_eq!(store.delete_run(RunId::new()).await.expect("delete"), 0);
    assert!(store.list(RunId::new()).await.expect("list").is_empty());
}

/// Deleting a run removes its artifacts from listing and reading, and
/// their content; other runs keep theirs.
pub async fn delete_run_removes_listing_and_content(fixture: ArtifactFixture) {
    let store = fixture.store().as_ref();
    let (run, other) = (RunId::new(), RunId::new());
    put(store, run, "s", "a", b"first".to_vec()).await;
    put(store, run, "t", "b", chunked(pattern(200_000))).await;
    let kept = put(store, other, "s", "a", b"other".to_vec()).await;
    fixture.assert_blobs(3, "before the delete").await;

    assert_eq!(store.delete_run(run).await.expect("delete"), 2);
    assert!(store.list(run).await.expect("list").is_empty());
    assert_not_found(store.get(run, "a").await, "get after delete");
    assert_not_found(
        store.open(run, "b").await.map(|(a, _)| a),
        "open after delete",
    );
    assert_eq!(store.runs().await.expect("runs"), vec![other]);
    assert_eq!(read(store, other, "a").await, (kept, Bytes::from("other")));
    fixture.assert_blobs(1, "after the delete").await;

    assert_eq!(store.delete_run(run).await.expect("delete again"), 0);
    // The run can have artifacts again.
    put(store, run, "s", "a", b"again".to_vec()).await;
    assert_eq!(&read(store, run, "a").await.1[..], b"again");
}

/// `runs` lists each run with artifacts once, in id order.
pub async fn runs_lists_runs_with_artifacts(fixture: ArtifactFixture) {
    let store = fixture.store().as_ref();
    assert!(store.runs().await.expect("runs").is_empty());
    let mut runs: Vec<RunId> = (0..3).map(|_| RunId::new()).collect();
    // Stored out of order.
    for run in runs.iter().rev() {
        put(store, *run, "s", "a", b"1".to_vec()).await;
        put(store, *run, "s", "b", b"2".to_vec()).await;
    }
    runs.sort();
    assert_eq!(store.runs().await.expect("runs"), runs);
    for run in &runs {
        assert_eq!(store.delete_run(*run).await.expect("delete"), 2);
    }
    assert!(store.runs().await.expect("runs").is_empty());
    fixture.assert_blobs(0, "after deleting every run").await;
}

/// Concurrent puts of different names to one run all land.
pub async fn concurrent_puts_of_different_names_all_land(fixture: ArtifactFixture) {
    let run = RunId::new();
    let puts = (0..16usize).map(|i| {
        let store = Arc::clone(fixture.store());
        tokio::spawn(async move {
            let body = if i.is_multiple_of(2) {
                ArtifactBody::from(pattern(1000 + i))
            } else {
                chunked(pattern(1000 + i))
            };
            store
                .put(
                    run,
                    &format!("step-{i}"),
                    &format!("n{i:02}"),
                    body,
                    &ArtifactLimits::default(),
                    t0(),
                )
                .await
        })
    });
    for put in futures::future::join_all(puts).await {
        put.expect("a task").expect("a put");
    }
    let store = fixture.store().as_ref();
    let listed = store.list(run).await.expect("list");
    assert_eq!(listed.len(), 16);
    for (i, artifact) in listed.iter().enumerate() {
        assert_eq!(artifact.name, format!("n{i:02}"));
        assert_eq!(artifact.size, 1000 + i as u64);
        assert_eq!(artifact.sha256, sha256_hex(&pattern(1000 + i)));
        assert_eq!(
            &read(store, run, &artifact.name).await.1[..],
            &pattern(1000 + i)[..]
        );
    }
    fixture.assert_blobs(16, "after 16 puts").await;
}

/// Concurrent puts to one run through one store keep to the run limit
/// together: of 16 puts of 10 bytes under a limit of 100, exactly 10 land.
pub async fn concurrent_puts_respect_the_run_limit(fixture: ArtifactFixture) {
    let run = RunId::new();
    let limits = limits(10, 100);
    let puts = (0..16).map(|i| {
        let store = Arc::clone(fixture.store());
        tokio::spawn(async move {
            store
                .put(
                    run,
                    "s",
                    &format!("n{i:02}"),
                    chunked(vec![i as u8; 10]),
                    &limits,
                    t0(),
                )
                .await
        })
    });
    let mut landed = 0;
    for put in futures::future::join_all(puts).await {
        match put.expect("a task") {
            Ok(_) => landed += 1,
            Err(ArtifactError::RunOverLimit { limit: 100, .. }) => {}
            Err(other) => panic!("expected RunOverLimit, got {other:?}"),
        }
    }
    assert_eq!(landed, 10);
    let listed = fixture.store().list(run).await.expect("list");
    assert_eq!(listed.len(), 10);
    assert_eq!(listed.iter().map(|a| a.size).sum::<u64>(), 100);
    fixture.assert_blobs(10, "after the race").await;
}

/// Identical content in two runs is stored once; deleting one run leaves
/// it readable in the other, deleting both removes it.
pub async fn identical_content_is_stored_once(fixture: ArtifactFixture) {
    let store = fixture.store().as_ref();
    let (first, second) = (RunId::new(), RunId::new());
    let content = pattern(300_000);
    let a = put(store, first, "s", "data", content.clone()).await;
    let b = put(store, second, "t", "copy", chunked(content.clone())).await;
    assert_eq!(a.sha256, b.sha256);
    fixture
        .assert_blobs(1, "after two puts of one content")
        .await;

    assert_eq!(store.delete_run(first).await.expect("delete"), 1);
    let (artifact, bytes) = read(store, second, "copy").await;
    assert_eq!(artifact, b);
    assert!(bytes[..] == content[..]);
    assert!(read_streamed(store, second, "copy").await.1 == content);
    fixture
        .assert_blobs(1, "after deleting one of the two runs")
        .await;

    assert_eq!(store.delete_run(second).await.expect("delete"), 1);
    fixture.assert_blobs(0, "after deleting both runs").await;
}

/// Garbage collection keeps every stored artifact readable.
pub async fn collect_garbage_keeps_stored_artifacts(fixture: ArtifactFixture) {
    let store = fixture.store().as_ref();
    let run = RunId::new();
    let kept = put(store, run, "s", "kept", b"kept".to_vec()).await;
    put(store, run, "s", "replaced", b"old".to_vec()).await;
    put(store, run, "s", "replaced", b"new".to_vec()).await;
    let gone = RunId::new();
    put(store, gone, "s", "gone", b"gone".to_vec()).await;
    store.delete_run(gone).await.expect("delete");

    store.collect_garbage().await.expect("collect garbage");
    assert_eq!(read(store, run, "kept").await, (kept, Bytes::from("kept")));
    assert_eq!(&read(store, run, "replaced").await.1[..], b"new");
    fixture.assert_blobs(2, "after collecting garbage").await;
    assert_eq!(store.collect_garbage().await.expect("collect again"), 0);
}
