//! A socket wrapper that counts the bytes a connection has received since its
//! last complete message against the global frame budget (`limits::Meter`).
//! When a read would take the budget past its limit, the read fails and the
//! connection is closed (1013), so many half-sent large frames cannot
//! exhaust memory. The reader releases the count at each complete message.
//! While a large message arrives it also reads ahead in big chunks, so the
//! WebSocket's small read buffer (cheap for idle connections) does not turn
//! a 50 MB attachment into 50,000 socket reads.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::limits::Meter;

/// Unfinished-message bytes past which reads go through the read-ahead.
const LARGE_MESSAGE: usize = 16 * 1024;

/// Bytes one read-ahead takes from the socket at most.
const READ_AHEAD: usize = 64 * 1024;

pub struct Metered<S> {
    inner: S,
    meter: Arc<Meter>,
    /// Bytes read ahead (counted when read from the socket) and how many of
    /// them were handed on. Empty, with no allocation, except while a large
    /// message arrives; freed once drained after it.
    ahead: Vec<u8>,
    handed: usize,
}

impl<S> Metered<S> {
    pub fn new(inner: S, meter: Arc<Meter>) -> Metered<S> {
        Metered { inner, meter, ahead: Vec::new(), handed: 0 }
    }

    /// Copies read-ahead bytes into `buf`; frees the read-ahead once it is
    /// drained and no large message is arriving.
    fn hand_on(&mut self, buf: &mut ReadBuf<'_>) {
        let n = buf.remaining().min(self.ahead.len() - self.handed);
        buf.put_slice(&self.ahead[self.handed..self.handed + n]);
        self.handed += n;
        if self.handed == self.ahead.len() {
            self.handed = 0;
            if self.meter.held() < LARGE_MESSAGE {
                self.ahead = Vec::new();
            } else {
                self.ahead.clear();
            }
        }
    }
}

fn over_budget() -> io::Error {
    io::Error::other("the budget for unfinished frames is spent")
}

impl<S: AsyncRead + Unpin> AsyncRead for Metered<S> {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.handed < this.ahead.len() {
            this.hand_on(buf);
            return Poll::Ready(Ok(()));
        }
        if this.meter.held() >= LARGE_MESSAGE && buf.remaining() < READ_AHEAD {
            // One large read instead of many small ones. The bytes are
            // counted here, as they leave the socket; a read-ahead that runs
            // past the message's end counts up to READ_AHEAD bytes of the
            // next one against this one (released with it).
            this.ahead.resize(READ_AHEAD, 0);
            let mut ahead = ReadBuf::new(&mut this.ahead);
            let polled = Pin::new(&mut this.inner).poll_read(cx, &mut ahead);
            let read = ahead.filled().len();
            this.ahead.truncate(read);
            return match polled {
                Poll::Ready(Ok(())) if read > 0 && !this.meter.add(read) => Poll::Ready(Err(over_budget())),
                Poll::Ready(Ok(())) => {
                    this.hand_on(buf);
                    Poll::Ready(Ok(()))
                }
                other => other,
            };
        }
        let before = buf.filled().len();
        let polled = Pin::new(&mut this.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = polled {
            let read = buf.filled().len() - before;
            if read > 0 && !this.meter.add(read) {
                return Poll::Ready(Err(over_budget()));
            }
        }
        polled
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Metered<S> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
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
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;
    use crate::limits::{FRAME_BUDGET_FLOOR, FrameBudget};

    #[tokio::test]
    async fn reads_past_the_budget_fail_and_release_frees_them() {
        let budget = FrameBudget::new(FRAME_BUDGET_FLOOR * 2);
        let (client, server) = tokio::io::duplex(64 * 1024);
        let meter = Arc::new(budget.meter());
        let mut metered = Metered::new(server, meter.clone());
        let mut client = client;
        let writer = tokio::spawn(async move {
            let chunk = vec![7u8; 16 * 1024];
            for _ in 0..(FRAME_BUDGET_FLOOR * 3 / chunk.len()) {
                if client.write_all(&chunk).await.is_err() {
                    break;
                }
            }
        });
        let mut buf = vec![0u8; 16 * 1024];
        let mut total = 0;
        let error = loop {
            match metered.read(&mut buf).await {
                Ok(0) => panic!("the budget never bit"),
                Ok(n) => total += n,
                Err(e) => break e,
            }
        };
        assert!(meter.refused(), "{error}");
        assert!(total > FRAME_BUDGET_FLOOR && total <= FRAME_BUDGET_FLOOR * 2, "{total}");
        meter.release();
        assert_eq!(budget.used(), 0);
        writer.abort();
    }

    /// A large message read through a 1 KiB buffer arrives whole and in
    /// order through the read-ahead, which is freed once the message is
    /// complete and drained; a small one never allocates it.
    #[tokio::test]
    async fn large_messages_are_read_ahead_and_the_buffer_freed_after() {
        let budget = FrameBudget::new(FRAME_BUDGET_FLOOR * 64);
        let (mut client, server) = tokio::io::duplex(256 * 1024);
        let meter = Arc::new(budget.meter());
        let mut metered = Metered::new(server, meter.clone());
        let sent: Vec<u8> = (0..260_000u32).map(|i| (i % 251) as u8).collect();
        let body = sent.clone();
        let writer = tokio::spawn(async move {
            client.write_all(&body).await.expect("write");
            client
        });
        let mut received = Vec::new();
        let mut buf = [0u8; 1024];
        let mut read_ahead = false;
        while received.len() < 250_000 {
            let n = metered.read(&mut buf).await.expect("read");
            assert!(n > 0);
            received.extend_from_slice(&buf[..n]);
            read_ahead |= metered.ahead.capacity() >= READ_AHEAD;
        }
        assert!(read_ahead, "a large message is read ahead");
        // The message is complete: what was read ahead is still handed on,
        // then the buffer goes.
        meter.release();
        while received.len() < sent.len() {
            let n = metered.read(&mut buf).await.expect("read");
            assert!(n > 0);
            received.extend_from_slice(&buf[..n]);
        }
        assert_eq!(received, sent, "every byte, in order");
        assert_eq!(metered.ahead.capacity(), 0, "freed after the message");
        drop(writer.await);
        let (mut client, server) = tokio::io::duplex(4096);
        let mut small = Metered::new(server, Arc::new(budget.meter()));
        client.write_all(b"short").await.expect("write");
        assert_eq!(small.read(&mut buf).await.expect("read"), 5);
        assert_eq!(small.ahead.capacity(), 0, "a small message is read directly");
    }
}
