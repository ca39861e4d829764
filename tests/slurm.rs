//! `genprior batch` on a real Slurm: a single-node cluster (munged, slurmctld, slurmd from
//! Debian's `slurm-wlm` and `munge`) started on localhost with a generated `slurm.conf` runs
//! the recipe `examples/slurm/reconstruct.sbatch` as a 4-task array over 12 digits; one task
//! is cancelled mid-run (`scancel`) and resubmitted alone; `genprior merge` then finds every
//! item exactly once, and the outputs equal a single-process run bit for bit.
//!
//! Skipped, with a message, when the Slurm or munge binaries are missing or the daemons do
//! not come up (`.ci/run` installs and runs what it needs; it starts the daemons itself).

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{repo_root, stderr, temp_dir};
use serde_json::Value;

fn found(prog: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {prog}")])
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
        || Path::new("/usr/sbin").join(prog).is_file()
}

fn sbin(prog: &str) -> PathBuf {
    let p = Path::new("/usr/sbin").join(prog);
    if p.is_file() {
        p
    } else {
        PathBuf::from(prog)
    }
}

/// The daemons of a throw-away cluster; stopped on drop.
struct Cluster {
    dir: PathBuf,
    conf: PathBuf,
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for pid in ["slurmd.pid", "slurmctld.pid", "munged.pid"] {
            if let Ok(p) = std::fs::read_to_string(self.dir.join(pid)) {
                let _ = Command::new("kill").arg(p.trim()).status();
            }
        }
    }
}

impl Cluster {
    fn cmd(&self, prog: &str) -> Command {
        let mut c = Command::new(prog);
        c.env("SLURM_CONF", &self.conf);
        c
    }

    fn out(&self, prog: &str, args: &[&str]) -> Result<String, String> {
        let o = self
            .cmd(prog)
            .args(args)
            .output()
            .map_err(|e| e.to_string())?;
        if !o.status.success() {
            return Err(format!("{prog} {args:?}: {}", stderr(&o)));
        }
        Ok(String::from_utf8_lossy(&o.stdout).into_owned())
    }

