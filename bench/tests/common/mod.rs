//! Helpers shared by lockbench's end-to-end tests.
#![allow(dead_code)] // each test binary uses a different subset

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub fn lockbench(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_lockbench"))
        .args(args)
        .output()
        .expect("lockbench runs")
}

pub fn text(out: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// One image of one 64 KiB layer in `images/img-00`.
pub fn gen_one_image(images: &Path) -> PathBuf {
    let generated = lockbench(&[
        "gen",
        "--out",
        images.to_str().unwrap(),
        "--images",
        "1",
        "--layers",
        "1",
        "--layer-size",
        "64K",
    ]);
    assert!(generated.status.success(), "{}", text(&generated).1);
    images.join("img-00")
}
