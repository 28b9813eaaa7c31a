//! The man pages and shell completions that `examples/generate_docs.rs` generates (the test
//! runs the example's own [`generate_docs::generate`] into a temporary directory), and README's
//! examples, run as printed against the demo's data.

mod common;

#[allow(dead_code)] // the example's `main` is not used here
#[path = "../examples/generate_docs.rs"]
mod generate_docs;

use std::path::Path;

/// Every command with a page of its own; the top-level page lists the first level.
const SUBCOMMANDS: [&str; 12] = [
    "host",
    "subnet",
    "site",
    "status",
    "compact",
    "log",
    "import",
    "export",
    "agent",
    "migrate",
    "render",
    "check-config",
];
const NESTED: [&str; 14] = [
    "host-add",
    "host-set",
    "host-rm",
    "host-show",
    "host-list",
    "subnet-add",
    "subnet-set",
    "subnet-rm",
    "subnet-show",
    "subnet-list",
    "site-add",
    "site-rm",
    "site-show",
    "site-list",
];

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
}

#[test]
fn generates_man_pages_and_completions() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path();
    let written = generate_docs::generate(out).unwrap();

    let mut expected: Vec<_> = ["man/ipmanager.1".to_string()]
        .into_iter()
        .chain(
            SUBCOMMANDS
                .iter()
                .chain(&NESTED)
                .map(|s| format!("man/ipmanager-{s}.1")),
        )
        .chain(
            ["ipmanager.bash", "_ipmanager", "ipmanager.fish"]
                .iter()
                .map(|f| format!("completions/{f}")),
        )
        .map(|p| out.join(p))
        .collect();
    let mut written_sorted = written.clone();
    written_sorted.sort();
    expected.sort();
    assert_eq!(written_sorted, expected, "exactly these files are written");
    let mut on_disk: Vec<_> = ["man", "completions"]
        .iter()
        .flat_map(|d| std::fs::read_dir(out.join(d)).unwrap())
        .map(|e| e.unwrap().path())
        .collect();
    on_disk.sort();
    assert_eq!(on_disk, expected, "nothing else is in OUTDIR");

    let man = read(&out.join("man/ipmanager.1"));
    assert!(
        man.starts_with(".ie \\n(.g .ds Aq \\(aq"),
        "roff: {man:.200}"
    );
    assert!(man.contains(".TH ipmanager 1"), "{man}");
    for sub in SUBCOMMANDS {
        assert!(
            man.contains(&format!("ipmanager\\-{}(1)", sub.replace('-', "\\-"))),
            "{sub} in {man}"
        );
    }
    assert!(man.contains("\\-\\-config"), "--config in {man}");
    assert!(man.contains("IPMANAGER_CONFIG"), "{man}");
    assert!(
        man.contains("IPMANAGER_DATABASE_URL"),
        "the examples in {man}"
    );
    assert!(man.contains("host add \\-\\-mac"), "{man}");

    for sub in SUBCOMMANDS {
        let page = read(&out.join(format!("man/ipmanager-{sub}.1")));
        assert!(
            page.contains(&format!(
                ".TH ipmanager-{sub} 1  \"ipmanager {}\"",
                env!("CARGO_PKG_VERSION")
            )),
            "{sub}: {page}"
        );
        assert!(
            page.contains("\\-\\-config"),
            "global --config in {sub}: {page}"
        );
    }
    let agent = read(&out.join("man/ipmanager-agent.1"));
    assert!(agent.contains("SIGTERM"), "long about in {agent}");

    let bash = read(&out.join("completions/ipmanager.bash"));
    let zsh = read(&out.join("completions/_ipmanager"));
    let fish = read(&out.join("completions/ipmanager.fish"));
    assert!(bash.contains("complete -F _ipmanager"), "{bash}");
    assert!(zsh.starts_with("#compdef ipmanager"), "{zsh}");
    for sub in SUBCOMMANDS {
        assert!(bash.contains(sub), "{sub} in bash completion");
        assert!(zsh.contains(sub), "{sub} in zsh completion");
        assert!(fish.contains(&format!("-a \"{sub}\"")), "{sub} in {fish}");
    }
    for completion in [&bash, &zsh, &fish] {
        assert!(completion.contains("config"), "--config in {completion}");
    }
}

#[test]
fn generation_is_reproducible() {
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let files_a = generate_docs::generate(a.path()).unwrap();
    generate_docs::generate(b.path()).unwrap();
    for file in files_a {
        let relative = file.strip_prefix(a.path()).unwrap();
        assert_eq!(
            std::fs::read(&file).unwrap(),
            std::fs::read(b.path().join(relative)).unwrap(),
            "{} differs between two runs",
            relative.display()
        );
    }
}

const README: &str = include_str!("../README.md");
const DEMO_SCRIPT: &str = include_str!("../scripts/demo");
/// What scripts/demo loads into its database.
const DEMO_DATA: &str = include_str!("../scripts/demo-data.sql");
const EXAMPLE_MARKER: &str = "<!-- readme-example: after scripts/demo -->";

/// The lines of the fenced block after README's example marker.
fn readme_example() -> Vec<&'static str> {
    let (_, after) = README
        .split_once(EXAMPLE_MARKER)
        .expect("README marks its example session");
    let block = after
        .trim_start()
        .strip_prefix("```sh\n")
        .expect("a ```sh block follows the marker");
    let (block, _) = block.split_once("```").expect("the block ends");
    block.lines().collect()
}

/// The `ipmanager …` commands in the CLI column of README's "Everyday administration" table.
fn table_commands() -> Vec<&'static str> {
    let section = README
        .split("## Everyday administration")
        .nth(1)
        .and_then(|rest| rest.split("\n## ").next())
        .expect("README has the section");
    section
        .lines()
        .filter(|line| line.starts_with("| "))
        .filter_map(|row| row.split(" | ").nth(1))
        .flat_map(|cli| cli.split('`').skip(1).step_by(2))
        .filter(|code| code.starts_with("ipmanager "))
        .collect()
}

#[tokio::test]
async fn readme_examples_work_as_printed_against_the_demo_data() {
    let example = readme_example();
    let export = example[0];
    // The example connects where scripts/demo puts its database.
    assert!(export.starts_with(
        "export IPMANAGER_DATABASE_URL=postgresql://postgres@127.0.0.1:55433/ipmanager_demo "
    ));
    assert!(
        DEMO_SCRIPT.contains("IPMANAGER_DEMO_PORT:-55433")
            && DEMO_SCRIPT.contains("/ipmanager_demo\"")
    );
    let commands: Vec<&str> = example[1..].to_vec();
    assert!(
        commands.iter().all(|c| c.starts_with("ipmanager ")),
        "{commands:?}"
    );
    for command in table_commands() {
        assert!(
            commands.contains(&command),
            "the table's {command:?} is not in the example session"
        );
    }

    let db = common::TestDb::new().await;
    db.client().await.batch_execute(DEMO_DATA).await.unwrap();
    let bin_dir = std::path::Path::new(common::binary::BIN).parent().unwrap();
    let path = format!(
        "{}:{}",
        bin_dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    for command in commands {
        let out = std::process::Command::new("sh")
            .args(["-c", command])
            .env_clear()
            .env("PATH", &path)
            .env("IPMANAGER_DATABASE_URL", &db.url)
            .stdin(std::process::Stdio::null())
            .output()
            .unwrap();
        assert_eq!(
            out.status.code(),
            Some(0),
            "README's {command:?} fails against the demo data:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}
