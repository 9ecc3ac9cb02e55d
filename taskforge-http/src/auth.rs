//! API tokens on the way in: the `Authorization: Bearer tf_…` check every
//! `/api/v1` handler starts with, and making tokens (including the first,
//! bootstrap admin token).

use std::collections::BTreeSet;

use axum::extract::FromRequestParts;
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use chrono::{DateTime, TimeDelta, Utc};
use taskforge_core::store::{ApiToken, Scope, TokenId, TokenStore};
use taskforge_core::{StepExecutor, Store, StoreError, Workflow};

use crate::options::Ctx;
use crate::secret::{MalformedToken, TokenSecret};
use crate::Problem;

/// `last_used_at` is written at most this often per token, so that
/// authenticating does not cost a store write per request.
const TOUCH_EVERY: TimeDelta = TimeDelta::seconds(60);

/// The token a request was made with, checked: well-formed, known, live.
#[derive(Debug, Clone)]
pub(crate) struct Caller {
    pub(crate) token: ApiToken,
}

impl Caller {
    /// 403 unless the token holds `scope`.
    pub(crate) fn require(&self, scope: Scope) -> Result<(), Problem> {
        if self.token.allows(scope) {
            Ok(())
        } else {
            Err(Problem::forbidden(format!(
                "this token lacks the {scope} scope"
            )))
        }
    }

    /// 403 unless the token holds `scope` for `workflow`.
    pub(crate) fn require_for(&self, scope: Scope, workflow: &Workflow) -> Result<(), Problem> {
        self.require(scope)?;
        if self.token.reaches(&workflow.name) {
            Ok(())
        } else {
            Err(Problem::forbidden(format!(
                "this token does not reach workflow {}",
                workflow.name
            )))
        }
    }

    /// Whether the token is limited to named workflows.
    pub(crate) fn restricted(&self) -> bool {
        self.token.workflows.is_some()
    }
}

impl<S: Store, X: StepExecutor> FromRequestParts<Ctx<S, X>> for Caller {
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, ctx: &Ctx<S, X>) -> Result<Self, Problem> {
        let header = parts
            .headers
            .get(AUTHORIZATION)
            .ok_or_else(|| Problem::unauthorized("no Authorization header"))?;
        let text = header
            .to_str()
            .ok()
            .and_then(|value| value.strip_prefix("Bearer "))
            .ok_or_else(|| {
                Problem::unauthorized("the Authorization header is not `Bearer <token>`")
            })?;
        // Refused without a lookup: a store is never asked about garbage.
        let secret = TokenSecret::parse(text.trim())
            .map_err(|e: MalformedToken| Problem::unauthorized(e.to_string()))?;
        let digest = secret.digest();
        let store = ctx.engine.store();
        // The lookup is by digest, so an attacker's guess and a revoked or
        // unknown token cost the same; the final comparison is constant-time.
        let token = store
            .find_token(&digest)
            .await?
            .filter(|token| token.digest.ct_eq(&digest));
        let now = ctx.now();
        let Some(token) = token.filter(|token| token.is_live(now)) else {
            // One answer for unknown, expired and revoked: no oracle.
            return Err(Problem::unauthorized(
                "the token is unknown, expired or revoked",
            ));
        };
        if token
            .last_used_at
            .is_none_or(|last| now - last >= TOUCH_EVERY)
        {
            // In the background: the answer need not wait for bookkeeping.
            let engine = ctx.engine.clone();
            let (id, prefix) = (token.id, token.prefix.clone());
            tokio::spawn(async move {
                if let Err(error) = engine.store().touch_token(id, now).await {
                    tracing::warn!(%error, token = %prefix, "could not record token use");
                }
            });
        }
        Ok(Self { token })
    }
}

