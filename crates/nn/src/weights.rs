//! Checkpoint tensors by name: memory-mapped safetensors or PyTorch pickles.
//!
//! [`Weights`] is a small `VarBuilder`-like view: `w.pp("down_blocks").pp(0)` walks the
//! checkpoint's key tree, and [`Weights::get`] returns a tensor of an expected shape,
//! converted to the model dtype and device, or an error that names the tensor (and
//! both shapes on a mismatch). Every tensor handed out is recorded, so after building a
//! model [`WeightStore::check_all_used`] can reject a checkpoint of another architecture.
//!
//! PyTorch pickles are read with candle's pickle *interpreter*, which only rebuilds
//! data: it never imports modules or calls Python code. Anything that is not a tensor
//! inside a plain dict is rejected by [`validate_pickle`].

use std::cell::RefCell;
use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::rc::Rc;

use candle_core::{DType, Device, Tensor};

use crate::error::{NnError, Result};

enum Backend {
    Safetensors(candle_core::safetensors::MmapedSafetensors),
    Tensors(HashMap<String, Tensor>),
    /// Random weights of whatever shape is asked for (benchmarks of an architecture,
    /// parameter counting): seeded, deterministic per tensor name.
    Random {
        seed: u64,
        shapes: RefCell<std::collections::BTreeMap<String, Vec<usize>>>,
    },
}

/// Deterministic N(0, 1) values from a 64-bit seed (splitmix64 + Box–Muller).
fn normal_values(seed: u64, n: usize) -> Vec<f32> {
    let mut state = seed;
    let mut next = || {
        state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        ((z >> 11) as f64 + 0.5) / (1u64 << 53) as f64
    };
    let mut out = Vec::with_capacity(n + 1);
    while out.len() < n {
        let (u1, u2) = (next(), next());
        let r = (-2.0 * u1.ln()).sqrt();
        let a = 2.0 * std::f64::consts::PI * u2;
        out.push((r * a.cos()) as f32);
        out.push((r * a.sin()) as f32);
    }
    out.truncate(n);
    out
}

fn name_hash(name: &str) -> u64 {
    // FNV-1a: stable across runs and platforms.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in name.bytes() {
        h ^= b as u64;
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// All tensors of one checkpoint file plus the set of names used so far.
pub struct WeightStore {
    backend: Backend,
    path: PathBuf,
    names: BTreeSet<String>,
    used: RefCell<BTreeSet<String>>,
    /// Maps the names the model asks for to the names present in the file
    /// (e.g. diffusers' deprecated attention names).
    aliases: HashMap<String, String>,
    file_dtype: Option<DType>,
}

fn file_label(path: &Path) -> String {
    path.display().to_string()
}

/// Run a closure that parses untrusted bytes; a panic inside a third-party parser becomes
/// a [`NnError::CorruptWeights`] instead of aborting the program.
fn guarded<T>(path: &Path, f: impl FnOnce() -> candle_core::Result<T>) -> Result<T> {
    let prev = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let res = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f));
    std::panic::set_hook(prev);
    match res {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(NnError::CorruptWeights {
            path: path.to_path_buf(),
            msg: e.to_string(),
        }),
        Err(_) => Err(NnError::CorruptWeights {
            path: path.to_path_buf(),
            msg: "the file is malformed (the parser gave up)".into(),
        }),
    }
}

impl WeightStore {
    /// Open a `.safetensors` file (memory-mapped) or a PyTorch `.bin`/`.pt`/`.pth` pickle
    /// (chosen by content, not extension).
    pub fn open(path: &Path) -> Result<Self> {
        let meta = std::fs::metadata(path).map_err(|e| NnError::Io {
            path: path.to_path_buf(),
            source: e,
        })?;
        if meta.len() == 0 {
            return Err(NnError::CorruptWeights {
                path: path.to_path_buf(),
                msg: "the file is empty".into(),
            });
        }
        let mut magic = [0u8; 4];
        {
            use std::io::Read;
            let mut f = std::fs::File::open(path).map_err(|e| NnError::Io {
                path: path.to_path_buf(),
                source: e,
            })?;
            let _ = f.read(&mut magic).map_err(|e| NnError::Io {
                path: path.to_path_buf(),
                source: e,
            })?;
        }
        if &magic == b"PK\x03\x04" {
            Self::open_pickle(path)
        } else {
            Self::open_safetensors(path)
        }
    }

