//! The agent's configuration: where it listens and which processes it traces, from a TOML file
//! (`--config`) or from the command line (`--exe`).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

/// Loopback only unless the file says otherwise: the endpoints can reveal what a service does.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:9465";

#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    #[serde(default, rename = "target")]
    pub targets: Vec<TargetConfig>,
}

fn default_listen() -> SocketAddr {
    DEFAULT_LISTEN.parse().expect("a valid default address")
}

#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(try_from = "TargetTable")]
pub struct TargetConfig {
    pub name: String,
    pub selector: Selector,
    /// Functions to count and time, as `trace` names them.
    pub functions: Vec<String>,
    pub allocs: AllocMode,
    pub capture_strings: u32,
    pub record: Option<RecordConfig>,
    /// The unstripped file (or debug file) a stripped target was made from, as `--symbols`.
    pub symbols: Option<PathBuf>,
    /// Samples of the target's CPU per second on each CPU, for `/debug/pprof/profile`; 0, the
    /// default, samples nothing.
    pub cpu_hz: u64,
}

/// Where a target's processes are recorded, and how much of it to keep.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RecordConfig {
    pub dir: PathBuf,
    /// Start a new file of a recording past this size.
    #[serde(default = "default_rotate", deserialize_with = "size")]
    pub rotate: u64,
    /// The directory's recordings never exceed this by more than the files being written.
    #[serde(default = "default_keep_total", deserialize_with = "size")]
    pub keep_total: u64,
    /// Files last written longer ago than this are deleted.
    #[serde(default = "default_keep_age", deserialize_with = "age")]
    pub keep_age: std::time::Duration,
}

fn default_rotate() -> u64 {
    100 << 20
}

fn default_keep_total() -> u64 {
    2 << 30
}

fn default_keep_age() -> std::time::Duration {
    std::time::Duration::from_secs(7 * 24 * 3600)
}

/// `"100M"`, `"2G"`: sizes as `record --max-size` takes them.
fn size<'de, D: serde::Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    let text = String::deserialize(d)?;
    parse_size::parse_size(&text).map_err(|e| serde::de::Error::custom(format!("{text:?}: {e}")))
}

/// `"7d"`, `"12h"`: durations as `--duration` takes them.
fn age<'de, D: serde::Deserializer<'de>>(d: D) -> Result<std::time::Duration, D::Error> {
    let text = String::deserialize(d)?;
    humantime::parse_duration(&text).map_err(|e| serde::de::Error::custom(format!("{text:?}: {e}")))
}

/// A `[[target]]` table as written; serde cannot deny unknown keys of a struct that flattens
/// the selector into it, so the one-of-three check is made here.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TargetTable {
    name: String,
    pid: Option<u32>,
    exe: Option<PathBuf>,
    comm: Option<String>,
    #[serde(default)]
    functions: Vec<String>,
    #[serde(default)]
    allocs: AllocMode,
    #[serde(default)]
    capture_strings: u32,
    record: Option<RecordConfig>,
    symbols: Option<PathBuf>,
    #[serde(default)]
    cpu_hz: u64,
}

impl TryFrom<TargetTable> for TargetConfig {
    type Error = String;

    fn try_from(t: TargetTable) -> Result<Self, Self::Error> {
        let selector = match (t.pid, t.exe, t.comm) {
            (Some(pid), None, None) => Selector::Pid(pid),
            (None, Some(exe), None) => Selector::Exe(exe),
            (None, None, Some(comm)) => Selector::Comm(comm),
            _ => {
                return Err(format!(
                    "target {:?} needs exactly one of pid, exe or comm",
                    t.name
                ));
            }
        };
        Ok(TargetConfig {
            name: t.name,
            selector,
            functions: t.functions,
            allocs: t.allocs,
            capture_strings: t.capture_strings,
            record: t.record,
            symbols: t.symbols,
            cpu_hz: t.cpu_hz,
        })
    }
}

/// Which processes a target is: one PID, every process running an executable, or every
/// process of a command name.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Selector {
    Pid(u32),
    Exe(PathBuf),
    Comm(String),
}

impl std::fmt::Display for Selector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Selector::Pid(pid) => write!(f, "pid {pid}"),
            Selector::Exe(path) => write!(f, "exe {}", path.display()),
            Selector::Comm(comm) => write!(f, "comm {comm}"),
        }
    }
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AllocMode {
    /// The runtime's own heap-profile samples: near-zero cost, the production default.
    #[default]
    Sampled,
    /// Every allocation.
    Exact,
    Off,
}

impl std::str::FromStr for AllocMode {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "sampled" => Ok(AllocMode::Sampled),
            "exact" => Ok(AllocMode::Exact),
            "off" => Ok(AllocMode::Off),
            _ => Err(format!("{s:?} is not one of sampled, exact, off")),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read the config {path}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}:{line}:{column}: {message}")]
    Invalid {
        path: PathBuf,
        line: usize,
        column: usize,
        message: String,
    },
}

