//! Runtime variables found in the machine code that uses them, for binaries without a symbol
//! table (`-ldflags=-s`). `.gopclntab` still names every function, and each variable here is
//! used by some runtime function in a way no other variable is: a RIP-relative operand then
//! gives its link-time address. `tests/stripped.rs` checks every address against the symbol
//! table of the same program built without `-s`, for each installed Go version.

use std::collections::HashMap;

use iced_x86::{Code, Decoder, DecoderOptions, FlowControl, Instruction, OpKind, Register};

use super::pclntab::{Func, Pclntab};

/// `runtime.MemProfileRate`'s initial value (512 KiB), which the file holds.
const DEFAULT_MEM_PROFILE_RATE: u64 = 512 * 1024;

/// `runtime.startingStackSize`'s value before the GC adapts it: `fixedStack` on Linux.
const FIXED_STACK: u64 = 2048;

/// How far back from a method call to look for the instruction that set its receiver.
const RECEIVER_WINDOW: usize = 8;

/// Link-time addresses of the runtime variables escapade reads or writes; None where the code
/// did not show one.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CodeVars {
    pub mem_profile_rate: Option<u64>,
    pub disable_memory_profiling: Option<u64>,
    pub work: Option<u64>,
    pub memstats: Option<u64>,
    pub gc_controller: Option<u64>,
    pub starting_stack_size: Option<u64>,
}

impl CodeVars {
    /// Reads the code of the runtime functions in `funcs` (`code` gives a function's bytes,
    /// `word_at` the file's word at a link-time address, `function_at` the innermost function,
    /// inlined or not, holding a code address).
    pub fn find<'a>(
        funcs: &Pclntab,
        code: impl Fn(&Func) -> Option<&'a [u8]>,
        word_at: impl Fn(u64) -> Option<u64>,
        function_at: impl Fn(u64) -> Option<String>,
    ) -> CodeVars {
        let named = |name: &str| funcs.func_named(name);
        let decode = |f: &Func| -> Vec<Instruction> {
            code(f).map_or_else(Vec::new, |bytes| {
                Decoder::with_ip(64, bytes, f.entry, DecoderOptions::NONE)
                    .into_iter()
                    .collect()
            })
        };
        // schedinit: `if disableMemoryProfiling { MemProfileRate = 0 }`.
        let profiling = named("runtime.schedinit").and_then(|f| disable_then_zero(&decode(&f)));
        // A wrong match would have escapade write --mem-profile-rate into another variable:
        // the rate must hold its initial value in the file.
        let profiling =
            profiling.filter(|&(_, rate)| word_at(rate) == Some(DEFAULT_MEM_PROFILE_RATE));
        // gcComputeStartingStackSize: `startingStackSize = fixedStack` when no stack was
        // scanned.
        let starting_stack_size = named("runtime.gcComputeStartingStackSize")
            .and_then(|f| store32_of(&decode(&f), FIXED_STACK));
        // The first field of the other three (`work.full`, `memstats.heapStats`), or the
        // variable itself, is the receiver of its type's methods: `work.full.push(...)` in
        // putfull, `memstats.heapStats.acquire()`, `gcController.startCycle(...)`. The last two
        // are the only variables of their types; other lock-free stacks than `work`'s exist.
        let receivers = receivers(
            funcs,
            &[
                (
                    "runtime.(*lfstack).",
                    &["runtime.putfull", "runtime.trygetfull"],
                ),
                ("runtime.(*consistentHeapStats).", &[]),
                ("runtime.(*gcControllerState).", &[]),
            ],
            |f| {
                if f.name.starts_with("runtime.") {
                    decode(f)
                } else {
                    Vec::new()
                }
            },
            function_at,
        );
        CodeVars {
            mem_profile_rate: profiling.map(|(_, rate)| rate),
            disable_memory_profiling: profiling.map(|(disable, _)| disable),
            work: most_frequent(&receivers[0]),
            memstats: most_frequent(&receivers[1]),
            gc_controller: most_frequent(&receivers[2]),
            starting_stack_size,
        }
    }

    /// The address of the runtime variable `name` (as the symbol table names it), if found.
    pub fn address(&self, name: &str) -> Option<u64> {
        match name {
            "runtime.MemProfileRate" => self.mem_profile_rate,
            "runtime.disableMemoryProfiling" => self.disable_memory_profiling,
            "runtime.work" => self.work,
            "runtime.memstats" => self.memstats,
            "runtime.gcController" => self.gc_controller,
            "runtime.startingStackSize" => self.starting_stack_size,
            _ => None,
        }
    }
}

