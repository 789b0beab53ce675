//! `export --perfetto`: Chrome trace-event JSON, which Perfetto and chrome://tracing open. One
//! track (thread) per goroutine with a span per traced call; a GC track with a span per cycle
//! and its phases, as the runtime timed them; allocation and goroutine-creation tracks with
//! instants at each allocation view the recording took (at most a second apart: the kernel
//! counts these, it does not time each one).

use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use serde_json::{Value as Json, json};

use super::{Export, Recorded};
use crate::model::allocs::{AllocReport, GcCycle};
use crate::model::records::{CallRecord, FunctionInfo, ParamInfo, Symbols};
use crate::record::Header;
use crate::views::text::value_text;

/// Track ids for what is not a goroutine, far above any goroutine id.
const GC_TRACK: u64 = (1 << 31) - 1;
const ALLOCS_TRACK: u64 = (1 << 31) - 2;
const GOROUTINES_TRACK: u64 = (1 << 31) - 3;

pub struct Perfetto {
    path: PathBuf,
    out: BufWriter<std::fs::File>,
    pid: u32,
    started_ns: u64,
    functions: Vec<FunctionInfo>,
    /// Goroutines named so far.
    named: std::collections::HashSet<u64>,
    /// Per goroutine, the entries not returned yet: (function, args).
    open: std::collections::HashMap<u64, Vec<(usize, Json)>>,
    /// Allocation totals at the previous view: objects, bytes, goroutines, GC cycles.
    previous: (u64, u64, u64, u64),
    /// When the last GC cycle drawn ended.
    last_gc_end_ns: u64,
    first: bool,
}

impl Perfetto {
    pub fn create(path: &Path, header: &Header) -> anyhow::Result<Perfetto> {
        let file = std::fs::File::create(path)
            .with_context(|| format!("creating {} (--perfetto)", path.display()))?;
        let mut p = Perfetto {
            path: path.to_path_buf(),
            out: BufWriter::new(file),
            pid: header.pid,
            started_ns: header.started_ns,
            functions: header.functions.clone(),
            named: Default::default(),
            open: Default::default(),
            previous: (0, 0, 0, 0),
            last_gc_end_ns: 0,
            first: true,
        };
        p.out
            .write_all(b"{\"displayTimeUnit\":\"ns\",\"traceEvents\":[\n")?;
        let process = format!(
            "{} (PID {}, {})",
            header.binary, header.pid, header.go_version
        );
        p.event(
            json!({"ph": "M", "name": "process_name", "pid": p.pid, "tid": 0,
            "args": {"name": process}}),
        )?;
        for (tid, name) in [
            (GC_TRACK, "GC cycles"),
            (ALLOCS_TRACK, "allocations"),
            (GOROUTINES_TRACK, "goroutine creations"),
        ] {
            if header.allocs.is_some() {
                p.thread_name(tid, name)?;
            }
        }
        Ok(p)
    }

    fn event(&mut self, event: Json) -> std::io::Result<()> {
        if !self.first {
            self.out.write_all(b",\n")?;
        }
        self.first = false;
        serde_json::to_writer(&mut self.out, &event)?;
        Ok(())
    }

    fn thread_name(&mut self, tid: u64, name: &str) -> std::io::Result<()> {
        self.event(
            json!({"ph": "M", "name": "thread_name", "pid": self.pid, "tid": tid,
            "args": {"name": name}}),
        )?;
        // Goroutines sort by id, below the runtime tracks.
        self.event(
            json!({"ph": "M", "name": "thread_sort_index", "pid": self.pid, "tid": tid,
            "args": {"sort_index": tid}}),
        )
    }

    /// Microseconds since the session started, the format's time unit.
    fn ts(&self, wall_ns: u64) -> f64 {
        wall_ns.saturating_sub(self.started_ns) as f64 / 1e3
    }

    fn goroutine(&mut self, goid: u64) -> std::io::Result<()> {
        if self.named.insert(goid) {
            self.thread_name(goid, &format!("goroutine {goid}"))?;
        }
        Ok(())
    }
}

impl Perfetto {
    /// One GC cycle: a span from sweep termination to its end, and inside it a span per phase
    /// (the two stop-the-world phases and concurrent marking).
    fn gc_cycle(&mut self, c: &GcCycle) -> std::io::Result<()> {
        let pid = self.pid;
        let end = self.ts(c.end_ns);
        let name = c
            .number
            .map_or_else(|| "GC".to_string(), |n| format!("GC {n}"));
        let args = json!({"pause_ns": c.pause_ns, "heap_start_bytes": c.heap_start_bytes,
            "heap_marked_bytes": c.heap_marked_bytes, "heap_goal_bytes": c.heap_goal_bytes});
        // A start after the end is a record the runtime overwrote for the next cycle before
        // the probe read it: the end alone is trustworthy.
        let Some(start) = c.start_ns.filter(|&s| s <= c.end_ns) else {
            return self.event(json!({"ph": "i", "s": "t", "name": name, "pid": pid,
                "tid": GC_TRACK, "ts": end, "args": args}));
        };
        let start = self.ts(start);
        self.event(
            json!({"ph": "X", "name": name, "pid": pid, "tid": GC_TRACK, "ts": start,
            "dur": end - start, "args": args}),
        )?;
        let phases = [
            ("sweep termination (stop the world)", c.start_ns, c.mark_ns),
            ("mark", c.mark_ns, c.mark_termination_ns),
            (
                "mark termination (stop the world)",
                c.mark_termination_ns,
                Some(c.end_ns),
            ),
        ];
        for (phase, from, to) in phases {
            if let (Some(from), Some(to)) = (from, to)
                && from <= to
            {
                let (from, to) = (self.ts(from), self.ts(to));
                self.event(
                    json!({"ph": "X", "name": phase, "pid": pid, "tid": GC_TRACK,
                    "ts": from, "dur": (to - from).max(0.0)}),
                )?;
            }
        }
        Ok(())
    }
}

