//! `--task NAME` and the task options, generated from the operator registry
//! (`genprior_inverse::task`): one flag per registry option name (the union over the tasks,
//! common options first), so an operator with a new option needs no edit here.
//!
//! Flag help is the option's help prefixed with the tasks taking it (`sr*: downsampling
//! kernel`, without the final period, as clap's derive shows doc comments); a flag whose tasks
//! share one fixed default shows it as its clap default, one whose default differs per task
//! (`--noise-sigma`) lists the defaults in its help. Image-file options are read as PNG (mapped
//! [-1, 1] → [0, 1]), array-file options as `.npy`.
//!
//! [`TaskArgs`] serialises (report.json, eval's settings and resume cache) as
//! `{"task": NAME, <snake_case of every flag>: value}`, where value is the given value, else the
//! flag's fixed default, else null.

use std::path::PathBuf;
use std::sync::OnceLock;

use anyhow::{bail, Context, Result};
use candle_core::Device;
use clap::builder::PossibleValuesParser;
use clap::parser::ValueSource;
use clap::{Arg, ArgAction, ArgMatches, Command};
use genprior_inverse::{
    build_task, find_task, option_union, task_names, Operator, OptionDefault, OptionType,
    OptionValue, SharedOption, TaskOptions,
};
use serde::ser::SerializeMap;

use crate::common;
use genprior_pipeline::images;

/// One CLI flag generated from the registry.
#[derive(Debug)]
pub(crate) struct Flag {
    pub shared: SharedOption,
    /// The JSON key: snake_case of the flag name.
    pub key: String,
    /// clap's value name: upper-case of the key (as clap's derive names it).
    pub value_name: String,
    /// Full help text.
    pub help: String,
    /// The clap default (the fixed default every task taking the flag shares), as text.
    pub default: Option<String>,
}

/// `sr*` when `tasks` are all the registry's tasks with their common prefix (of ≥ 2
/// characters), else the names joined by ", ".
fn task_pattern(tasks: &[&str]) -> String {
    if let [one] = tasks {
        return one.to_string();
    }
    let first = tasks.first().copied().unwrap_or_default();
    let mut len = first.len();
    for t in tasks {
        len = len.min(
            first
                .chars()
                .zip(t.chars())
                .take_while(|(a, b)| a == b)
                .map(|(a, _)| a.len_utf8())
                .sum(),
        );
    }
    let prefix = &first[..len];
    let all_with_prefix: Vec<&str> = task_names()
        .into_iter()
        .filter(|n| n.starts_with(prefix))
        .collect();
    if prefix.len() >= 2 && all_with_prefix.len() == tasks.len() {
        format!("{prefix}*")
    } else {
        tasks.join(", ")
    }
}

/// "Default 0.05; 0 for one-bit." for a flag whose fixed default differs per task.
fn default_note(s: &SharedOption) -> Option<String> {
    if s.fixed_default().is_some() {
        return None;
    }
    let mut groups: Vec<(String, Vec<&str>)> = Vec::new();
    for (task, d) in &s.defaults {
        let Some(text) = d.text() else { continue };
        match groups.iter_mut().find(|g| g.0 == text) {
            Some(g) => g.1.push(task),
            None => groups.push((text, vec![task])),
        }
    }
    if groups.is_empty() {
        return None;
    }
    let main = (0..groups.len())
        .max_by_key(|&i| (groups[i].1.len(), usize::MAX - i))
        .unwrap_or(0);
    let mut parts = vec![groups[main].0.clone()];
    for (i, (text, tasks)) in groups.iter().enumerate() {
        if i != main {
            parts.push(format!("{text} for {}", tasks.join(", ")));
        }
    }
    Some(format!("Default {}.", parts.join("; ")))
}

