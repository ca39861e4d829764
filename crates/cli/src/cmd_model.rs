//! `genprior inspect` and `genprior predict`.

use std::path::PathBuf;

use anyhow::{bail, Result};
use candle_core::{DType, Tensor};

use crate::common::{self, ModelArgs};

#[derive(clap::Args, Debug)]
pub struct InspectArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// Print the report as JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

pub fn inspect(args: InspectArgs) -> Result<()> {
    let m = common::load_model(&args.model)?;
    let info = &m.info;
    if args.json {
        println!("{}", serde_json::to_string_pretty(info)?);
        return Ok(());
    }
    let c = &info.config;
    println!("source:            {}", info.source);
    println!("architecture:      {}", info.architecture);
    println!("config:            {}", info.config_path.display());
    println!(
        "weights:           {} ({})",
        info.weights_path.display(),
        info.format
    );
    println!("stored dtype:      {}", info.file_dtype);
    println!("running dtype:     {:?}", m.dtype);
    println!(
        "parameters:        {} ({:.2} M)",
        info.num_parameters,
        info.num_parameters as f64 / 1e6
    );
    if info.architecture.starts_with("guided-diffusion") {
        for k in [
            "image_size",
            "in_channels",
            "num_channels",
            "num_res_blocks",
            "channel_mult",
            "attention_resolutions",
            "num_heads",
            "num_head_channels",
            "use_scale_shift_norm",
            "resblock_updown",
            "use_new_attention_order",
            "learn_sigma",
            "class_cond",
        ] {
            println!(
                "{k:<22} {}",
                c.get(k).map(|v| v.to_string()).unwrap_or_default()
            );
        }
        return Ok(());
    }
    let get = |k: &str| {
        c.get(k)
            .map(|v| v.to_string())
            .unwrap_or_else(|| "(default)".into())
    };
    println!("sample_size:       {}", get("sample_size"));
    println!(
        "channels in/out:   {} / {}",
        get("in_channels"),
        get("out_channels")
    );
    println!("block_out_channels {}", get("block_out_channels"));
    println!("down_block_types:  {}", get("down_block_types"));
    println!("up_block_types:    {}", get("up_block_types"));
    println!("layers_per_block:  {}", get("layers_per_block"));
    println!("time embedding:    {}", get("time_embedding_type"));
    println!("attention_head_dim {}", get("attention_head_dim"));
    println!("time scale shift:  {}", get("resnet_time_scale_shift"));
    println!(
        "scheduler config:  {}",
        m.scheduler_config()
            .map(|p| p.display().to_string())
            .unwrap_or_else(|| "none".into())
    );
    Ok(())
}

#[derive(clap::Args, Debug)]
pub struct PredictArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// Input batch, .npy, shape (B, C, H, W) (or (C, H, W) for one image), any float dtype.
    #[arg(long)]
    pub input: PathBuf,
    /// One timestep for the whole batch (training-time index; fractional allowed).
    #[arg(
        long,
        conflicts_with = "timesteps",
        required_unless_present = "timesteps"
    )]
    pub timestep: Option<f64>,
    /// One timestep per image, .npy of shape (B,).
    #[arg(long)]
    pub timesteps: Option<PathBuf>,
    /// Where to write the raw network output (.npy, f32).
    #[arg(long)]
    pub out: PathBuf,
}

pub fn predict(args: PredictArgs) -> Result<()> {
    common::check_parent(&args.out)?;
    let m = common::load_model(&args.model)?;
    let mut x = common::read_npy(&args.input, "input batch", &m.device)?;
    if x.rank() == 3 {
        x = x.unsqueeze(0)?;
    }
    if x.rank() != 4 {
        bail!(
            "{}: expected shape (B, C, H, W), got {:?}",
            args.input.display(),
            x.dims()
        );
    }
    let b = x.dim(0)?;
    let t = match (&args.timesteps, args.timestep) {
        (Some(p), _) => {
            let t = common::read_npy(p, "timesteps", &m.device)?.flatten_all()?;
            if t.dim(0)? != b {
                bail!(
                    "{}: {} timesteps for a batch of {b}",
                    p.display(),
                    t.dim(0)?
                );
            }
            t
        }
        (None, Some(t)) => {
            if !t.is_finite() {
                bail!("--timestep must be finite");
            }
            Tensor::full(t as f32, b, &m.device)?
        }
        (None, None) => bail!("give --timestep or --timesteps"),
    };
    let y = m.net.forward(&x, &t.to_dtype(DType::F32)?)?;
    common::write_npy(&y, &args.out)?;
    eprintln!(
        "wrote {} {:?} ({} on {:?})",
        args.out.display(),
        y.dims(),
        m.info.source,
        m.dtype
    );
    Ok(())
}

#[derive(clap::Args, Debug)]
pub struct ConvertArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// Output folder: model.safetensors + config.json (guided-diffusion argument names).
    #[arg(long)]
    pub out: PathBuf,
}

/// `genprior convert`: a guided-diffusion ADM checkpoint (.pt) → safetensors + config.
pub fn convert(args: ConvertArgs) -> Result<()> {
    let m = common::load_model_on(&args.model, &candle_core::Device::Cpu, DType::F32)?;
    if !m.info.architecture.starts_with("guided-diffusion") {
        bail!(
            "convert writes ADM checkpoints as safetensors; {} is already a diffusers model",
            m.info.source
        );
    }
    let cfg: genprior_nn::AdmConfig =
        genprior_nn::AdmConfig::from_json_str(&m.info.config.to_string(), &m.info.config_path)?;
    let (st, cfgp) = genprior_nn::adm::convert_checkpoint(&m.info.weights_path, &cfg, &args.out)?;
    println!("wrote {} and {}", st.display(), cfgp.display());
    Ok(())
}