/// `CMP byte [rip+flag], 0; Jcc; MOV qword [rip+var], 0`: (flag, var).
fn disable_then_zero(code: &[Instruction]) -> Option<(u64, u64)> {
    code.windows(3).find_map(|w| {
        let flag = (w[0].code() == Code::Cmp_rm8_imm8 && w[0].immediate8() == 0)
            .then(|| rip_operand(&w[0]))
            .flatten()?;
        if w[1].flow_control() != FlowControl::ConditionalBranch {
            return None;
        }
        let var = (w[2].code() == Code::Mov_rm64_imm32 && w[2].immediate32() == 0)
            .then(|| rip_operand(&w[2]))
            .flatten()?;
        Some((flag, var))
    })
}

/// The 4-byte variable that `code` stores the constant `value` into.
fn store32_of(code: &[Instruction], value: u64) -> Option<u64> {
    code.iter().find_map(|i| {
        let stores = i.code() == Code::Mov_rm32_imm32 && u64::from(i.immediate32()) == value;
        stores.then(|| rip_operand(i)).flatten()
    })
}

/// For each (method-name prefix, calling functions), the addresses loaded with
/// `LEA RAX, [rip+X]` as the receiver of a direct call to a method with that prefix, from code
/// of those functions (inlined or not; any function when none are named), with how often each
/// was.
fn receivers(
    funcs: &Pclntab,
    prefixes: &[(&str, &[&str])],
    decode: impl Fn(&Func) -> Vec<Instruction>,
    function_at: impl Fn(u64) -> Option<String>,
) -> Vec<HashMap<u64, usize>> {
    let mut methods: HashMap<u64, usize> = HashMap::new();
    for f in funcs.funcs() {
        if let Some(i) = prefixes.iter().position(|(p, _)| f.name.starts_with(p)) {
            methods.insert(f.entry, i);
        }
    }
    let mut found = vec![HashMap::new(); prefixes.len()];
    for f in funcs.funcs() {
        let code = decode(&f);
        for (at, call) in code.iter().enumerate() {
            if call.flow_control() != FlowControl::Call || call.op0_kind() != OpKind::NearBranch64 {
                continue;
            }
            let Some(&which) = methods.get(&call.near_branch64()) else {
                continue;
            };
            let callers = prefixes[which].1;
            if !callers.is_empty()
                && !function_at(call.ip()).is_some_and(|f| callers.contains(&f.as_str()))
            {
                continue;
            }
            if let Some(addr) = receiver(&code[at.saturating_sub(RECEIVER_WINDOW)..at]) {
                *found[which].entry(addr).or_default() += 1;
            }
        }
    }
    found
}

/// The address in RAX when the instructions `before` a call have run, if the last one to set
/// RAX was a RIP-relative `LEA`. Stops at anything that leaves straight-line code.
fn receiver(before: &[Instruction]) -> Option<u64> {
    for i in before.iter().rev() {
        if i.flow_control() != FlowControl::Next {
            return None;
        }
        if i.op0_kind() == OpKind::Register && i.op0_register().full_register() == Register::RAX {
            return (i.code() == Code::Lea_r64_m)
                .then(|| rip_operand(i))
                .flatten();
        }
    }
    None
}

/// The address of a `[rip+disp]` memory operand.
fn rip_operand(i: &Instruction) -> Option<u64> {
    i.is_ip_rel_memory_operand()
        .then(|| i.ip_rel_memory_address())
}

fn most_frequent(counts: &HashMap<u64, usize>) -> Option<u64> {
    counts
        .iter()
        .max_by_key(|&(addr, n)| (n, std::cmp::Reverse(addr)))
        .map(|(&addr, _)| addr)
}