/// What to make a token with.
#[derive(Debug, Clone)]
#[non_exhaustive]
#[must_use]
pub struct NewToken {
    /// A label.
    pub name: String,
    /// What it allows.
    pub scopes: BTreeSet<Scope>,
    /// If set, the only workflows it reaches, by name.
    pub workflows: Option<BTreeSet<String>>,
    /// When it stops working, if ever.
    pub expires_at: Option<DateTime<Utc>>,
}

impl NewToken {
    /// A token named `name` with `scopes`, reaching every workflow, never expiring.
    pub fn new(name: impl Into<String>, scopes: impl IntoIterator<Item = Scope>) -> Self {
        Self {
            name: name.into(),
            scopes: scopes.into_iter().collect(),
            workflows: None,
            expires_at: None,
        }
    }

    /// An admin token: every scope.
    pub fn admin(name: impl Into<String>) -> Self {
        Self::new(name, Scope::ALL)
    }

    /// Reaching only these workflows.
    pub fn workflows(mut self, names: impl IntoIterator<Item = impl Into<String>>) -> Self {
        self.workflows = Some(names.into_iter().map(Into::into).collect());
        self
    }

    /// Expiring at `at`.
    pub fn expires_at(mut self, at: DateTime<Utc>) -> Self {
        self.expires_at = Some(at);
        self
    }
}

/// Why a token could not be made.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TokenError {
    /// The operating system gave no randomness.
    #[error("no randomness for a token: {0}")]
    Random(getrandom::Error),
    /// The store refused or failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A bootstrap token given by the environment is not a well-formed token.
    #[error("the provided admin token is malformed: {0}")]
    Malformed(#[from] MalformedToken),
}

/// Makes a token as `new` says, stores its digest, and returns the stored
/// record with the secret: the only time the secret exists outside its
/// holder's hands.
///
/// # Errors
/// [`TokenError`] if there is no randomness or the store fails.
pub async fn issue_token<S: TokenStore + ?Sized>(
    store: &S,
    new: NewToken,
    now: DateTime<Utc>,
) -> Result<(ApiToken, TokenSecret), TokenError> {
    let secret = TokenSecret::generate().map_err(TokenError::Random)?;
    let token = record(&secret, new, now);
    store.insert_token(&token).await?;
    Ok((token, secret))
}

fn record(secret: &TokenSecret, new: NewToken, now: DateTime<Utc>) -> ApiToken {
    ApiToken {
        id: TokenId::new(),
        name: new.name,
        prefix: secret.prefix(),
        digest: secret.digest(),
        scopes: new.scopes,
        workflows: new.workflows,
        created_at: now,
        expires_at: new.expires_at,
        last_used_at: None,
        revoked_at: None,
    }
}

/// What [`bootstrap`] did.
#[derive(Debug)]
#[non_exhaustive]
pub enum Bootstrap {
    /// The store had tokens already: nothing was made.
    Existing,
    /// The store had none: this admin token was made. Print it once.
    Created(TokenSecret),
    /// The store had none: the provided token was stored as the admin token.
    Provisioned,
}

/// Gives an empty token store its first admin token: `provided` (for
/// provisioning, e.g. from `TASKFORGE_ADMIN_TOKEN`) if given, else a new
/// one. Does nothing if any token, even a revoked one, exists, so it runs
/// at most once in a store's life.
///
/// # Errors
/// [`TokenError`] if `provided` is malformed, or making or storing fails.
pub async fn bootstrap<S: TokenStore + ?Sized>(
    store: &S,
    provided: Option<&str>,
    now: DateTime<Utc>,
) -> Result<Bootstrap, TokenError> {
    if !store.list_tokens().await?.is_empty() {
        return Ok(Bootstrap::Existing);
    }
    match provided {
        Some(text) => {
            let secret = TokenSecret::parse(text.trim())?;
            store
                .insert_token(&record(&secret, NewToken::admin("admin"), now))
                .await?;
            Ok(Bootstrap::Provisioned)
        }
        None => {
            let (_, secret) = issue_token(store, NewToken::admin("admin"), now).await?;
            Ok(Bootstrap::Created(secret))
        }
    }
}
