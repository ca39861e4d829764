//! The posterior methods' flags, generated from the sampler registry
//! (`genprior_posterior::methods`): one flag per declared option, so a new method's options
//! need no edit here.

use clap::builder::PossibleValuesParser;
use clap::{Arg, ArgMatches, Args, Command, FromArgMatches};
use genprior_posterior::{all_options, MethodOptions, OptionSpec, OptionType, OptionValue};

/// Defaults shown in the help where a command's own differ from the methods' (the
/// benchmark's budget). `(option, text)`.
pub type HelpDefaults<'a> = &'a [(&'static str, String)];

/// The method flags given on the command line, as text.
#[derive(Debug, Clone, Default)]
pub struct MethodArgs {
    given: Vec<(&'static OptionSpec, String)>,
}

impl MethodArgs {
    /// The options method `method` declares, parsed (a flag of another method is ignored).
    pub fn options_for(&self, method: &str) -> anyhow::Result<MethodOptions> {
        Ok(self
            .all()?
            .declared_by(genprior_posterior::method(method)?.options))
    }

    /// Every flag given, parsed (for commands that run several methods).
    pub fn all(&self) -> anyhow::Result<MethodOptions> {
        let mut o = MethodOptions::new();
        for (spec, text) in &self.given {
            o.set(
                spec.name,
                spec.kind
                    .parse_scalar(spec.name, text)
                    .map_err(anyhow::Error::msg)?,
            );
        }
        Ok(o)
    }

    /// Adds the flags to `cmd`, with `help_defaults` shown instead of the methods' defaults.
    pub fn augment(cmd: Command, help_defaults: HelpDefaults<'_>) -> Command {
        let mut cmd = cmd;
        for spec in all_options() {
            let default = help_defaults
                .iter()
                .find(|(n, _)| *n == spec.name)
                .map(|(_, d)| d.to_string())
                .or_else(|| spec.default.text());
            let help = match default {
                Some(d) => format!("{} [default: {d}]", spec.help),
                None => spec.help.to_string(),
            };
            let mut arg = Arg::new(spec.name)
                .long(spec.name)
                .help(help)
                .allow_negative_numbers(true);
            arg = match spec.kind {
                OptionType::Choice(c) => arg
                    .value_name("CHOICE")
                    .value_parser(PossibleValuesParser::new(c.iter().copied())),
                OptionType::Integer => arg.value_name("N"),
                OptionType::Float => arg.value_name("X"),
                OptionType::ImageFile | OptionType::ArrayFile => arg.value_name("FILE"),
            };
            cmd = cmd.arg(arg);
        }
        cmd
    }
}

impl FromArgMatches for MethodArgs {
    fn from_arg_matches(m: &ArgMatches) -> Result<Self, clap::Error> {
        let mut given = Vec::new();
        for spec in all_options() {
            if let Some(v) = m.get_one::<String>(spec.name) {
                given.push((spec, v.clone()));
            }
        }
        Ok(Self { given })
    }

    fn update_from_arg_matches(&mut self, m: &ArgMatches) -> Result<(), clap::Error> {
        *self = Self::from_arg_matches(m)?;
        Ok(())
    }
}

impl Args for MethodArgs {
    fn augment_args(cmd: Command) -> Command {
        Self::augment(cmd, &[])
    }

    fn augment_args_for_update(cmd: Command) -> Command {
        Self::augment(cmd, &[])
    }
}

/// [`MethodArgs`] whose help shows the benchmark's budget defaults.
#[derive(Debug, Clone, Default)]
pub struct EvalMethodArgs(pub MethodArgs);

/// The benchmark budget (`genprior_pipeline::eval::budget`) as shown in `eval --help`.
fn eval_help_defaults() -> Vec<(&'static str, String)> {
    let text = |v: &OptionValue| match v {
        OptionValue::Choice(c) => c.clone(),
        other => other.to_json().to_string(),
    };
    genprior_pipeline::eval::budget()
        .into_iter()
        .map(|(name, full, quick)| {
            let (f, q) = (text(&full), text(&quick));
            (name, if f == q { f } else { format!("{f}; quick {q}") })
        })
        .collect()
}

impl FromArgMatches for EvalMethodArgs {
    fn from_arg_matches(m: &ArgMatches) -> Result<Self, clap::Error> {
        Ok(Self(MethodArgs::from_arg_matches(m)?))
    }

    fn update_from_arg_matches(&mut self, m: &ArgMatches) -> Result<(), clap::Error> {
        self.0.update_from_arg_matches(m)
    }
}

impl Args for EvalMethodArgs {
    fn augment_args(cmd: Command) -> Command {
        MethodArgs::augment(cmd, &eval_help_defaults())
    }

    fn augment_args_for_update(cmd: Command) -> Command {
        MethodArgs::augment(cmd, &eval_help_defaults())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Wrap {
        #[command(flatten)]
        m: MethodArgs,
    }

    #[test]
    fn flags_come_from_the_registry() {
        let w = Wrap::try_parse_from(["x", "--pcs-steps", "7", "--zeta", "0.5", "--pcs", "ula"])
            .unwrap();
        let o = w.m.options_for("dps").unwrap();
        // DPS declares zeta but not pcs-steps or pcs.
        assert!(
            matches!(o.get("zeta"), Some(genprior_posterior::OptionValue::Float(v)) if *v == 0.5)
        );
        assert!(o.get("pcs-steps").is_none());
        let o = w.m.options_for("dpnp-ddim").unwrap();
        assert!(matches!(
            o.get("pcs-steps"),
            Some(genprior_posterior::OptionValue::Integer(7))
        ));
        assert!(Wrap::try_parse_from(["x", "--pcs", "nope"]).is_err());
        // Every declared option is a flag.
        let cmd = MethodArgs::augment(Command::new("x"), &[]);
        for o in all_options() {
            assert!(
                cmd.get_arguments().any(|a| a.get_long() == Some(o.name)),
                "{}",
                o.name
            );
        }
        let w = Wrap::try_parse_from(["x", "--dps-steps", "-3"]).unwrap();
        assert!(w.m.options_for("dps").is_err());
    }
}
