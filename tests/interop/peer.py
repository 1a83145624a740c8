"""
The Python Durus 4.3 side of tests/interop.rs.

Run by the Rust tests as `python -B peer.py COMMAND ...` with
PYTHONHASHSEED=0. Everything crosses over through files: databases, and JSON
documents in which oids are integers and records are hex strings.

Commands
  scenario NAME OUTDIR [--every-commit]
      Builds OUTDIR/NAME.durus with durus.connection.Connection over a
      recording durus.file_storage.FileStorage and writes OUTDIR/NAME.json:
        events   every storage call that shapes the file, in order: new_oid,
                 commit (the records of one end(), in the order written),
                 sync (the oids it returned), pack, reopen, and checkpoints
                 (copies of the file, and after a pack of <name>.prepack,
                 taken after each pack and at the end; after each commit too
                 with --every-commit)
        dump     the final file as Durus reads it (see `dump`)
        describe every object reachable from the root, attribute by
                 attribute (see describe())
        extra    scenario specific facts
  dump OUT PATH [PATH ...] [--new-oids K]
      For each file: every record (gen_oid_record() without start oid),
      the oids reachable from the root (gen_oid_record(start_oid=0)), the
      census (durus.storage.get_census), the file length and, from a copy,
      the next K oids new_oid() hands out.
  verify OUT PATH EXPECTED
      Opens PATH with FileStorage and Connection, loads every object
      reachable from the root and compares describe() with EXPECTED's
      `describe`; then packs with Durus and checks that the reachable set and
      the reachable records are unchanged. Exits non-zero on a mismatch.
  pack OUT PATH [PATH ...] [--new-oids K]
      For each file: dumps it, packs it with Durus, dumps it again.
  hold PATH
      Opens PATH read-write (taking Durus's flock), prints "locked" and
      keeps it open until stdin reaches end of file.
  lock-probe OUT PATH
      Can Durus open PATH read-write now (the error if not), and how many
      records does a read-only open see?
  probe-torn OUT PATH [PATH ...]
      For each damaged file: does FileStorage(path, readonly=True) open it,
      and what length does FileStorage(copy, repair=True) leave?
"""
import json
import os
import random
import shutil
import sys

from durus.btree import BTree
from durus.connection import Connection
from durus.file_storage import FileStorage
from durus.logger import logger
from durus.persistent import Persistent, PersistentObject
from durus.persistent_dict import PersistentDict
from durus.persistent_list import PersistentList
from durus.persistent_set import PersistentSet
from durus.serialize import unpack_record
from durus.storage import get_census
from durus.utils import int8_to_str, str_to_int8

from interop_models import Counter, Thing

ROOT = int8_to_str(0)

# Durus logs every commit at INFO on stderr; keep stderr for real problems.
logger.setLevel(30)


def fail(message):
    sys.stderr.write("peer.py: %s\n" % message)
    sys.exit(1)


def write_json(path, value):
    with open(path, 'w') as f:
        json.dump(value, f, sort_keys=True)


# ---------------------------------------------------------------- dumping

def class_name_text(name):
    if isinstance(name, bytes):
        return name.decode('utf-8', 'replace')
    return name


def dump_storage(storage):
    """The records, reachable set and census of an open storage."""
    records = []
    seen = set()
    for oid, record in storage.gen_oid_record():
        n = str_to_int8(oid)
        if n in seen:
            fail("gen_oid_record() yielded oid %d twice" % n)
        seen.add(n)
        if storage.load(oid) != record:
            fail("load(%d) differs from gen_oid_record()" % n)
        if unpack_record(record)[0] != oid:
            fail("record of oid %d names another oid" % n)
        records.append([n, record.hex()])
    records.sort()
    reachable = sorted(str_to_int8(oid)
                       for oid, _ in storage.gen_oid_record(start_oid=ROOT))
    census = dict((class_name_text(k), v)
                  for k, v in get_census(storage).items())
    return dict(records=records, reachable=reachable, census=census)


