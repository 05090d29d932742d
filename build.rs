//! Embeds build facts (version, git commit, build date) and the `assets/` tree into the
//! binary. Each asset is stored gzip-compressed, with a strong ETag from the SHA-256 of
//! its original bytes.

use std::fmt::Write as _;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{SystemTime, UNIX_EPOCH};

use flate2::Compression;
use flate2::write::GzEncoder;
use sha2::{Digest, Sha256};

fn main() {
    let out_dir = PathBuf::from(std::env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    println!("cargo:rustc-env=GIT_COMMIT_CAIRN={}", git_commit());
    println!("cargo:rustc-env=BUILD_DATE_CAIRN={}", build_date());
    println!("cargo:rerun-if-env-changed=SOURCE_DATE_EPOCH");
    println!("cargo:rerun-if-env-changed=SOURCE_GIT_COMMIT");
    embed_assets(Path::new("assets"), &out_dir);
}

fn git_commit() -> String {
    if let Ok(commit) = std::env::var("SOURCE_GIT_COMMIT") {
        return commit;
    }
    for watched in [".git/HEAD", ".git/packed-refs"] {
        if Path::new(watched).exists() {
            println!("cargo:rerun-if-changed={watched}");
        }
    }
    if let Ok(head) = std::fs::read_to_string(".git/HEAD")
        && let Some(reference) = head.trim().strip_prefix("ref: ")
    {
        let path = Path::new(".git").join(reference);
        if path.exists() {
            println!("cargo:rerun-if-changed={}", path.display());
        }
    }
    let dirty = Command::new("git")
        .args(["status", "--porcelain", "--untracked-files=no"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .is_some_and(|o| !o.stdout.is_empty());
    Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .map(|s| format!("{}{}", s.trim(), if dirty { "-dirty" } else { "" }))
        .unwrap_or_else(|| "unknown".into())
}

/// `YYYY-MM-DD` (UTC) of `SOURCE_DATE_EPOCH`, or of now.
fn build_date() -> String {
    let secs = std::env::var("SOURCE_DATE_EPOCH")
        .ok()
        .and_then(|s| s.parse::<i64>().ok())
        .unwrap_or_else(|| {
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_secs().cast_signed())
        });
    // Howard Hinnant's civil_from_days.
    let z = secs.div_euclid(86_400) + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02}")
}

fn embed_assets(root: &Path, out_dir: &Path) {
    println!("cargo:rerun-if-changed={}", root.display());
    let mut files = Vec::new();
    collect(root, &mut files);
    files.sort();
    let mut table = String::from("pub static ASSETS: &[Asset] = &[\n");
    for file in &files {
        let relative = file.strip_prefix(root).expect("under root");
        let name = relative
            .to_str()
            .expect("asset names are UTF-8")
            .replace('\\', "/");
        let bytes = std::fs::read(file).expect("read asset");
        let digest = Sha256::digest(&bytes);
        let etag: String = digest[..16].iter().fold(String::new(), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        });
        let mut encoder = GzEncoder::new(Vec::new(), Compression::best());
        encoder.write_all(&bytes).expect("gzip");
        let gz = encoder.finish().expect("gzip");
        let gz_path = out_dir.join("assets").join(format!("{name}.gz"));
        std::fs::create_dir_all(gz_path.parent().expect("parent")).expect("mkdir");
        std::fs::write(&gz_path, &gz).expect("write gz");
        let _ = writeln!(
            table,
            "    Asset {{ path: {name:?}, content_type: {:?}, etag: \"\\\"{etag}\\\"\", len: {}, gzip: include_bytes!({:?}) }},",
            content_type(&name),
            bytes.len(),
            gz_path.display().to_string(),
        );
    }
    table.push_str("];\n");
    std::fs::write(out_dir.join("assets.rs"), table).expect("write assets.rs");
}

fn collect(dir: &Path, files: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries {
        let path = entry.expect("dir entry").path();
        println!("cargo:rerun-if-changed={}", path.display());
        if path.is_dir() {
            collect(&path, files);
        } else {
            files.push(path);
        }
    }
}

fn content_type(name: &str) -> &'static str {
    match name.rsplit('.').next().unwrap_or("") {
        "html" => "text/html; charset=utf-8",
        "css" => "text/css; charset=utf-8",
        "js" => "text/javascript; charset=utf-8",
        "json" => "application/json",
        "svg" => "image/svg+xml",
        "png" => "image/png",
        "ico" => "image/x-icon",
        "yml" | "yaml" => "application/yaml",
        "txt" | "md" => "text/plain; charset=utf-8",
        _ => "application/octet-stream",
    }
}
