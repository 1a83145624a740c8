//! Every example runs (on a file in a temp dir) and prints what it should.
//! `cargo test` builds the examples; this runs the built binaries.

use std::path::PathBuf;
use std::process::Command;

fn example(name: &str, file: Option<&std::path::Path>) -> String {
    // target/<profile>/deps/examples-<hash> → target/<profile>/examples/<name>
    let exe = std::env::current_exe().expect("test path");
    let dir: PathBuf = exe
        .parent()
        .and_then(|d| d.parent())
        .expect("target dir")
        .join("examples");
    let mut cmd = Command::new(dir.join(name));
    if let Some(file) = file {
        cmd.arg(file);
    }
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run example {name} from {}: {e}", dir.display()));
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "example {name} failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

#[test]
fn quickstart_persists_across_runs_on_the_same_file() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("q.durus");
    let first = example("quickstart", Some(&file));
    assert!(first.contains("created item A1 with 3 in stock"), "{first}");
    assert!(first.contains("reopened: A1 has qty 4"), "{first}");
    let second = example("quickstart", Some(&file));
    assert!(!second.contains("created"), "{second}");
    assert!(second.contains("reopened: A1 has qty 5"), "{second}");
    assert!(
        second.contains("tag: restocked to 4") && second.contains("tag: restocked to 5"),
        "{second}"
    );
}

#[test]
fn todo_moves_a_finished_task_and_counts_tags() {
    let out = example("todo", None);
    assert!(
        out.contains("open: port the Durus tests [durus, tests]"),
        "{out}"
    );
    assert!(
        out.contains("done: write the storage layer [durus, rust]"),
        "{out}"
    );
    assert!(out.contains("tag durus: 2"), "{out}");
}

#[test]
fn schema_evolution_reads_old_records_and_rewrites_them_under_new_names() {
    let out = example("schema_evolution", None);
    assert!(out.contains("Rex with 4 legs (a default)"), "{out}");
    assert!(
        out.contains("Daisy read through the prefix rename: 7 moos"),
        "{out}"
    );
    assert!(
        out.contains(r#"now stored: ["durus.persistent_dict.PersistentDict", "zoo.Creature", "zoo.farm.Cow"]"#),
        "{out}"
    );
}

#[test]
fn storage_tour_packs_away_the_unreferenced_record() {
    let out = example("storage_tour", None);
    assert!(out.contains("pack kept 2 and removed [Oid(2)]"), "{out}");
    assert!(out.contains("oid 1: class tour.Person"), "{out}");
}

#[test]
fn bank_transfers_keep_the_total_exact_with_a_server_and_client_processes() {
    let out = example("bank", None);
    assert!(out.contains("opened 5 accounts with 1000 each"), "{out}");
    assert!(out.contains("800 transfers by 4 clients"), "{out}");
    assert!(out.contains("total before 5000, after 5000"), "{out}");
    assert!(out.contains("the total is exact"), "{out}");
}

#[test]
fn bank_transfers_keep_the_total_exact_with_threads_sharing_a_database() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("bank.durus");
    // `example` passes one argument: run the binary with two here.
    let exe = std::env::current_exe().unwrap();
    let bank = exe
        .parent()
        .and_then(|d| d.parent())
        .unwrap()
        .join("examples/bank");
    let out = std::process::Command::new(bank)
        .arg("--threads")
        .arg(&file)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("shared by 4 threads"), "{stdout}");
    assert!(stdout.contains("total before 5000, after 5000"), "{stdout}");
    // The file keeps the accounts: a second run starts from them.
    let again = example("bank", Some(&file));
    assert!(!again.contains("opened"), "{again}");
    assert!(again.contains("total before 5000, after 5000"), "{again}");
}
