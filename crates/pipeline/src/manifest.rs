//! The items of a batch run: a folder of PNG images, a CSV or a JSONL manifest.
//!
//! - **Folder**: every `*.png` in it (not recursive), sorted by file name; an item's id is its
//!   file stem and its input the clean image (the measurement is simulated from it).
//! - **CSV** (`.csv`): a header row, then one item per row. Columns: `id` (optional; default
//!   the file stem of `input` or `measurement`), `input` (clean PNG; the measurement is
//!   simulated and metrics are reported against it), `measurement` (`.npy` measurement
//!   instead), `truth` (optional ground-truth PNG for a measurement item); every other column
//!   is a task option by its flag name (`noise-sigma`, `keep-fraction`, ...) whose non-empty
//!   cells override the command line's value for that row. Fields may be double-quoted
//!   (RFC 4180: `""` is a quote inside a quoted field).
//! - **JSONL** (`.jsonl`): one JSON object per non-empty line with the keys `id`, `input`,
//!   `measurement`, `truth` and `options` (an object of task options, numbers or strings).
//!
//! Relative paths are relative to the manifest's folder. Ids must be unique and made of
//! letters, digits, `.`, `_` and `-` (not starting with `.`), since each names an output
//! folder.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// One item of a batch run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Item {
    /// Position in the manifest (its per-item seeds derive from it).
    pub index: usize,
    pub id: String,
    /// Clean image: the measurement is simulated from it, and it is the ground truth.
    pub input: Option<PathBuf>,
    /// Measurement `.npy` (instead of `input`).
    pub measurement: Option<PathBuf>,
    /// Ground truth of a measurement item (PNG), for metrics.
    pub truth: Option<PathBuf>,
    /// Task options overriding the command line's for this item (flag name → text value).
    pub options: BTreeMap<String, String>,
}

impl Item {
    /// The image the metrics are computed against, if any.
    pub fn ground_truth(&self) -> Option<&Path> {
        self.input.as_deref().or(self.truth.as_deref())
    }
}

/// Reads the items of `path`: a folder of PNGs, a `.csv` or a `.jsonl` manifest.
pub fn read_manifest(path: &Path) -> Result<Vec<Item>> {
    let items = if path.is_dir() {
        folder_items(path)?
    } else if !path.is_file() {
        bail!("{}: no such manifest file or folder", path.display());
    } else {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("{}: cannot read the manifest", path.display()))?;
        let base = path.parent().unwrap_or(Path::new("."));
        let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("");
        match ext.to_ascii_lowercase().as_str() {
            "csv" => csv_items(&text, base),
            "jsonl" => jsonl_items(&text, base),
            _ => bail!(
                "{}: a manifest is a folder of PNGs, a .csv or a .jsonl file",
                path.display()
            ),
        }
        .with_context(|| format!("manifest {}", path.display()))?
    };
    if items.is_empty() {
        bail!("{}: the manifest has no items", path.display());
    }
    check_ids(&items)?;
    Ok(items)
}

fn folder_items(dir: &Path) -> Result<Vec<Item>> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("{}: cannot list the folder", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.is_file()
                && p.extension()
                    .and_then(|e| e.to_str())
                    .is_some_and(|e| e.eq_ignore_ascii_case("png"))
        })
        .collect();
    files.sort();
    if files.is_empty() {
        bail!("{}: the folder has no .png images", dir.display());
    }
    files
        .into_iter()
        .enumerate()
        .map(|(index, p)| item(index, None, Some(p), None, None, BTreeMap::new()))
        .collect()
}

fn stem(p: &Path) -> String {
    p.file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default()
}

fn item(
    index: usize,
    id: Option<String>,
    input: Option<PathBuf>,
    measurement: Option<PathBuf>,
    truth: Option<PathBuf>,
    options: BTreeMap<String, String>,
) -> Result<Item> {
    let what = format!("item {}", index + 1);
    let source = match (&input, &measurement) {
        (Some(p), None) | (None, Some(p)) => p,
        (Some(_), Some(_)) => bail!("{what}: give `input` or `measurement`, not both"),
        (None, None) => bail!("{what}: no `input` image or `measurement` file"),
    };
    if input.is_some() && truth.is_some() {
        bail!("{what}: `truth` is for measurement items (an input image is its own truth)");
    }
    let id = id.filter(|s| !s.is_empty()).unwrap_or_else(|| stem(source));
    Ok(Item {
        index,
        id,
        input,
        measurement,
        truth,
        options,
    })
}

