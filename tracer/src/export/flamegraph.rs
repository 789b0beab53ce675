//! `export --flamegraph`: an SVG flame graph drawn by `inferno`, of calls (each traced function
//! under its caller's inlined frames), of allocated bytes (each allocation stack) or of CPU
//! samples (each sampled stack).

use std::path::{Path, PathBuf};

use anyhow::Context as _;

use super::{CallSites, Export, Recorded};
use crate::model::records::{CallRecord, Symbols};
use crate::record::Header;

/// What a flame graph's widths count.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Weight {
    Calls,
    Bytes,
    Cpu,
}

pub struct FlameGraph {
    path: PathBuf,
    weight: Weight,
    calls: CallSites,
}

impl FlameGraph {
    /// Defaults to bytes when the recording counted allocations, else to calls when it traced
    /// functions, else to CPU samples.
    pub fn new(path: &Path, header: &Header, weight: Option<Weight>) -> anyhow::Result<Self> {
        let weight = weight.unwrap_or(if header.allocs.is_some() {
            Weight::Bytes
        } else if header.functions.is_empty() && header.cpu_hz.is_some() {
            Weight::Cpu
        } else {
            Weight::Calls
        });
        match weight {
            Weight::Bytes if header.allocs.is_none() => anyhow::bail!(
                "the recording has no allocations (record with --allocs): use --weight calls"
            ),
            Weight::Calls if header.functions.is_empty() => {
                anyhow::bail!("the recording traced no function: use --weight bytes or cpu")
            }
            Weight::Cpu if header.cpu_hz.is_none() => {
                anyhow::bail!("the recording has no CPU samples (record with --cpu)")
            }
            _ => {}
        }
        Ok(FlameGraph {
            path: path.to_path_buf(),
            weight,
            calls: CallSites::default(),
        })
    }
}

/// `outermost;...;innermost` from a stack of code addresses, innermost first.
fn folded(pcs: &[u64], symbols: &Symbols) -> Vec<String> {
    let mut names: Vec<String> = pcs
        .iter()
        .flat_map(|&pc| match symbols.frames(pc) {
            [] => vec![format!("{pc:#x}")],
            frames => frames.iter().map(|f| f.function.clone()).collect(),
        })
        .collect();
    names.reverse();
    names
}

impl Export for FlameGraph {
    fn call(&mut self, record: &CallRecord, _symbols: &Symbols) -> std::io::Result<()> {
        self.calls.add(record);
        Ok(())
    }

    fn finish(self: Box<Self>, recording: &Recorded) -> anyhow::Result<()> {
        let mut lines = Vec::new();
        let title = match self.weight {
            Weight::Calls => {
                for (&(function, caller), &(count, _)) in &self.calls.counts {
                    let Some(info) = recording.header.functions.get(function) else {
                        continue;
                    };
                    let mut stack = folded(&[caller], recording.symbols);
                    stack.push(info.name.clone());
                    lines.push(format!("{} {count}", stack.join(";")));
                }
                "Calls of traced functions, by caller"
            }
            Weight::Bytes => {
                for stack in recording.allocs.map(|a| &a.stacks[..]).unwrap_or_default() {
                    let names = folded(&stack.pcs, recording.symbols);
                    lines.push(format!("{} {}", names.join(";"), stack.bytes));
                }
                "Allocated bytes, by stack"
            }
            Weight::Cpu => {
                for stack in recording.cpu.map(|c| &c.stacks[..]).unwrap_or_default() {
                    let names = folded(&stack.pcs, recording.symbols);
                    lines.push(format!("{} {}", names.join(";"), stack.samples));
                }
                "CPU samples, by stack"
            }
        };
        if lines.is_empty() {
            anyhow::bail!(
                "nothing to draw in {}: the recording has no {}",
                self.path.display(),
                match self.weight {
                    Weight::Calls => "calls",
                    Weight::Bytes => "allocations",
                    Weight::Cpu => "CPU samples",
                }
            );
        }
        let mut options = inferno::flamegraph::Options::default();
        options.title = title.to_string();
        options.count_name = match self.weight {
            Weight::Calls => "calls".to_string(),
            Weight::Bytes => "bytes".to_string(),
            Weight::Cpu => "samples".to_string(),
        };
        let file = std::fs::File::create(&self.path)
            .with_context(|| format!("creating {} (--flamegraph)", self.path.display()))?;
        let out = std::io::BufWriter::new(file);
        inferno::flamegraph::from_lines(&mut options, lines.iter().map(String::as_str), out)
            .with_context(|| format!("drawing the flame graph {}", self.path.display()))
    }
}