fn args_json(params: &[ParamInfo], values: &[crate::model::decode::Value]) -> Json {
    Json::Object(
        params
            .iter()
            .zip(values)
            .map(|(p, v)| (p.name.clone(), Json::String(value_text(v))))
            .collect(),
    )
}

impl Export for Perfetto {
    fn call(&mut self, record: &CallRecord, symbols: &Symbols) -> std::io::Result<()> {
        let function = record.function();
        let Some(info) = self.functions.get(function).cloned() else {
            return Ok(());
        };
        let name = info.name.clone();
        match record {
            CallRecord::Entry {
                wall_ns,
                goid,
                args,
                words,
                caller_pc,
                ..
            } => {
                self.goroutine(*goid)?;
                let mut args = args_json(&info.params, args);
                if !words.is_empty() {
                    args["words"] = json!(crate::tracee::gobin::arginfo::text(words));
                }
                if let Some(caller) = symbols.frame(*caller_pc) {
                    args["caller"] = json!(caller);
                }
                if info.return_probes == 0 {
                    let ts = self.ts(*wall_ns);
                    return self.event(json!({"ph": "i", "s": "t", "name": name, "pid": self.pid,
                        "tid": goid, "ts": ts, "args": args}));
                }
                self.open.entry(*goid).or_default().push((function, args));
                Ok(())
            }
            CallRecord::Return {
                wall_ns,
                goid,
                results,
                duration_ns,
                ..
            } => {
                self.goroutine(*goid)?;
                let open = self.open.entry(*goid).or_default();
                let mut args = match open.iter().rposition(|(f, _)| *f == function) {
                    Some(at) => {
                        let args = open[at].1.clone();
                        open.truncate(at);
                        args
                    }
                    None => json!({}),
                };
                args["results"] = args_json(&info.results, results);
                let ts = self.ts(*wall_ns);
                match duration_ns {
                    Some(d) => {
                        let begin = self.ts(wall_ns.saturating_sub(*d));
                        self.event(
                            json!({"ph": "X", "name": name, "pid": self.pid, "tid": goid,
                            "ts": begin, "dur": ts - begin, "args": args}),
                        )
                    }
                    // Running when escapade attached: only its end is known.
                    None => self.event(
                        json!({"ph": "i", "s": "t", "name": format!("{name} returns"),
                        "pid": self.pid, "tid": goid, "ts": ts, "args": args}),
                    ),
                }
            }
        }
    }

    fn allocs(&mut self, elapsed_ns: u64, report: &AllocReport) -> std::io::Result<()> {
        let ts = elapsed_ns as f64 / 1e3;
        let now = (
            report.objects,
            report.bytes,
            report.goroutines_created,
            report.gc_cycles,
        );
        let (objects, bytes, goroutines, gcs) = (
            now.0.saturating_sub(self.previous.0),
            now.1.saturating_sub(self.previous.1),
            now.2.saturating_sub(self.previous.2),
            now.3.saturating_sub(self.previous.3),
        );
        self.previous = now;
        let pid = self.pid;
        if objects > 0 {
            self.event(
                json!({"ph": "i", "s": "t", "name": "allocations", "pid": pid,
                "tid": ALLOCS_TRACK, "ts": ts,
                "args": {"objects": objects, "bytes": bytes, "since": "previous view"}}),
            )?;
        }
        self.event(
            json!({"ph": "C", "name": "allocated bytes", "pid": pid, "ts": ts,
            "args": {"bytes": now.1}}),
        )?;
        if goroutines > 0 {
            self.event(
                json!({"ph": "i", "s": "t", "name": "goroutines created", "pid": pid,
                "tid": GOROUTINES_TRACK, "ts": ts, "args": {"count": goroutines}}),
            )?;
        }
        // Cycles the runtime's own record times, as spans with their phases; any the view no
        // longer lists (it keeps the most recent) as instants at the view.
        let mut timed = 0;
        for cycle in &report.gc {
            if cycle.end_ns <= self.last_gc_end_ns {
                continue;
            }
            self.last_gc_end_ns = cycle.end_ns;
            self.gc_cycle(cycle)?;
            timed += 1;
        }
        for _ in timed..gcs {
            self.event(
                json!({"ph": "i", "s": "t", "name": "GC cycle (not timed)", "pid": pid,
                "tid": GC_TRACK, "ts": ts}),
            )?;
        }
        Ok(())
    }

    fn finish(mut self: Box<Self>, _recording: &Recorded) -> anyhow::Result<()> {
        self.out
            .write_all(b"\n]}\n")
            .and_then(|()| self.out.flush())
            .with_context(|| format!("writing {}", self.path.display()))
    }
}
