//! The monitor's commands (docs/console.md) and their parser. Bad input
//! gives one line naming the problem; the monitor then shows its prompt
//! again.

use core::fmt;

/// A monitor command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command<'a> {
    /// `help`
    Help,
    /// `list`: domains with id, name, state, vCPUs, memory, CPU time.
    List,
    /// `vcpus`: every vCPU with its CPU, state and runtime.
    Vcpus,
    /// `info`: CPUs, memory, uptime, scheduler settings.
    Info,
    /// `pause N`
    Pause(u32),
    /// `unpause N`
    Unpause(u32),
    /// `destroy N`
    Destroy(u32),
    /// `reboot N`
    Reboot(u32),
    /// `sched N [weight=W] [cap=C]`: show or set a domain's scheduling.
    Sched {
        /// The domain.
        domain: u32,
        /// New weight, 1..=65535.
        weight: Option<u16>,
        /// New cap in percent of one CPU (0 = none).
        cap: Option<u16>,
    },
    /// `console N`: give the input to domain N.
    Console(u32),
    /// `loglvl LEVEL`
    Loglvl(&'a str),
    /// `stats`: VM exits per reason per domain.
    Stats,
    /// `halt`: end Basalt once no domain is left (the verdict line, then
    /// every CPU stops; with `test-exit` the emulator ends).
    Halt,
}

/// Why a line is not a command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParseError<'a> {
    /// An empty line (not an error to report: show the prompt again).
    Empty,
    /// An unknown command.
    Unknown(&'a str),
    /// A command missing its argument or with a bad one.
    Usage(&'static str),
}

impl fmt::Display for ParseError<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Empty => Ok(()),
            Self::Unknown(word) => write!(f, "unknown command `{word}`; type `help` for the list"),
            Self::Usage(usage) => write!(f, "usage: {usage}"),
        }
    }
}

/// One line per command, for `help`.
pub const HELP: &[(&str, &str)] = &[
    ("help", "this list"),
    ("list", "domains: id, name, state, vCPUs, memory, CPU time"),
    ("vcpus", "every vCPU: CPU, state, runtime"),
    ("info", "CPUs, memory, uptime, scheduler settings"),
    ("pause N / unpause N", "stop or resume domain N's vCPUs"),
    ("destroy N", "end domain N and free its resources"),
    ("reboot N", "restart domain N from its image"),
    (
        "sched N [weight=W] [cap=C]",
        "show or set domain N's weight (1-65535) and cap (% of a CPU, 0 = none)",
    ),
    (
        "console N",
        "send the input to domain N (Ctrl-A three times comes back)",
    ),
    ("loglvl LEVEL", "none, error, warning, info, debug or all"),
    ("stats", "VM exits per reason per domain"),
    (
        "halt",
        "end Basalt when no domain is left (test-exit: ends the emulator)",
    ),
];

fn domain_arg<'a>(arg: Option<&'a str>, usage: &'static str) -> Result<u32, ParseError<'a>> {
    arg.and_then(|a| a.parse().ok())
        .ok_or(ParseError::Usage(usage))
}

