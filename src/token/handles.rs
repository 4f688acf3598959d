//! The handles the module hands out. Owned by the module state: a handle is never reused
//! while the module stays initialised.

use std::sync::atomic::{AtomicU64, Ordering};

use cryptoki_sys::{CK_OBJECT_HANDLE, CK_SESSION_HANDLE, CK_ULONG};

/// Two counters, one for object handles (card and session objects alike) and one for session
/// handles. Both start at 1: 0 is `CK_INVALID_HANDLE`.
pub struct HandleAllocator {
    objects: AtomicU64,
    sessions: AtomicU64,
}

impl HandleAllocator {
    pub fn new() -> Self {
        HandleAllocator {
            objects: AtomicU64::new(1),
            sessions: AtomicU64::new(1),
        }
    }

    pub fn object_handle(&self) -> CK_OBJECT_HANDLE {
        next_handle(&self.objects)
    }

    pub fn session_handle(&self) -> CK_SESSION_HANDLE {
        next_handle(&self.sessions)
    }
}

/// The next value of `counter` as a handle. `CK_ULONG` has 4 bytes on 32-bit targets: there
/// the handles wrap after 2^32 of them, and 0 (`CK_INVALID_HANDLE`) is skipped.
fn next_handle(counter: &AtomicU64) -> CK_ULONG {
    loop {
        let handle = counter.fetch_add(1, Ordering::Relaxed) as CK_ULONG;
        if handle != 0 {
            return handle;
        }
    }
}

impl Default for HandleAllocator {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn handles_are_never_zero_and_never_repeat() {
        let handles = HandleAllocator::new();
        let objects: Vec<_> = (0..3).map(|_| handles.object_handle()).collect();
        assert_eq!(objects, [1, 2, 3]);
        assert_eq!(handles.session_handle(), 1);
        assert_eq!(handles.object_handle(), 4);
    }

    #[test]
    // `u64::from` is needed where CK_ULONG is u32 (32-bit targets).
    #[allow(clippy::useless_conversion)]
    fn a_counter_past_the_largest_handle_wraps_to_1_not_0() {
        let counter = AtomicU64::new(u64::from(CK_ULONG::MAX));
        assert_eq!(next_handle(&counter), CK_ULONG::MAX);
        assert_eq!(next_handle(&counter), 1);
    }
}
