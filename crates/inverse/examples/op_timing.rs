//! Times one likelihood-gradient evaluation and one baseline per task on a 3 × 256 × 256 image.
//! `cargo run --release -p genprior-inverse --example op_timing`

use std::time::Instant;

use genprior_inverse::{build_task, find_task, task_names, OptionDefault, TaskOptions};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let shape = [3, 256, 256];
    let n: usize = shape.iter().product();
    let mut rng = StdRng::seed_from_u64(0);
    let x: Vec<f64> = (0..n).map(|_| rng.random_range(-1.0..1.0)).collect();
    for t in task_names() {
        let needs_input = find_task(t)?
            .options()
            .iter()
            .any(|o| o.default == OptionDefault::Required);
        if t == "cs" || needs_input {
            continue; // dense CS does not fit 256² images; the mask task needs a mask
        }
        let mut spec = TaskOptions::new(t)?;
        spec.set("likelihood-sigma", 0.05)?;
        let op = build_task(&spec, shape)?;
        let y = op.simulate_host(&x, &mut rng)?;
        let s = Instant::now();
        let reps = 5;
        for _ in 0..reps {
            op.log_likelihood_and_grad_host(&x, &y)?;
        }
        let g = s.elapsed().as_secs_f64() / reps as f64;
        let s = Instant::now();
        op.baseline_host(&y)?;
        let b = s.elapsed().as_secs_f64();
        println!(
            "{t:16} L+grad {:8.2} ms   baseline {:8.2} ms",
            g * 1e3,
            b * 1e3
        );
    }
    Ok(())
}
