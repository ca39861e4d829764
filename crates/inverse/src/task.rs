//! The task registry: task names and typed options → operators, the seam the CLI's
//! `--task NAME [options]` maps onto.
//!
//! Each operator file under [`crate::physics`] declares its [`TaskEntry`] values: the task
//! names it answers to, its options ([`OptionSpec`]: name = the CLI flag without `--`, help,
//! [`OptionType`], [`OptionDefault`]), its default noise σ and a build function from
//! [`TaskOptions`] and the image shape to a `Box<dyn Operator>`. This file holds the generic
//! machinery and the one list of entries, [`ENTRIES`]; the options every task takes
//! (`noise-sigma`, `likelihood-sigma`, `operator-seed`) are [`COMMON_OPTIONS`].
//!
//! ```
//! use genprior_inverse::{build_task, TaskOptions};
//! let opts = TaskOptions::new("deblur-gauss")?
//!     .with("kernel-size", 5usize)?
//!     .with("noise-sigma", 0.1)?;
//! let op = build_task(&opts, [3, 32, 32])?;
//! assert_eq!(op.name(), "deblur-gauss");
//! # Ok::<(), genprior_inverse::InverseError>(())
//! ```

use std::collections::BTreeMap;
use std::sync::Arc;

use candle_core::Tensor;

use crate::error::{InverseError, Result};
use crate::noise::{Gaussian, NoiseModel, Poisson};
use crate::operator::Operator;
use crate::physics::{
    blur, compressed_sensing, denoise, inpainting, mri, one_bit, phase_retrieval, super_resolution,
    tomography,
};

/// Every task, one line per operator file, in the order `--help` and `task_names()` list them.
pub const ENTRIES: &[&[TaskEntry]] = &[
    super_resolution::ENTRIES,
    inpainting::ENTRIES,
    blur::ENTRIES,
    phase_retrieval::ENTRIES,
    one_bit::ENTRIES,
    compressed_sensing::ENTRIES,
    tomography::ENTRIES,
    mri::ENTRIES,
    denoise::ENTRIES,
];

/// The default σ of the additive Gaussian measurement noise (images in [-1, 1]).
pub const DEFAULT_NOISE_SIGMA: f64 = 0.05;

/// The `noise` choices.
pub const NOISE_MODELS: &[&str] = &["gaussian", "poisson", "poisson-gaussian", "transmission"];

/// The default of `photons`.
pub const DEFAULT_PHOTONS: f64 = 1e4;

/// Options every task takes. `noise-sigma`'s default is the entry's
/// [`TaskEntry::default_noise_sigma`] (see [`TaskEntry::options`]).
pub const COMMON_OPTIONS: &[OptionSpec] = &[
    OptionSpec {
        name: "noise-sigma",
        help: "σ of the additive Gaussian measurement noise (images in [-1, 1]).",
        kind: OptionType::Float,
        default: OptionDefault::Derived,
    },
    OptionSpec {
        name: "likelihood-sigma",
        help: "σ the likelihood uses, if not the noise σ (the DPnP reference uses 0.15 for σ = 0.2).",
        kind: OptionType::Float,
        default: OptionDefault::Derived,
    },
    OptionSpec {
        name: "noise",
        help: "measurement noise model: additive Gaussian (σ = --noise-sigma); poisson (photon counts, --photons at white); poisson-gaussian (counts plus Gaussian read noise of σ = --noise-sigma); transmission (ct only: X-ray counts, --photons per ray, --attenuation). Not every task takes every model.",
        kind: OptionType::Choice(NOISE_MODELS),
        default: OptionDefault::Choice("gaussian"),
    },
    OptionSpec {
        name: "photons",
        help: "photon-count scale of the Poisson models: expected counts of a white pixel (poisson, poisson-gaussian) or per ray without an object (transmission).",
        kind: OptionType::Float,
        default: OptionDefault::Float(DEFAULT_PHOTONS),
    },
    OptionSpec {
        name: "operator-seed",
        help: "Seed of the operator's random parts (inpainting mask, motion kernel, phase-retrieval mask, CS matrix).",
        kind: OptionType::Integer,
        default: OptionDefault::Integer(0),
    },
];

