//! Schema evolution: a field added with a serde default, a class renamed
//! through an alias, a whole module prefix moved at run time, and
//! `touch_every_reference` rewriting the old records under the new names.
//!
//! `cargo run --example schema_evolution [FILE]`

use durus::format::{class_name, Record};
use durus::prelude::*;
/// Version 1 of the program.
mod v1 {
    use durus::prelude::*;
    use serde::{Deserialize, Serialize};

    #[derive(Persistent, Serialize, Deserialize)]
    #[durus(name = "zoo.Animal")]
    pub struct Animal {
        pub name: String,
    }

    #[derive(Persistent, Serialize, Deserialize)]
    #[durus(name = "farm.animals.Cow")]
    pub struct Cow {
        pub moos: u32,
    }
}

/// Version 2: `Animal` is now `Creature` with a new field; the `farm.animals`
/// module moved to `zoo.farm`.
mod v2 {
    use durus::prelude::*;
    use serde::{Deserialize, Serialize};

    #[derive(Persistent, Serialize, Deserialize)]
    #[durus(name = "zoo.Creature", aliases("zoo.Animal"))]
    pub struct Creature {
        pub name: String,
        /// New in version 2: records written by version 1 read as 4.
        #[serde(default = "four")]
        pub legs: u8,
    }

    fn four() -> u8 {
        4
    }

    #[derive(Persistent, Serialize, Deserialize)]
    #[durus(name = "zoo.farm.Cow")]
    pub struct Cow {
        pub moos: u32,
    }
}

fn census(conn: &Connection) -> durus::Result<Vec<String>> {
    conn.with_storage(|s| {
        let mut names: Vec<String> = Vec::new();
        for item in s.walk(Oid::ROOT) {
            let (_, bytes) = item?;
            names.push(class_name::extract(Record::decode(&bytes)?.data).display());
        }
        names.sort();
        Ok(names)
    })
}

fn main() -> durus::Result<()> {
    let dir = tempfile::tempdir().map_err(|e| Error::io("cannot create a temp dir", e))?;
    let path = std::env::args()
        .nth(1)
        .map(Into::into)
        .unwrap_or_else(|| dir.path().join("zoo.durus"));

    {
        let conn = Connection::open(&path)?;
        let root = conn.root();
        root.insert(
            "rex".into(),
            PObject::from(PRef::new(v1::Animal { name: "Rex".into() })),
        )?;
        root.insert(
            "daisy".into(),
            PObject::from(PRef::new(v1::Cow { moos: 7 })),
        )?;
        conn.commit()?;
        println!("version 1 wrote: {:?}", census(&conn)?);
    }

    // Version 2 starts: tell the registry where the farm module went.
    durus::registry::rename_prefix("farm.animals.", "zoo.farm.");
    let conn = Connection::open(&path)?;
    let root = conn.root();
    let rex: PRef<v2::Creature> = root
        .get(&"rex".to_string())?
        .ok_or(Error::KeyNotFound(Oid::ROOT))?
        .downcast()?;
    println!(
        "Rex read through the alias: {} with {} legs (a default)",
        rex.read(|c| c.name.clone())?,
        rex.read(|c| c.legs)?
    );
    let daisy: PRef<v2::Cow> = root
        .get(&"daisy".to_string())?
        .ok_or(Error::KeyNotFound(Oid::ROOT))?
        .downcast()?;
    println!(
        "Daisy read through the prefix rename: {} moos",
        daisy.read(|c| c.moos)?
    );

    // Rewrite everything that mentions the old names, then commit.
    let touched = durus::touch_every_reference(&conn, &["zoo.Animal", "farm.animals."])?;
    conn.commit()?;
    println!(
        "rewrote {touched} objects; now stored: {:?}",
        census(&conn)?
    );
    Ok(())
}