    fn open_safetensors(path: &Path) -> Result<Self> {
        // SAFETY (mmap): the file is opened read-only; modifying it while genprior runs
        // is not supported, as for every memory-mapped checkpoint loader.
        let st = guarded(path, || unsafe {
            candle_core::safetensors::MmapedSafetensors::new(path)
        })?;
        let tensors = st.tensors();
        if tensors.is_empty() {
            return Err(NnError::CorruptWeights {
                path: path.to_path_buf(),
                msg: "the safetensors file holds no tensors".into(),
            });
        }
        let file_dtype = tensors.first().and_then(|(_, v)| st_dtype(v.dtype()));
        let names = tensors.into_iter().map(|(n, _)| n).collect();
        Ok(Self {
            backend: Backend::Safetensors(st),
            path: path.to_path_buf(),
            names,
            used: RefCell::new(BTreeSet::new()),
            aliases: HashMap::new(),
            file_dtype,
        })
    }

    fn open_pickle(path: &Path) -> Result<Self> {
        validate_pickle(path)?;
        let mut list = guarded(path, || candle_core::pickle::read_all(path))?;
        if list.is_empty() {
            // Training checkpoints often nest the weights under "state_dict".
            list = guarded(path, || {
                candle_core::pickle::read_all_with_key(path, Some("state_dict"))
            })
            .unwrap_or_default();
        }
        if list.is_empty() {
            return Err(NnError::CorruptWeights {
                path: path.to_path_buf(),
                msg: "the pickle holds no tensors (expected a state dict)".into(),
            });
        }
        let file_dtype = list.first().map(|(_, t)| t.dtype());
        let names = list.iter().map(|(n, _)| n.clone()).collect();
        Ok(Self {
            backend: Backend::Tensors(list.into_iter().collect()),
            path: path.to_path_buf(),
            names,
            used: RefCell::new(BTreeSet::new()),
            aliases: HashMap::new(),
            file_dtype,
        })
    }

    /// Build a store from in-memory tensors (random-weight models, tests).
    pub fn from_tensors(tensors: HashMap<String, Tensor>, label: &str) -> Self {
        let names = tensors.keys().cloned().collect();
        Self {
            backend: Backend::Tensors(tensors),
            path: PathBuf::from(label),
            names,
            used: RefCell::new(BTreeSet::new()),
            aliases: HashMap::new(),
            file_dtype: None,
        }
    }