fn make_flags() -> std::result::Result<Vec<Flag>, String> {
    let union = option_union().map_err(|e| e.to_string())?;
    Ok(union
        .into_iter()
        .map(|s| {
            let key = s.spec.name.replace('-', "_");
            let mut help = if s.common {
                s.spec.help.to_string()
            } else {
                format!("{}: {}", task_pattern(&s.tasks()), s.spec.help)
            };
            if let Some(n) = default_note(&s) {
                help.push(' ');
                help.push_str(&n);
            }
            // as clap's derive shows one-paragraph doc comments: without the final period
            let help = help.strip_suffix('.').unwrap_or(&help).to_string();
            let default = s.fixed_default().and_then(|d| d.text());
            Flag {
                value_name: key.to_uppercase(),
                key,
                help,
                default,
                shared: s,
            }
        })
        .collect())
}

/// Every flag, computed once (clap needs `'static` strings).
pub(crate) fn flags() -> std::result::Result<&'static [Flag], &'static str> {
    static FLAGS: OnceLock<std::result::Result<Vec<Flag>, String>> = OnceLock::new();
    match FLAGS.get_or_init(make_flags) {
        Ok(v) => Ok(v.as_slice()),
        Err(e) => Err(e.as_str()),
    }
}

fn task_help() -> &'static str {
    static HELP: OnceLock<String> = OnceLock::new();
    HELP.get_or_init(|| format!("Task: {}", task_names().join(", ")))
}

/// A task option's value as the CLI holds it (files as paths).
#[derive(Debug, Clone, PartialEq)]
pub enum TaskValue {
    Float(f64),
    Integer(u64),
    Choice(String),
    Path(PathBuf),
}

/// One flag's value.
#[derive(Debug, Clone)]
struct FlagValue {
    flag: &'static Flag,
    /// Given, else the flag's fixed default.
    value: Option<TaskValue>,
    /// Whether it was given (on the command line).
    given: bool,
}

/// `--task NAME` and every task option (see the module docs).
#[derive(Debug, Clone)]
pub struct TaskArgs {
    pub task: String,
    values: Vec<FlagValue>,
}

fn placeholder(kind: OptionType) -> String {
    match kind {
        OptionType::Float => "X".into(),
        OptionType::Integer => "N".into(),
        OptionType::Choice(v) => v.join("|"),
        OptionType::ImageFile => "FILE.png".into(),
        OptionType::ArrayFile => "FILE.npy".into(),
    }
}

impl TaskArgs {
    fn find(&self, flag: &str) -> Option<&FlagValue> {
        self.values.iter().find(|v| v.flag.shared.spec.name == flag)
    }

    /// A float flag's value if it was given.
    pub fn given_float(&self, flag: &str) -> Option<f64> {
        match self.find(flag) {
            Some(FlagValue {
                value: Some(TaskValue::Float(v)),
                given: true,
                ..
            }) => Some(*v),
            _ => None,
        }
    }

    /// σ of the measurement noise: `--noise-sigma`, else the task's default (0.05; 0 for
    /// one-bit).
    pub fn noise_sigma(&self) -> f64 {
        self.given_float("noise-sigma").unwrap_or_else(|| {
            find_task(&self.task)
                .map(|e| e.default_noise_sigma)
                .unwrap_or(genprior_inverse::task::DEFAULT_NOISE_SIGMA)
        })
    }

    /// These arguments with `overrides` (flag name → text value, e.g. a batch manifest's
    /// per-item options) given in place of the command line's; file options are paths
    /// relative to `base`.
    pub(crate) fn with_overrides(
        &self,
        overrides: &std::collections::BTreeMap<String, String>,
        base: &std::path::Path,
    ) -> Result<TaskArgs> {
        let mut out = self.clone();
        for (name, text) in overrides {
            let Some(v) = out
                .values
                .iter_mut()
                .find(|v| v.flag.shared.spec.name == name)
            else {
                bail!("unknown task option `{name}` (options are flag names, such as noise-sigma)");
            };
            let kind = v.flag.shared.spec.kind;
            v.value = Some(if kind.is_file() {
                TaskValue::Path(base.join(text))
            } else {
                match kind.parse_scalar(name, text).map_err(anyhow::Error::msg)? {
                    OptionValue::Float(x) => TaskValue::Float(x),
                    OptionValue::Integer(x) => TaskValue::Integer(x),
                    OptionValue::Choice(x) => TaskValue::Choice(x),
                    OptionValue::Tensor(_) => bail!("--{name}: unexpected file value"),
                }
            });
            v.given = true;
        }
        Ok(out)
    }

