//! Command-line parsing in the original tools' single-dash style.
//!
//! `-flag value` and boolean `-flag`; `--flag` is accepted as well, and so
//! is `-flag=value` / `--flag=value`. `-h`, `-help` and `-?` ask for usage.

use std::collections::HashMap;
use std::fmt;

/// One flag of a tool. `names[0]` is the canonical name (without dashes);
/// the others are aliases (e.g. `connect` for `server`).
#[derive(Clone, Copy, Debug)]
pub struct Flag {
    pub names: &'static [&'static str],
    /// Name of the value for the usage text; `None` for a boolean flag.
    pub value: Option<&'static str>,
    /// One-line description (shown in the usage).
    pub help: &'static str,
}

impl Flag {
    /// A flag that takes a value.
    pub const fn value(
        names: &'static [&'static str],
        metavar: &'static str,
        help: &'static str,
    ) -> Flag {
        Flag {
            names,
            value: Some(metavar),
            help,
        }
    }

    /// A boolean flag.
    pub const fn switch(names: &'static [&'static str], help: &'static str) -> Flag {
        Flag {
            names,
            value: None,
            help,
        }
    }
}

/// A tool's command-line description.
#[derive(Clone, Copy, Debug)]
pub struct Cli {
    /// Program name used as the prefix of error lines (`dc_server`).
    pub tool: &'static str,
    /// Synopsis after the program name, e.g. `-listen <address> [options]`.
    pub synopsis: &'static str,
    pub flags: &'static [Flag],
    /// A group of flags shared by several tools (the TLS flags), listed
    /// after `flags` in the usage.
    pub extra: &'static [Flag],
}

/// Why parsing stopped.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ArgError {
    /// `-h`, `-help` or `-?`: print the usage on stdout, exit 0.
    Help,
    /// A usage error: one line naming the flag (without the tool prefix).
    Bad(String),
}

impl fmt::Display for ArgError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ArgError::Help => f.write_str("help requested"),
            ArgError::Bad(s) => f.write_str(s),
        }
    }
}

/// The parsed command line: canonical flag name -> values ("" for
/// switches), in the order given. [`Parsed::get`] gives a repeated flag's
/// last value; [`Parsed::all`] gives every value of a repeatable one.
#[derive(Clone, Debug, Default)]
pub struct Parsed {
    map: HashMap<&'static str, Vec<String>>,
}

/// Most values one flag keeps: a repeatable flag (`-listen`,
/// `-tls-allow-name`) given more often than this is refused.
pub const MAX_REPEAT: usize = 64;

impl Cli {
    /// The usage text (several lines, ending with a newline).
    pub fn usage(&self) -> String {
        let mut s = format!("usage: {} {}\n", self.tool, self.synopsis);
        let rows: Vec<(String, &str)> = self
            .flags
            .iter()
            .chain(self.extra)
            .map(|f| {
                let mut left = f
                    .names
                    .iter()
                    .map(|n| format!("-{n}"))
                    .collect::<Vec<_>>()
                    .join(", ");
                if let Some(v) = f.value {
                    left.push_str(&format!(" <{v}>"));
                }
                (left, f.help)
            })
            .chain(std::iter::once((
                "-h, -help, -?".to_string(),
                "print this usage and exit",
            )))
            .collect();
        let w = rows.iter().map(|r| r.0.len()).max().unwrap_or(0);
        for (left, help) in rows {
            s.push_str(&format!("  {left:w$}  {help}\n"));
        }
        s
    }

