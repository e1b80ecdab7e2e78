//! Part buffers: at most `parts_in_flight` of them, allocated once and reused.
//!
//! A buffer travels with its permit: filled from the registry stream, frozen into the
//! request body, and taken back once S3 has the part. So a run allocates at most one buffer
//! per permit, whatever the number or size of its blobs, and peak memory is the same for a
//! 256 MiB layer and a 2 GiB one. Freeing and reallocating part buffers instead made peak RSS
//! land a whole part higher in some runs than in identical others: glibc's dynamic mmap
//! threshold moves a freed 16 MiB block onto the heap, where it stays resident
//! (docs/benchmarks.md, allocator A/B).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use bytes::{Bytes, BytesMut};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::error::VaultError;

/// Permits and the free buffers behind them.
pub(crate) struct PartPool {
    permits: Arc<Semaphore>,
    free: Mutex<Vec<BytesMut>>,
    part_size: usize,
    slots: usize,
    allocated: AtomicUsize,
}

/// One part's right to a buffer; dropping it lets the next part start.
pub(crate) struct PartSlot<'p> {
    pub(crate) permit: OwnedSemaphorePermit,
    pub(crate) buf: PartBuf<'p>,
}

/// A pool buffer that goes back to the pool when dropped, so a blob that fails halfway (a
/// short or corrupt stream, a failed part) costs no new allocation for the next one. A body
/// handed to S3 is taken out with [`PartBuf::take`] and comes back through
/// [`PartPool::recycle`] once the SDK has let go of it.
pub(crate) struct PartBuf<'p> {
    pool: &'p PartPool,
    buf: BytesMut,
}

impl PartBuf<'_> {
    /// The bytes so far, leaving this buffer empty (and nothing to return on drop).
    pub(crate) fn take(&mut self) -> BytesMut {
        std::mem::take(&mut self.buf)
    }
}

impl std::ops::Deref for PartBuf<'_> {
    type Target = BytesMut;
    fn deref(&self) -> &BytesMut {
        &self.buf
    }
}

impl std::ops::DerefMut for PartBuf<'_> {
    fn deref_mut(&mut self) -> &mut BytesMut {
        &mut self.buf
    }
}

impl Drop for PartBuf<'_> {
    fn drop(&mut self) {
        let buf = self.take();
        self.pool.recycle_mut(buf);
    }
}

impl PartPool {
    pub(crate) fn new(part_size: usize, slots: usize) -> Self {
        PartPool {
            permits: Arc::new(Semaphore::new(slots)),
            free: Mutex::new(Vec::with_capacity(slots)),
            part_size,
            slots,
            allocated: AtomicUsize::new(0),
        }
    }

    /// Waits for a permit, then hands out an empty buffer of at least `capacity` bytes
    /// (a resumed upload may use a part size other than this vault's).
    pub(crate) async fn acquire(&self, capacity: usize) -> Result<PartSlot<'_>, VaultError> {
        let permit = self
            .permits
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| VaultError::Config("vault part pool closed".into()))?;
        let reused = self.free_list().pop();
        let buf = match reused {
            Some(b) if b.capacity() >= capacity => b,
            _ => {
                self.allocated.fetch_add(1, Ordering::Relaxed);
                BytesMut::with_capacity(capacity.max(self.part_size))
            }
        };
        Ok(PartSlot {
            permit,
            buf: PartBuf { pool: self, buf },
        })
    }

    /// Takes a sent body back. The SDK drops its references when the request completes; if
    /// one is still alive, or the buffer is not a whole part, it is simply freed.
    pub(crate) fn recycle(&self, body: Bytes) {
        if let Ok(buf) = body.try_into_mut() {
            self.recycle_mut(buf);
        }
    }

    fn recycle_mut(&self, mut buf: BytesMut) {
        buf.clear();
        if buf.capacity() < self.part_size {
            return;
        }
        let mut free = self.free_list();
        if free.len() < self.slots {
            free.push(buf);
        }
    }

    /// Buffers allocated so far: at most `parts_in_flight` when every body came back.
    pub(crate) fn allocated(&self) -> usize {
        self.allocated.load(Ordering::Relaxed)
    }

    fn free_list(&self) -> std::sync::MutexGuard<'_, Vec<BytesMut>> {
        // A panic while holding the lock cannot leave the list inconsistent (push/pop only).
        self.free.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_returned_body_is_handed_out_again_instead_of_a_new_allocation() {
        let pool = PartPool::new(1024, 2);
        for _ in 0..10 {
            let mut slot = pool.acquire(1024).await.expect("slot");
            slot.buf.extend_from_slice(&[7u8; 1024]);
            let body = slot.buf.take().freeze();
            let kept = body.clone();
            drop(body); // the request's copy
            pool.recycle(kept);
            drop(slot.permit);
        }
        assert_eq!(pool.allocated(), 1);
    }

    #[tokio::test]
    async fn a_body_still_shared_or_too_small_is_not_kept() {
        let pool = PartPool::new(1024, 2);
        let mut slot = pool.acquire(1024).await.expect("slot");
        slot.buf.extend_from_slice(&[1u8; 10]);
        let body = slot.buf.split().freeze();
        let other = body.clone();
        pool.recycle(body);
        drop(other);
        pool.recycle_mut(BytesMut::with_capacity(16));
        drop(slot);
        let _a = pool.acquire(1024).await.expect("slot");
        assert_eq!(pool.allocated(), 2);
    }

    #[tokio::test]
    async fn a_larger_part_size_than_the_pools_gets_a_buffer_that_fits() {
        let pool = PartPool::new(1024, 1);
        let slot = pool.acquire(1024).await.expect("slot");
        drop(slot);
        let slot = pool.acquire(4096).await.expect("slot");
        assert!(slot.buf.capacity() >= 4096);
    }

    #[tokio::test]
    async fn a_blob_that_fails_halfway_leaves_its_buffer_for_the_next() {
        let pool = PartPool::new(1024, 1);
        for _ in 0..5 {
            let mut slot = pool.acquire(1024).await.expect("slot");
            slot.buf.extend_from_slice(&[3u8; 700]);
            // An error returns here with `?`: the slot is dropped unsent.
            drop(slot);
        }
        assert_eq!(pool.allocated(), 1);
    }
}
