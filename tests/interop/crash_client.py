"""
A Python Durus 4.3 client process of tests/crash.rs's `python` scenario:
our server is killed under it with SIGKILL and restarted, over and over.

    crash_client.py setup SOCK CLIENTS   the root: one pair of Counters per client
    crash_client.py work ME SOCK STOP    commit a = b = n, n = 1, 2, ... until
                                         the file STOP exists, reconnecting
                                         whenever the server goes

A worker checks its pair each time it gets back in: a = b (no transaction
half kept), acknowledged <= a (nothing acknowledged lost), a <= tried
(nothing invented); a violation prints it and exits 2. At the end it prints
"ACKED CHECKS".
"""
import os
import sys
import time

from durus.client_storage import ClientStorage
from durus.connection import Connection
from durus.persistent_dict import PersistentDict

from interop_models import Counter


def connect(sock):
    return Connection(ClientStorage(address=sock))


def setup(sock, clients):
    conn = connect(sock)
    root = conn.get_root()
    for c in range(clients):
        pair = PersistentDict()
        pair['a'] = Counter(0)
        pair['b'] = Counter(0)
        root['client%d' % c] = pair
    conn.commit()


def work(me, sock, stop):
    key = 'client' + me
    tried = acked = checks = 0
    while not os.path.exists(stop):
        try:
            conn = connect(sock)
            pair = conn.get_root()[key]
            a, b = pair['a'].value, pair['b'].value
        except Exception:
            time.sleep(0.005)  # the server is not back yet
            continue
        if a != b or a < acked or a > tried:
            print("violation: A = %d, B = %d, acknowledged %d, tried %d"
                  % (a, b, acked, tried))
            sys.exit(2)
        checks += 1
        n = a
        try:
            while not os.path.exists(stop):
                n += 1
                tried = n
                pair['a'].value = n
                pair['b'].value = n
                conn.commit()
                acked = n
        except Exception:
            pass  # the server went: reconnect and check
    print("%d %d" % (acked, checks))


if __name__ == '__main__':
    if sys.argv[1] == 'setup':
        setup(sys.argv[2], int(sys.argv[3]))
    else:
        work(sys.argv[2], sys.argv[3], sys.argv[4])
