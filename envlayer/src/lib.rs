//! See the crate README.
#![doc = include_str!("../README.md")]

use std::fmt;
use std::str::FromStr;

#[cfg(any(test, feature = "testing"))]
pub mod testing;

/// How a variable's value sets its field of `C`: `Err` carries what is wrong
/// with the value (the variable's name is added by [`EnvError`]).
pub type Setter<C> = fn(&mut C, &str) -> Result<(), String>;

/// One environment variable of a configuration `C`: its name, a one-line
/// description for `--help`, and how its value sets the field.
pub struct Var<C> {
    /// The variable, e.g. `BBB_DATABASE_URL`.
    pub name: &'static str,
    /// One line for `--help`: what it sets, and its default.
    pub help: &'static str,
    set: Setter<C>,
    empty_allowed: bool,
    secret: bool,
}

impl<C> Var<C> {
    /// A variable whose non-empty value `set` applies.
    pub const fn new(name: &'static str, help: &'static str, set: Setter<C>) -> Self {
        Var {
            name,
            help,
            set,
            empty_allowed: false,
            secret: false,
        }
    }

    /// A variable holding a secret (a token, a password, a URL that may
    /// carry one): its value is never repeated in an [`EnvError`].
    pub const fn secret(name: &'static str, help: &'static str, set: Setter<C>) -> Self {
        Var {
            secret: true,
            ..Var::new(name, help, set)
        }
    }

    /// A variable applied even when it is set but empty (an empty value
    /// means something, such as "off").
    pub const fn empty_allowed(name: &'static str, help: &'static str, set: Setter<C>) -> Self {
        Var {
            empty_allowed: true,
            ..Var::new(name, help, set)
        }
    }

    /// Whether the variable holds a secret.
    pub const fn is_secret(&self) -> bool {
        self.secret
    }

    /// Sets the field of `config` from `value`, whatever it is (empty
    /// included).
    pub fn set(&self, config: &mut C, value: &str) -> Result<(), EnvError> {
        (self.set)(config, value).map_err(|reason| EnvError {
            name: self.name,
            value: (!self.secret).then(|| value.to_owned()),
            reason,
        })
    }
}

/// Applies to `config` every variable of `vars` that `lookup` gives (the
/// process environment: [`from_env`]), in the table's order. An empty value
/// is ignored unless the variable is [`Var::empty_allowed`]. Stops at the
/// first value that does not parse.
pub fn apply<C>(
    vars: &[Var<C>],
    config: &mut C,
    lookup: impl Fn(&str) -> Option<String>,
) -> Result<(), EnvError> {
    for var in vars {
        match lookup(var.name) {
            Some(value) if !value.is_empty() || var.empty_allowed => var.set(config, &value)?,
            _ => {}
        }
    }
    Ok(())
}

/// The process environment as a lookup for [`apply`] (a variable that is not
/// valid Unicode counts as unset).
pub fn from_env(name: &str) -> Option<String> {
    std::env::var(name).ok()
}

/// The `--help` text of `vars`: `heading`, then one line per variable, names
/// aligned.
pub fn help<C>(heading: &str, vars: &[Var<C>]) -> String {
    let width = vars.iter().map(|v| v.name.len()).max().unwrap_or(0);
    let mut text = heading.to_owned();
    for var in vars {
        text.push_str(&format!("\n  {:width$}  {}", var.name, var.help));
    }
    text
}

/// A variable whose value does not parse.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EnvError {
    /// The variable.
    pub name: &'static str,
    /// Its value (`None` for a secret).
    pub value: Option<String>,
    /// What is wrong with it.
    pub reason: String,
}

impl fmt::Display for EnvError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.value {
            Some(value) => write!(f, "{}={value:?}: {}", self.name, self.reason),
            None => write!(f, "{}: {}", self.name, self.reason),
        }
    }
}

impl std::error::Error for EnvError {}

/// A number (surrounding spaces allowed).
pub fn number<T: FromStr>(value: &str) -> Result<T, String> {
    value.trim().parse().map_err(|_| "not a number".to_owned())
}

/// A boolean: `1`, `true`, `yes`, `on` or `0`, `false`, `no`, `off`, in any
/// case.
pub fn flag(value: &str) -> Result<bool, String> {
    match value.trim().to_ascii_lowercase().as_str() {
        "1" | "true" | "yes" | "on" => Ok(true),
        "0" | "false" | "no" | "off" => Ok(false),
        _ => Err("not true or false".to_owned()),
    }
}

/// The value of `choices` named `value`.
pub fn one_of<T: Copy>(value: &str, choices: &[(&str, T)]) -> Result<T, String> {
    if let Some((_, choice)) = choices.iter().find(|(name, _)| *name == value) {
        return Ok(*choice);
    }
    let names: Vec<&str> = choices.iter().map(|(name, _)| *name).collect();
    Err(match names.split_last() {
        Some((last, [])) => format!("expected {last}"),
        Some((last, rest)) => format!("expected {} or {last}", rest.join(", ")),
        None => "no value is accepted".to_owned(),
    })
}

/// A comma-separated list, each item trimmed, empty items left out.
pub fn list(value: &str) -> Vec<String> {
    value
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect()
}

/// Sets `slot` to the value as it is: a `String`, or anything made from a
/// `&str` such as `bbb_secret::Secret<String>` or `bbb_secret::SecretUrl`.
pub fn set<T: for<'a> From<&'a str>>(slot: &mut T, value: &str) -> Result<(), String> {
    *slot = value.into();
    Ok(())
}

