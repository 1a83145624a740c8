"""
Persistent classes stored by tests/interop/peer.py.

They live in their own module so that the class pickles in the records read
'interop_models\\nThing' whichever script wrote or reads them.
"""
from durus.persistent import Persistent


class Thing(Persistent):
    """A small object with every kind of attribute the checks compare."""

    def __init__(self, n, label='', weight=0.0, tags=None, link=None):
        self.n = n
        self.label = label
        self.weight = weight
        self.tags = tags if tags is not None else []
        self.link = link


class Counter(Persistent):
    """An object updated over and over in many transactions."""

    def __init__(self, value=0):
        self.value = value
