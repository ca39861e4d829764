//! Model config files: which kind a file is (diffusers `UNet2DModel` or guided-diffusion
//! ADM), told by its content, and guided-diffusion's own config formats read into an
//! [`AdmConfig`]:
//!
//! * the flat `model_config.yaml` of the DPS / DPnP repos (`image_size: 256`,
//!   `channel_mult: ""`, `learn_sigma: True`, `attention_resolutions: 16` or
//!   `"32,16,8"`, `model_path: models/ffhq_10m.pt`, ...);
//! * a JSON object with guided-diffusion's argument names (`create_model()` /
//!   `model_and_diffusion_defaults()`), with or without genprior's
//!   `"_class_name": "ADMUNet"`.
//!
//! Keys guided-diffusion's `create_model` does not take (training options such as
//! `batch_size`, or `model_path`) are ignored, as `create_model(**args)` callers filter
//! them; a known key with a value of the wrong kind is an error naming the key. The YAML
//! reader accepts exactly the flat `key: value` subset those files use (comments,
//! plain, single- and double-quoted scalars, YAML 1.1 booleans such as `True`) and
//! rejects nested structures (indented blocks, `- ` items, `[...]` / `{...}`) clearly.

use std::path::{Path, PathBuf};

use genprior_nn::AdmConfig;
use serde_json::{Map, Value};

use crate::error::{PriorError, Result};

/// What a model config file describes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConfigKind {
    /// A diffusers `UNet2DModel` config.json.
    Diffusers,
    /// A guided-diffusion ADM UNet (genprior's ADM config.json, a guided-diffusion
    /// argument JSON, or a DPS/DPnP `model_config.yaml`).
    Adm,
}

/// How a config file is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConfigFormat {
    Json,
    Yaml,
}

/// A model config file read into a flat JSON object.
#[derive(Debug, Clone)]
pub struct ConfigFile {
    pub path: PathBuf,
    pub format: ConfigFormat,
    pub values: Map<String, Value>,
}

impl ConfigFile {
    /// Read `path`: YAML for `.yaml`/`.yml`, JSON for `.json`, otherwise JSON when the
    /// text starts with `{` and YAML else.
    pub fn read(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|source| PriorError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        let ext = path
            .extension()
            .and_then(|e| e.to_str())
            .map(str::to_ascii_lowercase);
        let format = match ext.as_deref() {
            Some("yaml" | "yml") => ConfigFormat::Yaml,
            Some("json") => ConfigFormat::Json,
            _ if text.trim_start().starts_with('{') => ConfigFormat::Json,
            _ => ConfigFormat::Yaml,
        };
        let values = match format {
            ConfigFormat::Yaml => parse_flat_yaml(&text, path)?,
            ConfigFormat::Json => match serde_json::from_str::<Value>(&text) {
                Ok(Value::Object(m)) => m,
                Ok(_) => {
                    return Err(PriorError::ModelConfig {
                        path: path.to_path_buf(),
                        line: None,
                        msg: "a model config must be a JSON object".into(),
                    })
                }
                Err(source) => {
                    return Err(PriorError::Json {
                        path: path.to_path_buf(),
                        source,
                    })
                }
            },
        };
        Ok(Self {
            path: path.to_path_buf(),
            format,
            values,
        })
    }

    /// The kind of model the config describes, if it says.
    pub fn kind(&self) -> Option<ConfigKind> {
        kind_of(&self.values)
    }

    /// The file's `model_path` (DPS / DPnP configs name their checkpoint there), if any.
    pub fn model_path(&self) -> Option<&str> {
        self.values.get("model_path").and_then(Value::as_str)
    }

    /// The config as an [`AdmConfig`]: every known key checked for its kind (errors name
    /// the key), then guided-diffusion's defaults and genprior's validation.
    pub fn to_adm_config(&self) -> Result<AdmConfig> {
        let mut obj = Map::new();
        for (key, value) in &self.values {
            let Some(kind) = key_kind(key) else {
                continue; // not an argument of create_model(): ignored, see the module docs
            };
            obj.insert(key.clone(), check_value(&self.path, key, value, kind)?);
        }
        let text = Value::Object(obj).to_string();
        Ok(AdmConfig::from_json_str(&text, &self.path)?)
    }
}

