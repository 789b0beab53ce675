//! How values, frames, sites and times read as text, in every view and in exports.

use crate::model::decode::Value;
use crate::session::Ended;
use crate::tracee::gobin::Frame;

pub(super) fn ended_text(ended: Ended) -> &'static str {
    match ended {
        Ended::Interrupted => "interrupted",
        Ended::Deadline => "duration reached",
        Ended::TargetExited => "target exited",
    }
}

/// HH:MM:SS.micros in UTC.
pub(super) fn wall_time(ns: u64) -> String {
    let secs = ns / 1_000_000_000;
    let day = secs % 86_400;
    format!(
        "{:02}:{:02}:{:02}.{:06}",
        day / 3600,
        day / 60 % 60,
        day % 60,
        ns / 1000 % 1_000_000
    )
}

pub(super) fn duration_text(ns: u64) -> String {
    match ns {
        0..1_000 => format!("{ns}ns"),
        1_000..1_000_000 => format!("{:.1}us", ns as f64 / 1e3),
        1_000_000..1_000_000_000 => format!("{:.1}ms", ns as f64 / 1e6),
        _ => format!("{:.2}s", ns as f64 / 1e9),
    }
}

pub(super) fn frame_text(f: &Frame) -> String {
    match (&f.file, f.line) {
        (Some(file), Some(line)) => {
            let short = file.rsplit('/').next().unwrap_or(file);
            format!("{} ({short}:{line})", f.function)
        }
        _ => f.function.clone(),
    }
}

pub fn value_text(v: &Value) -> String {
    match v {
        Value::Bool { value } => value.to_string(),
        Value::Int { value } => value.to_string(),
        Value::Uint { value } => value.to_string(),
        Value::Float { value } => value.to_string(),
        Value::Complex { real, imag } => format!("({real}{imag:+}i)"),
        Value::Pointer { addr: 0, .. } => "nil".into(),
        Value::Pointer { addr, region } => format!("{addr:#x} ({region})"),
        Value::String {
            len, text: Some(t), ..
        } if (t.len() as u64) < *len => {
            format!("{t:?}... (len {len})")
        }
        Value::String { text: Some(t), .. } => format!("{t:?}"),
        Value::String {
            addr, len, region, ..
        } => {
            format!("string(len {len} at {addr:#x} {region})")
        }
        Value::Slice {
            addr,
            len,
            cap,
            region,
        } => {
            format!("slice(len {len} cap {cap} at {addr:#x} {region})")
        }
        Value::Interface {
            dynamic_type: None,
            data: 0,
            ..
        } => "nil".into(),
        Value::Interface {
            dynamic_type, data, ..
        } => {
            format!("{}({data:#x})", dynamic_type.as_deref().unwrap_or("?"))
        }
        Value::Struct { fields } => {
            let inner: Vec<String> = fields
                .iter()
                .map(|(n, v)| format!("{n}: {}", value_text(v)))
                .collect();
            format!("{{{}}}", inner.join(", "))
        }
        Value::Array { elems } => {
            let inner: Vec<String> = elems.iter().map(value_text).collect();
            format!("[{}]", inner.join(", "))
        }
        Value::Unreadable { reason } => format!("<{reason}>"),
        Value::Discarded => "<discarded>".into(),
    }
}

/// A site as the views name it: function (file:line).
pub fn site_text(site: &Option<Frame>) -> String {
    site.as_ref()
        .map_or_else(|| "(runtime only)".into(), frame_text)
}