    /// Starts munged, slurmctld and slurmd under `dir`; Err(why) if they do not come up.
    fn start(dir: &Path) -> Result<Self, String> {
        let host = String::from_utf8_lossy(
            &Command::new("hostname")
                .arg("-s")
                .output()
                .map_err(|e| e.to_string())?
                .stdout,
        )
        .trim()
        .to_string();
        let user = std::env::var("USER").unwrap_or_else(|_| "root".into());
        let port = 20000 + (std::process::id() % 20000) as u16;
        for sub in ["state", "spool", "log"] {
            std::fs::create_dir_all(dir.join(sub)).map_err(|e| e.to_string())?;
        }
        let key = dir.join("munge.key");
        std::fs::write(
            &key,
            (0..1024).map(|i| (i * 7 + 13) as u8).collect::<Vec<u8>>(),
        )
        .map_err(|e| e.to_string())?;
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600))
            .map_err(|e| e.to_string())?;
        let d = dir.display();
        let socket = format!("{d}/munge.socket");
        let ok = Command::new(sbin("munged"))
            .args(["--force", "--socket", &socket, "--key-file"])
            .arg(&key)
            .arg(format!("--pid-file={d}/munged.pid"))
            .arg(format!("--log-file={d}/log/munged.log"))
            .arg(format!("--seed-file={d}/munged.seed"))
            .status()
            .map_err(|e| format!("munged: {e}"))?;
        if !ok.success() {
            return Err("munged did not start".into());
        }
        let conf = dir.join("slurm.conf");
        let cpus = std::thread::available_parallelism().map_or(2, |n| n.get());
        let text = format!(
            "ClusterName=genprior-test\nSlurmctldHost={host}\nSlurmUser={user}\nSlurmdUser={user}\n\
AuthType=auth/munge\nAuthInfo=socket={socket}\nCredType=cred/munge\n\
SlurmctldPort={port}\nSlurmdPort={}\nStateSaveLocation={d}/state\nSlurmdSpoolDir={d}/spool\n\
SlurmctldPidFile={d}/slurmctld.pid\nSlurmdPidFile={d}/slurmd.pid\n\
SlurmctldLogFile={d}/log/slurmctld.log\nSlurmdLogFile={d}/log/slurmd.log\n\
ProctrackType=proctrack/linuxproc\nTaskPlugin=task/none\nSelectType=select/cons_tres\n\
SelectTypeParameters=CR_Core\nSchedulerType=sched/builtin\nReturnToService=2\nMpiDefault=none\n\
SwitchType=switch/none\nJobCompType=jobcomp/none\nAccountingStorageType=accounting_storage/none\n\
JobAcctGatherType=jobacct_gather/none\nKillWait=30\n\
NodeName={host} NodeAddr=127.0.0.1 CPUs={cpus} State=UNKNOWN\n\
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP\n",
            port + 1
        );
        std::fs::write(&conf, text).map_err(|e| e.to_string())?;
        let cluster = Cluster {
            dir: dir.to_path_buf(),
            conf,
        };
        for daemon in ["slurmctld", "slurmd"] {
            let st = cluster
                .cmd(sbin(daemon).to_str().unwrap_or(daemon))
                .status()
                .map_err(|e| format!("{daemon}: {e}"))?;
            if !st.success() {
                return Err(format!("{daemon} did not start (see {d}/log)"));
            }
        }
        let t = Instant::now();
        while t.elapsed() < Duration::from_secs(60) {
            if let Ok(s) = cluster.out("sinfo", &["-h", "-o", "%t"]) {
                if s.trim() == "idle" {
                    return Ok(cluster);
                }
            }
            std::thread::sleep(Duration::from_millis(250));
        }
        Err(format!("the Slurm node did not become idle (see {d}/log)"))
    }

    /// Submits the recipe for `array` with the run's settings; returns the job id.
    fn submit(&self, array: &str, env: &[(&str, String)]) -> String {
        let recipe = repo_root().join("examples/slurm/reconstruct.sbatch");
        let mut c = self.cmd("sbatch");
        c.args([
            "--parsable",
            &format!("--array={array}"),
            "--gres=none",
            "--cpus-per-task=1",
            &format!("--output={}/log/task-%A_%a.out", self.dir.display()),
        ])
        .arg(&recipe);
        for (k, v) in env {
            c.env(k, v);
        }
        let o = c.output().unwrap();
        assert!(o.status.success(), "sbatch: {}", stderr(&o));
        String::from_utf8_lossy(&o.stdout)
            .trim()
            .split(';')
            .next()
            .unwrap()
            .to_string()
    }

    /// States of the job's tasks still in the queue.
    fn queued(&self, job: &str) -> Vec<String> {
        self.out("squeue", &["-h", "-j", job, "-o", "%i %T"])
            .unwrap_or_default()
            .lines()
            .map(str::to_string)
            .collect()
    }

    fn wait_gone(&self, job: &str) {
        let t = Instant::now();
        while !self.queued(job).is_empty() {
            assert!(
                t.elapsed() < Duration::from_secs(600),
                "job {job} still queued: {:?}",
                self.queued(job)
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

fn done_ids(out: &Path, ids: &[String]) -> usize {
    ids.iter()
        .filter(|id| out.join("items").join(id).join("done.json").is_file())
        .count()
}

#[test]
fn slurm_array_with_a_cancelled_task_resubmitted_equals_one_process() {
    let missing: Vec<&str> = [
        "munged",
        "slurmctld",
        "slurmd",
        "sbatch",
        "squeue",
        "scancel",
    ]
    .into_iter()
    .filter(|p| !found(p))
    .collect();
    if !missing.is_empty() {
        eprintln!("SKIPPED: Slurm is not installed (missing {missing:?}; .ci/run installs slurm-wlm and munge)");
        return;
    }
    let d = temp_dir("slurm");
    let cluster = match Cluster::start(&d.join("cluster")) {
        Ok(c) => c,
        Err(why) => {
            eprintln!("SKIPPED: a local Slurm could not be started: {why}");
            return;
        }
    };
    // 12 digits: the 10 examples and two of them again under other names.
    let m = d.join("digits");
    std::fs::create_dir_all(&m).unwrap();
    let src = repo_root().join("examples/digits");
    let mut ids = Vec::new();
    for e in std::fs::read_dir(&src).unwrap() {
        let p = e.unwrap().path();
        std::fs::copy(&p, m.join(p.file_name().unwrap())).unwrap();
    }
    std::fs::copy(src.join("0000.png"), m.join("x0000.png")).unwrap();
    std::fs::copy(src.join("0001.png"), m.join("x0001.png")).unwrap();
    for e in std::fs::read_dir(&m).unwrap() {
        ids.push(
            e.unwrap()
                .path()
                .file_stem()
                .unwrap()
                .to_string_lossy()
                .into_owned(),
        );
    }
    ids.sort();
    let out = d.join("out");
    let bin = std::env::var("GENPRIOR_TEST_BIN")
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| env!("CARGO_BIN_EXE_genprior").to_string());
    let env = vec![
        ("GENPRIOR", bin.clone()),
        ("MANIFEST", m.display().to_string()),
        ("OUT", out.display().to_string()),
        ("SHARDS", "4".to_string()),
        ("TASK", "sr4".to_string()),
        ("METHOD", "dps".to_string()),
        ("SAMPLES", "2".to_string()),
        ("MICRO_BATCH", "1".to_string()),
        ("DEVICE", "cpu".to_string()),
        ("EXTRA", "--dps-steps 16".to_string()),
    ];
    let job = cluster.submit("0-3", &env);
    // Shard 1 does items 3, 4, 5: cancel it once it has finished one.
    let shard1: Vec<String> = ids[3..6].to_vec();
    let t = Instant::now();
    while done_ids(&out, &shard1) == 0 {
        assert!(
            t.elapsed() < Duration::from_secs(600),
            "task 1 made no progress: {:?}",
            cluster.queued(&job)
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    cluster.out("scancel", &[&format!("{job}_1")]).unwrap();
    cluster.wait_gone(&job);
    let after = done_ids(&out, &shard1);
    assert!(after < 3, "task 1 finished before it was cancelled");
    // Resubmit the cancelled task alone.
    let again = cluster.submit("1", &env);
    cluster.wait_gone(&again);
    let logs: Vec<String> = std::fs::read_dir(d.join("cluster/log"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.to_string_lossy().contains("task-"))
        .map(|p| std::fs::read_to_string(p).unwrap_or_default())
        .collect();
    let log_text = logs.join("\n---\n");
    assert!(
        log_text.contains(&format!("{after} already done")),
        "the resubmitted task did not resume: {log_text}"
    );
    let o = Command::new(&bin)
        .arg("merge")
        .arg("--out")
        .arg(&out)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let s: Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("summary.json")).unwrap()).unwrap();
    assert_eq!(s["complete"], true, "{log_text}");
    let listed: Vec<String> = s["per_item"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(listed, ids, "every item exactly once");
    let mut folders: Vec<String> = std::fs::read_dir(out.join("items"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    folders.sort();
    assert_eq!(folders, ids, "no duplicate or temporary folders");
    // One process, the same settings.
    let single = d.join("single");
    let o = Command::new(&bin)
        .args(["batch", "--manifest"])
        .arg(&m)
        .arg("--out")
        .arg(&single)
        .args([
            "--task",
            "sr4",
            "--method",
            "dps",
            "--samples",
            "2",
            "--micro-batch",
            "1",
            "--device",
            "cpu",
            "--dps-steps",
            "16",
        ])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    for id in &ids {
        for f in ["samples.npy", "measurement.npy"] {
            let a = std::fs::read(out.join("items").join(id).join(f)).unwrap();
            let b = std::fs::read(single.join("items").join(id).join(f)).unwrap();
            assert!(a == b, "{id}/{f} differs from the single-process run");
        }
    }
    drop(cluster);
}