    /// The operator for images of shape `[C, H, W]`: checks the task name, that every given
    /// flag applies to the task and the required ones are given, loads the files, and builds.
    pub(crate) fn build(&self, shape: [usize; 3]) -> Result<Box<dyn Operator>> {
        let entry = find_task(&self.task)?;
        let specs = entry.options();
        for v in self.values.iter().filter(|v| v.given) {
            let name = v.flag.shared.spec.name;
            if !specs.iter().any(|s| s.name == name) {
                let names: Vec<String> = specs.iter().map(|s| format!("--{}", s.name)).collect();
                bail!(
                    "--{name} does not apply to task `{}` (its options: {})",
                    self.task,
                    names.join(", ")
                );
            }
        }
        let mut opts = TaskOptions::new(&self.task)?;
        for s in &specs {
            let given = self.find(s.name).filter(|v| v.given);
            let Some(value) = given.and_then(|v| v.value.as_ref()) else {
                if s.default == OptionDefault::Required {
                    bail!(
                        "task {} needs --{} {}",
                        self.task,
                        s.name,
                        placeholder(s.kind)
                    );
                }
                continue;
            };
            let v: OptionValue = match (value, s.kind) {
                (TaskValue::Float(x), _) => (*x).into(),
                (TaskValue::Integer(x), _) => (*x).into(),
                (TaskValue::Choice(x), _) => x.as_str().into(),
                (TaskValue::Path(p), OptionType::ImageFile) => {
                    // PNG in [-1, 1] → [0, 1].
                    let m = images::load_image(p, None, &Device::Cpu)
                        .with_context(|| format!("--{} {}", s.name, p.display()))?;
                    ((m + 1.0)? * 0.5)?.into()
                }
                (TaskValue::Path(p), _) => {
                    common::read_npy(p, &format!("--{}", s.name), &Device::Cpu)?.into()
                }
            };
            opts.set(s.name, v)?;
        }
        Ok(build_task(&opts, shape)?)
    }
}

impl clap::FromArgMatches for TaskArgs {
    fn from_arg_matches(m: &ArgMatches) -> std::result::Result<Self, clap::Error> {
        let internal = |msg: String| clap::Error::raw(clap::error::ErrorKind::InvalidValue, msg);
        let flags = flags().map_err(|e| internal(format!("internal error: {e}\n")))?;
        let task = m
            .try_get_one::<String>("task")
            .map_err(|e| internal(format!("--task: {e}\n")))?
            .cloned()
            .ok_or_else(|| {
                clap::Error::raw(
                    clap::error::ErrorKind::MissingRequiredArgument,
                    "--task is required\n",
                )
            })?;
        let mut values = Vec::with_capacity(flags.len());
        for f in flags {
            let id = f.shared.spec.name;
            let bad = |e: clap::parser::MatchesError| internal(format!("--{id}: {e}\n"));
            let value = match f.shared.spec.kind {
                OptionType::Float => m
                    .try_get_one::<f64>(id)
                    .map_err(bad)?
                    .map(|v| TaskValue::Float(*v)),
                OptionType::Integer => m
                    .try_get_one::<u64>(id)
                    .map_err(bad)?
                    .map(|v| TaskValue::Integer(*v)),
                OptionType::Choice(_) => m
                    .try_get_one::<String>(id)
                    .map_err(bad)?
                    .map(|v| TaskValue::Choice(v.clone())),
                OptionType::ImageFile | OptionType::ArrayFile => m
                    .try_get_one::<PathBuf>(id)
                    .map_err(bad)?
                    .map(|v| TaskValue::Path(v.clone())),
            };
            let given = matches!(
                m.value_source(id),
                Some(ValueSource::CommandLine | ValueSource::EnvVariable)
            );
            values.push(FlagValue {
                flag: f,
                value,
                given,
            });
        }
        Ok(Self { task, values })
    }

