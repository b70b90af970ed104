//! One task per accepted socket: it reads the upgrade request by hand, answers
//! it, and hands the tokio-tungstenite WebSocket to the shared [`Driver`].

use std::marker::PhantomData;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncWrite};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::error::{CapacityError, Error as WsError, ProtocolError};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode as WsCloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, Role};
use tracing::{debug, info};
use wsauth_core::upgrade::{AcceptRefusal, UpgradeDecision, inspect_upgrade};
use wsauth_core::{Frame, Input, PeerClose};
use wsauth_store::Store;

use crate::driver::{Driver, Transport};
use crate::handshake::{self, UpgradeRequest};
use crate::limits::IpGuard;
use crate::meter::{FrameCount, FrameMeter};
use crate::state::Shared;

/// Serves one accepted socket (already through TLS when configured), counted
/// as `unauthenticated` since its TCP accept.
pub async fn serve<S, IO>(
    shared: Arc<Shared<S>>,
    mut io: IO,
    peer: SocketAddr,
    accepted: Instant,
    unauthenticated: IpGuard,
) where
    S: Store,
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let started = accepted;
    let _open = shared.metrics.connection_opened();
    // One deadline for the whole accept: TLS (already done by the caller) and the head.
    let deadline = tokio::time::Instant::from_std(accepted)
        + Duration::from_millis(shared.config.limits.handshake_timeout_ms);
    let request =
        // Boxed: the read buffers live only for the handshake, not in every
        // connection's task for its whole life.
        match tokio::time::timeout_at(deadline, Box::pin(handshake::read_upgrade_request(&mut io))).await {
            Ok(Ok(r)) => r,
            Ok(Err(e)) => {
                debug!(%peer, error = %e, "upgrade refused");
                let refusal = match e.status() {
                    Some(status) => AcceptRefusal::MalformedRequest { status },
                    // The socket is gone: nothing to answer, only to count.
                    None => AcceptRefusal::HeadTimeout,
                };
                refuse(&mut io, refusal, &shared, peer).await;
                return;
            }
            Err(_) => {
                debug!(%peer, "upgrade request not received in time");
                refuse(&mut io, AcceptRefusal::HeadTimeout, &shared, peer).await;
                return;
            }
        };
    if request.path != shared.config.path {
        let _ = handshake::write_plain(&mut io, 404, "text/plain", "not found\n").await;
        return;
    }
    let policy = &shared.upgrade_policy;
    let decision = inspect_upgrade(request.header_pairs(), request.query.as_deref(), policy);
    let (subprotocol, token) = match decision {
        UpgradeDecision::Refuse { status, body } => {
            let _ = handshake::write_refusal(&mut io, status, &body).await;
            info!(%peer, code = %body.code, "upgrade refused");
            shared.metrics.upgrade_refused(body.code);
            return;
        }
        UpgradeDecision::Proceed { subprotocol, token } => (subprotocol, token),
    };

    let mut driver = Driver::<S, Tungstenite<FrameMeter<IO>>>::new(
        shared.clone(),
        peer,
        started,
        unauthenticated,
        token,
    );
    // Boxed: the pre-upgrade wait lives only for the handshake.
    if let Err(refusal) = Box::pin(driver.authenticate_before_upgrade()).await {
        if let Some((status, body)) = refusal {
            let _ = handshake::write_refusal(&mut io, status, &body).await;
        }
        return;
    }
    if handshake::write_switching_protocols(&mut io, &request.key, subprotocol)
        .await
        .is_err()
    {
        driver.socket_lost().await;
        return;
    }
    let UpgradeRequest { leftover, .. } = request;
    let frames = Arc::new(FrameCount::default());
    let mut io = FrameMeter::new(io, frames.clone());
    io.observe(&leftover);
    driver.count_frames(frames);
    let ws =
        WebSocketStream::from_partially_read(io, leftover, Role::Server, Some(shared.ws_config))
            .await;
    driver.run(ws).await;
}

async fn refuse<S: Store, IO: AsyncWrite + Unpin>(
    io: &mut IO,
    refusal: AcceptRefusal,
    shared: &Shared<S>,
    peer: SocketAddr,
) {
    if let Some((status, body)) = refusal.response() {
        let _ = handshake::write_refusal(io, status, &body).await;
        info!(%peer, code = %body.code, "upgrade refused");
    }
    shared.metrics.upgrade_refused(refusal.code());
}

/// The [`Transport`] of tokio-tungstenite over `IO` (TCP, or TLS over TCP).
pub struct Tungstenite<IO>(PhantomData<fn() -> IO>);

impl<IO> Transport for Tungstenite<IO>
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    type Socket = WebSocketStream<IO>;
    type Message = Message;
    type ReadError = WsError;

    fn text(json: String) -> Message {
        Message::text(json)
    }

    fn ping() -> Message {
        Message::Ping(Default::default())
    }

    fn close(code: u16, reason: &'static str) -> Message {
        Message::Close(Some(CloseFrame {
            code: WsCloseCode::from(code),
            reason: reason.into(),
        }))
    }

    fn input(frame: &Result<Message, WsError>) -> Result<Input<'_>, &WsError> {
        Ok(match frame {
            Ok(Message::Text(text)) => Input::Frame(Frame::Text(text.as_str())),
            Ok(Message::Binary(b)) => Input::Frame(Frame::Binary(b.len())),
            Ok(Message::Ping(_) | Message::Pong(_)) => Input::Control,
            Ok(Message::Close(frame)) => {
                Input::PeerClosed(PeerClose::Closed(frame.as_ref().map(|f| u16::from(f.code))))
            }
            // tungstenite hands raw frames only to writers; nothing to feed.
            Ok(Message::Frame(_)) => Input::Tick,
            Err(WsError::Utf8(_)) => Input::Frame(Frame::InvalidUtf8),
            Err(WsError::Capacity(CapacityError::MessageTooLong { size, .. })) => {
                Input::Frame(Frame::TooLarge(*size))
            }
            // A frame breaking RFC 6455 is answered with a 1002 close, not a dropped socket.
            Err(WsError::Protocol(e)) if is_violation(e) => Input::Frame(Frame::ProtocolViolation),
            Err(e) => return Err(e),
        })
    }
}

/// Whether tungstenite refused a frame the client sent for breaking RFC 6455
/// (as opposed to the connection ending or the server's own misuse).
fn is_violation(e: &ProtocolError) -> bool {
    matches!(
        e,
        ProtocolError::NonZeroReservedBits
            | ProtocolError::UnmaskedFrameFromClient
            | ProtocolError::FragmentedControlFrame
            | ProtocolError::ControlFrameTooBig
            | ProtocolError::UnknownControlFrameType(_)
            | ProtocolError::UnknownDataFrameType(_)
            | ProtocolError::UnexpectedContinueFrame
            | ProtocolError::ExpectedFragment(_)
            | ProtocolError::InvalidOpcode(_)
            | ProtocolError::InvalidCloseSequence
    )
}
