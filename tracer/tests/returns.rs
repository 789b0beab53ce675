//! Where escapade sees returns: at return sites in the callers (emulated by the kernel) for
//! direct calls, on the callee's `RET`s for calls through func values and interfaces, and not
//! at all for those under `--returns direct`. The counts per mechanism must equal the calls the
//! program itself made each way, and the results read at return sites must equal what the
//! program printed (`tests/go/returns.go`).

mod common;

use serde_json::Value;

use common::{Escapade, Target};

/// What one traced run of `returns.go` gave.
struct Run {
    /// The program's own JSON lines about its calls.
    printed: Vec<Value>,
    /// How many calls the program made each way.
    counts: Value,
    events: Vec<Value>,
}

impl Run {
    fn of(bin: &std::path::Path, options: &[&str]) -> Run {
        Run::of_rounds(bin, options, 50, 0)
    }

    /// `rounds` rounds of calls, each followed by a pause of `pause_ms`.
    fn of_rounds(bin: &std::path::Path, options: &[&str], rounds: usize, pause_ms: u64) -> Run {
        let args = [rounds.to_string(), pause_ms.to_string()];
        let mut target = Target::start(bin, &[&args[0], &args[1]]);
        let pid = target.pid.to_string();
        let mut args = vec!["trace", "--pid", &pid, "--json"];
        args.extend(options);
        args.extend([
            "main.double",
            "main.(*adder).Add",
            "main.pair",
            "main.spilled",
            "main.mayPanic",
        ]);
        let mut escapade = Escapade::attach(&args);
        target.go();
        // Every tenth round prints a pair line and a spilled line, then the counts.
        let printed = common::json_lines(&target.read_lines(2 * rounds.div_ceil(10)).concat());
        let counts = target.read_lines(1).concat();
        let counts: Value = serde_json::from_str(
            counts
                .strip_prefix("counts ")
                .unwrap_or_else(|| panic!("{counts:?}")),
        )
        .unwrap();
        // Every pair and spilled call's return, decoded while the program still runs.
        escapade.wait_for(3 * rounds.div_ceil(10), |l| {
            l.contains(r#""type":"return""#)
                && (l.contains("main.pair") || l.contains("main.spilled"))
        });
        target.go();
        target.finish();
        Run {
            printed,
            counts,
            events: escapade.finish(),
        }
    }

    fn count(&self, name: &str) -> u64 {
        self.counts[name]
            .as_u64()
            .unwrap_or_else(|| panic!("{name} in {}", self.counts))
    }

    /// The summary's line for `function`.
    fn summary(&self, function: &str) -> &Value {
        self.events
            .iter()
            .filter(|e| e["type"] == "summary")
            .flat_map(|s| s["functions"].as_array().unwrap())
            .find(|f| f["function"] == function)
            .unwrap_or_else(|| panic!("no summary line for {function}"))
    }

    /// `function`'s returns, entries, and returns seen at return sites, on RETs and not at all,
    /// as the summary gives them.
    fn mechanisms(&self, function: &str) -> [u64; 5] {
        let s = self.summary(function);
        let n = |k: &str| s[k].as_u64().unwrap_or_else(|| panic!("{k} in {s}"));
        [
            n("entries"),
            n("returns"),
            n("returns_at_return_site"),
            n("returns_at_ret"),
            n("unobserved"),
        ]
    }

    fn returns(&self, function: &str) -> Vec<&Value> {
        self.events
            .iter()
            .filter(|e| e["type"] == "return" && e["function"] == function)
            .collect()
    }
}

fn result<'a>(ret: &'a Value, name: &str) -> &'a Value {
    ret["results"]
        .as_array()
        .and_then(|r| r.iter().find(|a| a["name"] == name))
        .map(|a| &a["value"])
        .unwrap_or_else(|| panic!("{name} in {ret}"))
}

fn int(value: &Value) -> i64 {
    assert_eq!(value["kind"], "int", "{value}");
    value["value"].as_i64().unwrap()
}

#[test]
fn each_call_returns_through_the_mechanism_its_call_site_allows() {
    for go in common::toolchains() {
        for flags in [&[][..], &["-ldflags=-s -w"][..]] {
            eprintln!("== {} {flags:?}", go.version);
            let bin = common::build(&go, "returns", flags);

            let all = Run::of(&bin, &[]);
            let (direct, value) = (all.count("double_direct"), all.count("double_func_value"));
            assert_eq!(
                all.mechanisms("main.double"),
                [direct + value, direct + value, direct, value, 0],
                "main.double: a func value's calls return on the RETs"
            );
            let (direct, iface) = (all.count("add_direct"), all.count("add_interface"));
            assert_eq!(
                all.mechanisms("main.(*adder).Add"),
                [direct + iface, direct + iface, direct, iface, 0],
                "an interface's calls return on the RETs"
            );
            let pairs = all.count("pair_discarding") + all.count("pair_keeping");
            assert_eq!(all.mechanisms("main.pair"), [pairs, pairs, pairs, 0, 0]);
            let spilled = all.count("spilled");
            assert_eq!(
                all.mechanisms("main.spilled"),
                [spilled, spilled, spilled, 0, 0]
            );

            let only_direct = Run::of(&bin, &["--returns", "direct"]);
            let (direct, value) = (
                only_direct.count("double_direct"),
                only_direct.count("double_func_value"),
            );
            assert_eq!(
                only_direct.mechanisms("main.double"),
                [direct + value, direct, direct, 0, value],
                "--returns direct: a func value's calls are not observed"
            );
            let (direct, iface) = (
                only_direct.count("add_direct"),
                only_direct.count("add_interface"),
            );
            assert_eq!(
                only_direct.mechanisms("main.(*adder).Add"),
                [direct + iface, direct, direct, 0, iface],
            );
        }
    }
}

