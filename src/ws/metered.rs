//! A socket wrapper that counts the bytes a connection has received since its
//! last complete message against the global frame budget (`limits::Meter`).
//! When a read would take the budget past its limit, the read fails and the
//! connection is closed (1013), so many half-sent large frames cannot
//! exhaust memory. The reader releases the count at each complete message.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use crate::limits::Meter;

pub struct Metered<S> {
    inner: S,
    meter: Arc<Meter>,
}

impl<S> Metered<S> {
    pub fn new(inner: S, meter: Arc<Meter>) -> Metered<S> {
        Metered { inner, meter }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Metered<S> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = polled {
            let read = buf.filled().len() - before;
            if read > 0 && !self.meter.add(read) {
                return Poll::Ready(Err(io::Error::other("the budget for unfinished frames is spent")));
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
}
