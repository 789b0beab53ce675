//! The amd64 code Go emits, as both the model of a binary and probe placement read it: a
//! linear sweep of its instructions, and the registers Go's ABI assigns.

use iced_x86::{Decoder, DecoderError, DecoderOptions, Instruction, Register};

/// Go's ABIInternal integer argument (and result) registers, in assignment order.
pub const INT_ARG_REGISTERS: [Register; 9] = {
    use Register::*;
    [RAX, RBX, RCX, RDI, RSI, R8, R9, R10, R11]
};

/// Linear sweep that steps over undecodable bytes instead of stopping.
pub struct Linear<'a> {
    decoder: Decoder<'a>,
    start: u64,
    skipped: usize,
}

impl<'a> Linear<'a> {
    pub fn new(code: &'a [u8], addr: u64) -> Self {
        Linear {
            decoder: Decoder::with_ip(64, code, addr, DecoderOptions::NONE),
            start: addr,
            skipped: 0,
        }
    }

    pub fn log_skipped(&self, what: &str) {
        if self.skipped > 0 {
            tracing::debug!(
                "{what}: skipped {} undecodable bytes in code at {:#x}",
                self.skipped,
                self.start
            );
        }
    }
}

impl Iterator for Linear<'_> {
    type Item = Instruction;

    fn next(&mut self) -> Option<Instruction> {
        while self.decoder.can_decode() {
            let (position, ip) = (self.decoder.position(), self.decoder.ip());
            let insn = self.decoder.decode();
            if !insn.is_invalid() {
                return Some(insn);
            }
            // A truncated instruction at the end is the end of the code, not garbage.
            if self.decoder.last_error() == DecoderError::NoMoreBytes {
                return None;
            }
            self.skipped += 1;
            self.decoder
                .set_position(position + 1)
                .expect("position + 1 is within the code: can_decode held");
            self.decoder.set_ip(ip + 1);
        }
        None
    }
}
