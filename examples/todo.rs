//! A small to-do app over a graph of persistent containers: lists of tasks
//! in a PersistentDict, tags in PersistentSets, done tasks moved between
//! PersistentLists, all in one transaction at a time.
//!
//! `cargo run --example todo [FILE]`

use durus::prelude::*;
use serde::{Deserialize, Serialize};

#[derive(Persistent, Serialize, Deserialize)]
#[durus(name = "todo.Task")]
struct Task {
    title: String,
    tags: PRef<PersistentSet<String>>,
}

#[derive(Persistent, Serialize, Deserialize)]
#[durus(name = "todo.Board")]
struct Board {
    open: PRef<PersistentList<PRef<Task>>>,
    done: PRef<PersistentList<PRef<Task>>>,
    /// Tag → how many tasks carry it.
    tag_counts: PRef<PersistentDict<String, u32>>,
}

fn add(board: &PRef<Board>, title: &str, tags: &[&str]) -> durus::Result<()> {
    let tag_set = PRef::new(
        tags.iter()
            .map(|t| t.to_string())
            .collect::<PersistentSet<_>>(),
    );
    let counts = board.tag_counts()?;
    for tag in tags {
        let n = counts.get(&tag.to_string())?.unwrap_or(0);
        counts.insert(tag.to_string(), n + 1)?;
    }
    board.open()?.push(PRef::new(Task {
        title: title.into(),
        tags: tag_set,
    }))
}

fn finish(board: &PRef<Board>, title: &str) -> durus::Result<bool> {
    let open = board.open()?;
    for (i, task) in open.iter()?.enumerate() {
        if task.title()? == title {
            open.remove(i)?;
            board.done()?.push(task)?;
            return Ok(true);
        }
    }
    Ok(false)
}

fn main() -> durus::Result<()> {
    let dir = tempfile::tempdir().map_err(|e| Error::io("cannot create a temp dir", e))?;
    let path = std::env::args()
        .nth(1)
        .map(Into::into)
        .unwrap_or_else(|| dir.path().join("todo.durus"));

    let conn = Connection::open(&path)?;
    let board = match conn.root().get(&"board".to_string())? {
        Some(b) => b.downcast::<Board>()?,
        None => {
            let board = PRef::new(Board {
                open: PRef::new(PersistentList::new()),
                done: PRef::new(PersistentList::new()),
                tag_counts: PRef::new(PersistentDict::new()),
            });
            conn.root()
                .insert("board".into(), PObject::from(board.clone()))?;
            board
        }
    };
    conn.transact(|_| {
        add(&board, "write the storage layer", &["durus", "rust"])?;
        add(&board, "port the Durus tests", &["durus", "tests"])?;
        add(&board, "buy milk", &["home"])
    })?;
    println!("added 3 tasks");
    conn.transact(|_| finish(&board, "write the storage layer"))?;
    println!("finished one");
    drop(conn);

    let conn = Connection::open(&path)?;
    let board: PRef<Board> = conn
        .root()
        .get(&"board".to_string())?
        .ok_or(Error::KeyNotFound(Oid::ROOT))?
        .downcast()?;
    for (state, list) in [("open", board.open()?), ("done", board.done()?)] {
        for task in list.iter()? {
            let tags: Vec<String> = task.tags()?.iter()?.collect();
            println!("{state}: {} [{}]", task.title()?, tags.join(", "));
        }
    }
    for (tag, n) in board.tag_counts()?.iter()? {
        println!("tag {tag}: {n}");
    }
    Ok(())
}
