//! Declared, typed options of a posterior sampler.
//!
//! A sampler file declares its options with the same declaration types as the operators'
//! (`genprior_inverse::{OptionSpec, OptionType, OptionDefault, OptionValue}`: name = the CLI
//! flag without `--`, help, type, default) next to its code; callers pass what they were
//! given as [`MethodOptions`] (name → value), and the sampler reads them back through
//! [`Resolved`], which checks names and types against the declaration and fills in the
//! declared defaults. The CLI generates its method flags from these declarations, so a new
//! sampler's options need no CLI edit.

use std::collections::BTreeMap;

pub use genprior_inverse::{OptionDefault, OptionSpec, OptionType, OptionValue};
use serde_json::Value;

use crate::error::{invalid, PosteriorError, Result};

/// Options as given (name → value), before they are checked against a sampler's declaration.
#[derive(Debug, Clone, Default)]
pub struct MethodOptions {
    values: BTreeMap<String, OptionValue>,
}

impl MethodOptions {
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets `name` (kebab case, as declared) to `value`.
    pub fn set(&mut self, name: &str, value: impl Into<OptionValue>) -> &mut Self {
        self.values.insert(name.to_string(), value.into());
        self
    }

    /// Builder form of [`MethodOptions::set`].
    pub fn with(mut self, name: &str, value: impl Into<OptionValue>) -> Self {
        self.set(name, value);
        self
    }

    /// Sets `name` unless it is already set.
    pub fn set_default(&mut self, name: &str, value: impl Into<OptionValue>) -> &mut Self {
        self.values
            .entry(name.to_string())
            .or_insert_with(|| value.into());
        self
    }

    pub fn get(&self, name: &str) -> Option<&OptionValue> {
        self.values.get(name)
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, &OptionValue)> {
        self.values.iter().map(|(k, v)| (k.as_str(), v))
    }

    /// Only the options `specs` declares (a command with options for several methods hands
    /// each its own).
    pub fn declared_by(&self, specs: &[OptionSpec]) -> Self {
        Self {
            values: self
                .values
                .iter()
                .filter(|(k, _)| specs.iter().any(|s| s.name == k.as_str()))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
        }
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
    pub fn resolve(&self, method: &str, specs: &'static [OptionSpec]) -> Result<Resolved> {
        for (name, value) in &self.values {
            let Some(spec) = specs.iter().find(|s| s.name == name) else {
                return invalid(format!(
                    "method `{method}` has no option `{name}`; its options are: {}",
                    specs.iter().map(|s| s.name).collect::<Vec<_>>().join(", ")
                ));
            };
            let ok = match (spec.kind, value) {
                (OptionType::Float, OptionValue::Float(v)) => v.is_finite(),
                (OptionType::Float, OptionValue::Integer(_))
                | (OptionType::Integer, OptionValue::Integer(_)) => true,
                (OptionType::Choice(c), OptionValue::Choice(t)) => c.contains(&t.as_str()),
                _ => false,
            };
            if !ok {
                return invalid(format!(
                    "method `{method}`: option `{name}` ({}) cannot take the value {}",
                    spec.kind.describe(),
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
    specs: &'static [OptionSpec],
    values: BTreeMap<String, OptionValue>,
}

impl Resolved {
    fn spec(&self, name: &str) -> Result<&OptionSpec> {
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
            (Some(OptionValue::Float(v)), _) => Some(*v),
            (Some(OptionValue::Integer(v)), _) => Some(*v as f64),
            (None, OptionDefault::Float(v)) => Some(v),
            _ => None,
        })
    }

    /// An integer option (see [`Resolved::opt_f64`]).
    pub fn opt_usize(&self, name: &str) -> Result<Option<usize>> {
        let spec = self.spec(name)?;
        let v = match (self.values.get(name), spec.default) {
            (Some(OptionValue::Integer(v)), _) => Some(*v),
            (None, OptionDefault::Integer(v)) => Some(v),
            _ => None,
        };
        v.map(|v| {
            usize::try_from(v).map_err(|_| {
                PosteriorError::Invalid(format!("--{name}: {v} is too large for this machine"))
            })
        })
        .transpose()
    }

    /// A choice option (see [`Resolved::opt_f64`]).
    pub fn opt_choice(&self, name: &str) -> Result<Option<String>> {
        let spec = self.spec(name)?;
        Ok(match (self.values.get(name), spec.default) {
            (Some(OptionValue::Choice(v)), _) => Some(v.clone()),
            (None, OptionDefault::Choice(v)) => Some(v.to_string()),
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

    const SPECS: &[OptionSpec] = &[
        OptionSpec {
            name: "steps",
            help: "",
            kind: OptionType::Integer,
            default: OptionDefault::Integer(10),
        },
        OptionSpec {
            name: "scale",
            help: "",
            kind: OptionType::Float,
            default: OptionDefault::Derived,
        },
        OptionSpec {
            name: "mode",
            help: "",
            kind: OptionType::Choice(&["a", "b"]),
            default: OptionDefault::Choice("a"),
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
        let given = MethodOptions::new()
            .with("steps", 2usize)
            .with("other", 1.0);
        let own = given.declared_by(SPECS);
        assert!(own.get("steps").is_some() && own.get("other").is_none());
    }
}
