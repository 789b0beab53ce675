//! Running external commands, with errors that say which command failed and how.

use std::{
    borrow::Cow,
    ffi::OsStr,
    os::unix::process::ExitStatusExt,
    process::{Command, ExitStatus, Stdio},
};

use anyhow::{Context, Result, bail};

/// Runs `command` with inherited stdio; fails unless it exits successfully.
pub fn run(command: &mut Command) -> Result<()> {
    let status = status(command)?;
    if !status.success() {
        bail!("`{}` failed with {}", display(command), describe(status));
    }
    Ok(())
}

/// Runs `command` with inherited stdio and returns how it ended; fails only if it cannot start.
pub fn status(command: &mut Command) -> Result<ExitStatus> {
    command
        .status()
        .with_context(|| format!("cannot run `{}`", display(command)))
}

/// Runs `command` and returns its trimmed stdout (stderr passes through); fails unless it exits
/// successfully.
pub fn output(command: &mut Command) -> Result<String> {
    let output = command
        .stderr(Stdio::inherit())
        .output()
        .with_context(|| format!("cannot run `{}`", display(command)))?;
    if !output.status.success() {
        bail!(
            "`{}` failed with {}",
            display(command),
            describe(output.status)
        );
    }
    Ok(String::from_utf8_lossy(&output.stdout).trim().to_owned())
}

/// Runs `command` quietly as a check: its trimmed stdout if it ran and succeeded, else `None`.
pub fn probe(command: &mut Command) -> Option<String> {
    let output = command
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .ok()?;
    output
        .status
        .success()
        .then(|| String::from_utf8_lossy(&output.stdout).trim().to_owned())
}

/// "exit status 101" or "signal 9".
pub fn describe(status: ExitStatus) -> String {
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exit status {code}"),
        (None, Some(signal)) => format!("signal {signal}"),
        (None, None) => status.to_string(),
    }
}

/// The command as one would type it in a shell, including the variables it sets.
pub fn display(command: &Command) -> String {
    let envs = command
        .get_envs()
        .filter_map(|(key, value)| Some(format!("{}={}", key.display(), quote(value?))));
    let program = std::iter::once(quote(command.get_program()).into_owned());
    let args = command.get_args().map(|arg| quote(arg).into_owned());
    envs.chain(program)
        .chain(args)
        .collect::<Vec<_>>()
        .join(" ")
}

fn quote(word: &OsStr) -> Cow<'_, str> {
    let word = word.to_string_lossy();
    let plain = |c: char| c.is_ascii_alphanumeric() || "-_./=:+,@%".contains(c);
    if !word.is_empty() && word.chars().all(plain) {
        word
    } else {
        Cow::Owned(format!("'{}'", word.replace('\'', r"'\''")))
    }
}