/// The type of a task option's value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OptionType {
    /// A real number (`f64`).
    Float,
    /// A non-negative integer (`u64`).
    Integer,
    /// One of a fixed list of strings.
    Choice(&'static [&'static str]),
    /// An image file (the CLI reads a PNG); delivered as a tensor with values in [0, 1].
    ImageFile,
    /// An array file (the CLI reads a `.npy`); delivered as a tensor.
    ArrayFile,
}

impl OptionType {
    /// "a float", "an integer ≥ 0", "one of a, b", "an image", "an array".
    pub fn describe(&self) -> String {
        match self {
            Self::Float => "a float".into(),
            Self::Integer => "an integer ≥ 0".into(),
            Self::Choice(v) => format!("one of {}", v.join(", ")),
            Self::ImageFile => "an image (tensor in [0, 1])".into(),
            Self::ArrayFile => "an array (tensor)".into(),
        }
    }

    /// Whether the value comes from a file (the CLI takes a path).
    pub fn is_file(&self) -> bool {
        matches!(self, Self::ImageFile | Self::ArrayFile)
    }

    /// Parses `text` (a command-line value of the option `--flag`) as a float (finite), an
    /// integer ≥ 0 or a choice. File options are read by the caller, so they are an error here.
    pub fn parse_scalar(&self, flag: &str, text: &str) -> std::result::Result<OptionValue, String> {
        match self {
            Self::Float => text
                .trim()
                .parse::<f64>()
                .ok()
                .filter(|v| v.is_finite())
                .map(OptionValue::Float)
                .ok_or_else(|| format!("--{flag}: `{text}` is not a finite number")),
            Self::Integer => text
                .trim()
                .parse::<u64>()
                .map(OptionValue::Integer)
                .map_err(|_| format!("--{flag}: `{text}` is not an integer ≥ 0")),
            Self::Choice(v) => {
                if v.contains(&text) {
                    Ok(OptionValue::Choice(text.to_string()))
                } else {
                    Err(format!("--{flag}: `{text}` is not one of {}", v.join(", ")))
                }
            }
            Self::ImageFile | Self::ArrayFile => {
                Err(format!("--{flag} takes a file, read by the caller"))
            }
        }
    }
}

/// What an option is worth when it is not given.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum OptionDefault {
    /// A fixed float.
    Float(f64),
    /// A fixed integer.
    Integer(u64),
    /// A fixed choice.
    Choice(&'static str),
    /// No fixed default: when absent the entry derives the value (from the image shape or
    /// another option) or does without it; the help says how.
    Derived,
    /// Must be given.
    Required,
}

impl OptionDefault {
    /// Whether this is a fixed value.
    pub fn is_fixed(&self) -> bool {
        !matches!(self, Self::Derived | Self::Required)
    }

    /// The fixed value as text ("0.3", "4", "bicubic"), `None` for `Derived` / `Required`.
    pub fn text(&self) -> Option<String> {
        match self {
            Self::Float(v) => Some(v.to_string()),
            Self::Integer(v) => Some(v.to_string()),
            Self::Choice(v) => Some(v.to_string()),
            Self::Derived | Self::Required => None,
        }
    }

    fn value(&self) -> Option<OptionValue> {
        match self {
            Self::Float(v) => Some(OptionValue::Float(*v)),
            Self::Integer(v) => Some(OptionValue::Integer(*v)),
            Self::Choice(v) => Some(OptionValue::Choice(v.to_string())),
            Self::Derived | Self::Required => None,
        }
    }
}

/// One task option.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct OptionSpec {
    /// The name, which is the CLI flag without `--` (`keep-fraction`).
    pub name: &'static str,
    /// One line of help (the CLI prefixes the tasks that take it).
    pub help: &'static str,
    pub kind: OptionType,
    pub default: OptionDefault,
}

impl OptionSpec {
    /// An option (for `const` tables).
    pub const fn new(
        name: &'static str,
        help: &'static str,
        kind: OptionType,
        default: OptionDefault,
    ) -> Self {
        Self {
            name,
            help,
            kind,
            default,
        }
    }

    /// Whether `default` fits `kind` (a registry consistency check).
    pub fn is_consistent(&self) -> bool {
        match (self.kind, self.default) {
            (_, OptionDefault::Derived | OptionDefault::Required) => true,
            (OptionType::Float, OptionDefault::Float(_)) => true,
            (OptionType::Integer, OptionDefault::Integer(_)) => true,
            (OptionType::Choice(v), OptionDefault::Choice(c)) => v.contains(&c),
            _ => false,
        }
    }
}

