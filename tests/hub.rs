//! The Hub download path for real, against a local HTTP server that serves the Hub's
//! file layout (`/{org}/{name}/resolve/{revision}/{file}` with the `x-repo-commit`,
//! `etag` and `Content-Range` headers hf-hub reads), then the same model offline from
//! the cache with `HF_HUB_OFFLINE=1`.

mod common;

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

use common::*;

const COMMIT: &str = "0123456789abcdef0123456789abcdef01234567";

struct HubServer {
    url: String,
    stop: Arc<AtomicBool>,
    requests: Arc<AtomicUsize>,
}

impl HubServer {
    /// Serve `files` (URL path after the host → file on disk) on a loopback port.
    fn start(files: HashMap<String, PathBuf>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let stop = Arc::new(AtomicBool::new(false));
        let requests = Arc::new(AtomicUsize::new(0));
        let (s2, r2) = (stop.clone(), requests.clone());
        std::thread::spawn(move || {
            // Bounded: at most 10 minutes or until stopped.
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(600);
            while !s2.load(Ordering::SeqCst) && std::time::Instant::now() < deadline {
                match listener.accept() {
                    Ok((stream, _)) => {
                        r2.fetch_add(1, Ordering::SeqCst);
                        let _ = serve(stream, &files);
                    }
                    Err(_) => std::thread::sleep(std::time::Duration::from_millis(5)),
                }
            }
        });
        Self {
            url,
            stop,
            requests,
        }
    }
}

impl Drop for HubServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

fn serve(mut stream: TcpStream, files: &HashMap<String, PathBuf>) -> std::io::Result<()> {
    stream.set_nonblocking(false)?;
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut line = String::new();
    reader.read_line(&mut line)?;
    let path = line.split_whitespace().nth(1).unwrap_or("/").to_string();
    let mut range: Option<(u64, Option<u64>)> = None;
    loop {
        let mut h = String::new();
        if reader.read_line(&mut h)? == 0 || h == "\r\n" {
            break;
        }
        let lower = h.to_ascii_lowercase();
        if let Some(r) = lower.strip_prefix("range: bytes=") {
            let r = r.trim();
            let (a, b) = r.split_once('-').unwrap_or((r, ""));
            range = Some((a.parse().unwrap_or(0), b.parse().ok()));
        }
    }
    let Some(file) = files.get(&path) else {
        let body = b"Entry not found";
        write!(
            stream,
            "HTTP/1.1 404 Not Found\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            body.len()
        )?;
        return stream.write_all(body);
    };
    let data = std::fs::read(file)?;
    let n = data.len() as u64;
    let (start, end) = match range {
        Some((a, b)) => (a.min(n), b.map(|b| (b + 1).min(n)).unwrap_or(n)),
        None => (0, n),
    };
    let etag = format!(
        "{:016x}{:08x}",
        n,
        data.iter()
            .fold(0u32, |h, &b| h.wrapping_mul(31).wrapping_add(b as u32))
    );
    write!(
        stream,
        "HTTP/1.1 206 Partial Content\r\nContent-Length: {}\r\nContent-Range: bytes {}-{}/{}\r\nETag: \"{}\"\r\nX-Repo-Commit: {}\r\nConnection: close\r\n\r\n",
        end - start,
        start,
        end.saturating_sub(1),
        n,
        etag,
        COMMIT
    )?;
    stream.write_all(&data[start as usize..end as usize])
}

fn files_for(
    repo: &str,
    prefix: &str,
    dir: &std::path::Path,
    names: &[&str],
) -> Vec<(String, PathBuf)> {
    names
        .iter()
        .map(|n| (format!("/{repo}/resolve/main/{prefix}{n}"), dir.join(n)))
        .collect()
}

#[test]
fn download_from_local_hub_then_load_offline() {
    let model = fixtures().join("unet2d/positional_null_heads/model");
    let mut files: HashMap<String, PathBuf> = HashMap::new();
    // A UNet2DModel repo (files at the root, safetensors).
    files.extend(files_for(
        "genprior-test/tiny-unet",
        "",
        &model,
        &[
            "config.json",
            "diffusion_pytorch_model.safetensors",
            "scheduler_config.json",
        ],
    ));
    // A pipeline repo (unet/ + scheduler/ subfolders, only a .bin).
    let bin_model = fixtures().join("unet2d/scale_shift_heads/bin");
    files.extend(files_for(
        "genprior-test/tiny-pipeline",
        "unet/",
        &bin_model,
        &["config.json", "diffusion_pytorch_model.bin"],
    ));
    files.insert(
        "/genprior-test/tiny-pipeline/resolve/main/scheduler/scheduler_config.json".into(),
        model.join("scheduler_config.json"),
    );
    let server = HubServer::start(files);
    let home = temp_dir("hfhome");

    for (repo, params) in [
        ("genprior-test/tiny-unet", "702499"),
        ("genprior-test/tiny-pipeline", "460386"),
    ] {
        let o = bin()
            .args(["inspect", "--device", "cpu", "--model", repo])
            .env("HF_ENDPOINT", &server.url)
            .env("HF_HOME", &home)
            .env_remove("HF_HUB_CACHE")
            .env_remove("HF_HUB_OFFLINE")
            .output()
            .unwrap();
        assert_success(&o);
        let out = stdout(&o);
        assert!(out.contains(params), "{repo}: {out}");
        assert!(out.contains(&format!("hub {repo}@main")), "{out}");
        let cache = home
            .join("hub")
            .join(format!("models--{}", repo.replace('/', "--")));
        assert!(
            cache.join("blobs").is_dir(),
            "no blobs in {}",
            cache.display()
        );
        assert_eq!(
            std::fs::read_to_string(cache.join("refs/main"))
                .unwrap()
                .trim(),
            COMMIT
        );
        assert!(cache.join("snapshots").join(COMMIT).is_dir());
    }
    let served = server.requests.load(Ordering::SeqCst);
    assert!(served >= 6, "only {served} requests reached the server");
    drop(server);

    // Offline: the cache alone serves both models, with no server running.
    for repo in ["genprior-test/tiny-unet", "genprior-test/tiny-pipeline"] {
        let o = bin()
            .args(["inspect", "--device", "cpu", "--model", repo])
            .env("HF_ENDPOINT", "http://127.0.0.1:9")
            .env("HF_HOME", &home)
            .env("HF_HUB_OFFLINE", "1")
            .output()
            .unwrap();
        assert_success(&o);
    }
    // Offline and not cached: a clear error naming the missing file.
    let o = bin()
        .args([
            "inspect",
            "--device",
            "cpu",
            "--model",
            "genprior-test/not-cached",
        ])
        .env("HF_HOME", &home)
        .env("HF_HUB_OFFLINE", "1")
        .output()
        .unwrap();
    assert_clean_error(&o, &["HF_HUB_OFFLINE", "config.json", "not-cached"]);
}

#[test]
fn unknown_repo_on_the_hub_is_a_clear_error() {
    let server = HubServer::start(HashMap::new());
    let home = temp_dir("hfhome404");
    let o = bin()
        .args([
            "inspect",
            "--device",
            "cpu",
            "--model",
            "genprior-test/absent",
        ])
        .env("HF_ENDPOINT", &server.url)
        .env("HF_HOME", &home)
        .env_remove("HF_HUB_OFFLINE")
        .output()
        .unwrap();
    assert_clean_error(&o, &["genprior-test/absent", "config.json"]);
}
