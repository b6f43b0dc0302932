"""vdewire: what the hostile clients of test/t_hostile.sh share: the vde-2
request as libvdeplug sends it, and a datagram socket bound at a path."""
import os
import socket
import struct

MAGIC = 0xFEEDFACE
SUN_LEN = 108


def sockaddr(path_bytes, family=1):
    p = path_bytes[:SUN_LEN]
    return struct.pack("<H", family) + p + b"\0" * (SUN_LEN - len(p))


def request(path_bytes, magic=MAGIC, version=3, typ=0, desc=b"", family=1):
    return struct.pack("<III", magic, version, typ) + sockaddr(path_bytes, family) + desc


def bind_dgram(path):
    """A SOCK_DGRAM unix socket bound at path, replacing whatever was there."""
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
    s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    s.bind(path)
    return s