    /// A store that hands out random tensors of any requested shape: weights of 2+
    /// dimensions ~ N(0, 1/fan_in), 1-D `weight`s (norm scales) = 1, biases = 0.
    pub fn random(seed: u64) -> Self {
        Self {
            backend: Backend::Random {
                seed,
                shapes: RefCell::new(Default::default()),
            },
            path: PathBuf::from("<random weights>"),
            names: BTreeSet::new(),
            used: RefCell::new(BTreeSet::new()),
            aliases: HashMap::new(),
            file_dtype: None,
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Tensor names present in the file.
    pub fn names(&self) -> &BTreeSet<String> {
        &self.names
    }

    /// The dtype the checkpoint stores its (first) tensor in.
    pub fn file_dtype(&self) -> Option<DType> {
        self.file_dtype
    }

    pub fn contains(&self, name: &str) -> bool {
        self.names.contains(name) || self.aliases.contains_key(name)
    }

    /// Let requests for `wanted` read the file's `present` tensor.
    pub fn add_alias(&mut self, wanted: String, present: String) {
        self.aliases.insert(wanted, present);
    }

    /// Total number of scalar parameters in the file (for random weights: in the
    /// tensors handed out so far).
    pub fn num_parameters(&self) -> Result<usize> {
        if let Backend::Random { shapes, .. } = &self.backend {
            return Ok(shapes
                .borrow()
                .values()
                .map(|s| s.iter().product::<usize>())
                .sum());
        }
        let mut n = 0;
        for name in &self.names {
            n += self.shape_of(name)?.iter().product::<usize>();
        }
        Ok(n)
    }

    /// The names and shapes handed out so far by a random-weight store (empty for a file):
    /// the parameter list of the architecture it was built for, in name order.
    pub fn requested_shapes(&self) -> Vec<(String, Vec<usize>)> {
        match &self.backend {
            Backend::Random { shapes, .. } => shapes
                .borrow()
                .iter()
                .map(|(n, s)| (n.clone(), s.clone()))
                .collect(),
            _ => Vec::new(),
        }
    }

    fn shape_of(&self, name: &str) -> Result<Vec<usize>> {
        match &self.backend {
            Backend::Safetensors(st) => Ok(st.get(name)?.shape().to_vec()),
            Backend::Tensors(m) => Ok(m.get(name).map(|t| t.dims().to_vec()).unwrap_or_default()),
            Backend::Random { shapes, .. } => {
                Ok(shapes.borrow().get(name).cloned().unwrap_or_default())
            }
        }
    }

    fn load(&self, name: &str, shape: &[usize], dtype: DType, device: &Device) -> Result<Tensor> {
        if let Backend::Random { seed, shapes } = &self.backend {
            shapes.borrow_mut().insert(name.to_string(), shape.to_vec());
            let n: usize = shape.iter().product();
            let vals = if shape.len() == 1 {
                let v = if name.ends_with("weight") { 1.0 } else { 0.0 };
                vec![v; n]
            } else {
                let fan_in: usize = shape[1..].iter().product();
                let std = 1.0 / (fan_in.max(1) as f32).sqrt();
                normal_values(seed ^ name_hash(name), n)
                    .into_iter()
                    .map(|x| x * std)
                    .collect()
            };
            let t = Tensor::from_vec(vals, shape, &Device::Cpu)?;
            return Ok(t.to_dtype(dtype)?.to_device(device)?);
        }
        let file = file_label(&self.path);
        let actual = self.aliases.get(name).map(String::as_str).unwrap_or(name);
        if !self.names.contains(actual) {
            return Err(NnError::MissingTensor {
                file,
                name: name.to_string(),
            });
        }
        let got = self.shape_of(actual)?;
        if got != shape {
            return Err(NnError::ShapeMismatch {
                file,
                name: actual.to_string(),
                expected: shape.to_vec(),
                got,
            });
        }
        let t = match &self.backend {
            Backend::Safetensors(st) => guarded(&self.path, || st.load(actual, &Device::Cpu))?,
            Backend::Tensors(m) => m[actual].clone(),
            Backend::Random { .. } => unreachable!("handled above"),
        };
        self.used.borrow_mut().insert(actual.to_string());
        Ok(t.to_dtype(dtype)?.to_device(device)?)
    }

    /// Error if some tensors of the file were never requested: the checkpoint belongs
    /// to a different architecture than the config describes.
    pub fn check_all_used(&self) -> Result<()> {
        let used = self.used.borrow();
        let unused: Vec<&String> = self.names.iter().filter(|n| !used.contains(*n)).collect();
        if let Some(first) = unused.first() {
            return Err(NnError::UnusedTensors {
                file: file_label(&self.path),
                count: unused.len(),
                example: (*first).clone(),
            });
        }
        Ok(())
    }

    /// A root [`Weights`] view of this store.
    pub fn root(self: &Rc<Self>, dtype: DType, device: &Device) -> Weights {
        Weights {
            store: self.clone(),
            prefix: String::new(),
            dtype,
            device: device.clone(),
        }
    }
}

fn st_dtype(d: safetensors::Dtype) -> Option<DType> {
    use safetensors::Dtype as S;
    Some(match d {
        S::F32 => DType::F32,
        S::F16 => DType::F16,
        S::BF16 => DType::BF16,
        S::F64 => DType::F64,
        _ => return None,
    })
}

/// A path into a [`WeightStore`], with the dtype and device tensors are delivered in.
#[derive(Clone)]
pub struct Weights {
    store: Rc<WeightStore>,
    prefix: String,
    dtype: DType,
    device: Device,
}

impl Weights {
    /// Descend into a child key (`"down_blocks"`, `0`, ...).
    pub fn pp<S: ToString>(&self, s: S) -> Self {
        let s = s.to_string();
        let prefix = if self.prefix.is_empty() {
            s
        } else {
            format!("{}.{}", self.prefix, s)
        };
        Self {
            store: self.store.clone(),
            prefix,
            dtype: self.dtype,
            device: self.device.clone(),
        }
    }

    fn full(&self, name: &str) -> String {
        if self.prefix.is_empty() {
            name.to_string()
        } else {
            format!("{}.{}", self.prefix, name)
        }
    }

    /// The tensor `name` under this path, which must have exactly `shape`.
    pub fn get(&self, shape: &[usize], name: &str) -> Result<Tensor> {
        self.store
            .load(&self.full(name), shape, self.dtype, &self.device)
    }

    pub fn contains(&self, name: &str) -> bool {
        self.store.contains(&self.full(name))
    }

    /// The dotted key of this path.
    pub fn prefix_name(&self) -> &str {
        &self.prefix
    }

    pub fn dtype(&self) -> DType {
        self.dtype
    }

    pub fn device(&self) -> &Device {
        &self.device
    }

    pub fn store(&self) -> &Rc<WeightStore> {
        &self.store
    }
}

/// Reject a PyTorch zip pickle whose `data.pkl` holds anything other than tensors in
/// plain containers (dicts, lists, tuples, strings, numbers). candle's interpreter never
/// executes code, but a checkpoint carrying other objects (optimizer state is fine,
/// custom classes are not) is not a state dict genprior understands.
pub fn validate_pickle(path: &Path) -> Result<()> {
    use candle_core::pickle::{Object, Stack};
    let corrupt = |msg: String| NnError::CorruptWeights {
        path: path.to_path_buf(),
        msg,
    };
    let file = std::fs::File::open(path).map_err(|e| NnError::Io {
        path: path.to_path_buf(),
        source: e,
    })?;
    let mut zip = zip::ZipArchive::new(std::io::BufReader::new(file))
        .map_err(|e| corrupt(format!("not a valid PyTorch zip checkpoint ({e})")))?;
    let names: Vec<String> = zip
        .file_names()
        .map(|f| f.map(|f| f.into_owned()))
        .collect::<std::result::Result<_, _>>()
        .map_err(|e| corrupt(format!("unreadable zip directory ({e})")))?;
    let pkl_name = names
        .into_iter()
        .find(|n| n.ends_with("data.pkl"))
        .ok_or_else(|| corrupt("no data.pkl inside the zip (not a PyTorch checkpoint)".into()))?;
    let reader = zip
        .by_name(&pkl_name)
        .map_err(|e| corrupt(format!("cannot read {pkl_name}: {e}")))?;
    let mut reader = std::io::BufReader::new(reader);
    let obj = guarded(path, || {
        let mut stack = Stack::empty();
        stack.read_loop(&mut reader)?;
        stack.finalize()
    })?;

    fn check(o: &Object, depth: usize) -> std::result::Result<(), String> {
        if depth > 64 {
            return Err("nesting too deep".into());
        }
        match o {
            Object::Class {
                module_name,
                class_name,
            } => {
                let allowed = match (module_name.as_str(), class_name.as_str()) {
                    ("collections", "OrderedDict") => true,
                    ("torch._utils", "_rebuild_tensor_v2" | "_rebuild_parameter") => true,
                    ("torch", c) => c.ends_with("Storage"),
                    _ => false,
                };
                if allowed {
                    Ok(())
                } else {
                    Err(format!(
                        "the pickle references `{module_name}.{class_name}`, which is not a tensor or a plain container"
                    ))
                }
            }
            Object::Int(_)
            | Object::Long(_)
            | Object::Float(_)
            | Object::Unicode(_)
            | Object::Bool(_)
            | Object::None
            | Object::Mark => Ok(()),
            Object::Tuple(v) | Object::List(v) => v.iter().try_for_each(|x| check(x, depth + 1)),
            Object::Dict(kv) => kv.iter().try_for_each(|(k, v)| {
                check(k, depth + 1)?;
                check(v, depth + 1)
            }),
            Object::Reduce { callable, args } => {
                check(callable, depth + 1)?;
                check(args, depth + 1)
            }
            Object::Build { callable, args } => {
                check(callable, depth + 1)?;
                check(args, depth + 1)
            }
            Object::PersistentLoad(p) => check(p, depth + 1),
        }
    }
    check(&obj, 0).map_err(corrupt)
}
