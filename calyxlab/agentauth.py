"""Who may make the lab's user-mode Linux agent act: only the holder of the lab's key, which
only root can read, and only from the lab's host side.

Standard library only (the agent imports it inside user-mode Linux). The agent runs any command
it is asked to as root, in a kernel whose root filesystem is the host's, so it must refuse
everyone but the lab's own tooling. Each connection carries one request, authenticated by a
challenge the agent sends first:

1. agent -> client: ``{"challenge": HEX}`` (16 fresh random bytes, never reused);
2. client -> agent: ``{"mac": HEX, "request": TEXT}``, ``TEXT`` being the JSON request and
   ``mac`` HMAC-SHA256(key, challenge bytes + TEXT bytes);
3. the agent checks the MAC (in constant time) before it parses ``TEXT``; a missing or wrong MAC
   gets a refusal and nothing runs. A recorded exchange cannot be replayed: the next connection
   gets another challenge.

The key is 32 random bytes, hex-encoded in a file of mode 0600 owned by root (the lab's state
directory), written before the instance boots; the agent reads it at start and refuses to start
if the file is missing or readable by anyone else.
"""
from __future__ import annotations

import hashlib
import hmac
import os
import secrets
import stat
from pathlib import Path

KEY_BYTES = 32
CHALLENGE_BYTES = 16


class AgentKeyError(RuntimeError):
    """The key file is missing, malformed or open to others; the message names file and fault."""


def create_key_file(path: Path) -> bytes:
    """Write a new random key to ``path`` (mode 0600, replacing any older key) and return it."""
    key = secrets.token_bytes(KEY_BYTES)
    path.unlink(missing_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(key.hex() + "\n")
    return key


def read_key_file(path: Path) -> bytes:
    """The key in ``path``; :class:`AgentKeyError` if it is missing, not a regular file, owned by
    another user, readable or writable by group or others, or not 32 hex-encoded bytes."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    except OSError as exc:
        raise AgentKeyError(f"agent key {path}: cannot open: {exc.strerror}") from None
    with os.fdopen(fd) as source:
        info = os.fstat(source.fileno())
        if not stat.S_ISREG(info.st_mode):
            raise AgentKeyError(f"agent key {path}: not a regular file")
        if info.st_uid != os.geteuid():
            raise AgentKeyError(f"agent key {path}: owned by uid {info.st_uid}, not {os.geteuid()}")
        if info.st_mode & 0o077:
            raise AgentKeyError(f"agent key {path}: mode {stat.S_IMODE(info.st_mode):04o} "
                                "lets group or others at it (0600 wanted)")
        text = source.read().strip()
    try:
        key = bytes.fromhex(text)
    except ValueError:
        key = b""
    if len(key) != KEY_BYTES:
        raise AgentKeyError(f"agent key {path}: not {KEY_BYTES} hex-encoded bytes")
    return key


def new_challenge() -> bytes:
    return secrets.token_bytes(CHALLENGE_BYTES)


def sign(key: bytes, challenge: bytes, request_text: str) -> str:
    """The MAC the client sends with ``request_text`` in answer to ``challenge``."""
    return hmac.new(key, challenge + request_text.encode(), hashlib.sha256).hexdigest()


def verify(key: bytes, challenge: bytes, request_text: str, mac: object) -> bool:
    """Whether ``mac`` authenticates ``request_text`` for this connection's ``challenge``."""
    if not isinstance(mac, str):
        return False
    return hmac.compare_digest(sign(key, challenge, request_text), mac)
