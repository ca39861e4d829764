//! Declared, typed options of a posterior sampler.
//!
//! Each sampler file declares its options ([`OptSpec`]: name, help, type, default) next to its
//! code; callers pass whatever they were given as [`MethodOptions`] (name → value), and the
//! sampler reads them back through [`Resolved`], which checks names and types against the
//! declaration and fills in the declared defaults. The CLI generates its `--method` flags from
//! these declarations, so a new sampler's options need no CLI edit.

use std::collections::BTreeMap;

use serde_json::Value;

use crate::error::{invalid, PosteriorError, Result};

/// The type of an option's value.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum OptKind {
    /// A finite real number.
    Float,
    /// A non-negative integer.
    Int,
    /// One of the listed strings.
    Choice(&'static [&'static str]),
}

/// An option's default.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum OptDefault {
    Float(f64),
    Int(usize),
    Choice(&'static str),
    /// No fixed default: the sampler chooses from the operator's properties, or the option is
    /// off when absent (the help text says which).
    Derived,
}

/// One declared option. `name` is the CLI flag without `--` (kebab case).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct OptSpec {
    pub name: &'static str,
    pub help: &'static str,
    pub kind: OptKind,
    pub default: OptDefault,
}

impl OptSpec {
    /// The default as text (`None` for [`OptDefault::Derived`]).
    pub fn default_text(&self) -> Option<String> {
        match self.default {
            OptDefault::Float(v) => Some(format!("{v}")),
            OptDefault::Int(v) => Some(v.to_string()),
            OptDefault::Choice(s) => Some(s.to_string()),
            OptDefault::Derived => None,
        }
    }

    /// Parses a value given as text (a CLI argument) into this option's type.
    pub fn parse(&self, text: &str) -> Result<OptValue> {
        let bad = |what: &str| {
            PosteriorError::Invalid(format!("--{}: expected {what}, got {text:?}", self.name))
        };
        match self.kind {
            OptKind::Float => text
                .trim()
                .parse::<f64>()
                .ok()
                .filter(|v| v.is_finite())
                .map(OptValue::Float)
                .ok_or_else(|| bad("a finite number")),
            OptKind::Int => text
                .trim()
                .parse::<usize>()
                .map(OptValue::Int)
                .map_err(|_| bad("a non-negative integer")),
            OptKind::Choice(c) => {
                if c.contains(&text) {
                    Ok(OptValue::Text(text.to_string()))
                } else {
                    Err(bad(&format!("one of {}", c.join(", "))))
                }
            }
        }
    }
}

/// A given option value.
#[derive(Debug, Clone, PartialEq)]
pub enum OptValue {
    Float(f64),
    Int(usize),
    Text(String),
}

impl OptValue {
    pub fn to_json(&self) -> Value {
        match self {
            Self::Float(v) => serde_json::json!(v),
            Self::Int(v) => serde_json::json!(v),
            Self::Text(v) => serde_json::json!(v),
        }
    }
}

impl From<f64> for OptValue {
    fn from(v: f64) -> Self {
        Self::Float(v)
    }
}
impl From<usize> for OptValue {
    fn from(v: usize) -> Self {
        Self::Int(v)
    }
}
impl From<&str> for OptValue {
    fn from(v: &str) -> Self {
        Self::Text(v.to_string())
    }
}

/// Options as given (name → value), before they are checked against a sampler's declaration.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct MethodOptions {
    values: BTreeMap<String, OptValue>,
}

impl MethodOptions {
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets `name` (kebab case, as declared) to `value`.
    pub fn set(&mut self, name: &str, value: impl Into<OptValue>) -> &mut Self {
        self.values.insert(name.to_string(), value.into());
        self
    }

    /// Builder form of [`MethodOptions::set`].
    pub fn with(mut self, name: &str, value: impl Into<OptValue>) -> Self {
        self.set(name, value);
        self
    }

    /// Sets `name` unless it is already set.
    pub fn set_default(&mut self, name: &str, value: impl Into<OptValue>) -> &mut Self {
        self.values
            .entry(name.to_string())
            .or_insert_with(|| value.into());
        self
    }

    pub fn get(&self, name: &str) -> Option<&OptValue> {
        self.values.get(name)
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, &OptValue)> {
        self.values.iter().map(|(k, v)| (k.as_str(), v))
    }

    /// The given options as a JSON object (for reports).
    pub fn to_json(&self) -> Value {
        Value::Object(
            self.values
                .iter()
                .map(|(k, v)| (k.clone(), v.to_json()))
                .collect(),
        )
    }

    /// Checks every given option against `specs` (known name, right type, valid choice) for
    /// the sampler `method`.
    pub fn resolve(&self, method: &str, specs: &'static [OptSpec]) -> Result<Resolved> {
        for (name, value) in &self.values {
            let Some(spec) = specs.iter().find(|s| s.name == name) else {
                return invalid(format!(
                    "method `{method}` has no option `{name}`; its options are: {}",
                    specs.iter().map(|s| s.name).collect::<Vec<_>>().join(", ")
                ));
            };
            let ok = match (spec.kind, value) {
                (OptKind::Float, OptValue::Float(v)) => v.is_finite(),
                (OptKind::Float, OptValue::Int(_)) | (OptKind::Int, OptValue::Int(_)) => true,
                (OptKind::Choice(c), OptValue::Text(t)) => c.contains(&t.as_str()),
                _ => false,
            };
            if !ok {
                return invalid(format!(
                    "method `{method}`: option `{name}` cannot take the value {}",
                    value.to_json()
                ));
            }
        }
        Ok(Resolved {
            method: method.to_string(),
            specs,
            values: self.values.clone(),
        })
    }
}