    fn find(&self, name: &str) -> Option<&'static Flag> {
        self.flags
            .iter()
            .chain(self.extra)
            .find(|f| f.names.contains(&name))
    }

    /// Parse arguments (without the program name).
    pub fn parse<I, S>(&self, args: I) -> Result<Parsed, ArgError>
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let args: Vec<String> = args.into_iter().map(Into::into).collect();
        // As in the original, a help flag anywhere wins over everything else.
        if args
            .iter()
            .any(|a| matches!(a.as_str(), "-h" | "-help" | "-?" | "--h" | "--help" | "--?"))
        {
            return Err(ArgError::Help);
        }
        let mut it = args.into_iter();
        let mut out = Parsed::default();
        while let Some(arg) = it.next() {
            let body = if let Some(b) = arg.strip_prefix("--") {
                b
            } else if let Some(b) = arg.strip_prefix('-') {
                b
            } else {
                return Err(ArgError::Bad(format!("unexpected argument '{arg}'")));
            };
            if matches!(body, "h" | "help" | "?") {
                return Err(ArgError::Help);
            }
            let (name, inline) = match body.split_once('=') {
                Some((n, v)) => (n, Some(v.to_string())),
                None => (body, None),
            };
            let Some(flag) = self.find(name) else {
                return Err(ArgError::Bad(format!("unknown flag '{arg}'")));
            };
            let canon = flag.names[0];
            match flag.value {
                None => {
                    if inline.is_some() {
                        return Err(ArgError::Bad(format!("flag -{canon} takes no value")));
                    }
                    out.push(canon, String::new())?;
                }
                Some(metavar) => {
                    let v = match inline {
                        Some(v) => v,
                        None => it.next().ok_or_else(|| {
                            ArgError::Bad(format!("flag -{canon} needs a value <{metavar}>"))
                        })?,
                    };
                    out.push(canon, v)?;
                }
            }
        }
        Ok(out)
    }

    /// Parse `std::env::args()`. On `-h` prints the usage on stdout and
    /// returns `Err(0)`; on a usage error prints `<tool>: <problem>` and the
    /// usage on stderr and returns `Err(1)`. The binary then exits with that
    /// code.
    pub fn parse_env(&self) -> Result<Parsed, i32> {
        match self.parse(std::env::args().skip(1)) {
            Ok(p) => Ok(p),
            Err(ArgError::Help) => {
                print!("{}", self.usage());
                Err(0)
            }
            Err(ArgError::Bad(msg)) => Err(self.fail(&msg)),
        }
    }

    /// Report a usage problem found after parsing (a bad value, a missing
    /// required flag): prints `<tool>: <msg>` and the usage on stderr and
    /// returns the exit code (1).
    pub fn fail(&self, msg: &str) -> i32 {
        eprint!("{}: {}\n{}", self.tool, msg, self.usage());
        1
    }
}

impl Parsed {
    fn push(&mut self, canon: &'static str, v: String) -> Result<(), ArgError> {
        let vals = self.map.entry(canon).or_default();
        if vals.len() >= MAX_REPEAT {
            return Err(ArgError::Bad(format!(
                "flag -{canon} given more than {MAX_REPEAT} times"
            )));
        }
        vals.push(v);
        Ok(())
    }

    /// Every value of a repeatable flag, in the order given (empty when
    /// absent).
    pub fn all(&self, name: &str) -> &[String] {
        self.map.get(name).map_or(&[], Vec::as_slice)
    }

    /// Whether a flag (canonical name) was given.
    pub fn has(&self, name: &str) -> bool {
        self.map.contains_key(name)
    }

    /// A flag's value, if given.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.map
            .get(name)
            .and_then(|v| v.last())
            .map(String::as_str)
    }

    /// A flag's value, or an error naming it when absent.
    pub fn required(&self, name: &str) -> Result<&str, String> {
        self.get(name)
            .ok_or_else(|| format!("missing required flag -{name}"))
    }

    /// A decimal number in `min..=max`, or `default` when absent.
    pub fn num(&self, name: &str, default: u64, min: u64, max: u64) -> Result<u64, String> {
        match self.get(name) {
            None => Ok(default),
            Some(v) => parse_num(name, v, min, max),
        }
    }

    /// An octal mode (`-sockperms 660`), if given.
    pub fn octal(&self, name: &str) -> Result<Option<u32>, String> {
        self.get(name).map(|v| parse_octal(name, v)).transpose()
    }
}

/// Parse a decimal number for flag `-name`, checking `min..=max`.
pub fn parse_num(name: &str, v: &str, min: u64, max: u64) -> Result<u64, String> {
    if v.is_empty() || !v.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!("flag -{name}: '{v}' is not a number"));
    }
    match v.parse::<u64>() {
        Ok(n) if (min..=max).contains(&n) => Ok(n),
        _ => Err(format!("flag -{name}: {v} is out of range ({min}..{max})")),
    }
}

