//! The routing table: which backend is current, which older ones still carry traffic, and how
//! much is in flight to each.
//!
//! Picking a backend and counting the request (or connection) as in flight to it happen under
//! the same lock as [`Routes::set`], so once `set` returns, every piece of work that picked the
//! old backend is already counted, and a drain that starts then cannot miss it.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Instant;

use hyper::client::conn::http1::SendRequest;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::http::ClientBody;
use crate::{Backend, FrontError, InFlightById};

/// One backend as the front knows it: a generation of `(id, addr)` from the moment it was set
/// until it is drained.
pub(crate) struct Upstream {
    pub(crate) backend: Backend,
    in_flight: AtomicU64,
    quiet: Notify,
    retired: AtomicBool,
    /// Cancelled when the backend is drained (or the front shut down): every connection to it
    /// closes.
    pub(crate) cut: CancellationToken,
    /// Idle keep-alive connections and when each was pooled (HTTP mode only).
    idle: Mutex<Vec<(SendRequest<ClientBody>, Instant)>>,
}

impl Upstream {
    fn new(backend: Backend, cut: CancellationToken) -> Self {
        Upstream {
            backend,
            in_flight: AtomicU64::new(0),
            quiet: Notify::new(),
            retired: AtomicBool::new(false),
            cut,
            idle: Mutex::new(Vec::new()),
        }
    }

    pub(crate) fn in_flight(&self) -> u64 {
        self.in_flight.load(Ordering::SeqCst)
    }

    pub(crate) fn is_retired(&self) -> bool {
        self.retired.load(Ordering::SeqCst)
    }

    fn idle(&self) -> MutexGuard<'_, Vec<(SendRequest<ClientBody>, Instant)>> {
        self.idle.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Takes the most recently used idle connection, if any, with when it was pooled.
    pub(crate) fn take_idle(&self) -> Option<(SendRequest<ClientBody>, Instant)> {
        self.idle().pop()
    }

    /// Puts a connection that finished its exchange back for reuse, unless the backend is being
    /// drained or enough are idle already (then it is dropped, which closes it).
    pub(crate) fn put_idle(&self, sender: SendRequest<ClientBody>, max_idle: usize) {
        self.put_back(sender, Instant::now(), max_idle);
    }

    /// [`Upstream::put_idle`] keeping the time the connection was first pooled.
    pub(crate) fn put_back(
        &self,
        sender: SendRequest<ClientBody>,
        pooled_at: Instant,
        max_idle: usize,
    ) {
        if self.is_retired() || sender.is_closed() {
            return;
        }
        let mut idle = self.idle();
        // Checked again under the lock: `retire` clears the list under the same lock.
        if !self.is_retired() && idle.len() < max_idle {
            idle.push((sender, pooled_at));
        }
    }

    /// No new work will come; idle connections close now.
    fn retire(&self) {
        self.retired.store(true, Ordering::SeqCst);
        let idle = std::mem::take(&mut *self.idle());
        drop(idle);
    }

    /// Closes every connection to this backend, busy or not.
    pub(crate) fn close_all(&self) {
        self.retire();
        self.cut.cancel();
    }

    /// Waits until nothing is in flight or `deadline` passes; true when quiet.
    pub(crate) async fn wait_quiet(&self, deadline: tokio::time::Instant) -> bool {
        loop {
            let notified = self.quiet.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.in_flight() == 0 {
                return true;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return self.in_flight() == 0;
            }
        }
    }
}

/// Counts one request or connection as in flight to an upstream until dropped.
pub(crate) struct InFlight {
    upstream: Arc<Upstream>,
}

impl InFlight {
    pub(crate) fn upstream(&self) -> &Arc<Upstream> {
        &self.upstream
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        if self.upstream.in_flight.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.upstream.quiet.notify_waiters();
        }
    }
}

#[derive(Default)]
struct Table {
    current: Option<Arc<Upstream>>,
    /// Every upstream not yet drained, the current one included.
    known: Vec<Arc<Upstream>>,
}

pub(crate) struct Routes {
    table: Mutex<Table>,
    shutdown: CancellationToken,
}

impl Routes {
    pub(crate) fn new(shutdown: CancellationToken) -> Self {
        Routes {
            table: Mutex::new(Table::default()),
            shutdown,
        }
    }

    fn table(&self) -> MutexGuard<'_, Table> {
        self.table.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The current upstream, already counted as in flight.
    pub(crate) fn pick(&self) -> Option<InFlight> {
        let table = self.table();
        let upstream = table.current.as_ref()?;
        upstream.in_flight.fetch_add(1, Ordering::SeqCst);
        Some(InFlight {
            upstream: upstream.clone(),
        })
    }

