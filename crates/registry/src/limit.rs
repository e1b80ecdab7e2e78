//! Adaptive concurrency: additive increase, multiplicative decrease (AIMD), per host and per
//! action.
//!
//! A fixed concurrency is either too timid for a quiet registry or too aggressive for a
//! throttled one. Each (host, action) pair (for example `registry.example` + `blob-get`) gets
//! a controller: every success raises its limit by `1/limit` (about +1 per round of requests),
//! a throttle (HTTP 429, 503 `SlowDown`, `ThrottlingException`) halves it. Only one decrease
//! happens per round: permits remember the controller's epoch when they were taken, and a
//! throttle seen by a permit from an older epoch (sent before the last cut) is ignored, so a
//! burst of 429s from one overload does not collapse the limit to the floor.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::Notify;

/// Bounds and start of one controller.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AimdConfig {
    pub initial: usize,
    pub min: usize,
    pub max: usize,
    /// Factor applied on a throttle (0 < factor < 1).
    pub decrease: f64,
}

impl Default for AimdConfig {
    fn default() -> Self {
        AimdConfig {
            initial: 8,
            min: 1,
            max: 64,
            decrease: 0.5,
        }
    }
}

#[derive(Debug)]
struct State {
    limit: f64,
    in_flight: usize,
    epoch: u64,
    throttles: u64,
}

/// One AIMD controller. Share it through an `Arc`.
#[derive(Debug)]
pub struct Aimd {
    cfg: AimdConfig,
    state: Mutex<State>,
    released: Notify,
}

impl Aimd {
    pub fn new(cfg: AimdConfig) -> Arc<Self> {
        let min = cfg.min.max(1);
        let cfg = AimdConfig {
            min,
            max: cfg.max.max(min),
            initial: cfg.initial.clamp(min, cfg.max.max(min)),
            decrease: if cfg.decrease > 0.0 && cfg.decrease < 1.0 {
                cfg.decrease
            } else {
                0.5
            },
        };
        Arc::new(Aimd {
            state: Mutex::new(State {
                limit: cfg.initial as f64,
                in_flight: 0,
                epoch: 0,
                throttles: 0,
            }),
            cfg,
            released: Notify::new(),
        })
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // The state is plain numbers, valid after any panic elsewhere.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Current concurrency limit.
    pub fn limit(&self) -> usize {
        self.state().limit as usize
    }

    /// Throttles that cut the limit so far.
    pub fn throttles(&self) -> u64 {
        self.state().throttles
    }

    pub fn in_flight(&self) -> usize {
        self.state().in_flight
    }

    /// Waits until fewer than `limit` permits are out, then takes one.
    pub async fn acquire(self: &Arc<Self>) -> AimdPermit {
        loop {
            let notified = self.released.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if let Some(p) = self.try_acquire() {
                return p;
            }
            notified.await;
        }
    }

    /// Takes a permit if one is free.
    pub fn try_acquire(self: &Arc<Self>) -> Option<AimdPermit> {
        let mut st = self.state();
        if st.in_flight < st.limit as usize {
            st.in_flight += 1;
            Some(AimdPermit {
                aimd: self.clone(),
                epoch: st.epoch,
            })
        } else {
            None
        }
    }

    fn success(&self) {
        let mut st = self.state();
        st.limit = (st.limit + 1.0 / st.limit).min(self.cfg.max as f64);
    }

    fn throttled(&self, epoch: u64) {
        let mut st = self.state();
        let cut = (st.limit * self.cfg.decrease)
            .floor()
            .max(self.cfg.min as f64);
        if epoch == st.epoch && cut < st.limit {
            st.limit = cut;
            st.epoch += 1;
            st.throttles += 1;
        }
    }

    fn release(&self) {
        self.state().in_flight -= 1;
        self.released.notify_waiters();
    }
}

/// One request's (or one transfer's) slot. Report how it went; dropping it unreported is
/// neutral (an error that says nothing about load).
#[derive(Debug)]
pub struct AimdPermit {
    aimd: Arc<Aimd>,
    epoch: u64,
}

impl AimdPermit {
    pub fn success(self) {
        self.aimd.success();
    }

    /// Records a success but keeps the slot (a response whose body is still streaming).
    pub fn succeeded(&self) {
        self.aimd.success();
    }

