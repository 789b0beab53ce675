//! The `allocs` view: allocations the kernel counted per (user stack, caller, type), turned into
//! symbolized stacks and totals per allocation site, and goroutine creations per `go`
//! statement with their stacks, and the GC cycles on the same timeline. A site is the nearest
//! frame outside the runtime, which is where a Go programmer can change something.

use std::cmp::Reverse;
use std::collections::{BTreeMap, HashMap};

use probe_common::{
    AllocKey, AllocStats, COUNTED_ALLOCATION, COUNTED_GC_CYCLE, COUNTED_GOROUTINE,
    COUNTED_RESIDENCY, COUNTED_SAMPLED, COUNTED_SAMPLED_FREED, COUNTED_STACK_GROWTH, GC_HEAP_GOAL,
    GC_HEAP_MARK_END, GC_HEAP_MARKED, GC_HEAP_START, GC_NUMGC, GC_PAUSE_NS, GC_T_END, GC_T_MARK,
    GC_T_MARK_TERM, GC_T_SWEEP_TERM, GcCycleRecord, LiveObject, NO_STACK,
};
use serde::{Deserialize, Serialize};

use crate::model::decode::Decoder;
use crate::probes::snapshot::KernelCounts;
use crate::tracee::clock::WallClock;
use crate::tracee::gobin::Frame;

/// One distinct stack, innermost frame first, and what was allocated there.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct StackAllocs {
    pub frames: Vec<Frame>,
    /// Link-time addresses of the calls in the stack, innermost first: exports group inlined
    /// frames by address.
    pub pcs: Vec<u64>,
    /// Sampled mode: of these objects, how many the sweeper freed, and how many are still
    /// live when escapade detached.
    pub freed_objects: u64,
    pub live_objects: u64,
    /// Sampled mode: lifetimes of the freed objects, as counts per log2 bucket of nanoseconds.
    #[serde(skip)]
    residency: Vec<u64>,
    #[serde(rename = "type")]
    pub type_name: Option<String>,
    pub objects: u64,
    pub bytes: u64,
}

/// Allocations under one site, by type.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct SiteAllocs {
    pub site: Option<Frame>,
    pub objects: u64,
    pub bytes: u64,
    /// Sampled mode only (see [`StackAllocs`]).
    pub freed_objects: u64,
    pub live_objects: u64,
    /// Sampled mode: how long the freed objects stayed resident.
    pub residency: Option<Residency>,
    /// (type name, objects, bytes), most bytes first.
    pub types: Vec<(Option<String>, u64, u64)>,
}

/// How long objects stayed live before the GC freed them, from log2 buckets: each figure is
/// the upper bound of its bucket, so it is within a factor of two.
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize)]
pub struct Residency {
    pub median_ns: u64,
    pub p90_ns: u64,
    pub max_ns: u64,
}

impl Residency {
    fn from_buckets(buckets: &[u64]) -> Option<Residency> {
        let total: u64 = buckets.iter().sum();
        if total == 0 {
            return None;
        }
        let bound = |b: usize| 1u64.checked_shl(b as u32).unwrap_or(u64::MAX);
        let quantile = |q: f64| {
            let want = ((total as f64) * q).ceil().max(1.0) as u64;
            let mut seen = 0;
            for (b, n) in buckets.iter().enumerate() {
                seen += n;
                if seen >= want {
                    return bound(b);
                }
            }
            bound(buckets.len() - 1)
        };
        let max = buckets.iter().rposition(|n| *n > 0).map_or(0, bound);
        Some(Residency {
            median_ns: quantile(0.5),
            p90_ns: quantile(0.9),
            max_ns: max,
        })
    }
}

/// Values boxed into interfaces at one site, through one `runtime.convT*` helper.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct BoxingSite {
    /// The conversion in user code.
    pub site: Option<Frame>,
    /// The runtime helper, which says what was boxed: `convTstring` a string, `convTslice` a
    /// slice, `convT64` an 8-byte scalar, `convT` any other type (named in `type`).
    pub via: String,
    #[serde(rename = "type")]
    pub type_name: Option<String>,
    pub objects: u64,
    pub bytes: u64,
}

