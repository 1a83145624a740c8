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

/// The catalog example's generator (examples/catalog.rs, `product`):
/// category, price in cents and stock of product number `i`.
fn catalog_product(i: u64) -> (&'static str, u64, u64) {
    const CATEGORIES: [&str; 8] = [
        "books", "garden", "kitchen", "music", "outdoor", "tools", "toys", "video",
    ];
    let mut z = i.wrapping_add(1).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    let h = z ^ (z >> 31);
    (
        CATEGORIES[(h % 8) as usize],
        99 + (h >> 8) % 100_000,
        (h >> 40) % 500,
    )
}

#[test]
fn catalog_range_queries_answer_what_the_generator_implies_before_and_after_reopening() {
    const N: u64 = 5_000;
    const FIRST_SKU: u64 = 100_000;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("catalog.durus");
    let exe = std::env::current_exe().unwrap();
    let catalog = exe
        .parent()
        .and_then(|d| d.parent())
        .unwrap()
        .join("examples/catalog");
    let run = || {
        let out = Command::new(&catalog)
            .args(["--n", &N.to_string(), "--file"])
            .arg(&file)
            .output()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", catalog.display()));
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            out.status.success(),
            "{stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        stdout
    };
    let products: Vec<(&str, u64, u64)> = (0..N).map(catalog_product).collect();

    // What each query should answer, computed from the generator alone.
    let band: Vec<(u64, u64)> = {
        let mut v: Vec<(u64, u64)> = products
            .iter()
            .enumerate()
            .filter(|(_, p)| p.0 == "garden" && (2_000..4_000).contains(&p.1))
            .map(|(i, p)| (p.1, FIRST_SKU + i as u64))
            .collect();
        v.sort();
        v
    };
    let stock: u64 = products[1_000..1_100].iter().map(|p| p.2).sum();
    let mut tools: Vec<(u64, u64)> = products
        .iter()
        .enumerate()
        .filter(|(_, p)| p.0 == "tools")
        .map(|(i, p)| (p.1, FIRST_SKU + i as u64))
        .collect();
    tools.sort_by(|a, b| b.cmp(a));
    let garden = products.iter().filter(|p| p.0 == "garden").count();

    let out = run();
    assert!(out.contains("stored 5000 products in 1 commit:"), "{out}");
    let band_line = format!(
        "garden from $20.00 to under $40.00: {} products, cheapest {} at ${}.{:02}",
        band.len(),
        band[0].1,
        band[0].0 / 100,
        band[0].0 % 100
    );
    assert!(out.contains(&band_line), "expected {band_line:?} in\n{out}");
    let sku_line = format!("SKUs 101000 to 101099: 100 products, {stock} units in stock");
    assert!(out.contains(&sku_line), "expected {sku_line:?} in\n{out}");
    let top = format!(
        "most expensive tools: {} ${}.{:02} (",
        tools[0].1,
        tools[0].0 / 100,
        tools[0].0 % 100
    );
    assert!(out.contains(&top), "expected {top:?} in\n{out}");
    assert!(out.contains(&format!("garden {garden},")), "{out}");
    assert!(out.contains("total 5000 of 5000 products"), "{out}");
    // Every answer is printed twice: before closing and after reopening.
    assert_eq!(out.matches(&band_line).count(), 2, "{out}");
    assert!(
        out.contains("after reopening: the same answers to all 4 queries"),
        "{out}"
    );

    // A second run on the same file loads nothing and answers the same.
    let again = run();
    assert!(again.contains("already holds 5000 products"), "{again}");
    assert!(!again.contains("stored"), "{again}");
    assert!(
        again.contains(&band_line) && again.contains(&sku_line),
        "{again}"
    );
}