    pub(crate) fn current(&self) -> Option<Backend> {
        self.table().current.as_ref().map(|u| u.backend.clone())
    }

    /// Makes `backend` current; returns the previous current backend.
    pub(crate) fn set(&self, backend: Option<Backend>) -> Option<Backend> {
        let mut table = self.table();
        let previous = table.current.as_ref().map(|u| u.backend.clone());
        let Some(backend) = backend else {
            table.current = None;
            return previous;
        };
        if previous.as_ref() == Some(&backend) {
            return previous;
        }
        let known = table
            .known
            .iter()
            .find(|u| u.backend == backend && !u.is_retired())
            .cloned();
        let upstream = match known {
            Some(upstream) => upstream,
            None => {
                let upstream = Arc::new(Upstream::new(backend, self.shutdown.child_token()));
                table.known.push(upstream.clone());
                upstream
            }
        };
        table.current = Some(upstream);
        previous
    }

    /// Removes every non-current upstream with this id from the table and retires it.
    pub(crate) fn retire(&self, id: &str) -> Result<Vec<Arc<Upstream>>, FrontError> {
        let mut table = self.table();
        if table.current.as_ref().is_some_and(|u| u.backend.id == id) {
            return Err(FrontError::DrainCurrent { id: id.to_owned() });
        }
        let (retired, kept) = std::mem::take(&mut table.known)
            .into_iter()
            .partition(|u| u.backend.id == id);
        table.known = kept;
        drop(table);
        for upstream in &retired {
            upstream.retire();
        }
        Ok(retired)
    }

    /// In-flight work per backend id, over every backend not yet drained.
    pub(crate) fn in_flight(&self) -> InFlightById {
        let table = self.table();
        let mut by_id = InFlightById::new();
        for upstream in &table.known {
            *by_id.entry(upstream.backend.id.clone()).or_default() += upstream.in_flight();
        }
        by_id
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn backend(id: &str, port: u16) -> Backend {
        Backend::new(id, ([127, 0, 0, 1], port).into())
    }

    #[test]
    fn pick_counts_in_flight_until_dropped() {
        let routes = Routes::new(CancellationToken::new());
        assert!(routes.pick().is_none());
        routes.set(Some(backend("a", 1)));
        let first = routes.pick().expect("a backend is set");
        let second = routes.pick().expect("a backend is set");
        assert_eq!(routes.in_flight().get("a"), Some(&2));
        drop(first);
        drop(second);
        assert_eq!(routes.in_flight().get("a"), Some(&0));
    }

    #[test]
    fn work_picked_before_a_switch_stays_with_the_old_backend() {
        let routes = Routes::new(CancellationToken::new());
        routes.set(Some(backend("a", 1)));
        let on_a = routes.pick().expect("a backend is set");
        assert_eq!(routes.set(Some(backend("b", 2))), Some(backend("a", 1)));
        let on_b = routes.pick().expect("a backend is set");
        assert_eq!(on_a.upstream().backend.id, "a");
        assert_eq!(on_b.upstream().backend.id, "b");
        assert_eq!(routes.in_flight().get("a"), Some(&1));
    }

    #[test]
    fn draining_the_current_backend_is_refused() {
        let routes = Routes::new(CancellationToken::new());
        routes.set(Some(backend("a", 1)));
        let err = routes.retire("a").err().expect("a is current");
        assert_eq!(
            err.to_string(),
            "backend a is still the current backend; switch to another one before draining it"
        );
    }

    #[test]
    fn a_drained_backend_set_again_starts_afresh() {
        let routes = Routes::new(CancellationToken::new());
        routes.set(Some(backend("a", 1)));
        routes.set(Some(backend("b", 2)));
        let retired = routes.retire("a").expect("a is not current");
        assert_eq!(retired.len(), 1);
        assert!(retired[0].is_retired());
        assert!(!routes.in_flight().contains_key("a"));
        routes.set(Some(backend("a", 1)));
        let picked = routes.pick().expect("a backend is set");
        assert!(!picked.upstream().is_retired());
        assert!(!Arc::ptr_eq(picked.upstream(), &retired[0]));
    }

    #[test]
    fn setting_back_an_undrained_backend_reuses_it() {
        let routes = Routes::new(CancellationToken::new());
        routes.set(Some(backend("a", 1)));
        let first = routes.pick().expect("a backend is set");
        routes.set(Some(backend("b", 2)));
        routes.set(Some(backend("a", 1)));
        let again = routes.pick().expect("a backend is set");
        assert!(Arc::ptr_eq(first.upstream(), again.upstream()));
        assert_eq!(routes.in_flight().get("a"), Some(&2));
    }
}