def probe_new_oids(path, count):
    """The next `count` oids Durus hands out, taken from a copy of `path`."""
    if count == 0:
        return []
    probe = path + '.oid-probe'
    shutil.copyfile(path, probe)
    try:
        storage = FileStorage(probe)
        try:
            return [str_to_int8(storage.new_oid()) for _ in range(count)]
        finally:
            storage.close()
    finally:
        os.remove(probe)


def dump_file(path, new_oids=0):
    storage = FileStorage(path, readonly=True)
    try:
        result = dump_storage(storage)
    finally:
        storage.close()
    result['file_len'] = os.path.getsize(path)
    result['new_oids'] = probe_new_oids(path, new_oids)
    return result


# ------------------------------------------------------------- describing

def canon(value, todo):
    """A JSON form of a pickled value; persistent objects become refs."""
    if isinstance(value, PersistentObject):
        todo.append(value)
        return {'$ref': str_to_int8(value._p_oid)}
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return value
    if isinstance(value, int):
        return {'$int': str(value)}
    if isinstance(value, float):
        return {'$float': repr(value)}
    if isinstance(value, bytes):
        return {'$bytes': value.hex()}
    if isinstance(value, dict):
        items = [[canon(k, todo), canon(v, todo)] for k, v in value.items()]
        return {'$dict': sorted(items, key=lambda kv: json.dumps(kv, sort_keys=True))}
    if isinstance(value, (set, frozenset)):
        items = [canon(v, todo) for v in value]
        return {'$set': sorted(items, key=lambda v: json.dumps(v, sort_keys=True))}
    if isinstance(value, tuple):
        return {'$tuple': [canon(v, todo) for v in value]}
    if isinstance(value, list):
        return {'$list': [canon(v, todo) for v in value]}
    return {'$repr': repr(value)}


def describe(connection):
    """{oid: [class, state]} for every object reachable from the root,
    loading ghosts as it goes."""
    out = {}
    todo = [connection.get_root()]
    while todo:
        obj = todo.pop()
        oid = str_to_int8(obj._p_oid)
        if oid in out:
            continue
        if obj._p_is_ghost():
            obj._p_load_state()
        cls = type(obj)
        out[oid] = ['%s.%s' % (cls.__module__, cls.__name__),
                    canon(obj.__getstate__(), todo)]
    return dict((str(k), out[k]) for k in sorted(out))


# ------------------------------------------------------------- recording

class Recorder(object):
    def __init__(self, outdir, name, every_commit):
        self.outdir = outdir
        self.name = name
        self.path = os.path.join(outdir, name + '.durus')
        self.every_commit = every_commit
        self.events = []
        self.checkpoints = 0

    def checkpoint(self, with_prepack=False):
        self.checkpoints += 1
        base = '%s.ckpt%03d' % (self.name, self.checkpoints)
        shutil.copyfile(self.path, os.path.join(self.outdir, base + '.durus'))
        prepack = None
        if with_prepack:
            prepack = base + '.prepack'
            shutil.copyfile(self.path + '.prepack',
                            os.path.join(self.outdir, prepack))
        self.events.append(dict(op='checkpoint', file=base + '.durus',
                                prepack=prepack))

    def open(self):
        return RecordingFileStorage(self)

    def reopen(self, storage):
        storage.close()
        self.events.append(dict(op='reopen'))
        return self.open()


class RecordingFileStorage(FileStorage):
    """A FileStorage that logs the calls which decide the file's bytes."""

    def __init__(self, recorder):
        FileStorage.__init__(self, recorder.path)
        self.recorder = recorder

    def new_oid(self):
        oid = FileStorage.new_oid(self)
        self.recorder.events.append(dict(op='new_oid', oid=str_to_int8(oid)))
        return oid

    def end(self, handle_invalidations=None):
        records = [[str_to_int8(oid), record.hex()]
                   for oid, record in self.pending_records.items()]
        FileStorage.end(self, handle_invalidations)
        self.recorder.events.append(dict(op='commit', records=records))
        if self.recorder.every_commit:
            self.recorder.checkpoint()

    def sync(self):
        oids = FileStorage.sync(self)
        self.recorder.events.append(
            dict(op='sync', oids=sorted(str_to_int8(o) for o in oids)))
        return oids

    def pack(self):
        FileStorage.pack(self)
        self.recorder.events.append(dict(op='pack'))
        self.recorder.checkpoint(with_prepack=True)


