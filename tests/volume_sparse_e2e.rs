//! Sparse files stay sparse through a volume backup and restore (issue 11, item 16): a 1 GiB file
//! with a few MiB of data comes back with about the same allocation, and the same bytes. The stored
//! tar stays a plain one that `tar -x` reads.

mod common;

use std::io::{Seek, SeekFrom, Write};
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use common::*;
use sha2::{Digest, Sha256};

const GIB: u64 = 1 << 30;
const MIB: u64 = 1 << 20;

fn sha256_of(path: &Path) -> String {
    let mut f = std::fs::File::open(path).unwrap();
    let mut h = Sha256::new();
    std::io::copy(&mut f, &mut h).unwrap();
    format!("{:x}", h.finalize())
}

fn allocated(path: &Path) -> u64 {
    std::fs::metadata(path).unwrap().blocks() * 512
}

#[test]
fn a_sparse_file_comes_back_sparse_with_the_same_content() {
    let s = Scratch::new();
    let data = s.path("data");
    std::fs::create_dir_all(&data).unwrap();
    let image = data.join("disk.img");
    {
        // 1 GiB, data at the start, in the middle (unaligned) and at the very end
        let mut f = std::fs::File::create(&image).unwrap();
        f.set_len(GIB).unwrap();
        let chunk: Vec<u8> = (0..2 * MIB).map(|i| (i % 251) as u8 + 1).collect();
        for at in [0, GIB / 2 + 12345, GIB - 2 * MIB] {
            f.seek(SeekFrom::Start(at)).unwrap();
            f.write_all(&chunk).unwrap();
        }
    }
    let original = allocated(&image);
    assert!(original < 16 * MIB, "the test file is sparse here: {original} bytes allocated");
    s.write_config(&format!(
        "{}[jobs.vol]\nkind = \"volume\"\ntargets = [\"local\"]\npath = \"{}\"\n",
        s.head(),
        data.display()
    ));
    let r = run(s.drctl().args(["run", "vol"]));
    assert_eq!(r.code, 0, "{r:?}");

    let dst = s.path("restored");
    let r = run(s.drctl().args(["restore", "vol", "--latest", "--to"]).arg(&dst));
    assert_eq!(r.code, 0, "{r:?}");
    let restored = dst.join("disk.img");
    assert_eq!(std::fs::metadata(&restored).unwrap().len(), GIB);
    let got = allocated(&restored);
    assert!(got <= original + MIB, "restored file allocates {got} bytes, the original {original}");
    assert_eq!(sha256_of(&restored), sha256_of(&image));

    // the stored tar is a plain one: `tar` reads it, the file at its full length
    let mut drctl = s.drctl();
    drctl
        .args(["restore", "vol", "--latest", "--artifact", "data", "--output", "-"])
        .stdout(std::process::Stdio::piped());
    let mut child = drctl.spawn().unwrap();
    let listing =
        std::process::Command::new("tar").args(["-tvf", "-"]).stdin(child.stdout.take().unwrap()).output().unwrap();
    assert!(child.wait().unwrap().success());
    assert!(listing.status.success(), "{}", String::from_utf8_lossy(&listing.stderr));
    let text = String::from_utf8_lossy(&listing.stdout);
    let line = text.lines().find(|l| l.ends_with("disk.img")).unwrap_or_else(|| panic!("{text}"));
    assert!(line.contains(&GIB.to_string()), "{line}");
}
