//! The agent's Prometheus metrics. Counters live as long as the agent, so a target's counts go
//! on across the restarts of its processes; the `pid` and `binary` of each run are on
//! `/targets`, not in labels, which would start new series at every restart.

use std::sync::{Arc, Mutex};

use probe_common::{CallStats, LATENCY_BUCKETS};
use prometheus_client::encoding::text::encode;
use prometheus_client::encoding::{EncodeMetric, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::metrics::{MetricType, TypedMetric};
use prometheus_client::registry::Registry;

type Labels = Vec<(&'static str, String)>;

/// Allocation and goroutine sites per target with a label of their own; later sites share
/// `site="other"`, so a target with thousands of sites cannot blow up the series count.
pub const MAX_SITES: usize = 20;
/// What a hit of a probe costs the traced thread, measured on this kind of machine
/// (../shared/TOOLCHAIN.md): an instruction the kernel emulates, and one it single-steps.
const EMULATED_HIT_SECONDS: f64 = 0.5e-6;
const SINGLE_STEPPED_HIT_SECONDS: f64 = 10e-6;

pub struct Metrics {
    registry: Registry,
    pub calls: Family<Labels, Counter>,
    pub call_duration: Family<Labels, CallLatency>,
    pub alloc_objects: Family<Labels, Counter>,
    pub alloc_bytes: Family<Labels, Counter>,
    pub gc_cycles: Family<Labels, Counter>,
    pub gc_pause: Family<Labels, Histogram, fn() -> Histogram>,
    pub goroutines_created: Family<Labels, Counter>,
    pub targets: Family<Labels, Gauge>,
    pub events: Counter,
    pub events_dropped: Counter,
    pub attach_errors: Family<Labels, Counter>,
    pub probe_hits: Family<Labels, Counter>,
    pub probe_cost: Family<Labels, Counter<f64, std::sync::atomic::AtomicU64>>,
}

/// A call-duration histogram fed with the kernel's own log2 buckets (`CALL_STATS`), so that it
/// counts every call, however many events the ring buffer lost. Its `le` bounds are powers of
/// two nanoseconds, 2^10 (about 1 us) to 2^35 (about 34 s).
#[derive(Clone, Debug, Default)]
pub struct CallLatency(Arc<Mutex<CallStats>>);

/// The kernel's buckets with a bound of their own; those below fold into the first, those
/// above into `+Inf`.
const FIRST_BUCKET: usize = 9;
const LAST_BUCKET: usize = 34;

impl CallLatency {
    /// Adds calls the kernel timed: only `returns`, `total_ns` and `latency` are read.
    pub fn add(&self, new: &CallStats) {
        let mut stats = self.0.lock().unwrap_or_else(|p| p.into_inner());
        stats.returns += new.returns;
        stats.total_ns += new.total_ns;
        for (total, n) in stats.latency.iter_mut().zip(&new.latency) {
            *total += n;
        }
    }
}

impl TypedMetric for CallLatency {
    const TYPE: MetricType = MetricType::Histogram;
}

impl EncodeMetric for CallLatency {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        let stats = *self.0.lock().unwrap_or_else(|p| p.into_inner());
        let bound = |bucket: usize| (1u64 << (bucket + 1)) as f64 / 1e9;
        let mut buckets = vec![(
            bound(FIRST_BUCKET),
            stats.latency[..=FIRST_BUCKET].iter().sum(),
        )];
        buckets.extend((FIRST_BUCKET + 1..=LAST_BUCKET).map(|b| (bound(b), stats.latency[b])));
        buckets.push((
            f64::INFINITY,
            stats.latency[LAST_BUCKET + 1..LATENCY_BUCKETS].iter().sum(),
        ));
        encoder.encode_histogram::<NoLabelSet>(
            stats.total_ns as f64 / 1e9,
            stats.returns,
            &buckets,
            None,
        )
    }

    fn metric_type(&self) -> MetricType {
        Self::TYPE
    }
}

/// GC pauses from 10 us to about 0.3 s.
fn pause_buckets() -> Histogram {
    Histogram::new(exponential_buckets(1e-5, 2.0, 16))
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("escapade");
        let m = Metrics {
            calls: Family::default(),
            call_duration: Family::default(),
            alloc_objects: Family::default(),
            alloc_bytes: Family::default(),
            gc_cycles: Family::default(),
            gc_pause: Family::new_with_constructor(pause_buckets),
            goroutines_created: Family::default(),
            targets: Family::default(),
            events: Counter::default(),
            events_dropped: Counter::default(),
            attach_errors: Family::default(),
            probe_hits: Family::default(),
            probe_cost: Family::default(),
            registry: Registry::default(),
        };
        // prometheus-client appends `_total` to counters' names.
        registry.register("calls", "Calls of the traced functions", m.calls.clone());
        registry.register(
            "call_duration_seconds",
            "Durations of the traced functions' calls that returned",
            m.call_duration.clone(),
        );
        registry.register(
            "alloc_objects",
            "Heap objects allocated, by site (sampled mode: the runtime's samples, scaled)",
            m.alloc_objects.clone(),
        );
        registry.register(
            "alloc_bytes",
            "Heap bytes allocated, by site (sampled mode: the runtime's samples, scaled)",
            m.alloc_bytes.clone(),
        );
        registry.register(
            "gc_cycles",
            "Garbage-collection cycles completed",
            m.gc_cycles.clone(),
        );
        registry.register(
            "gc_pause_seconds",
            "Stop-the-world pause of each GC cycle",
            m.gc_pause.clone(),
        );
        registry.register(
            "goroutines_created",
            "Goroutines created, by go statement",
            m.goroutines_created.clone(),
        );
        registry.register("targets", "Targets by state", m.targets.clone());
        registry.register("events", "Events the probes sent", m.events.clone());
        registry.register(
            "events_dropped",
            "Events lost to a full ring buffer",
            m.events_dropped.clone(),
        );
        registry.register(
            "attach_errors",
            "Processes a target matched that escapade could not attach to",
            m.attach_errors.clone(),
        );
        registry.register(
            "probe_hits",
            "Probe hits, by whether the kernel emulates (~0.5 us) or single-steps (~10 us) the \
             probed instruction",
            m.probe_hits.clone(),
        );
        registry.register(
            "probe_cost_seconds",
            "Estimated CPU time the probes took from the target's threads",
            m.probe_cost.clone(),
        );
        Metrics { registry, ..m }
    }
}