# ------------------------------------------------------------- scenarios

def scenario_worked(rec, extra, pack=False):
    """Spec 4.9: an empty root PersistentDict, then root['a'] = p with
    p.x = 1 (two commits)."""
    storage = rec.open()
    conn = Connection(storage)
    root = conn.get_root()
    p = Persistent()
    p.x = 1
    root['a'] = p
    conn.commit()
    if pack:
        extra['unpacked_len'] = os.path.getsize(rec.path)
        conn.pack()
    return conn


def scenario_worked_packed(rec, extra):
    return scenario_worked(rec, extra, pack=True)


def scenario_many_updates(rec, extra):
    """Sixty transactions updating the same few objects over and over."""
    rng = random.Random(11)
    conn = Connection(rec.open())
    root = conn.get_root()
    counters = [Counter(i) for i in range(10)]
    root['counters'] = PersistentList(counters)
    root['total'] = 0
    conn.commit()
    for t in range(60):
        for c in rng.sample(counters, rng.randint(1, 3)):
            c.value += rng.randint(1, 1000)
        root['total'] = sum(c.value for c in counters)
        if t % 10 == 9:
            root['counters'].append(Counter(-t))
        conn.commit()
    return conn


def scenario_multi(rec, extra):
    """Updates, deletions (garbage), a pack, commits reusing the holes
    (first without syncing, so the removed oids are skipped), a second pack
    and more commits."""
    rng = random.Random(7)
    conn = Connection(rec.open())
    root = conn.get_root()
    counters = PersistentList([Counter(i) for i in range(8)])
    root['counters'] = counters
    things = root['things'] = PersistentDict()
    conn.commit()
    for t in range(25):
        for i in rng.sample(range(8), rng.randint(1, 3)):
            counters[i].value += rng.randint(1, 100)
        if t % 3 == 0:
            things['t%02d' % t] = Thing(t, 'thing %d' % t, t / 3.0,
                                        ['a', t, (t, 'x')])
        if t % 7 == 6:
            del things[sorted(things.keys())[0]]
        conn.commit()
    conn.pack()
    for t in range(25, 30):
        things['t%02d' % t] = Thing(t, 'late %d' % t, -t / 7.0,
                                    link=counters[t % 8])
        counters[t % 8].value *= 2
        conn.commit()
    conn.abort()
    del things[sorted(things.keys())[1]]
    root['set'] = PersistentSet([1, 2, 3, 'four'])
    conn.commit()
    conn.pack()
    conn.abort()
    for t in range(30, 34):
        things['t%02d' % t] = Thing(t, 'after second pack')
        conn.commit()
    return conn


def scenario_holes(rec, extra):
    """Spec 14 ShelfStorageTest a: ten objects, delete oids 1, 3, 8, 9 from
    the root, commit, pack."""
    conn = Connection(rec.open())
    root = conn.get_root()
    for i in range(10):
        root['k%d' % i] = Thing(i, 'k%d' % i)
    conn.commit()
    gone = [k for k, v in root.items() if str_to_int8(v._p_oid) in (1, 3, 8, 9)]
    if len(gone) != 4:
        fail("expected the ten objects to get oids 1..10, got %r" %
             sorted(str_to_int8(v._p_oid) for v in root.values()))
    for k in gone:
        del root[k]
    conn.commit()
    conn.pack()
    return conn


