//! The per-worker buffer slab: one anonymous mapping cut into equal, page-aligned buffers that
//! the ring registers with the kernel (IORING_REGISTER_BUFFERS) so ReadFixed/WriteFixed skip the
//! per-op page pinning.
//!
//! Buffers move by value: `lease()` hands out a `BufLease`, which travels into an op and comes
//! back with its completion; only then can `give_back()` return it. There is no other way to get
//! a pointer into the slab, so a buffer the kernel may still write cannot be handed out twice.
//! Page alignment (mmap) makes every buffer usable for O_DIRECT. The mapping is reserved up front
//! but pages are only touched (and counted in RSS) when a buffer is first used.

use std::io;
use std::ptr::NonNull;

/// One buffer of the slab, owned by whoever holds it (a job, or an op in flight).
#[derive(Debug)]
pub struct BufLease {
    index: u16,
    ptr: NonNull<u8>,
    len: usize,
}

impl BufLease {
    /// Index of the buffer in the registration table.
    pub fn index(&self) -> u16 {
        self.index
    }
    /// Capacity of the buffer in bytes.
    pub fn capacity(&self) -> usize {
        self.len
    }
    /// Raw pointer for building an SQE. Only `ring/` uses it.
    pub(crate) fn as_mut_ptr(&mut self) -> *mut u8 {
        self.ptr.as_ptr()
    }
    /// The bytes of the buffer, for the syscall backend.
    pub fn as_mut_slice(&mut self) -> &mut [u8] {
        // SAFETY: the lease is the only handle to this region of the live mapping (leases are
        // unique and not Clone), and `len` is within the buffer it was cut from.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.len) }
    }
}

/// A page-aligned slab of `count` buffers of `size` bytes each.
#[derive(Debug)]
pub struct BufPool {
    base: NonNull<u8>,
    size: usize,
    count: usize,
    free: Vec<u16>,
    leaked: bool,
}

impl BufPool {
    /// Maps `count * size` bytes. `size` is rounded up to the page size.
    pub fn new(count: usize, size: usize) -> io::Result<BufPool> {
        let page = crate::sys::page_size();
        let size = size.div_ceil(page) * page;
        let count = count.clamp(1, u16::MAX as usize);
        let total = count * size;
        // SAFETY: anonymous private mapping with no address hint; the result is checked below.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                total,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let base = NonNull::new(p.cast::<u8>()).ok_or_else(|| io::Error::other("mmap returned null"))?;
        Ok(BufPool { base, size, count, free: (0..count as u16).rev().collect(), leaked: false })
    }

    pub fn buf_size(&self) -> usize {
        self.size
    }
    pub fn count(&self) -> usize {
        self.count
    }

    /// Takes a free buffer, if any.
    pub fn lease(&mut self) -> Option<BufLease> {
        let index = self.free.pop()?;
        // SAFETY: index < count, so the offset stays inside the mapping.
        let ptr = unsafe { self.base.add(index as usize * self.size) };
        Some(BufLease { index, ptr, len: self.size })
    }

    /// Keeps the mapping alive forever: for the one case where ops that may still write into it
    /// can no longer be reaped (a ring whose io_uring_enter itself fails).
    pub(crate) fn leak(&mut self) {
        self.leaked = true;
    }

    /// Returns a buffer. The caller got it back from its completion (or never submitted it).
    pub fn give_back(&mut self, lease: BufLease) {
        debug_assert!(!self.free.contains(&lease.index));
        self.free.push(lease.index);
    }

    /// The iovecs to register with the kernel.
    pub(crate) fn iovecs(&self) -> Vec<libc::iovec> {
        (0..self.count)
            .map(|i| libc::iovec {
                // SAFETY: i < count keeps the pointer inside the mapping.
                iov_base: unsafe { self.base.add(i * self.size) }.as_ptr().cast(),
                iov_len: self.size,
            })
            .collect()
    }
}

impl Drop for BufPool {
    fn drop(&mut self) {
        if self.leaked {
            return;
        }
        // SAFETY: `base` and the length are those of our own mapping. The ring that registered
        // the slab owns the pool and drops its io_uring (unregistering, all ops reaped) first.
        unsafe { libc::munmap(self.base.as_ptr().cast(), self.count * self.size) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lease_and_return_are_unique_and_aligned() {
        let mut pool = BufPool::new(4, 1000).unwrap();
        assert_eq!(pool.buf_size() % crate::sys::page_size(), 0);
        let mut leases: Vec<_> = std::iter::from_fn(|| pool.lease()).collect();
        assert_eq!(leases.len(), 4);
        assert!(pool.lease().is_none());
        let mut idx: Vec<_> = leases.iter().map(|l| l.index()).collect();
        idx.sort();
        idx.dedup();
        assert_eq!(idx.len(), 4);
        for l in &mut leases {
            assert_eq!(l.as_mut_ptr() as usize % crate::sys::page_size(), 0);
            l.as_mut_slice()[0] = 7;
        }
        for l in leases {
            pool.give_back(l);
        }
        assert_eq!(std::iter::from_fn(|| pool.lease()).count(), 4);
    }
}