/// A typed option value.
#[derive(Debug, Clone)]
pub enum OptionValue {
    Float(f64),
    Integer(u64),
    Choice(String),
    /// The value of an image-file or array-file option.
    Tensor(Tensor),
}

impl OptionValue {
    /// The value as JSON, for reports (a tensor as its shape).
    pub fn to_json(&self) -> serde_json::Value {
        match self {
            Self::Float(v) => serde_json::json!(v),
            Self::Integer(v) => serde_json::json!(v),
            Self::Choice(v) => serde_json::json!(v),
            Self::Tensor(t) => serde_json::json!({"tensor_shape": t.dims()}),
        }
    }

    fn describe(&self) -> String {
        match self {
            Self::Float(v) => format!("the float {v}"),
            Self::Integer(v) => format!("the integer {v}"),
            Self::Choice(v) => format!("the string `{v}`"),
            Self::Tensor(t) => format!("a tensor of shape {:?}", t.dims()),
        }
    }
}

impl From<f64> for OptionValue {
    fn from(v: f64) -> Self {
        Self::Float(v)
    }
}
impl From<u64> for OptionValue {
    fn from(v: u64) -> Self {
        Self::Integer(v)
    }
}
impl From<usize> for OptionValue {
    fn from(v: usize) -> Self {
        Self::Integer(v as u64)
    }
}
impl From<&str> for OptionValue {
    fn from(v: &str) -> Self {
        Self::Choice(v.to_string())
    }
}
impl From<String> for OptionValue {
    fn from(v: String) -> Self {
        Self::Choice(v)
    }
}
impl From<Tensor> for OptionValue {
    fn from(v: Tensor) -> Self {
        Self::Tensor(v)
    }
}

/// Builds an operator from validated options and the image shape `[C, H, W]`.
pub type BuildFn = fn(&TaskOptions, [usize; 3]) -> Result<Box<dyn Operator>>;

/// One registry entry: a family of tasks with the same options and build function.
#[derive(Debug, Clone, Copy)]
pub struct TaskEntry {
    /// The task names it answers to (`sr2`, `sr4`, `sr8`).
    pub names: &'static [&'static str],
    /// One line: A(x) and the measurement.
    pub summary: &'static str,
    /// The entry's own options (the [`COMMON_OPTIONS`] come on top).
    pub own_options: &'static [OptionSpec],
    /// The default σ of the measurement noise.
    pub default_noise_sigma: f64,
    /// Builds the operator; the name is [`TaskOptions::task`].
    pub build: BuildFn,
}

impl TaskEntry {
    /// Every option of the entry: [`COMMON_OPTIONS`] (with `noise-sigma` defaulting to
    /// [`TaskEntry::default_noise_sigma`]) then its own.
    pub fn options(&self) -> Vec<OptionSpec> {
        COMMON_OPTIONS
            .iter()
            .map(|o| {
                let mut o = *o;
                if o.name == "noise-sigma" {
                    o.default = OptionDefault::Float(self.default_noise_sigma);
                }
                o
            })
            .chain(self.own_options.iter().copied())
            .collect()
    }

    /// The option named `name`, if the entry takes it.
    pub fn option(&self, name: &str) -> Option<OptionSpec> {
        self.options().into_iter().find(|o| o.name == name)
    }
}

/// Every registry entry, in order.
pub fn task_entries() -> impl Iterator<Item = &'static TaskEntry> {
    ENTRIES.iter().flat_map(|e| e.iter())
}

/// Every task name, in registry order.
pub fn task_names() -> Vec<&'static str> {
    task_entries()
        .flat_map(|e| e.names.iter().copied())
        .collect()
}

/// The entry answering to `task`, or an error listing every task.
pub fn find_task(task: &str) -> Result<&'static TaskEntry> {
    task_entries()
        .find(|e| e.names.contains(&task))
        .ok_or_else(|| InverseError::UnknownTask {
            name: task.to_string(),
            known: task_names().join(", "),
        })
}

