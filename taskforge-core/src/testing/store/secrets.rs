//! Cases for [`SecretStore`](crate::store::SecretStore).

use chrono::TimeDelta;

use crate::limits::{MAX_NAME_LEN, MAX_SECRET_BYTES};
use crate::secret::{MasterKey, SealedSecret};

use super::*;

/// A record as the vault would store it, with recognizable bytes: the
/// store keeps them as given, so they need not be a real seal.
fn sealed(name: &str, version: u32, key_id: &str) -> SealedSecret {
    let tag = u8::try_from(version % 251).expect("below 251");
    SealedSecret {
        name: name.to_owned(),
        version,
        key_id: key_id.to_owned(),
        nonce: vec![tag; 24],
        // A NUL, a high byte and the name, so records differ.
        ciphertext: [&[0, 0xff, tag][..], name.as_bytes()].concat(),
        created_at: at(i64::from(version)) + TimeDelta::nanoseconds(123_456_789),
    }
}

async fn insert<S: Store>(store: &S, secret: &SealedSecret) {
    store
        .insert_secret(secret)
        .await
        .expect("insert a sealed secret");
}

/// Stored versions come back as stored: by version, as the latest, in
/// version order, and their names once each, sorted.
pub async fn secret_round_trip<S: Store + Clone>(store: S) {
    let db = [
        sealed("db", 1, "k1"),
        sealed("db", 2, "k1"),
        sealed("db", 3, "k2"),
    ];
    let api = sealed("api", 1, "k2");
    for secret in db.iter().chain([&api]) {
        insert(&store, secret).await;
    }
    for secret in &db {
        assert_eq!(
            store
                .get_secret("db", Some(secret.version))
                .await
                .expect("get a version"),
            Some(secret.clone())
        );
    }
    assert_eq!(
        store.get_secret("db", None).await.expect("get the latest"),
        Some(db[2].clone())
    );
    assert_eq!(
        store.get_secret("api", None).await.expect("get the latest"),
        Some(api.clone())
    );
    assert_eq!(
        store
            .list_secret_versions("db")
            .await
            .expect("list versions"),
        db.to_vec()
    );
    assert_eq!(
        store.list_secret_names().await.expect("list names"),
        ["api", "db"]
    );
}

/// `(name, version)` is unique: a second insert is `AlreadyExists` and
/// changes nothing; the same version of another name is no clash.
pub async fn secret_versions_are_unique<S: Store + Clone>(store: S) {
    let first = sealed("token", 1, "k1");
    insert(&store, &first).await;
    let mut again = sealed("token", 1, "k2");
    again.ciphertext = b"another value".to_vec();
    expect_already_exists(store.insert_secret(&again).await, "a taken (name, version)");
    assert_eq!(
        store.list_secret_versions("token").await.expect("list"),
        vec![first]
    );
    insert(&store, &sealed("other", 1, "k1")).await;
}

/// Of concurrent inserts of one `(name, version)`, exactly one wins, and
/// its record is the one stored.
pub async fn concurrent_inserts_of_one_secret_version_have_one_winner<S: Store + Clone>(store: S) {
    let results = race(&store, 8, |store, i| async move {
        let mut secret = sealed("shared", 1, "k1");
        secret.ciphertext = format!("writer {i}").into_bytes();
        let result = store.insert_secret(&secret).await;
        (secret, result)
    })
    .await;
    let mut winners = Vec::new();
    for (secret, result) in results {
        match result {
            Ok(()) => winners.push(secret),
            Err(StoreError::AlreadyExists { .. }) => {}
            Err(e) => panic!("a racing insert failed: {e}"),
        }
    }
    assert_eq!(winners.len(), 1, "exactly one insert wins");
    assert_eq!(
        store.list_secret_versions("shared").await.expect("list"),
        winners
    );
}

/// The latest version is the highest, whatever the order of inserts, and
/// names that start alike (`a`, `a.b`, `a/b`, `ab`) never share versions.
pub async fn latest_secret_is_the_highest_version<S: Store + Clone>(store: S) {
    for version in [1, 2, 10] {
        insert(&store, &sealed("a", version, "k1")).await;
    }
    for name in ["a.b", "a/b", "ab", "a-"] {
        insert(&store, &sealed(name, 20, "k1")).await;
    }
    assert_eq!(
        store.get_secret("a", None).await.expect("latest"),
        Some(sealed("a", 10, "k1"))
    );
    // The vault inserts in increasing order; a store takes any free version.
    insert(&store, &sealed("a", 5, "k1")).await;
    assert_eq!(
        store.get_secret("a", None).await.expect("latest"),
        Some(sealed("a", 10, "k1"))
    );
    let versions: Vec<u32> = store
        .list_secret_versions("a")
        .await
        .expect("list")
        .iter()
        .map(|s| s.version)
        .collect();
    assert_eq!(versions, [1, 2, 5, 10]);
    // Versions beyond one byte and beyond i32 keep their order.
    for version in [300, 70_000, u32::MAX] {
        insert(&store, &sealed("wide", version, "k1")).await;
    }
    assert_eq!(
        store.get_secret("wide", None).await.expect("latest"),
        Some(sealed("wide", u32::MAX, "k1"))
    );
    assert_eq!(
        store.list_secret_names().await.expect("names"),
        ["a", "a-", "a.b", "a/b", "ab", "wide"]
    );
}

