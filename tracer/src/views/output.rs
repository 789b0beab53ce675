//! Where a view's rows go, and in which form: the one place that tells text from JSON lines.

use std::io::{self, Write};

use serde::Serialize;

/// The three ways a view is written. A view hands each row over in both its forms, each built
/// only when wanted, so that no view asks itself whether it writes JSON.
pub enum Output<W: Write> {
    /// For a person: sentences and aligned tables.
    Text(W),
    /// One JSON object a line, for programs (`--json`).
    Json(W),
    /// Nowhere: the view only counts what it is shown (the agent's recordings).
    Discard,
}

impl<W: Write> Output<W> {
    /// JSON lines with `json` (the commands' `--json`), text without.
    pub fn new(json: bool, out: W) -> Output<W> {
        if json {
            Output::Json(out)
        } else {
            Output::Text(out)
        }
    }

    /// A row in either form: `text` writes it for a person, `json` builds its JSON line.
    pub fn row<J: Serialize>(
        &mut self,
        text: impl FnOnce(&mut W) -> io::Result<()>,
        json: impl FnOnce() -> io::Result<J>,
    ) -> io::Result<()> {
        match self {
            Output::Text(out) => text(out),
            Output::Json(out) => writeln!(out, "{}", serde_json::to_string(&json()?)?),
            Output::Discard => Ok(()),
        }
    }

    /// A row only a person reads: a note that JSON's fields already say.
    pub fn text(&mut self, text: impl FnOnce(&mut W) -> io::Result<()>) -> io::Result<()> {
        match self {
            Output::Text(out) => text(out),
            Output::Json(_) | Output::Discard => Ok(()),
        }
    }

    /// A row only programs read: text shows what it holds in another row (a table's line).
    pub fn json<J: Serialize>(&mut self, json: impl FnOnce() -> io::Result<J>) -> io::Result<()> {
        self.row(|_| Ok(()), json)
    }

    /// Lets the rows written so far reach their reader.
    pub fn flush(&mut self) -> io::Result<()> {
        match self {
            Output::Text(out) | Output::Json(out) => out.flush(),
            Output::Discard => Ok(()),
        }
    }
}
