//! Progress bars for sampler runs: a top-level bar (DPnP outer steps, DPS steps) and an inner
//! bar, shown once the sampler reports inner progress (DDS steps, warm starts, PCS).

use genprior_posterior::MethodProgress;
use indicatif::{MultiProgress, ProgressBar};

use crate::common::bar_style;

pub struct SamplerBars {
    multi: MultiProgress,
    outer: ProgressBar,
    inner: Option<ProgressBar>,
    /// Steps of earlier batches, added to the outer position.
    offset: usize,
}

impl SamplerBars {
    /// Bars under `multi`, the outer one labelled `label` with `total` steps.
    pub fn new(multi: &MultiProgress, label: &str, total: usize) -> Self {
        let outer = multi.add(ProgressBar::new(total as u64));
        outer.set_style(bar_style(&format!(
            "{label:<6}{{bar:30}} {{pos}}/{{len}}  {{per_sec}}  {{msg}}"
        )));
        Self {
            multi: multi.clone(),
            outer,
            inner: None,
            offset: 0,
        }
    }

    /// Starts a new pair: `total` outer steps, message `msg`.
    pub fn reset(&mut self, total: usize, msg: String) {
        self.outer.set_length(total as u64);
        self.outer.set_position(0);
        self.outer.set_message(msg);
        self.offset = 0;
    }

    /// Steps of earlier batches (the outer position is `offset + step`).
    pub fn set_offset(&mut self, offset: usize) {
        self.offset = offset;
    }

    pub fn update(&mut self, e: MethodProgress) {
        match e {
            MethodProgress::Step { step, status, .. } => {
                self.outer.set_position((self.offset + step) as u64);
                if !status.is_empty() {
                    self.outer.set_message(status);
                }
            }
            MethodProgress::Inner { step, total, label } => {
                let multi = &self.multi;
                let bar = self.inner.get_or_insert_with(|| {
                    let b = multi.add(ProgressBar::new(0));
                    b.set_style(bar_style("inner {bar:30} {pos}/{len}  {msg}"));
                    b
                });
                if total > 0 {
                    bar.set_length(total as u64);
                    bar.set_position(step as u64);
                }
                bar.set_message(label);
            }
        }
    }

    pub fn finish(self) {
        if let Some(b) = self.inner {
            b.finish_and_clear();
        }
        self.outer.finish_and_clear();
    }
}