impl<'a> Command<'a> {
    /// Parses a line.
    pub fn parse(line: &'a str) -> Result<Self, ParseError<'a>> {
        let mut words = line.split_whitespace();
        let Some(cmd) = words.next() else {
            return Err(ParseError::Empty);
        };
        let arg = words.next();
        let command = match cmd {
            "help" | "?" => Command::Help,
            "list" => Command::List,
            "vcpus" => Command::Vcpus,
            "info" => Command::Info,
            "stats" => Command::Stats,
            "halt" => Command::Halt,
            "pause" => Command::Pause(domain_arg(arg, "pause N")?),
            "unpause" => Command::Unpause(domain_arg(arg, "unpause N")?),
            "destroy" => Command::Destroy(domain_arg(arg, "destroy N")?),
            "reboot" => Command::Reboot(domain_arg(arg, "reboot N")?),
            "console" => Command::Console(domain_arg(arg, "console N")?),
            "loglvl" => Command::Loglvl(arg.ok_or(ParseError::Usage(
                "loglvl none|error|warning|info|debug|all",
            ))?),
            "sched" => {
                const USAGE: &str = "sched N [weight=1-65535] [cap=0-6400]";
                let domain = domain_arg(arg, USAGE)?;
                let (mut weight, mut cap) = (None, None);
                for word in words.by_ref() {
                    match word.split_once('=') {
                        Some(("weight", v)) => {
                            weight = Some(
                                v.parse()
                                    .ok()
                                    .filter(|w| *w >= 1)
                                    .ok_or(ParseError::Usage(USAGE))?,
                            );
                        }
                        Some(("cap", v)) => {
                            cap = Some(
                                v.parse()
                                    .ok()
                                    .filter(|c| *c <= 6400)
                                    .ok_or(ParseError::Usage(USAGE))?,
                            );
                        }
                        _ => return Err(ParseError::Usage(USAGE)),
                    }
                }
                return Ok(Command::Sched {
                    domain,
                    weight,
                    cap,
                });
            }
            other => return Err(ParseError::Unknown(other)),
        };
        let takes_argument = !matches!(
            command,
            Command::Help
                | Command::List
                | Command::Vcpus
                | Command::Info
                | Command::Stats
                | Command::Halt
        );
        if words.next().is_some() || (!takes_argument && arg.is_some()) {
            return Err(ParseError::Usage(match command {
                Command::Pause(_) => "pause N",
                Command::Unpause(_) => "unpause N",
                Command::Destroy(_) => "destroy N",
                Command::Reboot(_) => "reboot N",
                Command::Console(_) => "console N",
                Command::Loglvl(_) => "loglvl LEVEL",
                _ => "a command without arguments",
            }));
        }
        Ok(command)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_command() {
        assert_eq!(Command::parse("help"), Ok(Command::Help));
        assert_eq!(Command::parse("  list "), Ok(Command::List));
        assert_eq!(Command::parse("destroy 3"), Ok(Command::Destroy(3)));
        assert_eq!(Command::parse("console 1"), Ok(Command::Console(1)));
        assert_eq!(Command::parse("loglvl debug"), Ok(Command::Loglvl("debug")));
        assert_eq!(
            Command::parse("sched 2 weight=512 cap=20"),
            Ok(Command::Sched {
                domain: 2,
                weight: Some(512),
                cap: Some(20)
            })
        );
        assert_eq!(
            Command::parse("sched 2"),
            Ok(Command::Sched {
                domain: 2,
                weight: None,
                cap: None
            })
        );
    }

    #[test]
    fn bad_input_gives_one_line() {
        assert_eq!(Command::parse(""), Err(ParseError::Empty));
        assert!(matches!(
            Command::parse("frob"),
            Err(ParseError::Unknown("frob"))
        ));
        assert!(
            Command::parse("destroy")
                .unwrap_err()
                .to_string()
                .contains("destroy N")
        );
        assert!(Command::parse("destroy x").is_err());
        assert!(Command::parse("list 3").is_err());
        assert_eq!(Command::parse(" halt "), Ok(Command::Halt));
        assert!(Command::parse("halt now").is_err());
        assert!(Command::parse("sched 1 weight=0").is_err());
        assert!(Command::parse("sched 1 cap=9999").is_err());
        assert!(Command::parse("sched 1 colour=red").is_err());
        assert!(
            Command::parse("frob")
                .unwrap_err()
                .to_string()
                .contains("help")
        );
    }

    #[test]
    fn help_lists_every_command() {
        for name in [
            "help", "list", "vcpus", "info", "pause", "destroy", "reboot", "sched", "console",
            "loglvl", "stats", "halt",
        ] {
            assert!(HELP.iter().any(|(c, _)| c.contains(name)), "{name}");
        }
    }
}