/// Goroutines created by one `go` statement running one function, and how their stacks grew.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct GoroutineSite {
    /// The `go` statement.
    pub site: Option<Frame>,
    /// The function the goroutines run.
    pub function: Option<String>,
    /// Created while escapade watched.
    pub count: u64,
    /// The stack each started with (`runtime.startingStackSize` when it was created); None
    /// when none was created while escapade watched, or the binary has no symbol table.
    pub initial_stack_bytes: Option<u64>,
    /// Times the runtime grew a stack of these goroutines (including goroutines created
    /// before escapade attached), and the largest stack reached.
    pub stack_growths: u64,
    pub max_stack_bytes: Option<u64>,
}

/// One completed GC cycle, as the runtime itself recorded it (what `GODEBUG=gctrace=1`
/// prints). Times are Unix nanoseconds. Only `end_ns` is known for a binary without DWARF.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct GcCycle {
    /// `runtime.MemStats.NumGC` once this cycle completed.
    pub number: Option<u64>,
    /// Sweep termination began (the first stop-the-world).
    pub start_ns: Option<u64>,
    /// Concurrent marking began.
    pub mark_ns: Option<u64>,
    /// Mark termination began (the second stop-the-world).
    pub mark_termination_ns: Option<u64>,
    pub end_ns: u64,
    /// Both stop-the-world pauses together (`MemStats.PauseNs` of this cycle).
    pub pause_ns: Option<u64>,
    /// The heap when the cycle started, when marking ended, and what was marked live
    /// (gctrace's `4->5->2 MB`), and the goal for the next cycle.
    pub heap_start_bytes: Option<u64>,
    pub heap_mark_end_bytes: Option<u64>,
    pub heap_marked_bytes: Option<u64>,
    pub heap_goal_bytes: Option<u64>,
}

