//! Records the git revision the binary is built from, for `--version`, the startup log line
//! and `roulette_build_info`. A build outside a git checkout (a source tarball) takes it from
//! `ROULETTE_REVISION`, or says `unknown`.
use std::process::Command;

fn main() {
    println!("cargo:rerun-if-env-changed=ROULETTE_REVISION");
    let from_env = std::env::var("ROULETTE_REVISION")
        .ok()
        .filter(|r| !r.trim().is_empty());
    let revision = from_env.unwrap_or_else(|| {
        // Rebuild when HEAD moves: a commit, a checkout, a fetch that updates packed refs.
        // `--git-path` says where each file really is: in a linked worktree HEAD is the
        // worktree's own but the branch refs live in the main repository.
        let mut watch = vec!["HEAD".to_string(), "packed-refs".to_string()];
        if let Some(head_ref) = git(&["symbolic-ref", "-q", "HEAD"]) {
            watch.push(head_ref);
        }
        for name in &watch {
            if let Some(path) = git(&["rev-parse", "--git-path", name]) {
                if std::path::Path::new(&path).exists() {
                    println!("cargo:rerun-if-changed={path}");
                }
            }
        }
        git(&["rev-parse", "--short=12", "HEAD"]).unwrap_or_else(|| "unknown".to_string())
    });
    println!("cargo:rustc-env=ROULETTE_REVISION={revision}");
}

fn git(args: &[&str]) -> Option<String> {
    let out = Command::new("git").args(args).output().ok()?;
    if !out.status.success() {
        return None;
    }
    Some(String::from_utf8(out.stdout).ok()?.trim().to_string())
}
