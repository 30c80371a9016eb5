//! Confirmations: the one interface through which a job asks the operator before it
//! changes production. The job words the question; the command decides who answers:
//! the terminal, or `--yes` (which answers every question, and still says the note).

use std::io::{BufRead, IsTerminal, Write};

use crate::UsageError;

/// One question.
pub struct Question {
    /// What is asked, ending with what to type.
    pub prompt: String,
    /// The answer that confirms (anything else changes nothing).
    pub answer: String,
    /// Said even when `--yes` answers (what the change leaves out, say).
    pub note: Option<String>,
    /// The usage error (exit 2) when there is no terminal to ask on.
    pub no_terminal: String,
}

/// Who answers the questions.
pub trait Confirm {
    /// Ok: confirmed. Err: not confirmed, nothing may change.
    fn confirm(&self, q: &Question) -> anyhow::Result<()>;
}

/// `--yes`: confirmed without asking.
pub struct Confirmed;

impl Confirm for Confirmed {
    fn confirm(&self, q: &Question) -> anyhow::Result<()> {
        if let Some(note) = &q.note {
            let _ = writeln!(std::io::stderr(), "stablehand: {note}");
        }
        Ok(())
    }
}

/// Asks on the terminal (stdin and stderr); without one, the usage error.
pub struct Terminal;

impl Confirm for Terminal {
    fn confirm(&self, q: &Question) -> anyhow::Result<()> {
        let answer = ask(&q.prompt, &q.no_terminal)?;
        if answer != q.answer {
            return Err(UsageError(format!(
                "the answer {answer:?} is not {:?}; nothing was changed",
                q.answer
            ))
            .into());
        }
        Ok(())
    }
}

/// `--yes` or the terminal.
pub fn by(yes: bool) -> &'static dyn Confirm {
    if yes {
        &Confirmed
    } else {
        &Terminal
    }
}

/// Asks on the terminal and returns the trimmed answer; without a terminal to ask on,
/// the usage error `no_terminal` (exit 2).
fn ask(prompt: &str, no_terminal: &str) -> anyhow::Result<String> {
    if !std::io::stdin().is_terminal() {
        return Err(UsageError(no_terminal.into()).into());
    }
    eprint!("{prompt}");
    std::io::stderr().flush().ok();
    let mut line = String::new();
    std::io::stdin().lock().read_line(&mut line)?;
    Ok(line.trim().to_string())
}
