//! Fuzz target bodies for the server's byte readers, compiled with the `fuzzing`
//! feature. Each `fuzz/` target is a one-line call into here, and
//! `tests/fuzz_corpus.rs` replays every corpus file through the same functions on
//! stable, so a crash found once stays fixed.
//!
//! The targets take the same first two bytes, then the bytes the client sends:
//!
//! - byte 0: how many bytes each read of the socket returns at most (0: all that
//!   is left), so that the readers meet every split of a header;
//! - byte 1: target-specific (below);
//! - the rest: the client's bytes.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use futures_util::StreamExt;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::Role;
use wsauth_core::upgrade::{UpgradeDecision, UpgradePolicy, inspect_upgrade};
use wsauth_core::{Connection, Input, PeerClose};

use crate::config::Config;
use crate::conn::Tungstenite;
use crate::driver::Transport;
use crate::handshake::{self, HandshakeError, MAX_HEAD_BYTES};
use crate::meter::{FrameCount, FrameMeter};
use crate::server::{session_config, ws_config};

/// The fuzz targets' fixed "now", in milliseconds (2026-01-01T00:00:00Z).
const FUZZ_NOW_MS: u64 = 1_767_225_600_000;

thread_local! {
    /// One current-thread runtime per fuzzing thread, reused across inputs.
    static RUNTIME: tokio::runtime::Runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap_or_else(|e| panic!("the fuzz runtime must build: {e}"));
}

fn block_on<F: Future>(future: F) -> F::Output {
    RUNTIME.with(|rt| rt.block_on(future))
}

/// An in-memory socket: reads `data` at most `chunk` bytes at a time, then the
/// end of the stream; whatever is written to it is dropped.
struct Replay {
    data: Vec<u8>,
    pos: usize,
    chunk: usize,
}

impl Replay {
    fn new(data: &[u8], chunk: u8) -> Self {
        Replay {
            data: data.to_vec(),
            pos: 0,
            chunk: if chunk == 0 {
                usize::MAX
            } else {
                usize::from(chunk)
            },
        }
    }
}