    pub fn throttled(self) {
        self.aimd.throttled(self.epoch);
    }
}

impl Drop for AimdPermit {
    fn drop(&mut self) {
        self.aimd.release();
    }
}

/// The controllers of one client, created on first use.
#[derive(Debug, Default)]
pub struct Limits {
    map: Mutex<HashMap<(String, &'static str), Arc<Aimd>>>,
    overrides: HashMap<&'static str, AimdConfig>,
}

impl Limits {
    /// Controllers start from `AimdConfig::default()` except for the actions given here.
    pub fn new(overrides: impl IntoIterator<Item = (&'static str, AimdConfig)>) -> Self {
        Limits {
            map: Mutex::new(HashMap::new()),
            overrides: overrides.into_iter().collect(),
        }
    }

    /// The controller for `action` on `host`.
    pub fn get(&self, host: &str, action: &'static str) -> Arc<Aimd> {
        let mut map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        map.entry((host.to_owned(), action))
            .or_insert_with(|| Aimd::new(self.overrides.get(action).copied().unwrap_or_default()))
            .clone()
    }

    /// (host, action, limit, throttles) of every controller, for reports and tests.
    pub fn snapshot(&self) -> Vec<(String, &'static str, usize, u64)> {
        let map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        let mut out: Vec<_> = map
            .iter()
            .map(|((h, a), c)| (h.clone(), *a, c.limit(), c.throttles()))
            .collect();
        out.sort();
        out
    }
}

/// Whether an HTTP status means "slow down": 429, or 503 (S3 `SlowDown`, registries behind
/// load balancers).
pub fn is_throttle_status(status: u16) -> bool {
    matches!(status, 429 | 503)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use std::time::Duration;

    fn cfg(initial: usize, min: usize, max: usize) -> AimdConfig {
        AimdConfig {
            initial,
            min,
            max,
            decrease: 0.5,
        }
    }

    #[test]
    fn throttle_halves_the_limit_and_success_adds_about_one_per_round() {
        let a = Aimd::new(cfg(8, 1, 16));
        a.try_acquire().unwrap().throttled();
        assert_eq!(a.limit(), 4);
        // About one round at limit 4 adds one: 4 → 4.25 → 4.49 → 4.71 → 4.92 → 5.12.
        for _ in 0..4 {
            a.try_acquire().unwrap().success();
        }
        assert_eq!(a.limit(), 4);
        a.try_acquire().unwrap().success();
        assert_eq!(a.limit(), 5);
        for _ in 0..1000 {
            a.try_acquire().unwrap().success();
        }
        assert_eq!(a.limit(), 16, "growth stops at the maximum");
    }

    #[test]
    fn never_drops_below_the_minimum() {
        let a = Aimd::new(cfg(8, 2, 16));
        for _ in 0..10 {
            a.try_acquire().unwrap().throttled();
        }
        assert_eq!(a.limit(), 2);
        assert_eq!(a.throttles(), 2, "8→4→2, then floor");
    }

    #[test]
    fn one_overload_cuts_once_however_many_requests_saw_it() {
        let a = Aimd::new(cfg(8, 1, 16));
        let permits: Vec<_> = (0..8).map(|_| a.try_acquire().unwrap()).collect();
        assert!(a.try_acquire().is_none(), "limit reached");
        for p in permits {
            p.throttled();
        }
        assert_eq!(a.limit(), 4);
        // A request sent after the cut that is throttled again cuts again.
        a.try_acquire().unwrap().throttled();
        assert_eq!(a.limit(), 2);
    }

    #[test]
    fn bounds_concurrency_and_dropping_is_neutral() {
        let a = Aimd::new(cfg(2, 1, 4));
        let p1 = a.try_acquire().unwrap();
        let _p2 = a.try_acquire().unwrap();
        assert!(a.try_acquire().is_none());
        assert_eq!(a.in_flight(), 2);
        drop(p1);
        assert_eq!(a.limit(), 2);
        assert!(a.try_acquire().is_some());
    }

    #[test]
    fn nonsense_configs_are_clamped() {
        let a = Aimd::new(AimdConfig {
            initial: 100,
            min: 0,
            max: 3,
            decrease: 7.0,
        });
        assert_eq!(a.limit(), 3);
        a.try_acquire().unwrap().throttled();
        assert_eq!(a.limit(), 1);
    }

    #[tokio::test]
    async fn waiters_proceed_when_a_permit_is_released() {
        let a = Aimd::new(cfg(1, 1, 1));
        let held = a.acquire().await;
        let a2 = a.clone();
        let waiter = tokio::spawn(async move { a2.acquire().await.success() });
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished());
        drop(held);
        tokio::time::timeout(Duration::from_secs(5), waiter)
            .await
            .unwrap()
            .unwrap();
    }

    #[test]
    fn controllers_are_per_host_and_action() {
        let l = Limits::new([("blob-get", cfg(4, 1, 8))]);
        l.get("a:5000", "blob-get")
            .try_acquire()
            .unwrap()
            .throttled();
        assert_eq!(l.get("a:5000", "blob-get").limit(), 2);
        assert_eq!(l.get("b:5000", "blob-get").limit(), 4);
        assert_eq!(l.get("a:5000", "manifest-get").limit(), 8);
        assert_eq!(l.snapshot().len(), 3);
    }
}