/// Parse an octal file mode for flag `-name`: 1 to 4 octal digits, the
/// syntax [`distcache_rs::sysdb::parse_octal`] accepts everywhere.
pub fn parse_octal(name: &str, v: &str) -> Result<u32, String> {
    distcache_rs::sysdb::parse_octal(v).ok_or_else(|| {
        format!("flag -{name}: '{v}' is not an octal mode (1 to 4 digits 0-7, e.g. 660)")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const CLI: Cli = Cli {
        tool: "dc_x",
        synopsis: "-listen <address> [options]",
        flags: &[
            Flag::value(&["listen"], "address", "where to listen"),
            Flag::value(&["server", "connect"], "address", "upstream"),
            Flag::value(&["sessions"], "num", "max sessions"),
            Flag::value(&["sockperms"], "octal", "mode"),
            Flag::switch(&["daemon"], "detach"),
        ],
        extra: &[Flag::value(&["tls-allow-name"], "name", "allowed peer")],
    };

    #[test]
    fn repeatable_flags_keep_every_value() {
        let p = CLI
            .parse([
                "-listen",
                "UNIX:/a",
                "-tls-allow-name",
                "a.example",
                "-listen=TLS:9",
                "--tls-allow-name",
                "b.example",
            ])
            .unwrap();
        assert_eq!(p.all("listen"), ["UNIX:/a", "TLS:9"]);
        assert_eq!(p.get("listen"), Some("TLS:9"));
        assert_eq!(p.all("tls-allow-name"), ["a.example", "b.example"]);
        assert!(p.all("server").is_empty());
        assert!(CLI.usage().contains("-tls-allow-name <name>"));
        let many: Vec<String> = (0..=MAX_REPEAT)
            .flat_map(|i| ["-listen".to_string(), format!("UNIX:/s{i}")])
            .collect();
        match CLI.parse(many) {
            Err(ArgError::Bad(m)) => assert!(m.contains("-listen"), "{m}"),
            other => panic!("accepted {} -listen flags: {other:?}", MAX_REPEAT + 1),
        }
    }

    #[test]
    fn single_and_double_dash() {
        let p = CLI
            .parse(["-listen", "UNIX:/a", "--daemon", "--connect", "IP:1:2"])
            .unwrap();
        assert_eq!(p.get("listen"), Some("UNIX:/a"));
        assert!(p.has("daemon"));
        assert_eq!(p.get("server"), Some("IP:1:2"));
        assert!(!p.has("sessions"));
        let p = CLI.parse(["--sessions=5", "-listen=x"]).unwrap();
        assert_eq!(p.num("sessions", 512, 1, 10).unwrap(), 5);
        assert_eq!(p.get("listen"), Some("x"));
    }

    #[test]
    fn help_and_errors() {
        for h in ["-h", "-help", "-?", "--help"] {
            assert!(matches!(CLI.parse([h]), Err(ArgError::Help)));
        }
        // Help wins even after an unknown flag.
        assert!(matches!(CLI.parse(["-bogus", "-?"]), Err(ArgError::Help)));
        match CLI.parse(["-bogus"]) {
            Err(ArgError::Bad(m)) => assert!(m.contains("-bogus"), "{m}"),
            _ => panic!("accepted -bogus"),
        }
        match CLI.parse(["-listen"]) {
            Err(ArgError::Bad(m)) => assert!(m.contains("-listen"), "{m}"),
            _ => panic!("accepted missing value"),
        }
        match CLI.parse(["-daemon=1"]) {
            Err(ArgError::Bad(m)) => assert!(m.contains("-daemon"), "{m}"),
            _ => panic!("accepted value on switch"),
        }
        assert!(matches!(CLI.parse(["stray"]), Err(ArgError::Bad(_))));
        let u = CLI.usage();
        assert!(u.starts_with("usage: dc_x -listen"));
        assert!(u.contains("-server, -connect <address>"));
    }

    #[test]
    fn numbers() {
        let p = CLI.parse(["-sessions", "0"]).unwrap();
        let e = p.num("sessions", 512, 1, 100).unwrap_err();
        assert!(e.contains("-sessions") && e.contains("range"), "{e}");
        let p = CLI.parse(["-sessions", "12x"]).unwrap();
        assert!(p
            .num("sessions", 512, 1, 100)
            .unwrap_err()
            .contains("not a number"));
        let p = CLI.parse(["-sessions", "99999999999999999999999"]).unwrap();
        assert!(p.num("sessions", 512, 1, 100).is_err());
        assert_eq!(
            CLI.parse::<[&str; 0], &str>([])
                .unwrap()
                .num("sessions", 512, 1, 1000),
            Ok(512)
        );
        assert_eq!(parse_octal("p", "660"), Ok(0o660));
        assert_eq!(parse_octal("p", "0770"), Ok(0o770));
        assert!(parse_octal("p", "68").is_err());
        assert!(parse_octal("p", "17777").is_err());
        let p = CLI.parse(["-sockperms", "9"]).unwrap();
        assert!(p.octal("sockperms").unwrap_err().contains("-sockperms"));
    }
}
