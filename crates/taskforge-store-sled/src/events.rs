//! [`EventStore`] over sled.

use async_trait::async_trait;
use sled::Transactional;
use taskforge_core::{
    page_limit, Event, EventId, EventInsert, EventQuery, EventStore, Page, StoreError, WorkflowId,
    WorkflowRun,
};

use crate::error::{abort, backend, tx_error};
use crate::keys::{self, tag};
use crate::scan::{page, PageRequest, Source};
use crate::store::{encode, load, tx_load, SledStore};

#[async_trait]
impl EventStore for SledStore {
    async fn insert_event(
        &self,
        event: &Event,
        run: Option<&WorkflowRun>,
    ) -> Result<EventInsert, StoreError> {
        // Everything is serialized once, outside the transaction.
        let event_bytes = encode("event", event)?;
        let event_id = event.id.to_bytes();
        let dedup = event
            .dedup_key
            .as_deref()
            .map(|k| keys::dedup(event.workflow_id, k));
        let event_index = keys::event_index(event);
        let run = match run {
            Some(run) => Some((run, encode("run", run)?, keys::run_index(run))),
            None => None,
        };
        let inner = &self.inner;
        let outcome = (&inner.events, &inner.runs, &inner.idx)
            .transaction(|(events, runs, idx)| {
                if let Some(dedup) = &dedup {
                    if let Some(stored_id) = idx.get(dedup.as_slice())? {
                        let Some(stored) = tx_load::<Event>(events, "event", &stored_id)? else {
                            return abort(backend(format!(
                                "dedup key of event {} points at a missing event",
                                event.id
                            )));
                        };
                        return Ok(EventInsert::Duplicate(Box::new(stored)));
                    }
                }
                if events.get(event_id)?.is_some() {
                    return abort(StoreError::already_exists("event", event.id));
                }
                if let Some((run, bytes, index)) = &run {
                    let run_id = run.id.to_bytes();
                    if runs.get(run_id)?.is_some() {
                        return abort(StoreError::already_exists("run", run.id));
                    }
                    runs.insert(&run_id, bytes.clone())?;
                    for key in index {
                        idx.insert(key.as_slice(), &[])?;
                    }
                }
                events.insert(&event_id, event_bytes.clone())?;
                for key in &event_index {
                    idx.insert(key.as_slice(), &[])?;
                }
                if let Some(dedup) = &dedup {
                    idx.insert(dedup.as_slice(), &event_id)?;
                }
                Ok(EventInsert::Inserted)
            })
            .map_err(tx_error)?;
        // A duplicate's original may have been stored a moment ago by a
        // writer still waiting for its flush; the caller acts on it too.
        self.durable().await?;
        Ok(outcome)
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
            let keep = |e: &Event| {
                query.workflow_id.is_none_or(|w| e.workflow_id == w)
                    && query.trigger_id.is_none_or(|t| e.trigger_id == Some(t))
                    && query.outcome.is_none_or(|o| e.outcome.kind() == o)
                    && query.received_from.is_none_or(|t| e.received_at >= t)
                    && query.received_until.is_none_or(|t| e.received_at < t)
            };
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
            )?;
            let next = if more {
                items.last().map(|e| e.id)
            } else {
                None
            };
            Ok(Page { items, next })
        })
        .await
    }
}
