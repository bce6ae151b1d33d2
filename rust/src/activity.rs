//! What one connection's requests tell its socket wrappers (`idle::IdleIo`,
//! `head_watch::HeadWatch`): how many requests hyper has handed to the service and how
//! many are still being handled, whether one has been answered, whether a head is being
//! read, whether the connection takes no more heads, and a refusal waiting to be answered.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use crate::limits::Refusal;

#[derive(Default)]
pub struct Activity {
    handling: AtomicUsize,
    entered: AtomicUsize,
    answered: AtomicBool,
    reading_head: AtomicBool,
    closing: AtomicBool,
    refusal: Mutex<Option<Refusal>>,
}

/// Counts a request as being handled for as long as it lives.
pub struct Handling(Arc<Activity>);

impl Activity {
    pub fn enter(self: &Arc<Self>) -> Handling {
        self.entered.fetch_add(1, Ordering::AcqRel);
        self.handling.fetch_add(1, Ordering::AcqRel);
        Handling(self.clone())
    }

    /// Requests hyper has handed to the service since the connection opened.
    pub fn entered(&self) -> usize {
        self.entered.load(Ordering::Acquire)
    }

    /// No request in flight, one answered, no head in progress: the keep-alive timer runs.
    pub fn idle(&self) -> bool {
        self.answered.load(Ordering::Acquire)
            && self.handling.load(Ordering::Acquire) == 0
            && !self.reading_head.load(Ordering::Acquire)
    }

    /// Whether the next bytes start a new head: every request that entered after
    /// `entered_before` has been answered, and the connection stays open.
    pub fn awaits_head(&self, entered_before: usize) -> bool {
        self.entered() > entered_before
            && self.handling.load(Ordering::Acquire) == 0
            && !self.closing.load(Ordering::Acquire)
    }

    pub fn set_reading_head(&self, reading: bool) {
        self.reading_head.store(reading, Ordering::Release);
    }

    /// The answer said `connection: close`: what the client still sends is no head.
    pub fn close(&self) {
        self.closing.store(true, Ordering::Release);
    }

    /// A head refused before hyper saw it: the service answers the stand-in request
    /// hyper is given instead with this refusal.
    pub fn refuse(&self, refusal: Refusal) {
        self.close();
        *self.refusal.lock().unwrap_or_else(|e| e.into_inner()) = Some(refusal);
    }

    pub fn take_refusal(&self) -> Option<Refusal> {
        if !self.closing.load(Ordering::Acquire) {
            return None; // every request but a refused one: no lock taken
        }
        self.refusal
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
    }
}

impl Drop for Handling {
    fn drop(&mut self) {
        self.0.answered.store(true, Ordering::Release);
        self.0.handling.fetch_sub(1, Ordering::AcqRel);
    }
}
