//! Large buffers lent out as [`Bytes`] that come back for reuse when the
//! last holder lets go of them.
//!
//! Output moves through the host in chunks of megabytes: read from the
//! sandbox's pipe, kept for live readers, escaped into SSE frames. A fresh
//! buffer of that size costs a page fault per 4 KiB the first time it is
//! written (and the allocator hands large frees back to the kernel), which
//! for 200 MiB of output is tens of thousands of faults. A [`Recycler`]
//! keeps a few buffers that have been used and released, so the next chunk
//! is written into memory that is already mapped.

use std::sync::Mutex;
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};

use bytes::Bytes;

/// A buffer a [`Recycler`] can lend out and reuse.
pub trait Reusable: AsRef<[u8]> + Send + 'static {
    /// Forget the contents, keep the room.
    fn clear(&mut self);
    /// Bytes of room the buffer holds.
    fn room(&self) -> usize;
}

impl Reusable for Vec<u8> {
    fn clear(&mut self) {
        Vec::clear(self)
    }
    fn room(&self) -> usize {
        self.capacity()
    }
}

impl Reusable for String {
    fn clear(&mut self) {
        String::clear(self)
    }
    fn room(&self) -> usize {
        self.capacity()
    }
}

/// Buffers of one kind (SSE frames, or capture chunks), shared by every
/// producer of that kind: lent out as `Bytes`, back in
/// [`Recycler::spare`] once released. At most `keep` released buffers of
/// at most `max_room` bytes each wait for reuse; the others are freed.
pub struct Recycler<T> {
    home: Home<T>,
    // Behind a lock so one recycler can serve many producers (a receiver
    // alone may not be shared between threads); taking a spare is rare
    // next to filling it.
    spares: Mutex<Receiver<T>>,
}

/// Where released buffers go, and which are worth keeping.
struct Home<T> {
    spares: SyncSender<T>,
    max_room: usize,
}

impl<T: Reusable> Home<T> {
    /// Keep `buf` emptied for reuse, unless it is over `max_room` or `keep`
    /// are waiting already (then it is freed).
    fn take_back(&self, mut buf: T) {
        if buf.room() <= self.max_room {
            buf.clear();
            let _ = self.spares.try_send(buf);
        }
    }
}

impl<T> Clone for Home<T> {
    fn clone(&self) -> Self {
        Home { spares: self.spares.clone(), max_room: self.max_room }
    }
}

impl<T: Reusable> Recycler<T> {
    pub fn new(keep: usize, max_room: usize) -> Recycler<T> {
        let (spares, waiting) = sync_channel(keep);
        Recycler { home: Home { spares, max_room }, spares: Mutex::new(waiting) }
    }

    /// A released buffer, emptied, if one is waiting.
    pub fn spare(&self) -> Option<T> {
        self.spares.lock().ok()?.try_recv().ok()
    }

    /// A handle that lends buffers back to this recycler from another task
    /// or thread.
    pub fn lender(&self) -> Lender<T> {
        Lender { home: self.home.clone() }
    }

    /// Keep `buf`, never lent out or back from its work, for reuse (freed
    /// when `keep` are waiting already or it is over `max_room`).
    pub fn give_back(&self, buf: T) {
        self.home.take_back(buf);
    }

    /// Free the buffers waiting for reuse (a producer going idle should not
    /// hold megabytes it may never need again).
    pub fn release_spares(&self) {
        while self.spare().is_some() {}
    }
}

/// Lends buffers out for a [`Recycler`]; cheap to clone, and `Send`.
pub struct Lender<T> {
    home: Home<T>,
}

impl<T> Clone for Lender<T> {
    fn clone(&self) -> Self {
        Lender { home: self.home.clone() }
    }
}

impl<T: Reusable> Lender<T> {
    /// Lend `buf` out as `Bytes`; it comes back when every clone and slice
    /// of those `Bytes` is dropped (or is freed, when `keep` are waiting or
    /// the recycler is gone).
    pub fn lend(&self, buf: T) -> Bytes {
        Bytes::from_owner(Lent { buf: Some(buf), home: self.home.clone() })
    }
}

struct Lent<T: Reusable> {
    buf: Option<T>,
    home: Home<T>,
}

impl<T: Reusable> AsRef<[u8]> for Lent<T> {
    fn as_ref(&self) -> &[u8] {
        self.buf.as_ref().map(AsRef::as_ref).unwrap_or_default()
    }
}

impl<T: Reusable> Drop for Lent<T> {
    fn drop(&mut self) {
        if let Some(buf) = self.buf.take() {
            self.home.take_back(buf);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_released_buffer_comes_back_empty_with_its_room() {
        let r = Recycler::<Vec<u8>>::new(2, 1 << 20);
        assert!(r.spare().is_none());
        let mut buf = Vec::with_capacity(1 << 20);
        buf.extend_from_slice(b"hello world");
        let ptr = buf.as_ptr();
        let bytes = r.lender().lend(buf);
        let slice = bytes.slice(6..);
        assert_eq!(&slice[..], b"world");
        drop(bytes);
        assert!(r.spare().is_none(), "a slice still holds it");
        drop(slice);
        let back = r.spare().expect("released");
        assert!(back.is_empty());
        assert_eq!(back.as_ptr(), ptr, "the same allocation");
        assert!(back.capacity() >= 1 << 20);
    }

    #[test]
    fn at_most_keep_wait_and_release_spares_frees_them() {
        let r = Recycler::<String>::new(2, 1 << 20);
        let lent: Vec<Bytes> = (0..4).map(|i| r.lender().lend(format!("frame {i}"))).collect();
        drop(lent);
        assert!(r.spare().is_some() && r.spare().is_some());
        assert!(r.spare().is_none(), "only two were kept");
        drop(r.lender().lend(String::from("x")));
        r.release_spares();
        assert!(r.spare().is_none());
    }

    #[test]
    fn a_buffer_given_back_is_reused_emptied() {
        let r = Recycler::<Vec<u8>>::new(1, 1 << 20);
        let mut buf = Vec::with_capacity(4096);
        buf.extend_from_slice(b"left over");
        let ptr = buf.as_ptr();
        r.give_back(buf);
        r.give_back(Vec::with_capacity(16));
        let back = r.spare().expect("kept");
        assert!(back.is_empty());
        assert_eq!(back.as_ptr(), ptr, "the same allocation");
        assert!(r.spare().is_none(), "only one is kept");
        r.give_back(Vec::with_capacity(2 << 20));
        assert!(r.spare().is_none(), "over max_room: freed");
    }

    #[test]
    fn buffers_over_max_room_are_freed_not_kept() {
        let r = Recycler::<Vec<u8>>::new(2, 1024);
        drop(r.lender().lend(Vec::with_capacity(1025)));
        assert!(r.spare().is_none());
        drop(r.lender().lend(Vec::with_capacity(1024)));
        assert!(r.spare().is_some());
    }

    #[test]
    fn buffers_released_after_the_recycler_is_gone_are_freed() {
        let r = Recycler::<Vec<u8>>::new(2, 1 << 20);
        let bytes = r.lender().lend(vec![1, 2, 3]);
        drop(r);
        assert_eq!(&bytes[..], &[1, 2, 3]);
        drop(bytes);
    }
}