    fn update_from_arg_matches(&mut self, m: &ArgMatches) -> std::result::Result<(), clap::Error> {
        *self = Self::from_arg_matches(m)?;
        Ok(())
    }
}

impl clap::Args for TaskArgs {
    fn augment_args(cmd: Command) -> Command {
        let mut cmd = cmd.arg(
            Arg::new("task")
                .long("task")
                .value_name("TASK")
                .required(true)
                .action(ArgAction::Set)
                .help(task_help()),
        );
        // A registry inconsistency is reported by `from_arg_matches`.
        for f in flags().unwrap_or(&[]) {
            let spec = &f.shared.spec;
            let mut a = Arg::new(spec.name)
                .long(spec.name)
                .value_name(f.value_name.as_str())
                .action(ArgAction::Set)
                .help(f.help.as_str());
            a = match spec.kind {
                OptionType::Float => a
                    .value_parser(clap::value_parser!(f64))
                    .allow_negative_numbers(true),
                OptionType::Integer => a.value_parser(clap::value_parser!(u64)),
                OptionType::Choice(v) => {
                    a.value_parser(PossibleValuesParser::new(v.iter().copied()))
                }
                OptionType::ImageFile | OptionType::ArrayFile => {
                    a.value_parser(clap::value_parser!(PathBuf))
                }
            };
            if let Some(d) = &f.default {
                a = a.default_value(d.as_str());
            }
            cmd = cmd.arg(a);
        }
        cmd
    }

    fn augment_args_for_update(cmd: Command) -> Command {
        Self::augment_args(cmd)
    }
}

impl serde::Serialize for TaskArgs {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(Some(self.values.len() + 1))?;
        map.serialize_entry("task", &self.task)?;
        for v in &self.values {
            let key = v.flag.key.as_str();
            match &v.value {
                None => map.serialize_entry(key, &Option::<()>::None)?,
                Some(TaskValue::Float(x)) => map.serialize_entry(key, x)?,
                Some(TaskValue::Integer(x)) => map.serialize_entry(key, x)?,
                Some(TaskValue::Choice(x)) => map.serialize_entry(key, x)?,
                Some(TaskValue::Path(p)) => map.serialize_entry(key, p)?,
            }
        }
        map.end()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::{Args, FromArgMatches};

    fn parse(argv: &[&str]) -> std::result::Result<TaskArgs, clap::Error> {
        let cmd = TaskArgs::augment_args(Command::new("t"));
        let m = cmd.try_get_matches_from(argv)?;
        TaskArgs::from_arg_matches(&m)
    }

    /// `--task task` plus the `given` (flag, value) pairs, parsed as the command line is.
    fn with(task: &str, given: &[(&str, &str)]) -> TaskArgs {
        let mut argv = vec!["t".to_string(), "--task".into(), task.into()];
        for (f, v) in given {
            argv.push(format!("--{f}"));
            argv.push(v.to_string());
        }
        let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
        parse(&argv).unwrap()
    }

