//! The handles the module hands out. Owned by the module state: a handle is never reused
//! while the module stays initialised.

use std::sync::atomic::{AtomicU64, Ordering};

use cryptoki_sys::{CK_OBJECT_HANDLE, CK_SESSION_HANDLE};

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
        self.objects.fetch_add(1, Ordering::Relaxed)
    }

    pub fn session_handle(&self) -> CK_SESSION_HANDLE {
        self.sessions.fetch_add(1, Ordering::Relaxed)
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
}