def scenario_btree(rec, extra):
    """A BTree of 3000 entries (every tenth value a Thing) committed in
    batches, a range deleted, a pack, then more commits appended."""
    conn = Connection(rec.open())
    root = conn.get_root()
    tree = root['tree'] = BTree()
    for i in range(3000):
        tree[i] = Thing(i, 'n%d' % i, i * 0.25) if i % 10 == 0 else 'v%d' % i
        if i % 500 == 499:
            conn.commit()
    for i in range(1000, 1500):
        del tree[i]
    conn.commit()
    for i in range(0, 3000, 100):
        if i in tree:
            tree[i].weight += 1.0
    conn.commit()
    conn.pack()
    conn.abort()
    for i in range(3000, 3200):
        tree[i] = Thing(i, 'after pack') if i % 4 == 0 else (i, 'tuple')
    conn.commit()
    tree[0].tags.append('touched')
    tree[0]._p_note_change()
    del tree[10]
    conn.commit()
    extra['tree_len'] = len(tree)
    return conn


def scenario_reopen(rec, extra):
    """Five sessions on one file: create; reopen, leave two oids allocated
    but unused (a gap later sessions fill) and append; reopen, update and
    delete; reopen and pack; reopen and append."""
    storage = rec.open()
    conn = Connection(storage)
    root = conn.get_root()
    root['log'] = PersistentList([Thing(i, 'session 1') for i in range(3)])
    conn.commit()
    storage = rec.reopen(storage)
    conn = Connection(storage)
    root = conn.get_root()
    extra['unused_oids'] = [str_to_int8(storage.new_oid()) for _ in range(2)]
    root['log'].append(Thing(3, 'session 2'))
    root['more'] = Thing(4, 'session 2', link=root['log'][0])
    conn.commit()
    storage = rec.reopen(storage)
    conn = Connection(storage)
    root = conn.get_root()
    root['log'][1].label = 'updated in session 3'
    del root['log'][2]
    root['log'].append(Thing(5, 'session 3'))
    conn.commit()
    storage = rec.reopen(storage)
    conn = Connection(storage)
    conn.pack()
    storage = rec.reopen(storage)
    conn = Connection(storage)
    root = conn.get_root()
    root['log'].append(Thing(6, 'session 5'))
    root['log'].append(Thing(7, 'session 5'))
    conn.commit()
    return conn


def scenario_empty_txn(rec, extra):
    """A commit, an empty storage-level transaction (begin/end with no
    store: Durus writes an 8-byte empty transaction), another commit."""
    storage = rec.open()
    conn = Connection(storage)
    conn.get_root()['x'] = Thing(1)
    conn.commit()
    extra['empty_txn_start'] = os.path.getsize(rec.path)
    storage.begin()
    storage.end()
    conn.get_root()['y'] = Thing(2)
    conn.commit()
    return conn


def scenario_large(rec, extra):
    """A larger database: a BTree of 2000 Things shared with an index dict
    and sets; batch commits, many updates, deletions (garbage), a pack,
    then commits reusing the freed oids and deleting more (garbage again)."""
    rng = random.Random(2024)
    conn = Connection(rec.open())
    root = conn.get_root()
    items = root['items'] = BTree()
    index = root['index'] = PersistentDict()
    groups = root['groups'] = PersistentList([PersistentSet() for _ in range(5)])
    for i in range(2000):
        thing = Thing(i, 'item-%04d' % i, rng.random() * 100,
                      [i % 7, 'tag%d' % (i % 3)])
        items[i] = thing
        if i % 4 == 0:
            index[thing.label] = thing
        groups[i % 5].add(i)
        if i % 250 == 249:
            conn.commit()
    for t in range(30):
        for i in rng.sample(range(2000), 20):
            thing = items[i]
            thing.weight += 0.5
            thing.label = thing.label + '+'
        conn.commit()
    for i in rng.sample(range(2000), 300):
        thing = items[i]
        del items[i]
        index.pop('item-%04d' % i, None)
        groups[i % 5].discard(i)
    conn.commit()
    conn.pack()
    conn.abort()
    for t in range(4):
        for i in range(2000 + 50 * t, 2050 + 50 * t):
            items[i] = Thing(i, 'new-%d' % i, link=items.get(i - 2000))
        groups[t].add(-t)
        for i in rng.sample(sorted(k for k in items.keys() if k < 2000), 10):
            del items[i]
            index.pop('item-%04d' % i, None)
        conn.commit()
    extra['items'] = len(items)
    return conn