impl AsyncRead for Replay {
    fn poll_read(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let n = (this.data.len() - this.pos)
            .min(this.chunk)
            .min(buf.remaining());
        buf.put_slice(&this.data[this.pos..this.pos + n]);
        this.pos += n;
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for Replay {
    fn poll_write(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

/// Splits an input into the read size, the target's byte and the client's bytes.
fn split(data: &[u8]) -> (u8, u8, &[u8]) {
    match data {
        [chunk, byte, rest @ ..] => (*chunk, *byte, rest),
        [chunk] => (*chunk, 0, &[]),
        [] => (0, 0, &[]),
    }
}

/// Target `frame_codec`: the bytes a client sends after the upgrade, read as the
/// server reads them (through the [`FrameMeter`] into a tokio-tungstenite
/// server stream with the server's [`ws_config`] for the default limits), each
/// message mapped by the [`Tungstenite`] transport and fed to a core
/// [`Connection`], as the driver does. Byte 1 is how many of the client's bytes
/// arrived with the upgrade request (the head's leftover). Never panics, ends when
/// the bytes do, and no message over `max_message_bytes` reaches the core.
pub fn frame_codec(data: &[u8]) {
    frame_codec_messages(data);
}

/// [`frame_codec`], and how many messages tungstenite handed over.
pub fn frame_codec_messages(data: &[u8]) -> usize {
    let (chunk, leftover, rest) = split(data);
    let (leftover, rest) = rest.split_at(usize::from(leftover).min(rest.len()));
    let config = Config::default();
    let max_message = config.limits.max_message_bytes;
    let mut conn = Connection::new(Arc::new(session_config(&config)), FUZZ_NOW_MS);
    let mut messages = 0;
    block_on(async {
        // As `conn::serve` sets the socket up after the 101.
        let frames = Arc::new(FrameCount::default());
        let mut io = FrameMeter::new(Replay::new(rest, chunk), frames.clone());
        io.observe(leftover);
        let mut ws = WebSocketStream::from_partially_read(
            io,
            leftover.to_vec(),
            Role::Server,
            Some(ws_config(&config.limits)),
        )
        .await;
        let mut now = FUZZ_NOW_MS;
        drain(&mut conn);
        loop {
            let frame = ws.next().await;
            now += 1;
            let counted = frames.take();
            if counted > 0 && !conn.is_closed() {
                conn.handle(now, Input::Continuations(counted));
                drain(&mut conn);
            }
            let Some(frame) = frame else {
                if !conn.is_closed() {
                    conn.handle(now, Input::PeerClosed(PeerClose::Lost));
                }
                break;
            };
            messages += usize::from(frame.is_ok());
            if let Ok(Message::Text(text)) = &frame {
                assert!(text.len() <= max_message, "a text over the message cap");
            }
            if let Ok(Message::Binary(bytes)) = &frame {
                assert!(bytes.len() <= max_message, "a binary over the message cap");
            }
            let input = match Tungstenite::<FrameMeter<Replay>>::input(&frame) {
                Ok(input) => input,
                Err(_) => Input::PeerClosed(PeerClose::Lost),
            };
            if !conn.is_closed() {
                conn.handle(now, input);
                drain(&mut conn);
            }
            if frame.is_err() {
                break;
            }
        }
    });
    messages
}

/// Takes every output the connection has, and drops it.
fn drain(conn: &mut Connection) {
    while conn.poll_output().is_some() {}
}

/// Target `upgrade_head`: the upgrade request head reader on arbitrary bytes and,
/// when it parses, the core's upgrade decision on its headers (as `conn::serve`
/// takes it). Byte 1 sets the policy: bit 0 allows the query token, bit 1 sets an
/// origin allow-list. Never panics; the head read is bounded and accounted for.
pub fn upgrade_head(data: &[u8]) {
    let (chunk, flags, rest) = split(data);
    let policy = UpgradePolicy {
        allowed_origins: if flags & 2 != 0 {
            vec!["https://app.example".to_owned()]
        } else {
            Vec::new()
        },
        allow_query_token: flags & 1 != 0,
    };
    let mut socket = Replay::new(rest, chunk);
    let read = block_on(handshake::read_upgrade_request(&mut socket));
    match read {
        Ok(request) => {
            // What was read is the head, then the leftover.
            let head_len = socket.pos - request.leftover.len();
            assert_eq!(&rest[head_len..socket.pos], request.leftover.as_slice());
            assert!(head_len <= MAX_HEAD_BYTES, "a head over the cap");
            assert!(rest[..head_len].ends_with(b"\r\n\r\n"));
            assert!(!request.path.contains('?'), "the query is split off");
            let decision =
                inspect_upgrade(request.header_pairs(), request.query.as_deref(), &policy);
            match decision {
                UpgradeDecision::Refuse { status, body } => {
                    assert_eq!(status, body.code.http_status());
                }
                UpgradeDecision::Proceed { subprotocol, .. } => {
                    let mut sink = tokio::io::sink();
                    let written = block_on(handshake::write_switching_protocols(
                        &mut sink,
                        &request.key,
                        subprotocol,
                    ));
                    assert!(written.is_ok());
                }
            }
        }
        Err(e) => match e {
            HandshakeError::Io(io) => {
                assert_eq!(io.kind(), io::ErrorKind::UnexpectedEof);
                assert_eq!(socket.pos, rest.len(), "EOF before the end of the bytes");
            }
            HandshakeError::TooLarge => assert_eq!(e.status(), Some(431)),
            HandshakeError::NotAnUpgrade(_) => assert_eq!(e.status(), Some(400)),
            HandshakeError::Timeout(_) => panic!("no deadline here"),
        },
    }
}