/// One option name across the registry (see [`option_union`]).
#[derive(Debug, Clone)]
pub struct SharedOption {
    /// The first declaration (its help and type; every declaration has the same type).
    pub spec: OptionSpec,
    /// Whether it is one of the [`COMMON_OPTIONS`].
    pub common: bool,
    /// Every task taking it with that task's default, in registry order.
    pub defaults: Vec<(&'static str, OptionDefault)>,
}

impl SharedOption {
    /// The tasks taking it.
    pub fn tasks(&self) -> Vec<&'static str> {
        self.defaults.iter().map(|d| d.0).collect()
    }

    /// The default when every task taking the option has the same fixed default.
    pub fn fixed_default(&self) -> Option<OptionDefault> {
        let first = self.defaults.first()?.1;
        (first.is_fixed() && self.defaults.iter().all(|d| d.1 == first)).then_some(first)
    }
}

/// Every option name of the registry, in order of first declaration (the common options
/// first), with the tasks taking it: what a front end such as the CLI turns into one flag per
/// name. Errors if two entries declare the same name with different types or a default that
/// does not fit its type (a registry bug).
pub fn option_union() -> Result<Vec<SharedOption>> {
    let mut out: Vec<SharedOption> = Vec::new();
    for entry in task_entries() {
        for o in entry.options() {
            if !o.is_consistent() {
                return Err(InverseError::InvalidArgument(format!(
                    "task registry: option `{}` of {} has default {:?}, which is not {}",
                    o.name,
                    entry.names.join("/"),
                    o.default,
                    o.kind.describe()
                )));
            }
            let common = COMMON_OPTIONS.iter().any(|c| c.name == o.name);
            let i = match out.iter().position(|s| s.spec.name == o.name) {
                Some(i) => i,
                None => {
                    out.push(SharedOption {
                        spec: o,
                        common,
                        defaults: Vec::new(),
                    });
                    out.len() - 1
                }
            };
            if out[i].spec.kind != o.kind {
                return Err(InverseError::InvalidArgument(format!(
                    "task registry: option `{}` is {} for {} but {} for {}",
                    o.name,
                    out[i].spec.kind.describe(),
                    out[i].tasks().join(", "),
                    o.kind.describe(),
                    entry.names.join(", ")
                )));
            }
            for n in entry.names {
                out[i].defaults.push((n, o.default));
            }
        }
    }
    Ok(out)
}

/// The options of one task: values set so far, typed getters falling back to the entry's
/// declared defaults. Unknown option names and values of the wrong type are errors naming the
/// task and the option.
#[derive(Debug, Clone)]
pub struct TaskOptions {
    task: String,
    entry: &'static TaskEntry,
    specs: Vec<OptionSpec>,
    values: BTreeMap<&'static str, OptionValue>,
}

impl TaskOptions {
    /// Every option of `task` at its default.
    pub fn new(task: &str) -> Result<Self> {
        let entry = find_task(task)?;
        Ok(Self {
            task: task.to_string(),
            entry,
            specs: entry.options(),
            values: BTreeMap::new(),
        })
    }

    /// The task name.
    pub fn task(&self) -> &str {
        &self.task
    }

