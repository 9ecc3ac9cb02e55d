//! Cases for [`TokenStore`](crate::store::TokenStore).

use std::collections::BTreeSet;

use crate::store::{ApiToken, Scope, TokenDigest, TokenId};

use super::*;

fn token(name: &str, secret: &str) -> ApiToken {
    ApiToken {
        id: TokenId::new(),
        name: name.to_owned(),
        prefix: secret.chars().take(10).collect(),
        digest: TokenDigest::of(secret),
        scopes: BTreeSet::from([Scope::Read, Scope::Run]),
        workflows: Some(BTreeSet::from(["deploy".to_owned()])),
        created_at: t0(),
        expires_at: Some(at(3600)),
        last_used_at: None,
        revoked_at: None,
    }
}

/// A stored token comes back as stored, by id, by digest and in the listing.
pub async fn token_round_trip<S: Store + Clone>(store: S) {
    let first = token("ci", "tf_first-secret");
    let second = token("ops", "tf_second-secret");
    store.insert_token(&first).await.expect("insert a token");
    store.insert_token(&second).await.expect("insert a token");
    assert_eq!(store.get_token(first.id).await.ok().as_ref(), Some(&first));
    assert_eq!(
        store.find_token(&second.digest).await.expect("find"),
        Some(second.clone())
    );
    assert_eq!(
        store
            .find_token(&TokenDigest::of("tf_unknown"))
            .await
            .expect("find"),
        None
    );
    assert_eq!(
        store.list_tokens().await.expect("list tokens"),
        vec![first, second]
    );
}

/// Token ids and digests are unique; a refused insert stores nothing.
pub async fn token_id_and_digest_are_unique<S: Store + Clone>(store: S) {
    let first = token("ci", "tf_secret");
    store.insert_token(&first).await.expect("insert a token");
    let mut same_id = token("other", "tf_other-secret");
    same_id.id = first.id;
    expect_already_exists(store.insert_token(&same_id).await, "a taken token id");
    let same_digest = token("copy", "tf_secret");
    expect_already_exists(
        store.insert_token(&same_digest).await,
        "a taken token digest",
    );
    assert_eq!(store.list_tokens().await.expect("list tokens"), vec![first]);
    assert_eq!(
        store
            .find_token(&TokenDigest::of("tf_other-secret"))
            .await
            .expect("find"),
        None
    );
}

/// Revocation is seen by the next lookup, and its first time is kept.
pub async fn revoked_token_stays_revoked<S: Store + Clone>(store: S) {
    let token = token("ci", "tf_secret");
    store.insert_token(&token).await.expect("insert a token");
    let revoked = store.revoke_token(token.id, at(10)).await.expect("revoke");
    assert_eq!(revoked.revoked_at, Some(at(10)));
    let again = store.revoke_token(token.id, at(20)).await.expect("revoke");
    assert_eq!(again.revoked_at, Some(at(10)));
    let found = store
        .find_token(&token.digest)
        .await
        .expect("find")
        .expect("a revoked token is still found");
    assert_eq!(found.revoked_at, Some(at(10)));
    assert!(!found.is_live(at(11)));
    assert_eq!(
        ApiToken {
            revoked_at: None,
            ..found
        },
        token,
        "revocation changes nothing else"
    );
}

/// `touch_token` sets only `last_used_at`, and only forward.
pub async fn touch_token_only_moves_forward<S: Store + Clone>(store: S) {
    let token = token("ci", "tf_secret");
    store.insert_token(&token).await.expect("insert a token");
    store.touch_token(token.id, at(30)).await.expect("touch");
    store.touch_token(token.id, at(20)).await.expect("touch");
    let stored = store.get_token(token.id).await.expect("get");
    assert_eq!(stored.last_used_at, Some(at(30)));
    assert_eq!(
        ApiToken {
            last_used_at: None,
            ..stored
        },
        token
    );
}

/// Absent tokens are `NotFound` for every call that names one by id.
pub async fn missing_tokens_are_not_found<S: Store + Clone>(store: S) {
    let id = TokenId::new();
    expect_not_found(store.get_token(id).await, "get a missing token");
    expect_not_found(store.revoke_token(id, t0()).await, "revoke a missing token");
    expect_not_found(store.touch_token(id, t0()).await, "touch a missing token");
    assert!(store.list_tokens().await.expect("list tokens").is_empty());
}