    /// The JSON `TaskArgs` had before the registry generated it: every existing key keeps its
    /// value (eval's resume cache compares these settings).
    #[test]
    fn serialises_as_before_for_every_task() {
        for task in task_names() {
            let t = with(task, &[]);
            let v = serde_json::to_value(&t).unwrap();
            let expected = serde_json::json!({
                "task": task, "noise_sigma": null, "likelihood_sigma": null, "operator_seed": 0,
                "kernel": "bicubic", "box_size": null, "keep_fraction": 0.3, "mask": null,
                "kernel_size": null, "kernel_std": 3.0, "motion_intensity": 0.5,
                "kernel_file": null, "oversample": 4.0, "tau": 0.4, "cs_ratio": 0.25,
            });
            for (k, e) in expected.as_object().unwrap() {
                assert_eq!(&v[k], e, "{task}: key {k} in {v}");
            }
            // exactly one key per flag, plus the task
            assert_eq!(v.as_object().unwrap().len(), flags().unwrap().len() + 1);
            // parsing `--task NAME` gives the same JSON
            let p = parse(&["t", "--task", task]).unwrap();
            assert_eq!(serde_json::to_value(&p).unwrap(), v);
        }
        let t = with("inpaint-mask", &[("mask", "m.png")]);
        let v = serde_json::to_value(&t).unwrap();
        assert_eq!(v["mask"], "m.png");
        let p = parse(&["t", "--task", "inpaint-mask", "--mask", "m.png"]).unwrap();
        assert_eq!(serde_json::to_value(&p).unwrap(), v);
        let p = parse(&["t", "--task", "denoise", "--noise-sigma", "-0.1"]).unwrap();
        assert_eq!(p.given_float("noise-sigma"), Some(-0.1));
        assert_eq!(serde_json::to_value(&p).unwrap()["noise_sigma"], -0.1);
    }

    #[test]
    fn flags_follow_the_registry() {
        let flags = flags().unwrap();
        let union = option_union().unwrap();
        assert_eq!(flags.len(), union.len());
        let cmd = TaskArgs::augment_args(Command::new("t"));
        for (f, u) in flags.iter().zip(&union) {
            let arg = cmd
                .get_arguments()
                .find(|a| a.get_long() == Some(u.spec.name))
                .unwrap_or_else(|| panic!("no --{}", u.spec.name));
            assert!(
                f.help.contains(u.spec.help.trim_end_matches('.')),
                "{}",
                f.help
            );
            let d: Vec<String> = arg
                .get_default_values()
                .iter()
                .map(|v| v.to_string_lossy().into_owned())
                .collect();
            assert_eq!(
                d,
                u.fixed_default()
                    .and_then(|d| d.text())
                    .into_iter()
                    .collect::<Vec<_>>()
            );
            for task in u.tasks() {
                let e = find_task(task).unwrap();
                assert!(e.option(u.spec.name).is_some());
            }
        }
        assert_eq!(
            flags.iter().find(|f| f.key == "kernel").unwrap().help,
            "sr*: downsampling kernel"
        );
        assert!(flags
            .iter()
            .find(|f| f.key == "kernel_size")
            .unwrap()
            .help
            .starts_with("deblur-*: "));
        let ns = &flags.iter().find(|f| f.key == "noise_sigma").unwrap().help;
        assert!(ns.ends_with("Default 0.05; 0 for one-bit"), "{ns}");
    }

    #[test]
    fn options_are_checked_against_the_task() {
        let t = with("sr4", &[("tau", "0.3")]);
        let e = t.build([3, 16, 16]).err().unwrap().to_string();
        assert!(e.contains("--tau") && e.contains("sr4"), "{e}");
        let t = with("inpaint-mask", &[]);
        let e = t.build([3, 16, 16]).err().unwrap().to_string();
        assert!(e.contains("needs --mask FILE.png"), "{e}");
        let e = with("sr4", &[]);
        let e = TaskArgs {
            task: "sr3".into(),
            ..e
        }
        .build([3, 16, 16])
        .err()
        .unwrap();
        assert!(e.to_string().contains("unknown task `sr3`"), "{e}");
        assert!(parse(&["t", "--task", "sr4", "--nope", "1"]).is_err());
        assert!(parse(&["t", "--task", "sr4", "--kernel", "lanczos"]).is_err());
        let op = with("deblur-gauss", &[("kernel-size", "5")])
            .build([3, 16, 16])
            .unwrap();
        assert_eq!(op.name(), "deblur-gauss");
        assert_eq!(with("one-bit", &[]).noise_sigma(), 0.0);
        assert_eq!(with("sr4", &[]).noise_sigma(), 0.05);
    }
}
