//! `uprobe_multi` links (Linux 6.6+): all the uprobes of one program in one BPF link, attached
//! in one system call and detached with one RCU grace period. A perf-event uprobe, the only
//! kind aya 0.14 attaches, waits for a grace period of its own when closed (~0.1 s, one probe
//! after the other under the kernel's `event_mutex`), so detaching 200 probes took 20 s.
//!
//! The kernel accepts a program in such a link only if it was loaded for it
//! (`expected_attach_type`), which aya 0.14 cannot ask for. This loads the programs itself
//! from the same object, relocated against the maps aya created, so both share every map.

use std::collections::{HashMap, HashSet};
use std::ffi::CString;
use std::io;
use std::os::fd::{AsFd as _, AsRawFd as _, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt as _;
use std::path::Path;

use aya::Ebpf;
use aya::maps::Map;
use aya_obj::generated::{
    bpf_attach_type::BPF_TRACE_UPROBE_MULTI, bpf_prog_type::BPF_PROG_TYPE_KPROBE,
};

use crate::kernel::bpf::{self, LoadError};

/// Programs of the eBPF object loaded for `uprobe_multi` links.
pub struct MultiPrograms {
    fds: HashMap<&'static str, OwnedFd>,
}

/// One `uprobe_multi` link: closing it detaches all its uprobes.
pub struct MultiLink {
    _fd: OwnedFd,
}

impl MultiPrograms {
    /// Loads the programs `names` of `object`, whose maps `ebpf` already created. A
    /// [`bpf::Refused`] in the error says the verifier refused one.
    pub fn load(object: &[u8], ebpf: &Ebpf, names: &[&'static str]) -> anyhow::Result<Self> {
        // Two parses: relocating one rewrites its functions while the other lends the map
        // definitions.
        let definitions = aya_obj::Object::parse(object)?;
        let mut obj = aya_obj::Object::parse(object)?;
        let map_fds: HashMap<&str, RawFd> = ebpf
            .maps()
            .filter_map(|(name, map)| Some((name, map_fd(map)?)))
            .collect();
        let maps = definitions
            .maps
            .iter()
            .map(|(name, map)| {
                let fd = map_fds.get(name.as_str()).copied().ok_or_else(|| {
                    anyhow::anyhow!("map {name} of the eBPF object was not created")
                })?;
                Ok((name.as_str(), fd, map))
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        let text_sections: HashSet<usize> = obj.functions.keys().map(|(s, _)| *s).collect();
        obj.relocate_maps(maps.into_iter(), &text_sections)?;
        obj.relocate_calls(&text_sections)?;
        let mut fds = HashMap::new();
        for &name in names {
            let program = obj
                .programs
                .get(name)
                .ok_or_else(|| anyhow::anyhow!("program {name} missing from the eBPF object"))?;
            let function = obj
                .functions
                .get(&program.function_key())
                .ok_or_else(|| anyhow::anyhow!("program {name} has no code in the eBPF object"))?;
            let fd = bpf::load_program(
                name,
                BPF_PROG_TYPE_KPROBE,
                Some(BPF_TRACE_UPROBE_MULTI),
                &function.instructions,
                &obj.license,
            )
            .map_err(|e| match e {
                LoadError::Refused(refused) => anyhow::Error::new(refused),
                io => anyhow::Error::new(io),
            })?;
            fds.insert(name, fd);
        }
        Ok(MultiPrograms { fds })
    }

    /// Attaches program `name` at each `(file offset, cookie)` of `exe`, in process `pid` only
    /// (0: in every process that runs the file).
    pub fn attach(
        &self,
        name: &str,
        exe: &Path,
        pid: u32,
        sites: &[(u64, u64)],
    ) -> io::Result<MultiLink> {
        let prog = self
            .fds
            .get(name)
            .ok_or_else(|| io::Error::other(format!("program {name} was not loaded")))?;
        let path = CString::new(exe.as_os_str().as_bytes())?;
        let offsets: Vec<u64> = sites.iter().map(|(offset, _)| *offset).collect();
        let cookies: Vec<u64> = sites.iter().map(|(_, cookie)| *cookie).collect();
        bpf::uprobe_multi_link(prog.as_fd(), &path, pid, &offsets, &cookies)
            .map(|fd| MultiLink { _fd: fd })
    }
}

/// Closes `links` from one thread each: each close waits for a grace period, and grace
/// periods waited for at the same time end together.
pub fn close_together(links: Vec<MultiLink>) {
    if links.len() < 2 {
        return drop(links);
    }
    std::thread::scope(|scope| {
        for link in links {
            scope.spawn(move || drop(link));
        }
    });
}

/// The fd of a map aya created, for the map types the object defines.
fn map_fd(map: &Map) -> Option<RawFd> {
    let data = match map {
        Map::Array(m)
        | Map::PerCpuArray(m)
        | Map::HashMap(m)
        | Map::PerCpuHashMap(m)
        | Map::LruHashMap(m)
        | Map::RingBuf(m) => m,
        _ => return None,
    };
    Some(data.fd().as_fd().as_raw_fd())
}