impl Metrics {
    /// The exposition text of every metric.
    pub fn encode(&self) -> String {
        let mut text = String::new();
        encode(&mut text, &self.registry).expect("writing to a String cannot fail");
        text
    }

    /// Counts probe hits of a target and what they cost it.
    pub fn probe_hits(&self, target: &str, emulated: u64, single_stepped: u64) {
        for (kind, hits) in [("emulated", emulated), ("single_stepped", single_stepped)] {
            if hits > 0 {
                self.probe_hits
                    .get_or_create(&vec![("target", target.into()), ("kind", kind.into())])
                    .inc_by(hits);
            }
        }
        let cost = emulated as f64 * EMULATED_HIT_SECONDS
            + single_stepped as f64 * SINGLE_STEPPED_HIT_SECONDS;
        if cost > 0.0 {
            self.probe_cost
                .get_or_create(&vec![("target", target.into())])
                .inc_by(cost);
        }
    }
}

/// Assigns sites their label: the first [`MAX_SITES`] of a target get their own, the rest
/// share `other`. A counter never moves to another label, so each series only grows.
#[derive(Default)]
pub struct SiteLabels {
    named: std::collections::HashSet<String>,
}

impl SiteLabels {
    pub fn label(&mut self, site: &str) -> String {
        if self.named.contains(site) {
            return site.to_string();
        }
        if self.named.len() < MAX_SITES {
            self.named.insert(site.to_string());
            return site.to_string();
        }
        "other".to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sites_past_the_limit_share_other() {
        let mut labels = SiteLabels::default();
        for i in 0..MAX_SITES {
            assert_eq!(labels.label(&format!("s{i}")), format!("s{i}"));
        }
        assert_eq!(labels.label("late"), "other");
        assert_eq!(labels.label("s0"), "s0");
    }
}
