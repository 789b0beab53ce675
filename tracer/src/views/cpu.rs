//! What a recording's CPU samples hold, in a line: the profile itself is for `export`.

use std::io::Write;

use serde_json::json;

use super::Output;
use crate::cpu::CpuProfile;

pub fn write_cpu(profile: &CpuProfile, out: &mut Output<impl Write>) -> std::io::Result<()> {
    let (samples, without_stack, stacks) = (
        profile.samples(),
        profile.without_stack,
        profile.stacks.len(),
    );
    out.row(
        |out| {
            writeln!(
                out,
                "cpu: {samples} samples at {} Hz ({without_stack} without a stack) in {stacks} \
                 stacks; export them with --pprof or --flamegraph --weight cpu",
                profile.hz
            )
        },
        || {
            Ok(json!({
                "type": "cpu_summary",
                "hz": profile.hz,
                "samples": samples,
                "without_stack": without_stack,
                "stacks": stacks,
            }))
        },
    )?;
    out.flush()
}