/// `reseal_secret` replaces the key id, nonce and ciphertext of one
/// version only if its key id is the expected one; it changes nothing
/// else, and of concurrent reseals from one key id exactly one wins.
pub async fn reseal_is_a_compare_and_set_on_key_id<S: Store + Clone>(store: S) {
    let old = sealed("token", 1, "old");
    let neighbour = sealed("token", 2, "old");
    insert(&store, &old).await;
    insert(&store, &neighbour).await;
    let mut new = sealed("token", 1, "new");
    new.nonce = vec![9; 24];
    new.ciphertext = b"sealed again".to_vec();
    // A created_at of its own, which the store ignores.
    new.created_at = at(999);
    store
        .reseal_secret(&new, "old")
        .await
        .expect("reseal from the expected key");
    let stored = store
        .get_secret("token", Some(1))
        .await
        .expect("get")
        .expect("still there");
    assert_eq!(
        stored,
        SealedSecret {
            created_at: old.created_at,
            ..new.clone()
        },
        "only the key id, nonce and ciphertext change"
    );
    assert_eq!(
        store.get_secret("token", Some(2)).await.expect("get"),
        Some(neighbour),
        "other versions are untouched"
    );
    // Expecting the old key again: another rotation got there first.
    let mut stale = sealed("token", 1, "newer");
    stale.ciphertext = b"stale".to_vec();
    expect_conflict(
        store.reseal_secret(&stale, "old").await,
        "a reseal from a key id no longer stored",
    );
    assert_eq!(
        store.get_secret("token", Some(1)).await.expect("get"),
        Some(stored)
    );
    expect_not_found(
        store.reseal_secret(&sealed("token", 3, "x"), "old").await,
        "a reseal of a missing version",
    );
    expect_not_found(
        store.reseal_secret(&sealed("missing", 1, "x"), "old").await,
        "a reseal of a missing name",
    );

    // Racing reseals of one version from one key id: one winner.
    insert(&store, &sealed("raced", 1, "old")).await;
    let results = race(&store, 8, |store, i| async move {
        let mut secret = sealed("raced", 1, &format!("new-{i}"));
        secret.ciphertext = format!("rotation {i}").into_bytes();
        let result = store.reseal_secret(&secret, "old").await;
        (secret, result)
    })
    .await;
    let mut winners = Vec::new();
    for (secret, result) in results {
        match result {
            Ok(()) => winners.push(secret),
            Err(StoreError::Conflict { .. }) => {}
            Err(e) => panic!("a racing reseal failed: {e}"),
        }
    }
    assert_eq!(winners.len(), 1, "exactly one reseal wins");
    assert_eq!(
        store.get_secret("raced", Some(1)).await.expect("get"),
        winners.pop()
    );
}

/// `delete_secret` removes every version of one name and nothing else,
/// frees version 1, and deleting an absent name removes nothing.
pub async fn delete_secret_removes_every_version<S: Store + Clone>(store: S) {
    for version in 1..=3 {
        insert(&store, &sealed("gone", version, "k1")).await;
    }
    let kept = sealed("gone.not", 1, "k1");
    insert(&store, &kept).await;
    assert_eq!(store.delete_secret("gone").await.expect("delete"), 3);
    assert_eq!(store.get_secret("gone", None).await.expect("get"), None);
    assert_eq!(store.get_secret("gone", Some(2)).await.expect("get"), None);
    assert!(store
        .list_secret_versions("gone")
        .await
        .expect("list")
        .is_empty());
    assert_eq!(
        store.list_secret_names().await.expect("names"),
        ["gone.not"]
    );
    assert_eq!(
        store.get_secret("gone.not", None).await.expect("get"),
        Some(kept)
    );
    assert_eq!(store.delete_secret("gone").await.expect("delete again"), 0);
    insert(&store, &sealed("gone", 1, "k2")).await;
    assert_eq!(
        store.get_secret("gone", None).await.expect("get"),
        Some(sealed("gone", 1, "k2"))
    );
}

/// Absent secrets are `None` or empty for lookups and listings, and
/// `NotFound` for a reseal.
pub async fn missing_secrets_are_not_found_or_empty<S: Store + Clone>(store: S) {
    assert_eq!(store.get_secret("nothing", None).await.expect("get"), None);
    assert_eq!(
        store.get_secret("nothing", Some(1)).await.expect("get"),
        None
    );
    assert!(store
        .list_secret_versions("nothing")
        .await
        .expect("list")
        .is_empty());
    assert!(store.list_secret_names().await.expect("names").is_empty());
    assert_eq!(store.delete_secret("nothing").await.expect("delete"), 0);
    expect_not_found(
        store.reseal_secret(&sealed("nothing", 1, "k"), "k").await,
        "a reseal of a missing secret",
    );
    insert(&store, &sealed("something", 2, "k")).await;
    assert_eq!(
        store.get_secret("something", Some(1)).await.expect("get"),
        None
    );
}

/// A really sealed record of the largest value, with a name of the
/// longest length and of every allowed character, round-trips and opens.
pub async fn large_secrets_and_every_name_character_round_trip<S: Store + Clone>(store: S) {
    let key = MasterKey::from_bytes([42; 32]);
    let charset = "ABCXYZabcxyz0189_.-/trigger/Z";
    let long = format!("{charset}{}", "n".repeat(MAX_NAME_LEN - charset.len()));
    let value: Vec<u8> = (0..MAX_SECRET_BYTES)
        .map(|i| u8::try_from(i % 256).expect("a byte"))
        .collect();
    for name in [charset, long.as_str()] {
        let secret =
            SealedSecret::seal(&key, name, 1, &value, at(1)).expect("seal the largest value");
        insert(&store, &secret).await;
        let stored = store
            .get_secret(name, None)
            .await
            .expect("get")
            .expect("stored");
        assert_eq!(stored, secret);
        assert_eq!(
            stored.open_with(&key).expect("open").expose(),
            value.as_slice()
        );
    }
    assert_eq!(
        store.list_secret_names().await.expect("names"),
        [charset.to_owned(), long]
    );
}
