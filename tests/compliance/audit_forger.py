"""What root on the host can do to a SQLite audit log without esm: drop the append-only
triggers, change an event, recompute every event hash after it (the hash chain is public
arithmetic), recompute the Merkle root of every checkpoint, and sign those checkpoints again
with whatever Ed25519 key it holds. Written from the formats esm documents (audit/src/
hash_chain.rs, merkle.rs, checkpoint.rs), not by calling esm."""

import base64
import hashlib
import sqlite3
import struct

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

TRIGGERS = ["events_no_update", "events_no_delete", "checkpoints_no_update",
            "checkpoints_no_delete", "anchor_needs_checkpoint", "anchor_needs_statement"]
FIELDS = ["kind", "actor", "subject", "action", "outcome", "reason", "correlation_id", "node", "details"]


def event_hash(prev, seq, time_ns, row):
    h = hashlib.sha256(b"esm.audit.event.v1\0" + prev + struct.pack(">Qq", seq, time_ns))
    for f in FIELDS:
        v = row[f].encode()
        h.update(struct.pack(">Q", len(v)) + v)
    return h.digest()


def merkle_root(leaves):
    """RFC 6962 Merkle tree hash over event hashes."""
    if not leaves:
        return hashlib.sha256(b"").digest()
    if len(leaves) == 1:
        return hashlib.sha256(b"\0" + leaves[0]).digest()
    k = 1
    while k * 2 < len(leaves):
        k *= 2
    return hashlib.sha256(b"\1" + merkle_root(leaves[:k]) + merkle_root(leaves[k:])).digest()


def checkpoint_text(size, root, last_hash, time_ns):
    return (f"esm audit checkpoint v1\n{size}\n{base64.b64encode(root).decode()}\n"
            f"{last_hash.hex()}\n{time_ns}\n").encode()


def key_text(key):
    """The `checkpoint.pub` text of an Ed25519 key, and its esm key id."""
    raw = key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    return base64.b64encode(raw).decode() + "\n", "ed25519:" + hashlib.sha256(raw).hexdigest()[:16]


def stolen_file_key(path):
    """The Ed25519 key in an esm `checkpoint.key` (PKCS#8 v2 as ring writes it): the 32-byte
    seed follows the inner OCTET STRING header."""
    der = open(path, "rb").read()
    at = der.index(b"\x04\x22\x04\x20") + 4
    return Ed25519PrivateKey.from_private_bytes(der[at:at + 32])


def rewrite(db_path, seq, column, value, key, key_id=None):
    """Sets `column` of event `seq` to `value`, relinks the chain and re-signs every
    checkpoint that covers it with `key`, recording `key_id` (default: the key's own).
    Returns the key id."""
    key_id = key_id or key_text(key)[1]
    c = sqlite3.connect(db_path)
    c.row_factory = sqlite3.Row
    try:
        c.executescript("".join(f"DROP TRIGGER IF EXISTS {t};" for t in TRIGGERS))
        rows = [dict(r) for r in c.execute("SELECT * FROM events ORDER BY seq")]
        prev = bytes(32)
        hashes = []
        for r in rows:
            if r["seq"] == seq:
                r[column] = value
            h = event_hash(prev, r["seq"], r["time_ns"], r)
            c.execute(f"UPDATE events SET {column} = ?, prev_hash = ?, hash = ? WHERE seq = ?",
                      (r[column], prev, h, r["seq"]))
            hashes.append(h)
            prev = h
        assert rows[0]["seq"] == 1, "a log shortened by retention is not handled here"
        for size, time_ns in list(c.execute("SELECT tree_size, time_ns FROM checkpoints")):
            if size < seq:
                continue  # genuine and still true: left alone
            leaves = hashes[:size]
            root, last = merkle_root(leaves), leaves[-1]
            sig = key.sign(checkpoint_text(size, root, last, time_ns))
            c.execute("UPDATE checkpoints SET root = ?, last_hash = ?, key_id = ?, signature = ? "
                      "WHERE tree_size = ?", (root, last, key_id, sig, size))
        c.commit()
    finally:
        c.close()
    return key_id
