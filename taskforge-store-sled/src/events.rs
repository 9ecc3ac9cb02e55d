//! [`EventStore`] over sled.

use std::sync::Arc;

use async_trait::async_trait;
use taskforge_core::store::rules::{self, page_limit};
use taskforge_core::store::{EventInsert, EventStore};
use taskforge_core::{Event, EventId, EventQuery, Page, StoreError, WorkflowId, WorkflowRun};

use crate::active::ActiveRun;
use crate::error::backend;
use crate::keys::{self, tag};
use crate::scan::{page, PageRequest, Source};
use crate::store::{encode, load, op_load, SledStore};
use crate::writer::{Op, Outcome, Tx};

#[async_trait]
impl EventStore for SledStore {
    async fn insert_event(
        &self,
        event: &Event,
        run: Option<&WorkflowRun>,
    ) -> Result<EventInsert, StoreError> {
        // A stored duplicate is answered from memory or with a read:
        // nothing to write, serialize or queue. Its original may have been
        // applied a moment ago and not be on disk yet, so the answer waits
        // until it is: a sender told "duplicate" stops retrying, and a
        // crash must not lose the original then.
        let dedup = event
            .dedup_key
            .as_deref()
            .map(|k| keys::dedup(event.workflow_id, k));
        let generation = self.inner.recent.generation();
        if let Some(dedup) = &dedup {
            if let Some(stored) = self.inner.recent.get(dedup) {
                self.read_durable().await?;
                return Ok(EventInsert::Duplicate(Box::new((*stored).clone())));
            }
        }
        // Read only while the writer is idle: while it applies a batch a
        // read would block this async worker, and the writer checks anyway.
        if let Some(dedup) = dedup.as_ref().filter(|_| !self.writer_busy()) {
            if let Some(stored_id) = self.inner.idx.get(dedup).map_err(backend)? {
                let stored = load::<Event>(&self.inner.events, "event", &stored_id)?;
                // A missing event was pruned meanwhile, or the batch storing it
                // is still being applied: the writer decides.
                if let Some(stored) = stored {
                    self.read_durable().await?;
                    let stored = Arc::new(stored);
                    self.inner
                        .recent
                        .insert(generation, dedup.clone(), Arc::clone(&stored));
                    return Ok(EventInsert::Duplicate(Box::new((*stored).clone())));
                }
            }
        }
        // Everything is serialized once, before the write is queued.
        let event_bytes = encode("event", event)?;
        let event_id = event.id;
        let cached = dedup.clone();
        let event_index = keys::event_index(event);
        let run = match run {
            Some(run) => {
                let mut index = keys::run_index(run);
                // The run an event starts is found through the event.
                let started = event.outcome.run_id() == Some(run.id);
                if !(started && run.event_id == Some(event.id)) {
                    index.extend(keys::run_by_event(run));
                }
                Some((run.id, encode("run", run)?, index, Arc::new(run.clone())))
            }
            None => None,
        };
        let op: Op = Box::new(move |tx: &Tx<'_>| {
            // Checks first: a write that fails leaves nothing behind.
            if let Some(dedup) = &dedup {
                if let Some(stored_id) = tx.idx.get(dedup.as_slice())? {
                    return Ok(match op_load::<Event>(&tx.events, "event", &stored_id)? {
                        Ok(Some(stored)) => Ok(Outcome::Duplicate(Box::new(stored))),
                        Ok(None) => Err(backend(format!(
                            "dedup key of event {event_id} points at a missing event"
                        ))),
                        Err(e) => Err(e),
                    });
                }
            }
            if tx.events.get(event_id.to_bytes())?.is_some() {
                return Ok(Err(StoreError::already_exists("event", event_id)));
            }
            if let Some((run_id, _, _, _)) = &run {
                if tx.runs.get(run_id.to_bytes())?.is_some() {
                    return Ok(Err(StoreError::already_exists("run", run_id)));
                }
            }
            if let Some((run_id, bytes, index, stored)) = &run {
                tx.runs.insert(&run_id.to_bytes(), bytes.clone())?;
                for key in index {
                    tx.idx.insert(key.as_slice(), &[])?;
                }
                tx.active.set(
                    run_id.to_bytes(),
                    Some(ActiveRun::new(Arc::clone(stored), bytes.clone())),
                );
            }
            tx.events
                .insert(&event_id.to_bytes(), event_bytes.clone())?;
            for key in &event_index {
                tx.idx.insert(key.as_slice(), &[])?;
            }
            if let Some(dedup) = &dedup {
                tx.idx.insert(dedup.as_slice(), &event_id.to_bytes())?;
            }
            Ok(Ok(Outcome::Done))
        });
        // A duplicate's original may have been stored a moment ago by a
        // writer still waiting for its flush; the caller acts on it too:
        // waited for either way.
        let inserted = match self.write_durable(op).await? {
            Outcome::Duplicate(stored) => EventInsert::Duplicate(stored),
            _ => EventInsert::Inserted,
        };
        if let Some(key) = cached {
            let stored = match &inserted {
                EventInsert::Duplicate(stored) => Arc::new((**stored).clone()),
                _ => Arc::new(event.clone()),
            };
            self.inner.recent.insert(generation, key, stored);
        }
        Ok(inserted)
    }

    async fn get_event(&self, id: EventId) -> Result<Event, StoreError> {
        load(&self.inner.events, "event", &id.to_bytes())?
            .ok_or_else(|| StoreError::not_found("event", id))
    }

    async fn find_event_by_dedup_key(
        &self,
        workflow_id: WorkflowId,
        dedup_key: &str,
    ) -> Result<Option<Event>, StoreError> {
        match self
            .inner
            .idx
            .get(keys::dedup(workflow_id, dedup_key))
            .map_err(backend)?
        {
            Some(id) => load(&self.inner.events, "event", &id),
            None => Ok(None),
        }
    }

    async fn list_events(&self, query: &EventQuery) -> Result<Page<Event, EventId>, StoreError> {
        let query = query.clone();
        self.blocking(move |inner| {
            // The narrowest index the query allows; the rest is filtered.
            let source = if let Some(trigger) = query.trigger_id {
                Source::Index(keys::key(tag::EVENT_BY_TRIGGER, &[&trigger.to_bytes()]))
            } else if let Some(wf) = query.workflow_id {
                Source::Index(keys::key(tag::EVENT_BY_WORKFLOW, &[&wf.to_bytes()]))
            } else if query.received_from.is_some() || query.received_until.is_some() {
                Source::TimeRange {
                    tag: tag::EVENT_BY_TIME,
                    from: query.received_from,
                    until: query.received_until,
                }
            } else {
                Source::Primary
            };
            let keep = |e: &Event| rules::event_matches(e, &query);
            let limit = page_limit(query.limit);
            let after = query.after.map(|id| id.to_bytes());
            let (items, more) = page(
                &inner.events,
                &inner.idx,
                "event",
                PageRequest {
                    source,
                    order: query.order,
                    after,
                    limit,
                },
                keep,
                |_| None,
            )?;
            Ok(Page::new(items, more, |e| e.id))
        })
        .await
    }
}
