//! A product catalog on two persistent B-trees: products by SKU, and a
//! secondary index by (category, price, SKU) for range queries. Loads a
//! generated data set in batches, answers a few queries, closes the file,
//! reopens it and shows that the answers are the same, with counts and
//! timings.
//!
//! ```text
//! cargo run --release --example catalog                    # 200,000 products in a temp dir
//! cargo run --release --example catalog -- --n 1000000
//! cargo run --release --example catalog -- --file shop.durus   # run it twice: the second run only queries
//! ```
//!
//! Why B-trees: a `PersistentDict` is one object, rewritten whole on every
//! change and loaded whole on first use; a `BTree`'s nodes are objects of
//! their own, so a commit rewrites the few nodes it touched and a query
//! after a reopen loads only the nodes on its path. The lines "objects
//! loaded" below show it.

use std::path::PathBuf;
use std::time::Instant;

use durus::prelude::*;
use serde::{Deserialize, Serialize};

/// A product. The derive gives it a class name and accessors on
/// `PRef<Product>` (`name()`, `price_cents()`, ...).
#[derive(Persistent, Serialize, Deserialize)]
#[durus(name = "catalog.Product")]
struct Product {
    sku: u64,
    name: String,
    category: String,
    price_cents: u64,
    stock: u32,
}

/// The primary index: SKU → product.
type BySku = BTree<u64, PRef<Product>>;

/// The secondary index: (category, price in cents, SKU) → the same product
/// object (stored once, reachable from both trees). Tuples order
/// field by field, so all of a category is one key range, sorted by price;
/// the SKU makes every key unique.
type ByCategoryPrice = BTree<(String, u64, u64), PRef<Product>>;

/// The first SKU number; products are numbered on from it.
const FIRST_SKU: u64 = 100_000;
const CATEGORIES: [&str; 8] = [
    "books", "garden", "kitchen", "music", "outdoor", "tools", "toys", "video",
];
const ADJECTIVES: [&str; 8] = [
    "basic", "classic", "compact", "deluxe", "handy", "large", "modern", "rugged",
];
/// Products per commit while loading: one transaction per batch keeps
/// memory bounded (committed objects can leave the cache) without paying
/// a commit per product.
const BATCH: u64 = 10_000;

/// Product number `i` of the data set (SKU `FIRST_SKU + i`): a pure
/// function of `i` (splitmix64), so every run, and the test that checks
/// the answers, sees the same catalog.
fn product(i: u64) -> Product {
    let h = splitmix64(i);
    let category = CATEGORIES[(h % 8) as usize];
    let sku = FIRST_SKU + i;
    Product {
        sku,
        name: format!(
            "{} {category} item {sku}",
            ADJECTIVES[((h >> 3) % 8) as usize]
        ),
        category: category.to_string(),
        price_cents: 99 + (h >> 8) % 100_000, // $0.99 to $1,000.98
        stock: ((h >> 40) % 500) as u32,
    }
}