def scenario_torn(rec, extra):
    """Four commits; the last one writes four records (three updates and a
    new object), so the last transaction has non-final records."""
    storage = rec.open()
    conn = Connection(storage)
    root = conn.get_root()
    things = root['things'] = PersistentList([Thing(i, 'x' * (20 + i)) for i in range(4)])
    conn.commit()
    things[0].weight = 1.5
    conn.commit()
    things[1].tags = ['a', 'b']
    conn.commit()
    extra['before_last'] = dump_storage(storage)
    extra['last_txn_start'] = os.path.getsize(rec.path)
    for t in things[1:]:
        t.label = 'changed in the last transaction ' * 3
    things.append(Thing(99, 'new in the last transaction'))
    conn.commit()
    return conn


def scenario_pack_during_commits(rec, extra):
    """Durus's incremental packer, stepped as its server steps it, with a
    commit arriving mid-pack: the new file gets the base, then one catch-up
    transaction per oid committed during the pack (spec 6.1 step 6)."""
    storage = rec.open()
    conn = Connection(storage)
    root = conn.get_root()
    for i in range(20):
        root['k%d' % i] = Thing(i, 'k%d' % i)
    conn.commit()
    for i in range(0, 20, 3):
        del root['k%d' % i]
    conn.commit()
    steps = 0
    for step in storage.get_packer():
        steps += 1
        if steps == 5:
            root['during'] = Thing(100, 'committed mid-pack', link=root['k1'])
            root['k2'].label = 'changed mid-pack'
            conn.commit()
            extra['during_oid'] = str_to_int8(root['during']._p_oid)
    extra['steps'] = steps
    conn.abort()
    root['after'] = Thing(101, 'after the pack')
    conn.commit()
    return conn


SCENARIOS = dict(
    worked=scenario_worked,
    worked_packed=scenario_worked_packed,
    many_updates=scenario_many_updates,
    multi=scenario_multi,
    holes=scenario_holes,
    btree=scenario_btree,
    reopen=scenario_reopen,
    empty_txn=scenario_empty_txn,
    large=scenario_large,
    torn=scenario_torn,
    pack_during_commits=scenario_pack_during_commits,
)


def cmd_scenario(name, outdir, every_commit=False):
    if name not in SCENARIOS:
        fail("unknown scenario %r (known: %s)" % (name, ', '.join(sorted(SCENARIOS))))
    rec = Recorder(outdir, name, every_commit)
    for stale in (rec.path, rec.path + '.prepack'):
        if os.path.exists(stale):
            os.remove(stale)
    extra = {}
    conn = SCENARIOS[name](rec, extra)
    description = describe(conn)
    conn.get_storage().close()
    rec.checkpoint()
    write_json(os.path.join(outdir, name + '.json'), dict(
        events=rec.events,
        dump=dump_file(rec.path, new_oids=6),
        describe=description,
        extra=extra,
    ))


# ------------------------------------------------------ checking rust files

