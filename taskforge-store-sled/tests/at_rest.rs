//! No credential is stored in plaintext: after a workload that puts secrets
//! everywhere they could leak (signed webhooks and a rotation, a step that
//! echoes its secret in output, error, logs and progress), no file of the
//! sled store holds any of them, raw or in base64.

use std::path::Path;

use taskforge_core::testing::at_rest::{find_any, leave_secrets_everywhere};
use taskforge_store_sled::SledStore;

fn files(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("read the store's directory") {
        let path = entry.expect("an entry").path();
        if path.is_dir() {
            files(&path, out);
        } else {
            out.push(path);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_file_of_the_store_holds_a_credential() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let store = SledStore::open(dir.path()).expect("open");
    let forbidden = leave_secrets_everywhere(store.clone()).await;
    store.flush().await.expect("flush");
    drop(store);

    let mut paths = Vec::new();
    files(dir.path(), &mut paths);
    assert!(!paths.is_empty());
    let mut bytes = 0;
    for path in paths {
        let content = std::fs::read(&path).expect("read a file of the store");
        bytes += content.len();
        if let Some(found) = find_any(&content, &forbidden) {
            panic!(
                "{} holds {:?} in plaintext",
                path.display(),
                String::from_utf8_lossy(found)
            );
        }
    }
    assert!(bytes > 0, "the store wrote its files");
}