/// The kind of a config object: `_class_name` when it has one (`ADMUNet` → ADM, any
/// other → diffusers), else `block_out_channels` → diffusers, `num_channels` or
/// `num_res_blocks` → ADM.
pub fn kind_of(values: &Map<String, Value>) -> Option<ConfigKind> {
    if let Some(name) = values.get("_class_name").and_then(Value::as_str) {
        return Some(if name == genprior_nn::adm::CLASS_NAME {
            ConfigKind::Adm
        } else {
            ConfigKind::Diffusers
        });
    }
    if values.contains_key("block_out_channels") {
        return Some(ConfigKind::Diffusers);
    }
    if values.contains_key("num_channels") || values.contains_key("num_res_blocks") {
        return Some(ConfigKind::Adm);
    }
    None
}

/// The kind of the config file at `path`, or `None` when it cannot be read or does not
/// say (used to look at files found beside a checkpoint, which may be anything).
pub fn sniff(path: &Path) -> Option<ConfigKind> {
    ConfigFile::read(path).ok().and_then(|c| c.kind())
}

/// Read a guided-diffusion model config (`model_config.yaml` or an argument JSON) as an
/// [`AdmConfig`]. A diffusers config is an error.
pub fn load_adm_config(path: &Path) -> Result<AdmConfig> {
    let file = ConfigFile::read(path)?;
    match file.kind() {
        Some(ConfigKind::Adm) => file.to_adm_config(),
        Some(ConfigKind::Diffusers) => Err(PriorError::ModelConfig {
            path: path.to_path_buf(),
            line: None,
            msg: "this is a diffusers UNet2DModel config, not a guided-diffusion one".into(),
        }),
        None => Err(PriorError::UnknownConfigKind(path.to_path_buf())),
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// A non-negative integer.
    Count,
    /// An integer (−1 means "unset" for the head counts).
    Int,
    Bool,
    Float,
    /// A comma string (`"1,1,2,2,4,4"`, `""`), a single number, or a list of numbers.
    NumList,
    Text,
}

/// The arguments of guided-diffusion's `create_model()` / `model_and_diffusion_defaults()`
/// that [`AdmConfig`] reads, with what they hold. Other keys are ignored.
const KEYS: [(&str, Kind); 24] = [
    ("_class_name", Kind::Text),
    ("image_size", Kind::Count),
    ("in_channels", Kind::Count),
    ("num_channels", Kind::Count),
    ("num_res_blocks", Kind::Count),
    ("num_heads", Kind::Int),
    ("num_heads_upsample", Kind::Int),
    ("num_head_channels", Kind::Int),
    ("attention_resolutions", Kind::NumList),
    ("channel_mult", Kind::NumList),
    ("dropout", Kind::Float),
    ("class_cond", Kind::Bool),
    ("num_classes", Kind::Count),
    ("use_checkpoint", Kind::Bool),
    ("use_scale_shift_norm", Kind::Bool),
    ("resblock_updown", Kind::Bool),
    ("use_fp16", Kind::Bool),
    ("use_new_attention_order", Kind::Bool),
    ("learn_sigma", Kind::Bool),
    ("diffusion_steps", Kind::Count),
    ("noise_schedule", Kind::Text),
    ("predict_xstart", Kind::Bool),
    ("rescale_timesteps", Kind::Bool),
    ("timestep_respacing", Kind::Text),
];

fn key_kind(key: &str) -> Option<Kind> {
    KEYS.iter().find(|(k, _)| *k == key).map(|(_, kind)| *kind)
}

fn check_value(path: &Path, key: &str, value: &Value, kind: Kind) -> Result<Value> {
    let bad = |reason: &str| PriorError::ConfigValue {
        path: path.to_path_buf(),
        key: key.to_string(),
        value: match value {
            Value::String(s) => format!("{s:?}"),
            other => other.to_string(),
        },
        reason: reason.to_string(),
    };
    let ok = match kind {
        Kind::Count => value.as_u64().is_some(),
        Kind::Int => value.as_i64().is_some(),
        Kind::Bool => value.is_boolean(),
        Kind::Float => value.is_number(),
        Kind::Text => value.is_string(),
        Kind::NumList => match value {
            Value::String(_) | Value::Number(_) => true,
            Value::Array(items) => items.iter().all(Value::is_number),
            _ => false,
        },
    };
    if ok {
        return Ok(value.clone());
    }
    Err(bad(match kind {
        Kind::Count => "expected a whole number ≥ 0",
        Kind::Int => "expected a whole number",
        Kind::Bool => "expected True or False",
        Kind::Float => "expected a number",
        Kind::Text => "expected a string",
        Kind::NumList => "expected comma-separated numbers in a string, such as \"1,1,2,2,4,4\"",
    }))
}

/// Parse the flat `key: value` YAML of guided-diffusion config files into a JSON object
/// (scalars typed as PyYAML types them: YAML 1.1 booleans, integers, floats, `null`/`~`,
/// strings). Nested structures, multiple documents, anchors, tags and block scalars are
/// rejected with the line at fault; so are duplicate keys.
pub fn parse_flat_yaml(text: &str, path: &Path) -> Result<Map<String, Value>> {
    let err = |line: usize, msg: String| PriorError::ModelConfig {
        path: path.to_path_buf(),
        line: Some(line),
        msg,
    };
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut out = Map::new();
    let mut seen_document_start = false;
    for (i, raw) in text.lines().enumerate() {
        let n = i + 1;
        let line = raw.trim_end();
        let trimmed = line.trim_start();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        if line == "---" || line.starts_with("--- ") {
            if seen_document_start || !out.is_empty() {
                return Err(err(
                    n,
                    "more than one YAML document; a model config is one flat `key: value` mapping"
                        .into(),
                ));
            }
            seen_document_start = true;
            if line.len() > 3 && !line[3..].trim_start().starts_with('#') {
                return Err(err(n, "content after `---` is not supported".into()));
            }
            continue;
        }
        if line == "..." {
            break;
        }
        if trimmed.len() != line.len() {
            return Err(err(
                n,
                format!(
                    "indented line `{trimmed}`: nested YAML structures are not supported (the model config must be flat `key: value` lines)"
                ),
            ));
        }
        if line == "-" || line.starts_with("- ") {
            return Err(err(
                n,
                "a YAML list item: nested YAML structures are not supported (the model config must be flat `key: value` lines)".into(),
            ));
        }
        if line.starts_with('%') {
            return Err(err(n, "YAML directives are not supported".into()));
        }
        let Some((key, rest)) = split_key(line) else {
            return Err(err(n, format!("expected `key: value`, got `{line}`")));
        };
        let value = parse_scalar(rest).map_err(|m| err(n, format!("`{key}`: {m}")))?;
        if out.insert(key.to_string(), value).is_some() {
            return Err(err(n, format!("duplicate key `{key}`")));
        }
    }
    Ok(out)
}

/// `key: rest` with a plain key (letters, digits, `_`, `-`, `.`); `None` if the line
/// has no such key.
fn split_key(line: &str) -> Option<(&str, &str)> {
    let colon = line.find(':')?;
    let key = &line[..colon];
    let rest = &line[colon + 1..];
    let key_ok = !key.is_empty()
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'));
    if !key_ok || !(rest.is_empty() || rest.starts_with([' ', '\t'])) {
        return None;
    }
    Some((key, rest.trim()))
}

/// The text after a closing quote: only whitespace and a comment may follow.
fn check_after_quote(rest: &str) -> std::result::Result<(), String> {
    let rest = rest.trim_start();
    if rest.is_empty() || rest.starts_with('#') {
        Ok(())
    } else {
        Err(format!("unexpected text `{rest}` after the quoted value"))
    }
}

fn parse_scalar(s: &str) -> std::result::Result<Value, String> {
    let nested = "nested YAML structures are not supported: give lists as a comma string, such as \"1,1,2,2,4,4\"";
    if s.is_empty() || s.starts_with('#') {
        // `key:` alone is null in YAML, or the start of a nested block (whose indented
        // lines are then reported).
        return Ok(Value::Null);
    }
    if let Some(body) = s.strip_prefix('"') {
        let mut out = String::new();
        let mut chars = body.char_indices();
        while let Some((i, c)) = chars.next() {
            match c {
                '"' => {
                    check_after_quote(&body[i + 1..])?;
                    return Ok(Value::String(out));
                }
                '\\' => match chars.next().map(|(_, e)| e) {
                    Some('"') => out.push('"'),
                    Some('\\') => out.push('\\'),
                    Some('/') => out.push('/'),
                    Some('n') => out.push('\n'),
                    Some('t') => out.push('\t'),
                    Some(e) => return Err(format!("unsupported escape `\\{e}` in a quoted value")),
                    None => break,
                },
                c => out.push(c),
            }
        }
        return Err("unterminated double-quoted value".into());
    }
    if let Some(body) = s.strip_prefix('\'') {
        let mut out = String::new();
        let mut rest = body;
        loop {
            let Some(q) = rest.find('\'') else {
                return Err("unterminated single-quoted value".into());
            };
            out.push_str(&rest[..q]);
            rest = &rest[q + 1..];
            if let Some(r) = rest.strip_prefix('\'') {
                out.push('\'');
                rest = r;
            } else {
                check_after_quote(rest)?;
                return Ok(Value::String(out));
            }
        }
    }
    if s.starts_with(['[', '{']) {
        return Err(format!("`{s}`: {nested}"));
    }
    if s.starts_with(['&', '*', '!', '|', '>', '@', '`']) {
        return Err(format!(
            "`{s}`: YAML anchors, aliases, tags and block scalars are not supported"
        ));
    }
    // A plain scalar: a comment starts at ` #`.
    let plain = match s.find(" #").or_else(|| s.find("\t#")) {
        Some(i) => s[..i].trim_end(),
        None => s,
    };
    if plain.contains(": ") || plain.ends_with(':') {
        return Err(format!("`{plain}`: {nested}"));
    }
    Ok(plain_scalar(plain))
}

/// Type a plain scalar as PyYAML (YAML 1.1) does for the values config files hold.
fn plain_scalar(s: &str) -> Value {
    match s {
        "null" | "Null" | "NULL" | "~" => return Value::Null,
        "true" | "True" | "TRUE" | "yes" | "Yes" | "YES" | "on" | "On" | "ON" => {
            return Value::Bool(true)
        }
        "false" | "False" | "FALSE" | "no" | "No" | "NO" | "off" | "Off" | "OFF" => {
            return Value::Bool(false)
        }
        _ => {}
    }
    let digits = s.strip_prefix(['-', '+']).unwrap_or(s);
    if !digits.is_empty() && digits.chars().all(|c| c.is_ascii_digit()) {
        if let Ok(i) = s.parse::<i64>() {
            return Value::from(i);
        }
    }
    let float_like = digits.starts_with(|c: char| c.is_ascii_digit() || c == '.')
        && digits
            .chars()
            .all(|c| c.is_ascii_digit() || matches!(c, '.' | 'e' | 'E' | '-' | '+'))
        && digits.chars().any(|c| c.is_ascii_digit());
    if float_like {
        if let Some(n) = s.parse::<f64>().ok().and_then(serde_json::Number::from_f64) {
            return Value::Number(n);
        }
    }
    Value::String(s.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn yaml(text: &str) -> Result<Map<String, Value>> {
        parse_flat_yaml(text, Path::new("t.yaml"))
    }

    #[test]
    fn dps_model_config_parses_with_pyyaml_types() {
        let m = yaml(
            "# Defaults for image training.\n\nimage_size: 256\nnum_channels: 128\nchannel_mult: \"\"\n\
             learn_sigma: True\nclass_cond: False\nattention_resolutions: 16\nnum_heads_upsample: -1\n\
             dropout: 0.0\nmodel_path: models/ffhq_10m.pt\nattn2: \"32,16,8\"\nattn3: 32,16,8 # comment\n\
             quoted: 'it''s'\nempty:\n",
        )
        .unwrap();
        assert_eq!(m["image_size"], Value::from(256));
        assert_eq!(m["channel_mult"], Value::from(""));
        assert_eq!(m["learn_sigma"], Value::Bool(true));
        assert_eq!(m["class_cond"], Value::Bool(false));
        assert_eq!(m["attention_resolutions"], Value::from(16));
        assert_eq!(m["num_heads_upsample"], Value::from(-1));
        assert_eq!(m["dropout"], Value::from(0.0));
        assert_eq!(m["model_path"], Value::from("models/ffhq_10m.pt"));
        assert_eq!(m["attn2"], Value::from("32,16,8"));
        assert_eq!(m["attn3"], Value::from("32,16,8"));
        assert_eq!(m["quoted"], Value::from("it's"));
        assert_eq!(m["empty"], Value::Null);
        assert_eq!(m.len(), 13);
    }

    #[test]
    fn nested_and_malformed_yaml_is_rejected_with_the_line() {
        let cases: [(&str, &[&str]); 8] = [
            ("model:\n  image_size: 256\n", &["line 2", "nested"]),
            ("channel_mult:\n- 1\n- 2\n", &["line 2", "list item"]),
            (
                "channel_mult: [1, 1, 2]\n",
                &["line 1", "channel_mult", "nested"],
            ),
            ("model: {image_size: 256}\n", &["line 1", "nested"]),
            ("a: 1\na: 2\n", &["line 2", "duplicate key `a`"]),
            ("just words\n", &["line 1", "expected `key: value`"]),
            ("a: \"open\n", &["unterminated"]),
            (
                "a: 1\n---\nb: 2\n",
                &["line 2", "more than one YAML document"],
            ),
        ];
        for (text, needles) in cases {
            let e = yaml(text).unwrap_err().to_string();
            for n in needles {
                assert!(e.contains(n), "{text:?}: `{n}` not in `{e}`");
            }
            assert!(e.starts_with("t.yaml line"), "{e}");
        }
    }

    #[test]
    fn the_key_table_covers_every_adm_config_field() {
        let cfg = AdmConfig::preset("adm-ffhq-256").unwrap();
        let v: Value = serde_json::from_str(&cfg.to_json_string().unwrap()).unwrap();
        let fields: Vec<&String> = v.as_object().unwrap().keys().collect();
        for f in &fields {
            assert!(
                key_kind(f).is_some(),
                "AdmConfig field `{f}` missing from KEYS"
            );
        }
        for (k, _) in KEYS {
            assert!(
                fields.iter().any(|f| *f == k),
                "KEYS has `{k}`, AdmConfig has not"
            );
        }
    }

    #[test]
    fn kinds_are_told_by_content() {
        let obj = |s: &str| serde_json::from_str::<Map<String, Value>>(s).unwrap();
        assert_eq!(
            kind_of(&obj(r#"{"_class_name": "UNet2DModel"}"#)),
            Some(ConfigKind::Diffusers)
        );
        assert_eq!(
            kind_of(&obj(r#"{"block_out_channels": [32]}"#)),
            Some(ConfigKind::Diffusers)
        );
        assert_eq!(
            kind_of(&obj(r#"{"_class_name": "ADMUNet"}"#)),
            Some(ConfigKind::Adm)
        );
        assert_eq!(
            kind_of(&obj(r#"{"num_channels": 128}"#)),
            Some(ConfigKind::Adm)
        );
        assert_eq!(
            kind_of(&obj(r#"{"num_res_blocks": 2}"#)),
            Some(ConfigKind::Adm)
        );
        assert_eq!(kind_of(&obj(r#"{"sample_size": 32}"#)), None);
    }
}