impl Config {
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Config::parse(&text).map_err(|(offset, message)| {
            let (line, column) = line_and_column(&text, offset);
            ConfigError::Invalid {
                path: path.to_path_buf(),
                line,
                column,
                message,
            }
        })
    }

    /// The config in `text`, or the byte offset of what is wrong and why.
    fn parse(text: &str) -> Result<Config, (usize, String)> {
        let config: Config = toml::from_str(text).map_err(|e| {
            let offset = e.span().map_or(0, |s| s.start);
            // toml's message spans several lines with a drawing of the place: keep its words.
            (offset, e.message().trim().replace('\n', " "))
        })?;
        config.check().map_err(|message| (0, message))?;
        Ok(config)
    }

    /// What the types alone do not say.
    fn check(&self) -> Result<(), String> {
        let mut names = std::collections::HashSet::new();
        // Each directory is pruned by its own target's retention, which would delete another
        // target's file still being written.
        let mut record_dirs = std::collections::HashMap::new();
        for target in &self.targets {
            if target.name.is_empty() || target.name.contains(['/', '?', '#', ' ']) {
                return Err(format!(
                    "target name {:?}: use letters, digits, '-', '_' or '.' (it is part of URLs)",
                    target.name
                ));
            }
            if !names.insert(&target.name) {
                return Err(format!("two targets are named {:?}", target.name));
            }
            if let Some(record) = &target.record
                && let Some(other) = record_dirs.insert(
                    std::path::absolute(&record.dir).unwrap_or_else(|_| record.dir.clone()),
                    &target.name,
                )
            {
                return Err(format!(
                    "targets {other:?} and {:?} record into the same dir {}: give each its own",
                    target.name,
                    record.dir.display()
                ));
            }
            if target.capture_strings > probe_common::STRING_CAPTURE_BYTES as u32 {
                return Err(format!(
                    "target {:?}: capture_strings is at most {}",
                    target.name,
                    probe_common::STRING_CAPTURE_BYTES
                ));
            }
        }
        Ok(())
    }
}

/// 1-based line and column of byte `offset` in `text`.
fn line_and_column(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, column)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_config_reads() {
        let config = Config::parse(
            r#"
            listen = "0.0.0.0:9000"
            [[target]]
            name = "api"
            exe = "/usr/local/bin/api"
            functions = ["main.(*Server).handle"]
            allocs = "exact"
            capture_strings = 16
            record = { dir = "/var/lib/escapade/api", rotate = "10M", keep_age = "2d" }
            [[target]]
            name = "worker"
            comm = "worker"
            "#,
        )
        .unwrap();
        assert_eq!(config.listen.to_string(), "0.0.0.0:9000");
        assert_eq!(config.targets.len(), 2);
        assert_eq!(
            config.targets[0].selector,
            Selector::Exe("/usr/local/bin/api".into())
        );
        assert_eq!(config.targets[0].allocs, AllocMode::Exact);
        let record = config.targets[0].record.as_ref().unwrap();
        assert_eq!(record.rotate, 10_000_000);
        assert_eq!(record.keep_total, 2 << 30);
        assert_eq!(record.keep_age.as_secs(), 2 * 24 * 3600);
        assert_eq!(config.targets[1].selector, Selector::Comm("worker".into()));
        assert_eq!(config.targets[1].allocs, AllocMode::Sampled);
    }

    #[test]
    fn listens_on_loopback_unless_told() {
        let config = Config::parse("").unwrap();
        assert_eq!(config.listen.to_string(), DEFAULT_LISTEN);
    }

    #[test]
    fn mistakes_say_where() {
        let text = "[[target]]\nname = \"api\"\npid = 1\nfunctoins = [\"main.f\"]\n";
        let (offset, message) = Config::parse(text).unwrap_err();
        assert_eq!(line_and_column(text, offset), (4, 1));
        assert!(message.contains("functoins"), "{message}");
        assert!(Config::parse("[[target]]\nname = \"a\"\n").is_err());
        assert!(Config::parse("[[target]]\nname = \"a\"\npid = 1\ncomm = \"x\"\n").is_err());
        assert!(Config::parse("[[target]]\nname = \"a\"\npid = 1\nallocs = \"all\"\n").is_err());
        let bad_size =
            "[[target]]\nname = \"a\"\npid = 1\nrecord = { dir = \"/d\", rotate = \"lots\" }\n";
        assert!(Config::parse(bad_size).unwrap_err().1.contains("lots"));
        let twice = "[[target]]\nname = \"a\"\npid = 1\n[[target]]\nname = \"a\"\npid = 2\n";
        assert!(Config::parse(twice).unwrap_err().1.contains("two targets"));
        let shared_dir = "[[target]]\nname = \"a\"\npid = 1\nrecord = { dir = \"/d\" }\n\
                          [[target]]\nname = \"b\"\npid = 2\nrecord = { dir = \"/d/\" }\n";
        let message = Config::parse(shared_dir).unwrap_err().1;
        assert!(message.contains("same dir /d"), "{message}");
    }
}