    /// The registry entry of the task.
    pub fn entry(&self) -> &'static TaskEntry {
        self.entry
    }

    /// Every option of the task (see [`TaskEntry::options`]).
    pub fn specs(&self) -> &[OptionSpec] {
        &self.specs
    }

    fn err(&self, msg: String) -> InverseError {
        InverseError::InvalidOption {
            task: self.task.clone(),
            msg,
        }
    }

    /// The declaration of option `name`, or an error listing the task's options.
    pub fn spec(&self, name: &str) -> Result<&OptionSpec> {
        self.specs.iter().find(|s| s.name == name).ok_or_else(|| {
            let names: Vec<&str> = self.specs.iter().map(|s| s.name).collect();
            self.err(format!(
                "unknown option `{name}`; this task takes: {}",
                names.join(", ")
            ))
        })
    }

    /// Sets option `name`; errors if the task has no such option or the value has the wrong
    /// type (ranges are checked when the operator is built).
    pub fn set(&mut self, name: &str, value: impl Into<OptionValue>) -> Result<&mut Self> {
        let value = value.into();
        let spec = *self.spec(name)?;
        let ok = match (&spec.kind, &value) {
            (OptionType::Float, OptionValue::Float(_))
            | (OptionType::Integer, OptionValue::Integer(_))
            | (OptionType::ImageFile | OptionType::ArrayFile, OptionValue::Tensor(_)) => true,
            (OptionType::Choice(v), OptionValue::Choice(c)) => {
                if !v.contains(&c.as_str()) {
                    return Err(self.err(format!(
                        "option `{name}` must be one of {}; got `{c}`",
                        v.join(", ")
                    )));
                }
                true
            }
            _ => false,
        };
        if !ok {
            return Err(self.err(format!(
                "option `{name}` takes {}; got {}",
                spec.kind.describe(),
                value.describe()
            )));
        }
        self.values.insert(spec.name, value);
        Ok(self)
    }

    /// [`TaskOptions::set`], by value (for chaining).
    pub fn with(mut self, name: &str, value: impl Into<OptionValue>) -> Result<Self> {
        self.set(name, value)?;
        Ok(self)
    }

    /// The value set for `name`, if any (not the default).
    pub fn given(&self, name: &str) -> Result<Option<&OptionValue>> {
        self.spec(name)?;
        Ok(self.values.get(name))
    }

    /// The value set, else the fixed default, else `None` (a derived or required option).
    fn value(&self, name: &str) -> Result<Option<OptionValue>> {
        let spec = self.spec(name)?;
        Ok(match self.values.get(name) {
            Some(v) => Some(v.clone()),
            None => spec.default.value(),
        })
    }

    fn wrong_getter(&self, name: &str, want: &str) -> Result<InverseError> {
        let spec = self.spec(name)?;
        Ok(self.err(format!(
            "option `{name}` is {}, not {want}",
            spec.kind.describe()
        )))
    }

    fn missing(&self, name: &str) -> InverseError {
        let help = self.spec(name).map(|s| s.help).unwrap_or_default();
        self.err(format!("option `{name}` is required ({help})"))
    }

    /// A float option: its value or its fixed default; `None` when neither.
    pub fn float_opt(&self, name: &str) -> Result<Option<f64>> {
        match self.value(name)? {
            None if self.spec(name)?.kind == OptionType::Float => Ok(None),
            Some(OptionValue::Float(v)) => Ok(Some(v)),
            _ => Err(self.wrong_getter(name, "a float")?),
        }
    }

    /// A float option that has a value or a fixed default.
    pub fn float(&self, name: &str) -> Result<f64> {
        self.float_opt(name)?.ok_or_else(|| self.missing(name))
    }

    /// An integer option: its value or its fixed default; `None` when neither.
    pub fn integer_opt(&self, name: &str) -> Result<Option<u64>> {
        match self.value(name)? {
            None if self.spec(name)?.kind == OptionType::Integer => Ok(None),
            Some(OptionValue::Integer(v)) => Ok(Some(v)),
            _ => Err(self.wrong_getter(name, "an integer")?),
        }
    }

    /// An integer option that has a value or a fixed default.
    pub fn integer(&self, name: &str) -> Result<u64> {
        self.integer_opt(name)?.ok_or_else(|| self.missing(name))
    }

    /// An integer option as a size (`usize`); `None` when it has no value.
    pub fn size_opt(&self, name: &str) -> Result<Option<usize>> {
        self.integer_opt(name)?
            .map(|v| {
                usize::try_from(v)
                    .map_err(|_| self.err(format!("option `{name}` is too large: {v}")))
            })
            .transpose()
    }

    /// A choice option that has a value or a fixed default.
    pub fn choice(&self, name: &str) -> Result<String> {
        match self.value(name)? {
            Some(OptionValue::Choice(v)) => Ok(v),
            None if matches!(self.spec(name)?.kind, OptionType::Choice(_)) => {
                Err(self.missing(name))
            }
            _ => Err(self.wrong_getter(name, "a choice")?),
        }
    }

    /// An image-file or array-file option's tensor, if set.
    pub fn tensor_opt(&self, name: &str) -> Result<Option<&Tensor>> {
        if !self.spec(name)?.kind.is_file() {
            return Err(self.wrong_getter(name, "a file")?);
        }
        Ok(match self.values.get(name) {
            Some(OptionValue::Tensor(t)) => Some(t),
            _ => None,
        })
    }

    /// A required image-file or array-file option's tensor.
    pub fn tensor(&self, name: &str) -> Result<&Tensor> {
        self.tensor_opt(name)?.ok_or_else(|| self.missing(name))
    }

    /// `noise-sigma`: given, else the entry's default.
    pub fn noise_sigma(&self) -> Result<f64> {
        self.float("noise-sigma")
    }

    /// `likelihood-sigma`: given, else the noise σ.
    pub fn likelihood_sigma(&self) -> Result<f64> {
        match self.float_opt("likelihood-sigma")? {
            Some(v) => Ok(v),
            None => self.noise_sigma(),
        }
    }

    /// `operator-seed`.
    pub fn operator_seed(&self) -> Result<u64> {
        self.integer("operator-seed")
    }

    /// The Gaussian noise model of `noise-sigma` and `likelihood-sigma`, for tasks that take
    /// no other; errors if `noise` asks for another model.
    pub fn gaussian_noise(&self) -> Result<Arc<dyn NoiseModel>> {
        let model = self.choice("noise")?;
        if model != "gaussian" {
            return Err(self.err(format!(
                "this task takes only --noise gaussian, got `{model}`"
            )));
        }
        let g = Gaussian::new(self.noise_sigma()?, self.likelihood_sigma()?)
            .map_err(|e| self.err(inner_message(e)))?;
        Ok(Arc::new(g))
    }

    /// The noise model chosen by `noise` for tasks whose A(x) is in image units (so that
    /// (A(x) + 1)/2 is a light intensity): Gaussian, Poisson or Poisson–Gaussian (see
    /// [`crate::noise::poisson`]). `transmission` is built by the `ct` task itself.
    pub fn intensity_noise(&self) -> Result<Arc<dyn NoiseModel>> {
        let model = self.choice("noise")?;
        if model == "gaussian" {
            return self.gaussian_noise();
        }
        if self.values.contains_key("likelihood-sigma") {
            return Err(self.err(format!(
                "--likelihood-sigma applies to Gaussian noise only, not to --noise {model}"
            )));
        }
        let photons = self.float("photons")?;
        let built = match model.as_str() {
            "poisson" => {
                if self.values.contains_key("noise-sigma") {
                    return Err(self.err(
                        "--noise poisson has no additive noise; for Gaussian read noise on top use --noise poisson-gaussian --noise-sigma S".into(),
                    ));
                }
                Poisson::new(photons)
            }
            "poisson-gaussian" => Poisson::with_read_noise(photons, self.noise_sigma()?),
            _ => {
                return Err(self.err(format!(
                    "--noise {model} is not available for this task (transmission is for ct)"
                )))
            }
        };
        Ok(Arc::new(built.map_err(|e| self.err(inner_message(e)))?))
    }

    /// Checks what every task needs: σ values finite and ≥ 0, required options present.
    fn validate(&self) -> Result<()> {
        let sigma = self.noise_sigma()?;
        if !(sigma.is_finite() && sigma >= 0.0) {
            return Err(self.err(format!(
                "noise sigma must be a finite number ≥ 0, got {sigma}"
            )));
        }
        let lik = self.likelihood_sigma()?;
        if !(lik.is_finite() && lik >= 0.0) {
            return Err(self.err(format!(
                "likelihood sigma must be a finite number ≥ 0, got {lik}"
            )));
        }
        for s in &self.specs {
            if s.default == OptionDefault::Required && !self.values.contains_key(s.name) {
                return Err(self.missing(s.name));
            }
        }
        Ok(())
    }
}

/// The message of an error, without the variant's prefix where it has one.
pub(crate) fn inner_message(e: InverseError) -> String {
    match e {
        InverseError::InvalidArgument(m) | InverseError::Unsupported(m) => m,
        InverseError::InvalidOption { msg, .. } => msg,
        e => e.to_string(),
    }
}

/// Builds the operator of `options.task()` on images of shape `[C, H, W]`. Errors name the
/// problem: negative σ, a missing required option, an option out of range, an image the task
/// cannot handle.
pub fn build_task(options: &TaskOptions, image_shape: [usize; 3]) -> Result<Box<dyn Operator>> {
    options.validate()?;
    (options.entry.build)(options, image_shape)
}