fn check_ids(items: &[Item]) -> Result<()> {
    let mut seen = std::collections::HashMap::new();
    for it in items {
        let ok = !it.id.is_empty()
            && !it.id.starts_with('.')
            && it
                .id
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
        if !ok {
            bail!(
                "item {}: id `{}` must be letters, digits, '.', '_' or '-' (not starting with '.'): it names the item's output folder",
                it.index + 1,
                it.id
            );
        }
        if let Some(first) = seen.insert(it.id.as_str(), it.index) {
            bail!(
                "items {} and {} have the same id `{}`; give each row a unique `id`",
                first + 1,
                it.index + 1,
                it.id
            );
        }
    }
    Ok(())
}

fn resolve(base: &Path, s: &str) -> Option<PathBuf> {
    if s.is_empty() {
        return None;
    }
    let p = Path::new(s);
    Some(if p.is_absolute() {
        p.to_path_buf()
    } else {
        base.join(p)
    })
}

/// Splits CSV text into rows of fields (RFC 4180 quoting; CRLF or LF line ends).
fn csv_rows(text: &str) -> Result<Vec<Vec<String>>> {
    let mut rows = Vec::new();
    let mut row = Vec::new();
    let mut field = String::new();
    let mut quoted = false;
    let mut chars = text.chars().peekable();
    let mut line = 1;
    while let Some(c) = chars.next() {
        match (quoted, c) {
            (true, '"') if chars.peek() == Some(&'"') => {
                chars.next();
                field.push('"');
            }
            (true, '"') => quoted = false,
            (true, c) => {
                if c == '\n' {
                    line += 1;
                }
                field.push(c)
            }
            (false, '"') if field.is_empty() => quoted = true,
            (false, ',') => row.push(std::mem::take(&mut field)),
            (false, '\r') => {}
            (false, '\n') => {
                row.push(std::mem::take(&mut field));
                rows.push(std::mem::take(&mut row));
                line += 1;
            }
            (false, c) => field.push(c),
        }
    }
    if quoted {
        bail!("line {line}: unterminated quoted field");
    }
    if !field.is_empty() || !row.is_empty() {
        row.push(field);
        rows.push(row);
    }
    rows.retain(|r| !(r.len() == 1 && r[0].trim().is_empty()));
    Ok(rows)
}

fn csv_items(text: &str, base: &Path) -> Result<Vec<Item>> {
    let rows = csv_rows(text)?;
    let Some((header, rows)) = rows.split_first() else {
        bail!("empty CSV (it needs a header row: id,input,measurement,truth,<task options>)");
    };
    let header: Vec<String> = header.iter().map(|h| h.trim().to_string()).collect();
    if !header.iter().any(|h| h == "input" || h == "measurement") {
        bail!("the header row has neither an `input` nor a `measurement` column: {header:?}");
    }
    rows.iter()
        .enumerate()
        .map(|(index, r)| {
            if r.len() != header.len() {
                bail!(
                    "row {}: {} fields, the header has {}",
                    index + 2,
                    r.len(),
                    header.len()
                );
            }
            let mut fields: BTreeMap<&str, String> = BTreeMap::new();
            let mut options = BTreeMap::new();
            for (h, v) in header.iter().zip(r) {
                let v = v.trim().to_string();
                match h.as_str() {
                    "id" | "input" | "measurement" | "truth" => {
                        fields.insert(h.as_str(), v);
                    }
                    _ if v.is_empty() => {}
                    _ => {
                        options.insert(h.clone(), v);
                    }
                }
            }
            let path = |k: &str| fields.get(k).and_then(|v| resolve(base, v));
            item(
                index,
                fields.get("id").cloned(),
                path("input"),
                path("measurement"),
                path("truth"),
                options,
            )
            .with_context(|| format!("row {}", index + 2))
        })
        .collect()
}

