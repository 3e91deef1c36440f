//! A plugin's stderr as the host keeps it: only the most recent bytes, and a write never fails.
//! A bounded pipe that refuses writes once full makes a plugin that logs per record panic
//! ("failed printing to stderr") after a while, and every later record trap with it.

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use bytes::Bytes;
use tokio::io::AsyncWrite;
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamResult};

/// Largest single write the guest is offered. WASI lets a guest allocate host memory up to this
/// in one call (`write-zeroes`), so it stays small; guests loop over larger writes.
const WRITE_PERMIT: usize = 4096;

/// The tail of a guest's stderr, shared by every stream handle the guest opens on it.
#[derive(Debug, Clone)]
pub struct StderrTail {
    buffer: Arc<Mutex<TailBuffer>>,
}

impl StderrTail {
    /// A sink keeping the last `capacity` bytes written to it.
    pub fn new(capacity: usize) -> Self {
        StderrTail {
            buffer: Arc::new(Mutex::new(TailBuffer::new(capacity))),
        }
    }

    /// The most recent bytes written, oldest first. May start in the middle of a line or of a
    /// UTF-8 sequence.
    pub fn contents(&self) -> Vec<u8> {
        self.lock().contents()
    }

    fn push(&self, bytes: &[u8]) {
        self.lock().push(bytes);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, TailBuffer> {
        self.buffer.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// A byte ring that drops its oldest bytes to make room.
#[derive(Debug)]
struct TailBuffer {
    bytes: VecDeque<u8>,
    capacity: usize,
}

impl TailBuffer {
    fn new(capacity: usize) -> Self {
        TailBuffer {
            bytes: VecDeque::with_capacity(capacity),
            capacity,
        }
    }

    fn push(&mut self, data: &[u8]) {
        // Of a write longer than the whole buffer only its end can survive.
        let data = &data[data.len().saturating_sub(self.capacity)..];
        let overflow = (self.bytes.len() + data.len()).saturating_sub(self.capacity);
        self.bytes.drain(..overflow);
        self.bytes.extend(data);
    }

    fn contents(&self) -> Vec<u8> {
        self.bytes.iter().copied().collect()
    }
}

impl IsTerminal for StderrTail {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for StderrTail {
    fn async_stream(&self) -> Box<dyn AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }

    // Overridden so that writes land synchronously: the default adapter copies through a
    // background task, and a trap could then be described before its panic message arrived.
    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(self.clone())
    }
}

#[async_trait::async_trait]
impl OutputStream for StderrTail {
    fn write(&mut self, bytes: Bytes) -> StreamResult<()> {
        self.push(&bytes);
        Ok(())
    }

    fn flush(&mut self) -> StreamResult<()> {
        Ok(())
    }

    fn check_write(&mut self) -> StreamResult<usize> {
        Ok(WRITE_PERMIT)
    }
}

#[async_trait::async_trait]
impl Pollable for StderrTail {
    // Always writable: nothing is ever waited for.
    async fn ready(&mut self) {}
}

impl AsyncWrite for StderrTail {
    fn poll_write(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        self.push(buf);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_everything_while_under_capacity() {
        let tail = StderrTail::new(16);
        tail.push(b"hello ");
        tail.push(b"world");
        assert_eq!(tail.contents(), b"hello world");
    }

    #[test]
    fn drops_the_oldest_bytes_once_full() {
        let tail = StderrTail::new(8);
        tail.push(b"abcdef");
        tail.push(b"ghij");
        assert_eq!(tail.contents(), b"cdefghij");
        tail.push(b"k");
        assert_eq!(tail.contents(), b"defghijk");
    }

    #[test]
    fn a_write_longer_than_the_buffer_keeps_its_end() {
        let tail = StderrTail::new(4);
        tail.push(b"xy");
        tail.push(b"0123456789");
        assert_eq!(tail.contents(), b"6789");
    }

    #[test]
    fn writes_never_fail_however_much_is_written() {
        let mut tail = StderrTail::new(64);
        let line = Bytes::from(vec![b'.'; 1000]);
        for _ in 0..1000 {
            let permit = OutputStream::check_write(&mut tail).unwrap();
            assert!(permit > 0, "always writable");
            OutputStream::write(&mut tail, line.slice(..permit.min(line.len()))).unwrap();
        }
        OutputStream::write(&mut tail, Bytes::from_static(b"\npanicked at the end")).unwrap();
        let kept = tail.contents();
        assert_eq!(kept.len(), 64, "bounded by the capacity");
        assert!(kept.ends_with(b"\npanicked at the end"));
    }

    #[test]
    fn every_handle_shares_one_tail() {
        let tail = StderrTail::new(32);
        let mut handle = tail.p2_stream();
        handle.write(Bytes::from_static(b"from a handle")).unwrap();
        assert_eq!(tail.contents(), b"from a handle");
    }
}