/// Options checked against a declaration; the getters fall back to the declared defaults.
#[derive(Debug, Clone)]
pub struct Resolved {
    method: String,
    specs: &'static [OptSpec],
    values: BTreeMap<String, OptValue>,
}

impl Resolved {
    fn spec(&self, name: &str) -> Result<&OptSpec> {
        self.specs.iter().find(|s| s.name == name).ok_or_else(|| {
            PosteriorError::Invalid(format!(
                "internal: method `{}` reads the undeclared option `{name}`",
                self.method
            ))
        })
    }

    /// A float option: the given value, else its default (`None` when the default is derived).
    pub fn opt_f64(&self, name: &str) -> Result<Option<f64>> {
        let spec = self.spec(name)?;
        Ok(match (self.values.get(name), spec.default) {
            (Some(OptValue::Float(v)), _) => Some(*v),
            (Some(OptValue::Int(v)), _) => Some(*v as f64),
            (None, OptDefault::Float(v)) => Some(v),
            _ => None,
        })
    }

    /// An integer option (see [`Resolved::opt_f64`]).
    pub fn opt_usize(&self, name: &str) -> Result<Option<usize>> {
        let spec = self.spec(name)?;
        Ok(match (self.values.get(name), spec.default) {
            (Some(OptValue::Int(v)), _) => Some(*v),
            (None, OptDefault::Int(v)) => Some(v),
            _ => None,
        })
    }

    /// A choice option (see [`Resolved::opt_f64`]).
    pub fn opt_choice(&self, name: &str) -> Result<Option<String>> {
        let spec = self.spec(name)?;
        Ok(match (self.values.get(name), spec.default) {
            (Some(OptValue::Text(v)), _) => Some(v.clone()),
            (None, OptDefault::Choice(v)) => Some(v.to_string()),
            _ => None,
        })
    }

    fn required<T>(&self, name: &str, v: Option<T>) -> Result<T> {
        v.ok_or_else(|| {
            PosteriorError::Invalid(format!(
                "internal: option `{name}` of method `{}` has no default",
                self.method
            ))
        })
    }

    /// A float option with a fixed default.
    pub fn f64(&self, name: &str) -> Result<f64> {
        let v = self.opt_f64(name)?;
        self.required(name, v)
    }

    /// An integer option with a fixed default.
    pub fn usize(&self, name: &str) -> Result<usize> {
        let v = self.opt_usize(name)?;
        self.required(name, v)
    }

    /// A choice option with a fixed default.
    pub fn choice(&self, name: &str) -> Result<String> {
        let v = self.opt_choice(name)?;
        self.required(name, v)
    }
}

/// Errors unless `v ≥ 1`, naming the option.
pub fn at_least_one(name: &str, v: usize) -> Result<usize> {
    if v == 0 {
        invalid(format!("--{name} must be at least 1"))
    } else {
        Ok(v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SPECS: &[OptSpec] = &[
        OptSpec {
            name: "steps",
            help: "",
            kind: OptKind::Int,
            default: OptDefault::Int(10),
        },
        OptSpec {
            name: "scale",
            help: "",
            kind: OptKind::Float,
            default: OptDefault::Derived,
        },
        OptSpec {
            name: "mode",
            help: "",
            kind: OptKind::Choice(&["a", "b"]),
            default: OptDefault::Choice("a"),
        },
    ];

    #[test]
    fn defaults_types_and_unknown_names() {
        let r = MethodOptions::new().resolve("m", SPECS).unwrap();
        assert_eq!(r.usize("steps").unwrap(), 10);
        assert_eq!(r.opt_f64("scale").unwrap(), None);
        assert_eq!(r.choice("mode").unwrap(), "a");
        let r = MethodOptions::new()
            .with("steps", 3usize)
            .with("scale", 2usize)
            .with("mode", "b")
            .resolve("m", SPECS)
            .unwrap();
        assert_eq!(r.usize("steps").unwrap(), 3);
        assert_eq!(r.opt_f64("scale").unwrap(), Some(2.0));
        assert_eq!(r.choice("mode").unwrap(), "b");
        assert!(r.f64("nope").is_err());
        let e = MethodOptions::new()
            .with("stepz", 3usize)
            .resolve("m", SPECS)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("stepz") && e.contains("steps, scale, mode"),
            "{e}"
        );
        assert!(MethodOptions::new()
            .with("steps", 1.5)
            .resolve("m", SPECS)
            .is_err());
        assert!(MethodOptions::new()
            .with("mode", "c")
            .resolve("m", SPECS)
            .is_err());
        assert!(MethodOptions::new()
            .with("scale", f64::NAN)
            .resolve("m", SPECS)
            .is_err());
        assert!(SPECS[0].parse("-1").is_err());
        assert_eq!(SPECS[1].parse("0.5").unwrap(), OptValue::Float(0.5));
        assert!(SPECS[1].parse("inf").is_err());
        assert!(SPECS[2].parse("c").is_err());
    }
}