/// Sets an optional `slot` to the value as it is (see [`set`]).
pub fn set_some<T: for<'a> From<&'a str>>(slot: &mut Option<T>, value: &str) -> Result<(), String> {
    *slot = Some(value.into());
    Ok(())
}

/// Sets `slot` to the value read as a [`number`].
pub fn set_number<T: FromStr>(slot: &mut T, value: &str) -> Result<(), String> {
    *slot = number(value)?;
    Ok(())
}

/// Sets `slot` to the value read as a [`flag`].
pub fn set_flag(slot: &mut bool, value: &str) -> Result<(), String> {
    *slot = flag(value)?;
    Ok(())
}

/// Sets `slot` to the value of `choices` it names ([`one_of`]).
pub fn set_one_of<T: Copy>(slot: &mut T, value: &str, choices: &[(&str, T)]) -> Result<(), String> {
    *slot = one_of(value, choices)?;
    Ok(())
}

/// Sets `slot` to the value read as a [`list`].
pub fn set_list(slot: &mut Vec<String>, value: &str) -> Result<(), String> {
    *slot = list(value);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    #[derive(Debug, Default, PartialEq)]
    struct Config {
        name: String,
        count: u32,
        on: bool,
        kind: char,
        items: Vec<String>,
        listen: String,
        token: String,
    }

    const VARS: &[Var<Config>] = &[
        Var::new("T_NAME", "a name", |c, v| set(&mut c.name, v)),
        Var::new("T_COUNT", "how many", |c, v| set_number(&mut c.count, v)),
        Var::new("T_ON", "on or off", |c, v| set_flag(&mut c.on, v)),
        Var::new("T_KIND", "a, b or c", |c, v| {
            set_one_of(&mut c.kind, v, &[("a", 'a'), ("b", 'b'), ("c", 'c')])
        }),
        Var::new("T_ITEMS", "a list", |c, v| set_list(&mut c.items, v)),
        Var::empty_allowed("T_LISTEN_ADDRESS", "empty: off", |c, v| {
            set(&mut c.listen, v)
        }),
        Var::secret("T_TOKEN", "a secret", |c, v| {
            if v.starts_with('-') {
                return Err("must not start with '-'".to_owned());
            }
            set(&mut c.token, v)
        }),
    ];

    fn lookup(vars: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        move |name| map.get(name).cloned()
    }

    #[test]
    fn applies_each_variable_the_lookup_gives() {
        let mut c = Config {
            listen: "127.0.0.1:1".to_owned(),
            ..Config::default()
        };
        apply(
            VARS,
            &mut c,
            lookup(&[
                ("T_NAME", "n"),
                ("T_COUNT", " 7 "),
                ("T_ON", "Yes"),
                ("T_KIND", "b"),
                ("T_ITEMS", "x, y,,z "),
                ("T_TOKEN", "t"),
                ("UNRELATED", "1"),
            ]),
        )
        .unwrap();
        assert_eq!(
            c,
            Config {
                name: "n".to_owned(),
                count: 7,
                on: true,
                kind: 'b',
                items: vec!["x".to_owned(), "y".to_owned(), "z".to_owned()],
                listen: "127.0.0.1:1".to_owned(),
                token: "t".to_owned(),
            }
        );
    }

    #[test]
    fn empty_values_are_ignored_unless_allowed() {
        let mut c = Config {
            name: "kept".to_owned(),
            listen: "127.0.0.1:1".to_owned(),
            ..Config::default()
        };
        apply(
            VARS,
            &mut c,
            lookup(&[("T_NAME", ""), ("T_COUNT", ""), ("T_LISTEN_ADDRESS", "")]),
        )
        .unwrap();
        assert_eq!(c.name, "kept");
        assert_eq!(c.count, 0);
        assert_eq!(c.listen, "", "an empty value that means off is applied");
    }

    #[test]
    fn a_bad_value_is_an_error_naming_the_variable() {
        for (name, value, shown) in [
            ("T_COUNT", "many", "T_COUNT=\"many\": not a number"),
            ("T_COUNT", "-1", "T_COUNT=\"-1\": not a number"),
            ("T_ON", "maybe", "T_ON=\"maybe\": not true or false"),
            ("T_KIND", "d", "T_KIND=\"d\": expected a, b or c"),
        ] {
            let mut c = Config::default();
            let error = apply(VARS, &mut c, lookup(&[(name, value)])).unwrap_err();
            assert_eq!(error.name, name);
            assert_eq!(error.to_string(), shown);
        }
        let error = apply(
            VARS,
            &mut Config::default(),
            lookup(&[("T_TOKEN", "-hunter2")]),
        )
        .unwrap_err();
        assert_eq!(error.to_string(), "T_TOKEN: must not start with '-'");
        assert!(!format!("{error:?}").contains("hunter2"));
        assert!(VARS[6].is_secret() && !VARS[0].is_secret());
    }

    #[test]
    fn help_lists_every_variable_aligned() {
        let text = help("Environment:", VARS);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), VARS.len() + 1);
        assert_eq!(lines[0], "Environment:");
        assert_eq!(lines[1], "  T_NAME            a name");
        assert_eq!(lines[6], "  T_LISTEN_ADDRESS  empty: off");
        for var in VARS {
            assert!(text.contains(var.name), "{}", var.name);
        }
    }

    #[test]
    fn one_of_names_every_choice() {
        assert_eq!(one_of(" x", &[("x", 1)]).unwrap_err(), "expected x");
        assert_eq!(
            one_of("z", &[("x", 1), ("y", 2)]).unwrap_err(),
            "expected x or y"
        );
        assert_eq!(one_of::<u8>("z", &[]).unwrap_err(), "no value is accepted");
    }
}
