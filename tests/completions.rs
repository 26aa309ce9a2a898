//! Shell completions and manual pages (issue 18): generated from the parser's own definitions,
//! then used the way a shell and `man` use them. No service needed.

mod common;

use std::process::Command;

use common::*;

/// What bash's completion function offers for the words of `line` (the cursor at its end).
fn bash_complete(script: &std::path::Path, line: &str) -> Vec<String> {
    let words: Vec<&str> = line.split(' ').collect();
    let cword = words.len() - 1;
    let program = format!(
        "source '{}'\nCOMP_WORDS=({})\nCOMP_CWORD={cword}\nCOMP_LINE='{line}'\nCOMP_POINT=${{#COMP_LINE}}\n\
         _drctl drctl '{}' '{}'\nprintf '%s\\n' \"${{COMPREPLY[@]}}\"\n",
        script.display(),
        words.iter().map(|w| format!("'{w}'")).collect::<Vec<_>>().join(" "),
        words[cword],
        words[cword.saturating_sub(1)],
    );
    let out = Command::new("bash").arg("-c").arg(program).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).lines().map(str::to_string).collect()
}

#[test]
fn bash_completes_subcommands_and_flags_from_the_generated_script() {
    let s = Scratch::new();
    let r = run(drctl_bare().args(["completions", "bash"]));
    assert_eq!(r.code, 0, "{r:?}");
    let script = s.path("drctl.bash");
    std::fs::write(&script, &r.stdout).unwrap();
    let parsed = Command::new("bash").arg("-n").arg(&script).status().unwrap();
    assert!(parsed.success(), "bash -n refuses the script");
    assert_eq!(bash_complete(&script, "drctl res"), ["restore"]);
    assert_eq!(bash_complete(&script, "drctl restore --la"), ["--latest"]);
    let catalog = bash_complete(&script, "drctl catalog ");
    assert!(catalog.contains(&"rebuild".to_string()), "{catalog:?}");
    let shells = bash_complete(&script, "drctl completions ");
    for shell in ["bash", "zsh", "fish"] {
        assert!(shells.contains(&shell.to_string()), "{shells:?}");
    }
    // the other shells get their own scripts
    for (shell, marker) in [("zsh", "#compdef drctl"), ("fish", "complete -c drctl")] {
        let r = run(drctl_bare().args(["completions", shell]));
        assert_eq!(r.code, 0, "{r:?}");
        assert!(r.stdout.contains(marker), "{shell}: {}", &r.stdout[..200.min(r.stdout.len())]);
    }
    let r = run(drctl_bare().args(["completions", "tcsh"]));
    assert_eq!(r.code, 2, "an unknown shell is a usage error: {r:?}");
}

#[test]
fn man_pages_render_with_groff_without_warnings_one_per_subcommand() {
    let r = run(drctl_bare().arg("man"));
    assert_eq!(r.code, 0, "{r:?}");
    assert!(r.stdout.contains(".TH drctl 1"), "{}", &r.stdout[..200.min(r.stdout.len())]);
    let s = Scratch::new();
    let page = s.path("drctl.1");
    std::fs::write(&page, &r.stdout).unwrap();
    let out = Command::new("groff").args(["-man", "-Tutf8", "-ww"]).arg(&page).output().unwrap();
    assert!(out.status.success() && out.stderr.is_empty(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("restore") && text.contains("orchestrator"), "{text}");

    let dir = s.path("man");
    let r = run(drctl_bare().args(["man", "--dir"]).arg(&dir));
    assert_eq!(r.code, 0, "{r:?}");
    let restore = std::fs::read_to_string(dir.join("drctl-restore.1")).unwrap();
    assert!(restore.contains("latest"), "{restore}");
    for sub in ["run", "list", "prune", "sync", "check", "verify", "daemon", "catalog-rebuild"] {
        assert!(dir.join(format!("drctl-{sub}.1")).exists(), "drctl-{sub}.1");
    }
}
