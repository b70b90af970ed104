//! Counting the frames tungstenite keeps to itself. A continuation frame is
//! folded into its message and an empty, non-final one never produces
//! anything, so a client could send millions of them unseen. [`FrameMeter`]
//! sits between the socket and tungstenite, reads the frame headers as the
//! bytes pass, and counts continuation frames; every few of them it hands the
//! count to the connection's driver (which feeds the core's frame budget) and
//! yields, so a flood cannot keep the read going without the driver hearing
//! of it.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::Notify;

/// How many continuation frames are counted before the driver is told.
pub const REPORT_EVERY: u32 = 64;

/// The count the meter shares with the driver.
#[derive(Default)]
pub struct FrameCount {
    continuations: AtomicU32,
    reported: Notify,
}

impl FrameCount {
    /// The continuation frames counted since the last call.
    pub fn take(&self) -> u32 {
        self.continuations.swap(0, Ordering::Relaxed)
    }

    /// Waits until a count is reported.
    pub async fn reported(&self) {
        self.reported.notified().await;
    }
}

/// Where the parser is in the byte stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Parse {
    /// Reading a header: the bytes seen so far and the length it will have.
    Header { seen: usize, len: usize },
    /// Skipping a payload of this many more bytes.
    Payload(u64),
}

/// An I/O stream that counts the WebSocket frames read through it (client
/// frames: masked, so each header is 6 to 14 bytes).
pub struct FrameMeter<IO> {
    inner: IO,
    parse: Parse,
    header: [u8; 14],
    count: Arc<FrameCount>,
    unreported: u32,
    /// Set after a report: the next read yields once, letting the driver run.
    yield_next: bool,
}

impl<IO> FrameMeter<IO> {
    /// Counts the frames of `inner` into `count`.
    pub fn new(inner: IO, count: Arc<FrameCount>) -> Self {
        FrameMeter {
            inner,
            parse: Parse::Header { seen: 0, len: 2 },
            header: [0; 14],
            count,
            unreported: 0,
            yield_next: false,
        }
    }

    /// Reads `bytes` as the next part of the stream (also for the bytes read
    /// before the meter was in place, after the upgrade request).
    pub fn observe(&mut self, mut bytes: &[u8]) {
        while !bytes.is_empty() {
            match self.parse {
                Parse::Payload(left) => {
                    let take = left.min(bytes.len() as u64);
                    bytes = &bytes[take as usize..];
                    self.parse = if left == take {
                        Parse::Header { seen: 0, len: 2 }
                    } else {
                        Parse::Payload(left - take)
                    };
                }
                Parse::Header { seen, len } => {
                    let take = (len - seen).min(bytes.len());
                    self.header[seen..seen + take].copy_from_slice(&bytes[..take]);
                    bytes = &bytes[take..];
                    let seen = seen + take;
                    self.parse = Parse::Header { seen, len };
                    if seen < len {
                        continue;
                    }
                    let full = header_len(self.header[1]);
                    if len < full {
                        self.parse = Parse::Header { seen, len: full };
                        continue;
                    }
                    self.frame_read();
                }
            }
        }
    }

    /// A whole header is in `self.header`: count the frame, then skip its payload.
    fn frame_read(&mut self) {
        let opcode = self.header[0] & 0x0f;
        if opcode == 0 {
            self.unreported += 1;
            if self.unreported >= REPORT_EVERY {
                self.report();
            }
        }
        let payload = match self.header[1] & 0x7f {
            126 => u64::from(u16::from_be_bytes([self.header[2], self.header[3]])),
            127 => u64::from_be_bytes(self.header[2..10].try_into().unwrap_or_default()),
            n => u64::from(n),
        };
        self.parse = if payload == 0 {
            Parse::Header { seen: 0, len: 2 }
        } else {
            Parse::Payload(payload)
        };
    }

    fn report(&mut self) {
        self.count
            .continuations
            .fetch_add(std::mem::take(&mut self.unreported), Ordering::Relaxed);
        self.count.reported.notify_one();
        self.yield_next = true;
    }
}

/// The header's length from its second byte: 2, plus 2 or 8 for an extended
/// length, plus 4 for a mask.
fn header_len(second: u8) -> usize {
    let extended = match second & 0x7f {
        126 => 2,
        127 => 8,
        _ => 0,
    };
    let mask = if second & 0x80 != 0 { 4 } else { 0 };
    2 + extended + mask
}

impl<IO: AsyncRead + Unpin> AsyncRead for FrameMeter<IO> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if std::mem::take(&mut this.yield_next) {
            cx.waker().wake_by_ref();
            return Poll::Pending;
        }
        let before = buf.filled().len();
        let polled = Pin::new(&mut this.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = polled {
            let read = buf.filled()[before..].to_vec();
            this.observe(&read);
        }
        polled
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for FrameMeter<IO> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A masked client frame with `opcode`, `fin` and `payload`.
    fn frame(opcode: u8, fin: bool, payload: &[u8]) -> Vec<u8> {
        let mut out = vec![if fin { 0x80 } else { 0 } | opcode];
        match payload.len() {
            n if n < 126 => out.push(0x80 | n as u8),
            n if n <= 0xffff => {
                out.push(0x80 | 126);
                out.extend_from_slice(&(n as u16).to_be_bytes());
            }
            n => {
                out.push(0x80 | 127);
                out.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        out.extend_from_slice(&[1, 2, 3, 4]);
        out.extend_from_slice(payload);
        out
    }

    fn meter() -> (FrameMeter<tokio::io::Empty>, Arc<FrameCount>) {
        let count = Arc::new(FrameCount::default());
        (FrameMeter::new(tokio::io::empty(), count.clone()), count)
    }

    #[test]
    fn continuation_frames_are_counted_whatever_the_split_of_the_bytes() {
        let mut stream = frame(1, false, b"start");
        for _ in 0..REPORT_EVERY * 2 {
            stream.extend(frame(0, false, b""));
        }
        stream.extend(frame(9, true, b"ping in between"));
        stream.extend(frame(0, true, &[7; 300]));
        stream.extend(frame(2, true, &[8; 70_000]));
        for chunk in [1, 3, 7, 64, 100_000] {
            let (mut m, count) = meter();
            for part in stream.chunks(chunk) {
                m.observe(part);
            }
            // Reported in whole batches; the last, partial batch is pending.
            assert_eq!(count.take(), REPORT_EVERY * 2, "chunks of {chunk}");
            assert_eq!(m.unreported, 1, "chunks of {chunk}");
            assert_eq!(m.parse, Parse::Header { seen: 0, len: 2 });
        }
    }

    #[test]
    fn a_report_makes_the_next_read_yield_once() {
        let (mut m, _count) = meter();
        for _ in 0..REPORT_EVERY {
            m.observe(&frame(0, false, b""));
        }
        assert!(m.yield_next);
    }
}