fn splitmix64(i: u64) -> u64 {
    let mut z = i.wrapping_add(1).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

fn dollars(cents: u64) -> String {
    format!("${}.{:02}", cents / 100, cents % 100)
}

/// The two indexes under the root, created on a new file.
struct Catalog {
    by_sku: PRef<BySku>,
    by_category: PRef<ByCategoryPrice>,
}

impl Catalog {
    fn open(conn: &Connection) -> durus::Result<Catalog> {
        let root = conn.root();
        let by_sku = match root.get(&"by_sku".to_string())? {
            Some(tree) => tree.downcast::<BySku>()?,
            None => {
                let tree = PRef::new(BySku::new());
                root.insert("by_sku".into(), PObject::from(tree.clone()))?;
                tree
            }
        };
        let by_category = match root.get(&"by_category_price".to_string())? {
            Some(tree) => tree.downcast::<ByCategoryPrice>()?,
            None => {
                let tree = PRef::new(ByCategoryPrice::new());
                root.insert("by_category_price".into(), PObject::from(tree.clone()))?;
                tree
            }
        };
        conn.commit()?;
        Ok(Catalog {
            by_sku,
            by_category,
        })
    }

    /// Adds products `0..n`, a commit every [`BATCH`].
    fn load(&self, conn: &Connection, n: u64) -> durus::Result<()> {
        for i in 0..n {
            let p = product(i);
            let key = (p.category.clone(), p.price_cents, p.sku);
            let sku = p.sku;
            let p = PRef::new(p);
            self.by_sku.insert(sku, p.clone())?;
            self.by_category.insert(key, p)?;
            if (i + 1) % BATCH == 0 {
                conn.commit()?;
            }
        }
        conn.commit()
    }
}

/// One query's answer as printed, and what it cost.
struct Answer {
    text: String,
    millis: f64,
    loads: u64,
}

/// Runs `query`, timing it and counting the objects it loaded.
fn measure(
    conn: &Connection,
    query: impl FnOnce() -> durus::Result<String>,
) -> durus::Result<Answer> {
    let loads = conn.load_count();
    let t = Instant::now();
    let text = query()?;
    Ok(Answer {
        text,
        millis: t.elapsed().as_secs_f64() * 1e3,
        loads: conn.load_count() - loads,
    })
}

/// The queries: a price band within a category, a SKU range, the most
/// expensive products of a category, and the size of every category.
fn queries(conn: &Connection, catalog: &Catalog) -> durus::Result<Vec<Answer>> {
    let by_sku = &catalog.by_sku;
    let by_category = &catalog.by_category;
    let mut answers = Vec::new();

    // Garden products from $20.00 up to (not including) $40.00, cheapest
    // first: one key range of the secondary index.
    answers.push(measure(conn, || {
        let (lo, hi) = (2_000, 4_000);
        let band = ("garden".to_string(), lo, 0)..("garden".to_string(), hi, 0);
        let mut count = 0;
        let mut cheapest = Vec::new();
        for entry in by_category.range(band)? {
            let ((_, price, sku), _) = entry?;
            if cheapest.len() < 3 {
                cheapest.push(format!("{sku} at {}", dollars(price)));
            }
            count += 1;
        }
        Ok(format!(
            "garden from {} to under {}: {count} products, cheapest {}",
            dollars(lo),
            dollars(hi),
            cheapest.join(", ")
        ))
    })?);

    // A hundred consecutive SKUs from the primary index, reading each
    // product's stock (so the products load too).
    answers.push(measure(conn, || {
        let skus = FIRST_SKU + 1_000..FIRST_SKU + 1_100;
        let (first, last) = (skus.start, skus.end - 1);
        let (mut count, mut stock) = (0, 0);
        for entry in by_sku.range(skus)? {
            let (_, product) = entry?;
            stock += product.stock()? as u64;
            count += 1;
        }
        Ok(format!(
            "SKUs {first} to {last}: {count} products, {stock} units in stock"
        ))
    })?);

    // The five most expensive tools: the tools range read backwards.
    answers.push(measure(conn, || {
        let tools = ("tools".to_string(), 0, 0)..=("tools".to_string(), u64::MAX, u64::MAX);
        let mut top = Vec::new();
        for entry in by_category.range_rev(tools)?.take(5) {
            let ((_, price, sku), product) = entry?;
            top.push(format!("{sku} {} ({})", dollars(price), product.name()?));
        }
        Ok(format!("most expensive tools: {}", top.join(", ")))
    })?);

    // Products per category: each category is a key range, counted
    // without loading a single product (the keys say it all).
    answers.push(measure(conn, || {
        let mut counts = Vec::new();
        let mut total = 0;
        for category in CATEGORIES {
            let lo = (category.to_string(), 0, 0);
            let hi = (category.to_string(), u64::MAX, u64::MAX);
            let mut count = 0;
            for entry in by_category.range(lo..=hi)? {
                entry?;
                count += 1;
            }
            total += count;
            counts.push(format!("{category} {count}"));
        }
        Ok(format!(
            "per category: {}; total {total} of {} products",
            counts.join(", "),
            by_sku.len()?
        ))
    })?);
    Ok(answers)
}

fn print(answers: &[Answer]) {
    for a in answers {
        println!("  {}", a.text);
        println!("      {:.2} ms, {} objects loaded", a.millis, a.loads);
    }
}

/// `--n N` (products to generate) and `--file PATH` (default: a file in a
/// temporary directory).
fn parse_args() -> Result<(u64, Option<PathBuf>), String> {
    let (mut n, mut file) = (200_000, None);
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = || args.next().ok_or(format!("{arg} needs a value"));
        match arg.as_str() {
            "--n" => n = value()?.parse().map_err(|e| format!("--n: {e}"))?,
            "--file" => file = Some(PathBuf::from(value()?)),
            other => return Err(format!("unknown argument {other:?} (--n N, --file PATH)")),
        }
    }
    Ok((n, file))
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let (n, file) = parse_args()?;
    let dir = tempfile::tempdir()?;
    let path = file.unwrap_or_else(|| dir.path().join("catalog.durus"));

    let before = {
        // A bulk load that can be redone from its source: commits without
        // fsync are much faster, and a crash loses at most the batches
        // since the OS last wrote the file. The reopen below uses the
        // default, durable commits.
        let conn = Connection::new(FileStorage::options().fsync(false).open(&path)?)?;
        let catalog = Catalog::open(&conn)?;
        let stored = catalog.by_sku.len()?;
        if stored == 0 {
            let t = Instant::now();
            catalog.load(&conn, n)?;
            let secs = t.elapsed().as_secs_f64();
            let commits = n.div_ceil(BATCH);
            println!(
                "stored {n} products in {commits} commit{}: {secs:.2} s ({:.0} products/s)",
                if commits == 1 { "" } else { "s" },
                n as f64 / secs
            );
        } else {
            println!("{} already holds {stored} products", path.display());
        }
        println!(
            "indexes: by SKU {} levels, by category and price {} levels ({} products per node at most)",
            catalog.by_sku.depth()?,
            catalog.by_category.depth()?,
            catalog.by_sku.node_size()?
        );
        println!("queries on the connection that loaded them:");
        let answers = queries(&conn, &catalog)?;
        print(&answers);
        answers
    }; // the connection closes here: nothing of it survives but the file

    let t = Instant::now();
    let conn = Connection::open(&path)?;
    let catalog = Catalog::open(&conn)?;
    println!(
        "reopened {} in {:.2} ms; the same queries from cold:",
        path.display(),
        t.elapsed().as_secs_f64() * 1e3
    );
    let after = queries(&conn, &catalog)?;
    print(&after);
    let same = before
        .iter()
        .map(|a| &a.text)
        .eq(after.iter().map(|a| &a.text));
    if !same {
        return Err("the answers changed after reopening the file".into());
    }
    println!(
        "after reopening: the same answers to all {} queries",
        after.len()
    );
    Ok(())
}
