//! Sampled `allocs` against the runtime's own heap profile: `tests/go/profile.go` prints, per
//! site of its `runtime.MemProfile`, the objects allocated and freed, while escapade samples
//! every object (`--mem-profile-rate 1`).

use std::collections::HashMap;
use std::path::Path;

use super::{Escapade, Target};

/// What one run of the profile program said and what escapade reported of it.
pub struct Sampled {
    /// escapade's JSON report.
    pub report: serde_json::Value,
    /// Per function, the objects allocated and freed, as the runtime's `MemProfile` says.
    pub runtime_says: HashMap<String, (u64, u64)>,
    /// The strings the program boxed into interfaces, as it counted them.
    pub boxed: Option<u64>,
}

/// Runs `bin` (a build of `profile.go`) under `escapade allocs --mem-profile-rate 1`, and
/// checks that the program's own rate is back once escapade has detached.
pub fn sampled_run(bin: &Path) -> Sampled {
    let mut target = Target::start(bin, &[]);
    let pid = target.pid.to_string();
    let escapade = Escapade::attach(&[
        "allocs",
        "--pid",
        &pid,
        "--json",
        "--mem-profile-rate",
        "1",
        "--duration",
        "6s",
    ]);
    target.go();
    let mut runtime_says = HashMap::<String, (u64, u64)>::new();
    let mut boxed = None;
    loop {
        let line = target.read_lines(1).concat();
        let f: Vec<&str> = line.split_whitespace().collect();
        match f[..] {
            ["done"] => break,
            ["boxed", _, n] => boxed = Some(n.parse::<u64>().unwrap()),
            ["site", function, "alloc", allocated, "free", freed] => {
                let counts = runtime_says.entry(function.into()).or_default();
                counts.0 += allocated.parse::<u64>().unwrap();
                counts.1 += freed.parse::<u64>().unwrap();
            }
            _ => panic!("the program printed {line:?}"),
        }
    }
    let report = escapade.finish().pop().expect("one JSON report");
    target.go();
    assert_eq!(
        target.read_lines(1).concat().trim(),
        "rate 524288",
        "MemProfileRate restored on detach"
    );
    target.go();
    target.finish();
    Sampled {
        report,
        runtime_says,
        boxed,
    }
}

/// Per site, the objects escapade saw allocated and freed are those the runtime counted.
pub fn assert_sites_match(sampled: &Sampled) {
    let sites = sampled.report["report"]["sites"].as_array().unwrap();
    for (function, (allocated, freed)) in &sampled.runtime_says {
        let site = sites
            .iter()
            .find(|s| s["site"]["function"] == *function)
            .unwrap_or_else(|| panic!("no site {function} in {sites:?}"));
        assert_eq!(
            site["objects"], *allocated,
            "{function}: allocated, vs MemProfile"
        );
        assert_eq!(
            site["freed_objects"], *freed,
            "{function}: freed, vs MemProfile"
        );
    }
    assert_eq!(sampled.report["mode"], "sampled");
    assert_eq!(sampled.report["lost"], 0);
    assert_eq!(sampled.runtime_says["main.keepNodes"], (700, 0));
}
