//! Webhook credentials at rest: a trigger's signing secrets are sealed into
//! the secret store before the trigger is written, and the trigger keeps
//! only references to them (see [`SECRET_REF_PREFIX`]). Deliveries are
//! verified against the opened secrets; opened values are cached by
//! reference, which names an immutable version.

use std::sync::Arc;

use super::shared::Shared;
use crate::error::EngineError;
use crate::secret::{SecretError, SecretVault};
use crate::store::Store;
use crate::trigger::auth::{is_secret_ref, SECRET_REF_PREFIX};
use crate::trigger::{Trigger, TriggerKind};

/// The secret name of slot `index` of `part` (`signature` or `retired`) of
/// trigger `trigger`.
fn slot_name(trigger: &Trigger, part: &str, index: usize) -> String {
    format!("trigger/{}/{part}/{index}", trigger.id)
}

/// Seals every plaintext credential of `trigger` into the secret store,
/// leaving references in its place. A trigger with no signing secret is
/// left as it is. Without a master key a signed webhook is refused: no
/// credential is ever stored in plaintext.
pub(crate) async fn seal<S: Store, X>(
    shared: &Shared<S, X>,
    trigger: &mut Trigger,
) -> Result<(), EngineError> {
    let now = shared.now();
    let id_holder = trigger.clone();
    let TriggerKind::Webhook(config) = &mut trigger.kind else {
        return Ok(());
    };
    let mut slots: Vec<(&'static str, &mut String)> = Vec::new();
    if let Some(scheme) = &mut config.signature {
        slots.extend(scheme.secrets_mut().into_iter().map(|s| ("signature", s)));
    }
    if let Some(scheme) = config.retired.as_mut().and_then(|r| r.signature.as_mut()) {
        slots.extend(scheme.secrets_mut().into_iter().map(|s| ("retired", s)));
    }
    let mut index = 0;
    for (part, value) in slots {
        index += 1;
        if is_secret_ref(value) {
            continue;
        }
        let vault = shared.vault.as_ref().ok_or(EngineError::NoMasterKey)?;
        let name = slot_name(&id_holder, part, index - 1);
        let version = vault.put(&name, value.as_bytes(), now).await?;
        *value = format!("{SECRET_REF_PREFIX}{name}@{version}");
    }
    Ok(())
}

/// `trigger` with every credential reference replaced by the secret it
/// names, for verifying a delivery. Never stored.
pub(crate) async fn open<S: Store, X>(
    shared: &Shared<S, X>,
    mut trigger: Trigger,
) -> Result<Trigger, EngineError> {
    let TriggerKind::Webhook(config) = &mut trigger.kind else {
        return Ok(trigger);
    };
    let mut slots: Vec<&mut String> = Vec::new();
    if let Some(scheme) = &mut config.signature {
        slots.extend(scheme.secrets_mut());
    }
    if let Some(scheme) = config.retired.as_mut().and_then(|r| r.signature.as_mut()) {
        slots.extend(scheme.secrets_mut());
    }
    for value in slots {
        if !is_secret_ref(value) {
            continue;
        }
        let cached = shared.credentials.lock().get(value.as_str()).cloned();
        let opened = match cached {
            Some(opened) => opened,
            None => {
                let vault = shared.vault.as_ref().ok_or(EngineError::NoMasterKey)?;
                let opened = Arc::new(resolve(vault, value).await?);
                shared
                    .credentials
                    .lock()
                    .insert(value.clone(), Arc::clone(&opened));
                opened
            }
        };
        value.clone_from(&opened);
    }
    Ok(trigger)
}

/// The secret a reference names, as text.
async fn resolve<S: Store>(vault: &SecretVault<S>, reference: &str) -> Result<String, EngineError> {
    let malformed = || {
        EngineError::Secret(SecretError::NotFound {
            name: reference.to_owned(),
            version: None,
        })
    };
    let rest = reference
        .strip_prefix(SECRET_REF_PREFIX)
        .ok_or_else(malformed)?;
    let (name, version) = rest.rsplit_once('@').ok_or_else(malformed)?;
    let version: u32 = version.parse().map_err(|_| malformed())?;
    let value = vault.get_version(name, version).await?;
    Ok(value.as_str().map_err(|_| malformed())?.to_owned())
}

/// Removes the secrets of a deleted trigger.
pub(crate) async fn forget<S: Store, X>(
    shared: &Shared<S, X>,
    trigger: &Trigger,
) -> Result<(), EngineError> {
    let Some(vault) = &shared.vault else {
        return Ok(());
    };
    let prefix = format!("trigger/{}/", trigger.id);
    for name in shared.store.list_secret_names().await? {
        if name.starts_with(&prefix) {
            match vault.delete(&name).await {
                Ok(()) => {}
                Err(error) if error.is_not_found() => {}
                Err(error) => return Err(error.into()),
            }
        }
    }
    Ok(())
}

/// Seals the plaintext credentials of every stored trigger (written before
/// credentials were sealed, or by an engine without a master key);
/// returns how many triggers it rewrote.
pub(crate) async fn seal_stored<S: Store, X>(shared: &Shared<S, X>) -> Result<usize, EngineError> {
    let mut sealed = 0;
    for mut trigger in shared.store.list_triggers(None).await? {
        let before = trigger.clone();
        seal(shared, &mut trigger).await?;
        if trigger != before {
            shared.store.update_trigger(&trigger).await?;
            sealed += 1;
        }
    }
    Ok(sealed)
}