impl GcCycle {
    fn from_record(record: &GcCycleRecord, clock: &WallClock) -> GcCycle {
        let f = &record.fields;
        let known = f[GC_NUMGC] != 0;
        let value = |i: usize| known.then_some(f[i]);
        let time = |i: usize| value(i).map(|t| clock.wall_ns(t));
        GcCycle {
            number: value(GC_NUMGC),
            start_ns: time(GC_T_SWEEP_TERM),
            mark_ns: time(GC_T_MARK),
            mark_termination_ns: time(GC_T_MARK_TERM),
            end_ns: time(GC_T_END).unwrap_or_else(|| clock.wall_ns(record.ktime_ns)),
            pause_ns: value(GC_PAUSE_NS),
            heap_start_bytes: value(GC_HEAP_START),
            heap_mark_end_bytes: value(GC_HEAP_MARK_END),
            heap_marked_bytes: value(GC_HEAP_MARKED),
            heap_goal_bytes: value(GC_HEAP_GOAL),
        }
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct AllocReport {
    pub objects: u64,
    pub bytes: u64,
    /// Most bytes first.
    pub sites: Vec<SiteAllocs>,
    /// Most bytes first.
    pub stacks: Vec<StackAllocs>,
    /// Allocations whose stack the kernel could not record (their caller is still known).
    pub without_stack: u64,
    pub goroutines_created: u64,
    /// Garbage-collection cycles completed while escapade watched.
    pub gc_cycles: u64,
    /// The most recent of them (up to `probe_common::MAX_GC_CYCLES`), oldest first.
    pub gc: Vec<GcCycle>,
    /// Allocations made to box values into interfaces, most bytes first.
    pub boxing: Vec<BoxingSite>,
    /// Most goroutines first.
    pub goroutines: Vec<GoroutineSite>,
}

impl StackAllocs {
    /// The nearest frame outside the runtime.
    fn site(&self) -> Option<Frame> {
        self.frames
            .iter()
            .find(|f| !is_runtime(&f.function))
            .cloned()
    }
}

impl AllocReport {
    /// What was allocated after `earlier`, a view of the same session: per stack, the objects
    /// and bytes added since (live objects are as of now). The other views stay as they are.
    pub fn since(&self, earlier: &AllocReport) -> AllocReport {
        let key = |s: &StackAllocs| (s.pcs.clone(), s.type_name.clone());
        let before: HashMap<_, (u64, u64, u64)> = earlier
            .stacks
            .iter()
            .map(|s| (key(s), (s.objects, s.bytes, s.freed_objects)))
            .collect();
        let stacks: Vec<StackAllocs> = self
            .stacks
            .iter()
            .filter_map(|s| {
                let (objects, bytes, freed) = before.get(&key(s)).copied().unwrap_or_default();
                (s.objects > objects).then(|| StackAllocs {
                    objects: s.objects - objects,
                    bytes: s.bytes.saturating_sub(bytes),
                    freed_objects: s.freed_objects.saturating_sub(freed),
                    ..s.clone()
                })
            })
            .collect();
        AllocReport {
            objects: stacks.iter().map(|s| s.objects).sum(),
            bytes: stacks.iter().map(|s| s.bytes).sum(),
            stacks,
            ..self.clone()
        }
    }
}

/// The allocation view of what the counting probes summed so far.
pub fn view(
    counts: &KernelCounts,
    clock: &WallClock,
    decoder: &mut Decoder,
) -> anyhow::Result<AllocReport> {
    build(
        counts.alloc_sites()?,
        counts.sampled_live()?,
        &counts.gc_cycles()?,
        clock,
        |id| counts.alloc_stack(id),
        decoder,
    )
}

/// Buckets of `COUNTED_RESIDENCY`: log2 of a u64 of nanoseconds, 0..=64.
const RESIDENCY_BUCKETS: usize = 65;

/// Where objects were allocated, as the kernel keys them. Sampled objects' frees and lifetimes
/// are keyed the same way, which is how they find their allocation.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
struct Origin {
    /// Key of the user stack above the allocator's caller, or `NO_STACK`.
    stack_id: i64,
    /// Return address into the allocator's caller, which the stack misses.
    caller: u64,
}

/// Objects of one type allocated at one origin.
#[derive(Clone, Copy)]
struct Allocation {
    origin: Origin,
    /// The `*_type`; None for untyped memory, and for sampled objects, whose probe does not
    /// see their type.
    type_addr: Option<u64>,
}

/// A `go` statement and the function its goroutines run. Goroutine sites that rank equal stay
/// in this order, by address.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct GoStatement {
    /// Return address of the statement's call to `runtime.newproc`.
    call_return: u64,
    /// Entry PC of the function.
    function: u64,
}

/// What one row of the kernel's `ALLOC_SITES` counted. `AllocKey::detail` holds something else
/// for each code, so it is read here and nowhere after.
enum Counted {
    /// Heap objects: every one under `--exact`, the profiler's samples otherwise.
    Allocated(Allocation),
    /// Sampled objects the sweeper freed.
    Freed(Origin),
    /// Sampled objects freed after a lifetime in `bucket`, a log2 of nanoseconds.
    Resident {
        origin: Origin,
        bucket: usize,
    },
    /// Goroutines created; their bytes are the stacks they started with, summed.
    GoroutinesCreated(GoStatement),
    /// Stacks grown; their bytes are the largest stack reached.
    StacksGrown(GoStatement),
    GcCycles,
}

impl Counted {
    /// None for a code that no probe of this build writes.
    fn decode(key: &AllocKey) -> Option<Counted> {
        let origin = Origin {
            stack_id: key.stack_id,
            caller: key.caller,
        };
        let statement = GoStatement {
            call_return: key.caller,
            function: key.detail,
        };
        Some(match key.counted {
            COUNTED_ALLOCATION => Counted::Allocated(Allocation {
                origin,
                type_addr: (key.detail != 0).then_some(key.detail),
            }),
            COUNTED_SAMPLED => Counted::Allocated(Allocation {
                origin,
                type_addr: None,
            }),
            COUNTED_SAMPLED_FREED => Counted::Freed(origin),
            COUNTED_RESIDENCY => Counted::Resident {
                origin,
                bucket: (key.detail as usize).min(RESIDENCY_BUCKETS - 1),
            },
            COUNTED_GOROUTINE => Counted::GoroutinesCreated(statement),
            COUNTED_STACK_GROWTH => Counted::StacksGrown(statement),
            COUNTED_GC_CYCLE => Counted::GcCycles,
            _ => return None,
        })
    }
}

/// What sampled mode knows about the objects of one origin beyond their count.
struct Fate {
    freed: u64,
    live: u64,
    /// Lifetimes of the freed ones, as counts per `COUNTED_RESIDENCY` bucket.
    residency: Vec<u64>,
}

impl Default for Fate {
    fn default() -> Fate {
        Fate {
            freed: 0,
            live: 0,
            residency: vec![0; RESIDENCY_BUCKETS],
        }
    }
}

/// What the kernel counted about the goroutines of one `go` statement.
#[derive(Default)]
struct Goroutines {
    created: u64,
    /// Summed over those created.
    starting_stack_bytes: u64,
    growths: u64,
    max_stack_bytes: u64,
}

/// The kernel's rows, gathered by what they counted.
#[derive(Default)]
struct Tallies {
    /// In the kernel map's order.
    allocations: Vec<(Allocation, AllocStats)>,
    fates: HashMap<Origin, Fate>,
    goroutines: BTreeMap<GoStatement, Goroutines>,
    gc_cycles: u64,
}

/// Symbolizes what the kernel counted. `stack_of` returns a recorded stack's return addresses,
/// innermost (the probed instruction in `runtime.mallocgc`) first.
fn build(
    sites: Vec<(AllocKey, AllocStats)>,
    live: Vec<LiveObject>,
    gc: &[GcCycleRecord],
    clock: &WallClock,
    stack_of: impl FnMut(i64) -> anyhow::Result<Vec<u64>>,
    decoder: &mut Decoder,
) -> anyhow::Result<AllocReport> {
    let Tallies {
        allocations,
        fates,
        goroutines,
        gc_cycles,
    } = tally(sites, &live);
    let without_stack = without_stack(&allocations);
    let mut stacks = symbolize_stacks(allocations, fates, stack_of, decoder)?;
    // Most bytes first. Ties go by the stack's code addresses and type, not the kernel hash
    // map's order, so that equal counts print the same way every run; the sites and boxing
    // grouped from them next keep that order for their own ties.
    stacks.sort_by(|a, b| {
        (Reverse(a.bytes), &a.pcs, &a.type_name).cmp(&(Reverse(b.bytes), &b.pcs, &b.type_name))
    });
    let sites = group_by_site(&stacks);
    let boxing = boxing_sites(&stacks);
    let goroutines = goroutine_sites(goroutines, decoder);
    Ok(AllocReport {
        objects: stacks.iter().map(|s| s.objects).sum(),
        bytes: stacks.iter().map(|s| s.bytes).sum(),
        sites,
        stacks,
        without_stack,
        goroutines_created: goroutines.iter().map(|g| g.count).sum(),
        gc_cycles,
        gc: gc.iter().map(|r| GcCycle::from_record(r, clock)).collect(),
        boxing,
        goroutines,
    })
}

/// Decodes the kernel's rows, and adds the sampled objects still live to their origins' fates.
fn tally(sites: Vec<(AllocKey, AllocStats)>, live: &[LiveObject]) -> Tallies {
    let mut tallies = Tallies::default();
    for (key, stats) in sites {
        let Some(counted) = Counted::decode(&key) else {
            continue;
        };
        match counted {
            Counted::Allocated(allocation) => tallies.allocations.push((allocation, stats)),
            Counted::Freed(origin) => {
                tallies.fates.entry(origin).or_default().freed += stats.objects
            }
            Counted::Resident { origin, bucket } => {
                tallies.fates.entry(origin).or_default().residency[bucket] += stats.objects;
            }
            Counted::GoroutinesCreated(statement) => {
                let g = tallies.goroutines.entry(statement).or_default();
                g.created += stats.objects;
                g.starting_stack_bytes += stats.bytes;
            }
            Counted::StacksGrown(statement) => {
                let g = tallies.goroutines.entry(statement).or_default();
                g.growths += stats.objects;
                g.max_stack_bytes = g.max_stack_bytes.max(stats.bytes);
            }
            Counted::GcCycles => tallies.gc_cycles += stats.objects,
        }
    }
    for object in live {
        let origin = Origin {
            stack_id: object.stack_id,
            caller: object.caller,
        };
        tallies.fates.entry(origin).or_default().live += 1;
    }
    tallies
}

/// Objects whose stack the kernel could not take.
fn without_stack(allocations: &[(Allocation, AllocStats)]) -> u64 {
    allocations
        .iter()
        .filter(|(a, _)| a.origin.stack_id == NO_STACK)
        .map(|(_, stats)| stats.objects)
        .sum()
}

/// One symbolized stack per allocation, with its origin's fate, in the order given.
fn symbolize_stacks(
    allocations: Vec<(Allocation, AllocStats)>,
    mut fates: HashMap<Origin, Fate>,
    mut stack_of: impl FnMut(i64) -> anyhow::Result<Vec<u64>>,
    decoder: &mut Decoder,
) -> anyhow::Result<Vec<StackAllocs>> {
    let mut stacks = Vec::with_capacity(allocations.len());
    for (Allocation { origin, type_addr }, stats) in allocations {
        // The probe runs before mallocgc builds its frame, so the frame-pointer walk misses
        // mallocgc's caller: put it back from the return address the probe read.
        let mut pcs = vec![origin.caller];
        if origin.stack_id != NO_STACK {
            pcs.extend(stack_of(origin.stack_id)?.into_iter().skip(1));
        }
        // Return addresses: each call is the instruction before.
        let pcs: Vec<u64> = pcs
            .into_iter()
            .filter(|&pc| pc != 0)
            .map(|pc| (pc - 1).wrapping_sub(decoder.bias))
            .collect();
        // Inlined calls expanded into their own frames, innermost first.
        let frames = pcs
            .iter()
            .flat_map(|&pc| decoder.binary.symbolize_inlined(pc))
            .collect();
        // Sampled objects are counted without their type, so an origin that has a fate has
        // one allocation row, which takes it.
        let fate = fates.remove(&origin).unwrap_or_default();
        stacks.push(StackAllocs {
            frames,
            pcs,
            freed_objects: fate.freed,
            live_objects: fate.live,
            residency: fate.residency,
            type_name: type_addr.and_then(|t| decoder.type_name_at(t)),
            objects: stats.objects,
            bytes: stats.bytes,
        });
    }
    Ok(stacks)
}

/// The stacks summed per site, most bytes first, and each site's types most bytes first.
fn group_by_site(stacks: &[StackAllocs]) -> Vec<SiteAllocs> {
    // Each site with its residency buckets, summed until they are read as quantiles.
    let mut by_site: BTreeMap<Option<Frame>, (SiteAllocs, Vec<u64>)> = BTreeMap::new();
    for stack in stacks {
        let site = stack.site();
        let (entry, buckets) = by_site.entry(site.clone()).or_insert_with(|| {
            let entry = SiteAllocs {
                site,
                ..Default::default()
            };
            (entry, vec![0; RESIDENCY_BUCKETS])
        });
        entry.objects += stack.objects;
        entry.bytes += stack.bytes;
        entry.freed_objects += stack.freed_objects;
        entry.live_objects += stack.live_objects;
        for (total, n) in buckets.iter_mut().zip(&stack.residency) {
            *total += n;
        }
        match entry.types.iter_mut().find(|t| t.0 == stack.type_name) {
            Some(t) => {
                t.1 += stack.objects;
                t.2 += stack.bytes;
            }
            None => entry
                .types
                .push((stack.type_name.clone(), stack.objects, stack.bytes)),
        }
    }
    let mut sites: Vec<SiteAllocs> = by_site
        .into_values()
        .map(|(mut site, buckets)| {
            site.residency = Residency::from_buckets(&buckets);
            site.types.sort_by_key(|t| Reverse(t.2));
            site
        })
        .collect();
    sites.sort_by_key(|s| Reverse(s.bytes));
    sites
}

/// The stacks that box a value into an interface, summed per site, helper and type, most
/// bytes first.
fn boxing_sites(stacks: &[StackAllocs]) -> Vec<BoxingSite> {
    let mut boxing: Vec<BoxingSite> = Vec::new();
    for stack in stacks {
        // The conversion helper calls mallocgc directly; a sampled stack also has the
        // profiler's own frames below it.
        let Some(via) = stack
            .frames
            .iter()
            .take_while(|f| is_runtime(&f.function))
            .map(|f| &f.function)
            .find(|f| f.starts_with("runtime.convT"))
        else {
            continue;
        };
        let site = stack.site();
        match boxing
            .iter_mut()
            .find(|b| b.site == site && b.via == *via && b.type_name == stack.type_name)
        {
            Some(b) => {
                b.objects += stack.objects;
                b.bytes += stack.bytes;
            }
            None => boxing.push(BoxingSite {
                site,
                via: via.clone(),
                type_name: stack.type_name.clone(),
                objects: stack.objects,
                bytes: stack.bytes,
            }),
        }
    }
    boxing.sort_by_key(|b| Reverse(b.bytes));
    boxing
}

/// The goroutines per `go` statement and function, symbolized, most created first.
fn goroutine_sites(
    goroutines: BTreeMap<GoStatement, Goroutines>,
    decoder: &Decoder,
) -> Vec<GoroutineSite> {
    let symbolize = |pc: u64| decoder.binary.symbolize(pc.wrapping_sub(decoder.bias));
    let mut sites: Vec<GoroutineSite> = goroutines
        .into_iter()
        .map(|(statement, g)| GoroutineSite {
            // A return address: the call is the instruction before it.
            site: symbolize(statement.call_return.wrapping_sub(1)),
            function: symbolize(statement.function).map(|f| f.function),
            count: g.created,
            initial_stack_bytes: (g.created > 0 && g.starting_stack_bytes > 0)
                .then(|| g.starting_stack_bytes / g.created),
            stack_growths: g.growths,
            max_stack_bytes: (g.growths > 0).then_some(g.max_stack_bytes),
        })
        .collect();
    sites.sort_by_key(|g| Reverse((g.count, g.stack_growths)));
    sites
}

/// The runtime and its internal packages allocate on behalf of the code that called them.
fn is_runtime(function: &str) -> bool {
    function.starts_with("runtime.") || function.starts_with("internal/")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn residency_quantiles_are_bucket_bounds() {
        let mut buckets = vec![0; RESIDENCY_BUCKETS];
        buckets[10] = 5; // lifetimes in [512, 1024) ns
        buckets[20] = 4;
        buckets[30] = 1;
        let r = Residency::from_buckets(&buckets).unwrap();
        assert_eq!(
            (r.median_ns, r.p90_ns, r.max_ns),
            (1 << 10, 1 << 20, 1 << 30)
        );
        assert!(Residency::from_buckets(&vec![0; RESIDENCY_BUCKETS]).is_none());
    }
}
