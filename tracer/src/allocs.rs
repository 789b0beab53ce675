//! The `allocs` view: allocations the kernel counted per (user stack, caller, type), turned into
//! symbolized stacks and totals per allocation site, and goroutine creations per `go`
//! statement. A site is the nearest frame outside the runtime, which is where a Go programmer
//! can change something.

use std::cmp::Reverse;
use std::collections::BTreeMap;

use probe_common::{AllocKey, AllocStats, COUNTED_GC_CYCLE, COUNTED_GOROUTINE};
use serde::Serialize;

use crate::decode::Decoder;
use crate::gobin::Frame;

/// One distinct stack, innermost frame first, and what was allocated there.
#[derive(Clone, Debug, Serialize)]
pub struct StackAllocs {
    pub frames: Vec<Frame>,
    #[serde(rename = "type")]
    pub type_name: Option<String>,
    pub objects: u64,
    pub bytes: u64,
}

/// Allocations under one site, by type.
#[derive(Clone, Debug, Default, Serialize)]
pub struct SiteAllocs {
    pub site: Option<Frame>,
    pub objects: u64,
    pub bytes: u64,
    /// (type name, objects, bytes), most bytes first.
    pub types: Vec<(Option<String>, u64, u64)>,
}

/// Values boxed into interfaces at one site, through one `runtime.convT*` helper.
#[derive(Clone, Debug, Serialize)]
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

/// Goroutines created by one `go` statement running one function.
#[derive(Clone, Debug, Serialize)]
pub struct GoroutineSite {
    /// The `go` statement.
    pub site: Option<Frame>,
    /// The function the goroutines run.
    pub function: Option<String>,
    pub count: u64,
}

#[derive(Clone, Debug, Serialize)]
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
    /// Allocations made to box values into interfaces, most bytes first.
    pub boxing: Vec<BoxingSite>,
    /// Most goroutines first.
    pub goroutines: Vec<GoroutineSite>,
}

/// Symbolizes what the kernel counted. `stack_of` returns a recorded stack's return addresses,
/// innermost (the probed instruction in `runtime.mallocgc`) first.
pub fn build(
    sites: Vec<(AllocKey, AllocStats)>,
    mut stack_of: impl FnMut(u32) -> anyhow::Result<Vec<u64>>,
    decoder: &mut Decoder,
) -> anyhow::Result<AllocReport> {
    let mut stacks = Vec::new();
    let mut goroutines = Vec::new();
    let mut without_stack = 0;
    let mut gc_cycles = 0;
    let symbolize =
        |decoder: &Decoder, pc: u64| decoder.binary.symbolize(pc.wrapping_sub(decoder.bias));
    for (key, stats) in sites {
        if key.counted == COUNTED_GC_CYCLE {
            gc_cycles += stats.objects;
            continue;
        }
        if key.counted == COUNTED_GOROUTINE {
            goroutines.push(GoroutineSite {
                // A return address: the call is the instruction before it.
                site: symbolize(decoder, key.caller.wrapping_sub(1)),
                function: symbolize(decoder, key.type_addr).map(|f| f.function),
                count: stats.objects,
            });
            continue;
        }
        // The probe runs before mallocgc builds its frame, so the frame-pointer walk misses
        // mallocgc's caller: put it back from the return address the probe read.
        let mut pcs = vec![key.caller];
        if key.stack_id >= 0 {
            pcs.extend(stack_of(key.stack_id as u32)?.into_iter().skip(1));
        } else {
            without_stack += stats.objects;
        }
        let frames = pcs
            .into_iter()
            .filter(|&pc| pc != 0)
            .filter_map(|pc| symbolize(decoder, pc - 1))
            .collect();
        stacks.push(StackAllocs {
            frames,
            type_name: (key.type_addr != 0)
                .then(|| decoder.type_name_at(key.type_addr))
                .flatten(),
            objects: stats.objects,
            bytes: stats.bytes,
        });
    }

    let mut by_site: BTreeMap<Option<Frame>, SiteAllocs> = BTreeMap::new();
    for stack in &stacks {
        let site = stack
            .frames
            .iter()
            .find(|f| !is_runtime(&f.function))
            .cloned();
        let entry = by_site.entry(site.clone()).or_insert_with(|| SiteAllocs {
            site,
            ..Default::default()
        });
        entry.objects += stack.objects;
        entry.bytes += stack.bytes;
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
    let mut boxing: Vec<BoxingSite> = Vec::new();
    for stack in &stacks {
        let Some(via) = stack.frames.first().map(|f| &f.function) else {
            continue;
        };
        if !via.starts_with("runtime.convT") {
            continue;
        }
        let site = stack
            .frames
            .iter()
            .find(|f| !is_runtime(&f.function))
            .cloned();
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
    let mut sites: Vec<SiteAllocs> = by_site.into_values().collect();
    for site in &mut sites {
        site.types.sort_by_key(|t| Reverse(t.2));
    }
    sites.sort_by_key(|s| Reverse(s.bytes));
    stacks.sort_by_key(|s| Reverse(s.bytes));
    goroutines.sort_by_key(|g| Reverse(g.count));
    Ok(AllocReport {
        goroutines_created: goroutines.iter().map(|g| g.count).sum(),
        gc_cycles,
        boxing,
        goroutines,
        objects: stacks.iter().map(|s| s.objects).sum(),
        bytes: stacks.iter().map(|s| s.bytes).sum(),
        sites,
        stacks,
        without_stack,
    })
}

/// The runtime and its internal packages allocate on behalf of the code that called them.
fn is_runtime(function: &str) -> bool {
    function.starts_with("runtime.") || function.starts_with("internal/")
}
