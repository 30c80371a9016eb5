//! Where a command's report goes: stdout (the human view, or one JSON document with
//! `--json`) and stderr (warnings and notes beside it), or two buffers, so the human
//! output of every report can be snapshot-tested without running a command. Writing
//! never panics: a closed terminal (a dropped SSH session) or a closed pipe must not
//! stop a deploy halfway; what cannot be written is lost, the outcome is still in the
//! history and the notifications.

use std::fmt;
use std::io::Write as _;

use serde::Serialize;

/// Writes one line of the report: `say!(p, "backup {} created", id)`.
macro_rules! say {
    ($p:expr $(,)?) => { $p.line(format_args!("")) };
    ($p:expr, $($t:tt)*) => { $p.line(format_args!($($t)*)) };
}

/// Writes one line to stderr beside the report (a warning, a note).
macro_rules! tell {
    ($p:expr, $($t:tt)*) => { $p.aside(format_args!($($t)*)) };
}

/// Where a job's progress lines go (steps as they run, the gate's rounds): the command
/// passes `stderr` or `silent`; the job never prints.
pub type Progress<'a> = &'a dyn Fn(&str);

/// Progress on stderr.
pub fn stderr(line: &str) {
    let _ = writeln!(std::io::stderr(), "{line}");
}

/// No progress.
pub fn silent(_: &str) {}

/// The output of one command.
pub struct Printer {
    json: bool,
    quiet: bool,
    sink: Sink,
}

enum Sink {
    Terminal,
    Buffer { out: String, err: String },
}

impl Printer {
    /// stdout and stderr, as `--json` and `--quiet` ask.
    pub fn terminal(json: bool, quiet: bool) -> Printer {
        Printer {
            json,
            quiet,
            sink: Sink::Terminal,
        }
    }

    /// Two buffers (tests): see `out` and `err`.
    pub fn buffer(json: bool, quiet: bool) -> Printer {
        Printer {
            json,
            quiet,
            sink: Sink::Buffer {
                out: String::new(),
                err: String::new(),
            },
        }
    }

    /// `--json`: one JSON document on stdout instead of the human view.
    pub fn json(&self) -> bool {
        self.json
    }

    /// `--quiet`: the least that answers (an id), no notes.
    pub fn quiet(&self) -> bool {
        self.quiet
    }

    /// One line on stdout.
    pub fn line(&mut self, args: fmt::Arguments) {
        self.write(false, args)
    }

    /// One line on stderr.
    pub fn aside(&mut self, args: fmt::Arguments) {
        self.write(true, args)
    }

    fn write(&mut self, to_stderr: bool, args: fmt::Arguments) {
        match (&mut self.sink, to_stderr) {
            (Sink::Terminal, false) => {
                let _ = writeln!(std::io::stdout(), "{args}");
            }
            (Sink::Terminal, true) => {
                let _ = writeln!(std::io::stderr(), "{args}");
            }
            (Sink::Buffer { out, .. }, false) | (Sink::Buffer { err: out, .. }, true) => {
                use fmt::Write as _;
                let _ = writeln!(out, "{args}");
            }
        }
    }

    /// `value` as one pretty JSON document on stdout.
    pub fn document<T: Serialize + ?Sized>(&mut self, value: &T) {
        let text = serde_json::to_string_pretty(value).expect("reports serialise");
        say!(self, "{text}");
    }

    /// What was written to stdout (a buffer; empty for the terminal).
    pub fn out(&self) -> &str {
        match &self.sink {
            Sink::Terminal => "",
            Sink::Buffer { out, .. } => out,
        }
    }

    /// What was written to stderr (a buffer; empty for the terminal).
    pub fn err(&self) -> &str {
        match &self.sink {
            Sink::Terminal => "",
            Sink::Buffer { err, .. } => err,
        }
    }
}