fn jsonl_items(text: &str, base: &Path) -> Result<Vec<Item>> {
    let mut items = Vec::new();
    for (n, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let what = format!("line {}", n + 1);
        let v: Value = serde_json::from_str(line).with_context(|| format!("{what}: not JSON"))?;
        let Some(obj) = v.as_object() else {
            bail!("{what}: not a JSON object");
        };
        let mut options = BTreeMap::new();
        for (k, v) in obj {
            match (k.as_str(), v) {
                ("id" | "input" | "measurement" | "truth", Value::String(_) | Value::Null) => {}
                ("id" | "input" | "measurement" | "truth", _) => {
                    bail!("{what}: `{k}` must be a string")
                }
                ("options", Value::Object(o)) => {
                    for (name, val) in o {
                        let text = match val {
                            Value::String(s) => s.clone(),
                            Value::Number(x) => x.to_string(),
                            _ => bail!("{what}: option `{name}` must be a number or a string"),
                        };
                        options.insert(name.clone(), text);
                    }
                }
                ("options", _) => bail!("{what}: `options` must be an object"),
                _ => bail!(
                    "{what}: unknown key `{k}` (keys: id, input, measurement, truth, options)"
                ),
            }
        }
        let s = |k: &str| obj.get(k).and_then(Value::as_str).map(str::to_string);
        let path = |k: &str| s(k).and_then(|v| resolve(base, &v));
        let it = item(
            items.len(),
            s("id"),
            path("input"),
            path("measurement"),
            path("truth"),
            options,
        )
        .with_context(|| what.clone())?;
        items.push(it);
    }
    Ok(items)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_quotes_and_options() {
        let text = "id,input,noise-sigma,keep-fraction\r\na,x/a.png,0.1,\n\"b,1\",\"/abs/b \"\"q\"\".png\",,0.3\n\n";
        let rows = csv_rows(text).unwrap();
        assert_eq!(rows[1], vec!["a", "x/a.png", "0.1", ""]);
        assert_eq!(rows[2], vec!["b,1", "/abs/b \"q\".png", "", "0.3"]);
        let err = csv_items(text, Path::new("/m")).unwrap();
        assert_eq!(err[0].input.as_deref(), Some(Path::new("/m/x/a.png")));
        assert_eq!(err[0].options.get("noise-sigma").unwrap(), "0.1");
        assert!(!err[0].options.contains_key("keep-fraction"));
        assert_eq!(err[1].input.as_deref(), Some(Path::new("/abs/b \"q\".png")));
        // The id "b,1" is not a safe folder name.
        assert!(check_ids(&err).is_err());
        assert!(csv_rows("a,\"b\n").is_err());
    }

    #[test]
    fn jsonl_items_and_errors() {
        let text = "{\"input\": \"d/0003.png\", \"options\": {\"noise-sigma\": 0.2}}\n\n{\"id\": \"m1\", \"measurement\": \"y.npy\", \"truth\": \"t.png\"}\n";
        let items = jsonl_items(text, Path::new("base")).unwrap();
        assert_eq!(items[0].id, "0003");
        assert_eq!(items[0].options.get("noise-sigma").unwrap(), "0.2");
        assert_eq!(items[1].index, 1);
        assert_eq!(items[1].ground_truth(), Some(Path::new("base/t.png")));
        for bad in [
            "{\"inptu\": \"a.png\"}",
            "{\"input\": \"a.png\", \"measurement\": \"y.npy\"}",
            "{}",
            "[1]",
            "{\"input\": 3}",
            "{\"input\": \"a.png\", \"truth\": \"b.png\"}",
        ] {
            assert!(jsonl_items(bad, Path::new(".")).is_err(), "{bad}");
        }
        let dup = jsonl_items(
            "{\"input\": \"a/x.png\"}\n{\"input\": \"b/x.png\"}",
            Path::new("."),
        )
        .unwrap();
        let e = check_ids(&dup).unwrap_err().to_string();
        assert!(e.contains("same id `x`"), "{e}");
    }
}