def cmd_verify(out, path, expected_path):
    with open(expected_path) as f:
        expected = json.load(f)['describe']
    storage = FileStorage(path)
    conn = Connection(storage)
    got = describe(conn)
    if got != expected:
        missing = sorted(set(expected) - set(got), key=int)
        extra = sorted(set(got) - set(expected), key=int)
        differ = sorted((k for k in set(got) & set(expected) if got[k] != expected[k]), key=int)
        detail = "missing oids %s; unexpected oids %s; differing oids %s" % (
            missing[:20], extra[:20], differ[:20])
        if differ:
            k = differ[0]
            detail += "\nfirst difference, oid %s:\n  expected %s\n  got      %s" % (
                k, json.dumps(expected[k])[:2000], json.dumps(got[k])[:2000])
        fail("objects read through Connection differ from what Python stored: " + detail)
    before = dump_storage(storage)
    reachable_records = dict((oid, rec) for oid, rec in before['records']
                             if oid in set(before['reachable']))
    storage.pack()
    after = dump_storage(storage)
    storage.close()
    if after['reachable'] != before['reachable']:
        fail("Durus's pack changed the reachable set: %d oids before, %d after" % (
            len(before['reachable']), len(after['reachable'])))
    if dict(after['records']) != reachable_records:
        fail("after Durus's pack the records are not exactly the reachable ones")
    conn2 = Connection(FileStorage(path, readonly=True))
    if describe(conn2) != expected:
        fail("objects differ after Durus packed the Rust-written file")
    conn2.get_storage().close()
    write_json(out, dict(objects=len(got), before=before, after=after,
                         file_len=os.path.getsize(path)))


def cmd_pack(out, paths, new_oids=0):
    results = []
    for path in paths:
        before = dump_file(path)
        storage = FileStorage(path)
        storage.pack()
        storage.close()
        results.append(dict(before=before, after=dump_file(path, new_oids)))
    write_json(out, results)


def error_text(e):
    # Durus replaces a ShortRead's args by a string, i.e. a tuple of chars.
    return '%s: %s' % (type(e).__name__, ''.join(str(a) for a in e.args))


def cmd_probe_torn(out, paths):
    results = []
    for path in paths:
        entry = dict(path=path, len=os.path.getsize(path))
        try:
            FileStorage(path, readonly=True).close()
            entry['opens'] = True
        except Exception as e:
            entry['opens'] = False
            entry['error'] = error_text(e)
        copy = path + '.repair-probe'
        shutil.copyfile(path, copy)
        try:
            FileStorage(copy, repair=True).close()
            entry['repaired_len'] = os.path.getsize(copy)
        except Exception as e:
            entry['repaired_len'] = None
            entry['repair_error'] = error_text(e)
        os.remove(copy)
        results.append(entry)
    write_json(out, results)


def cmd_hold(path):
    storage = FileStorage(path)
    sys.stdout.write('locked\n')
    sys.stdout.flush()
    sys.stdin.read()
    storage.close()


def cmd_lock_probe(out, path):
    result = {}
    try:
        FileStorage(path).close()
        result['read_write_error'] = None
    except Exception as e:
        result['read_write_error'] = error_text(e)
    storage = FileStorage(path, readonly=True)
    result['readonly_records'] = len(list(storage.gen_oid_record()))
    storage.close()
    write_json(out, result)


def take_option(args, name, default):
    if name in args:
        i = args.index(name)
        value = args[i + 1]
        del args[i:i + 2]
        return value
    return default


def main(argv):
    if not argv:
        fail("usage: peer.py COMMAND ... (see the module docstring)")
    command, args = argv[0], list(argv[1:])
    if command == 'scenario':
        every = '--every-commit' in args
        args = [a for a in args if a != '--every-commit']
        cmd_scenario(args[0], args[1], every)
    elif command == 'dump':
        k = int(take_option(args, '--new-oids', 0))
        write_json(args[0], [dump_file(p, k) for p in args[1:]])
    elif command == 'verify':
        cmd_verify(args[0], args[1], args[2])
    elif command == 'pack':
        k = int(take_option(args, '--new-oids', 0))
        cmd_pack(args[0], args[1:], k)
    elif command == 'hold':
        cmd_hold(args[0])
    elif command == 'lock-probe':
        cmd_lock_probe(args[0], args[1])
    elif command == 'probe-torn':
        cmd_probe_torn(args[0], args[1:])
    else:
        fail("unknown command %r" % command)


if __name__ == '__main__':
    main(sys.argv[1:])
