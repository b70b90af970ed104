//! The one mapping from the machine's [`StoreRequest`]s to [`Store`] calls and back
//! to [`Reply`]s, shared by every driver (the server, the axum adapter, the
//! simulator), so that none of them maps requests by hand.

use wsauth_core::{Attachment, Reply, StoreRequest};

use crate::{CreateOutcome, RefreshOutcome, Store, StoreError};

/// Carries out one request of the machine on `store` at `now_ms`.
///
/// `Ok(Some(reply))` answers a request that expects one (feed it back as
/// `Input::Reply(request.reply_to(), reply)`); `Ok(None)` is the end of a
/// fire-and-forget request. On `Err`, a request that expects a reply must be
/// answered `Reply::Unavailable`: the machine then fails closed.
pub async fn execute<S: Store>(
    store: &S,
    request: StoreRequest,
    now_ms: u64,
) -> Result<Option<Reply>, StoreError> {
    let reply = match request {
        StoreRequest::CreateSession {
            claims, now_ms: at, ..
        } => match store.create_session(claims, at).await? {
            CreateOutcome::Created {
                session_id,
                resume_token,
                epoch,
                evicted,
            } => Reply::Created {
                attachment: Attachment { session_id, epoch },
                resume_token,
                evicted,
            },
            CreateOutcome::Revoked => Reply::Revoked,
            CreateOutcome::TooManySessions => Reply::TooManySessions,
        },
        StoreRequest::ResumeSession {
            session_id,
            resume_token,
            ..
        } => match store
            .resume_session(&session_id, &resume_token, now_ms)
            .await?
        {
            Some((session, epoch)) => Reply::Resumed {
                session: Box::new(session),
                epoch,
            },
            None => Reply::NotFound,
        },
        StoreRequest::RefreshSession {
            attachment,
            claims,
            now_ms: at,
            ..
        } => {
            let Attachment { session_id, epoch } = &attachment;
            match store
                .refresh_session(session_id, *epoch, claims, at)
                .await?
            {
                RefreshOutcome::Refreshed => Reply::Refreshed,
                RefreshOutcome::Revoked => Reply::Revoked,
            }
        }
        StoreRequest::Subscribe {
            attachment,
            channel,
            ..
        } => {
            store
                .subscribe(&attachment.session_id, attachment.epoch, &channel)
                .await?;
            Reply::Subscribed
        }
        StoreRequest::Publish {
            channel,
            from,
            data,
            ..
        } => {
            store.publish(&channel, Some(&from), data, now_ms).await?;
            Reply::Published
        }
        StoreRequest::NoteExpiringSent { attachment } => {
            store
                .note_expiring_sent(&attachment.session_id, attachment.epoch)
                .await?;
            return Ok(None);
        }
        StoreRequest::Unsubscribe {
            attachment,
            channel,
        } => {
            store
                .unsubscribe(&attachment.session_id, attachment.epoch, &channel)
                .await?;
            return Ok(None);
        }
        StoreRequest::DetachSession { attachment } => {
            store
                .detach(&attachment.session_id, attachment.epoch, now_ms)
                .await?;
            return Ok(None);
        }
        StoreRequest::EndSession { attachment } => {
            store
                .end_session(&attachment.session_id, attachment.epoch)
                .await?;
            return Ok(None);
        }
    };
    Ok(Some(reply))
}