/// `--returns sampled`: the RET probes come and go, so calls through func values and
/// interfaces are seen only in the windows, and the others are counted as not observed,
/// exactly; direct calls are all seen at their return sites.
#[test]
fn sampled_rets_see_indirect_calls_in_windows_and_count_the_rest() {
    for go in common::toolchains() {
        eprintln!("== {}", go.version);
        let bin = common::build(&go, "returns", &[]);
        // About 3.5 s of calls: the 2 s period's window of 40 % opens once or twice.
        let run = Run::of_rounds(&bin, &["--returns", "sampled=40%"], 300, 10);
        for (function, direct, indirect) in [
            ("main.double", "double_direct", "double_func_value"),
            ("main.(*adder).Add", "add_direct", "add_interface"),
        ] {
            let (direct, indirect) = (run.count(direct), run.count(indirect));
            let [entries, returns, at_site, at_ret, unobserved] = run.mechanisms(function);
            let at = format!("{function}: {:?}", run.mechanisms(function));
            assert_eq!(entries, direct + indirect, "{at}");
            assert_eq!(at_site, direct, "{at}");
            assert_eq!(at_ret + unobserved, indirect, "{at}");
            assert_eq!(returns, at_site + at_ret, "{at}");
            assert!(
                at_ret > 0 && unobserved > 0,
                "{at}: both in and out of windows"
            );
        }
    }
}

#[test]
fn results_read_at_return_sites_are_what_the_caller_got() {
    for go in common::toolchains() {
        let bin = common::build(&go, "returns", &[]);
        eprintln!("== {}", go.version);
        let run = Run::of(&bin, &[]);
        let pairs = run.returns("main.pair");
        let printed: Vec<&Value> = run
            .printed
            .iter()
            .filter(|p| p["function"] == "main.pair")
            .collect();
        assert_eq!(pairs.len(), 2 * printed.len(), "two pair calls a round");
        for (calls, want) in pairs.chunks(2).zip(&printed) {
            let (discarding, keeping) = (calls[0], calls[1]);
            // `_, b := pair(i)`: the caller overwrites the first result without reading it.
            assert_eq!(
                result(discarding, "~r0")["kind"],
                "discarded",
                "{discarding}"
            );
            assert_eq!(int(result(discarding, "~r1")), want["results"]["b"]);
            assert_eq!(int(result(keeping, "~r0")), want["results"]["kept_a"]);
            assert_eq!(int(result(keeping, "~r1")), want["results"]["kept_b"]);
        }
        // The caller stores the result in its frame before the probe; it is read from there.
        let spilled = run.returns("main.spilled");
        let printed: Vec<&Value> = run
            .printed
            .iter()
            .filter(|p| p["function"] == "main.spilled")
            .collect();
        assert_eq!(spilled.len(), printed.len());
        for (ret, want) in spilled.iter().zip(&printed) {
            assert_eq!(int(result(ret, "~r0")), want["results"]["~r0"]);
        }

        // `--results exact` probes the RETs for the discarding call site: its value is seen.
        let exact = Run::of(&bin, &["--results", "exact"]);
        let pairs = exact.returns("main.pair");
        for (calls, want) in pairs.chunks(2).zip(exact.printed.iter().step_by(2)) {
            assert_eq!(int(result(calls[0], "~r0")), want["results"]["a"]);
        }
        let s = exact.summary("main.pair");
        assert_eq!(
            (
                s["returns_at_ret"].as_u64(),
                s["returns_at_return_site"].as_u64()
            ),
            (
                Some(exact.count("pair_discarding")),
                Some(exact.count("pair_keeping"))
            ),
            "{s}"
        );
    }
}

/// A panic unwinds `mayPanic` past its return site: the kernel is left holding its entries,
/// which must not count as calls still running, while a call that is running does.
#[test]
fn calls_a_panic_unwound_are_not_still_running() {
    for go in common::toolchains() {
        let bin = common::build(&go, "returns", &[]);
        eprintln!("== {}", go.version);
        let mut target = Target::start(&bin, &[]);
        let pid = target.pid.to_string();
        let escapade = Escapade::attach(&[
            "trace",
            "--pid",
            &pid,
            "--json",
            "--quiet",
            "--duration",
            "4s",
            "main.mayPanic",
            "main.parked",
        ]);
        target.go();
        target.read_lines(10);
        let counts = target.read_lines(1).concat();
        let counts: Value = serde_json::from_str(counts.strip_prefix("counts ").unwrap()).unwrap();
        // escapade stops at its deadline while the program waits, main.parked inside.
        let events = escapade.finish();
        target.go();
        target.finish();
        let summary = events.iter().find(|e| e["type"] == "summary").unwrap();
        let may_panic = summary["functions"]
            .as_array()
            .unwrap()
            .iter()
            .find(|f| f["function"] == "main.mayPanic")
            .unwrap();
        let (calls, panicked) = (
            counts["mayPanic"].as_u64().unwrap(),
            counts["panicked"].as_u64().unwrap(),
        );
        assert!(panicked > 0);
        assert_eq!(may_panic["entries"], calls, "{may_panic}");
        assert_eq!(may_panic["returns"], calls - panicked, "{may_panic}");
        assert_eq!(summary["in_flight"], 1, "main.parked only: {summary}");
    }
}
