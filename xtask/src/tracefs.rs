//! The kernel's own uprobes, through tracefs: the anchor the benchmark compares escapade's
//! probes with, since they run no BPF program at all.

use std::path::Path;

use anyhow::{Context, Result, bail};
use iced_x86::{Code, Decoder, DecoderOptions};
use object::{Object, ObjectSection, ObjectSymbol};

const EVENTS: &str = "/sys/kernel/tracing/uprobe_events";
const GROUP: &str = "escapade_bench";

/// Uprobes on a function's first instruction and on each of its `RET`s, enabled.
pub struct Probes {
    names: Vec<String>,
}

impl Probes {
    pub fn add(binary: &Path, function: &str) -> Result<Probes> {
        crate::setup::tracefs()?;
        let offsets = probe_offsets(binary, function)?;
        let mut names = Vec::new();
        let mut probes = String::new();
        for (n, offset) in offsets.iter().enumerate() {
            let name = format!("p{n}");
            probes.push_str(&format!(
                "p:{GROUP}/{name} {}:{offset:#x}\n",
                binary.display()
            ));
            names.push(name);
        }
        append(&probes)?;
        let probes = Probes { names };
        std::fs::write(format!("/sys/kernel/tracing/events/{GROUP}/enable"), "1")
            .context("enabling the tracefs uprobes")?;
        Ok(probes)
    }

    pub fn describe(&self) -> String {
        format!("{} tracefs uprobes in group {GROUP}", self.names.len())
    }

    pub fn remove(self) -> Result<()> {
        std::fs::write(format!("/sys/kernel/tracing/events/{GROUP}/enable"), "0")
            .context("disabling the tracefs uprobes")?;
        let removals: String = self
            .names
            .iter()
            .map(|name| format!("-:{GROUP}/{name}\n"))
            .collect();
        append(&removals)
    }
}

fn append(lines: &str) -> Result<()> {
    use std::io::Write as _;
    let mut events = std::fs::OpenOptions::new()
        .append(true)
        .open(EVENTS)
        .with_context(|| format!("opening {EVENTS}"))?;
    // The kernel takes one definition per write.
    for line in lines.lines() {
        events
            .write_all(format!("{line}\n").as_bytes())
            .with_context(|| format!("writing `{line}` to {EVENTS}"))?;
    }
    Ok(())
}

/// File offsets of `function`'s first instruction and of its `RET`s, from the symbol table.
fn probe_offsets(binary: &Path, function: &str) -> Result<Vec<u64>> {
    let data = std::fs::read(binary).with_context(|| format!("reading {}", binary.display()))?;
    let file = object::File::parse(&*data)?;
    let symbol = file
        .symbols()
        .find(|s| s.name() == Ok(function))
        .with_context(|| format!("no symbol {function} in {}", binary.display()))?;
    let text = file.section_by_name(".text").context("no .text")?;
    let (file_start, _) = text.file_range().context(".text has no bytes")?;
    let code = text.data()?;
    let start = (symbol.address() - text.address()) as usize;
    let body = &code[start..start + symbol.size() as usize];
    let offset = |addr: u64| addr - text.address() + file_start;
    let mut offsets = vec![offset(symbol.address())];
    let decoder = Decoder::with_ip(64, body, symbol.address(), DecoderOptions::NONE);
    offsets.extend(
        decoder
            .into_iter()
            .filter(|i| matches!(i.code(), Code::Retnq | Code::Retnq_imm16))
            .map(|i| offset(i.ip())),
    );
    if offsets.len() < 2 {
        bail!("{function} has no RET");
    }
    Ok(offsets)
}
