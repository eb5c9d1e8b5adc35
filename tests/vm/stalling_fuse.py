# A FUSE daemon that answers one user and never root (issue 22.1): it serves `x.py` (and
# whatever `--file NAME=TEXT` and `--link NAME=TARGET` add) to every request whose caller is
# not uid 0, and leaves every request from root (the agent: its reader opening the event's
# file, its walks through a user's cwd) unanswered for ever, as a user's daemon could.
# Standard library only: it speaks the kernel's FUSE protocol on /dev/fuse itself, so it
# runs on the host and in the VM image alike.
#
#   python3 stalling_fuse.py MOUNTPOINT [--file NAME=TEXT] [--link NAME=TARGET]
#                            [--dir NAME] [--answer-root-until-signal]
#
# It mounts (as root, with allow_other: the agent must be able to reach it), prints
# "mounted" and serves until the filesystem is unmounted or its connection aborted. With
# --answer-root-until-signal it answers root too until it gets SIGUSR1 (so that root can
# mount something below it first).
import ctypes
import errno
import os
import signal
import struct
import sys

# Opcodes (include/uapi/linux/fuse.h).
LOOKUP, FORGET, GETATTR, READLINK = 1, 2, 3, 5
OPEN, READ, STATFS, RELEASE, FLUSH = 14, 15, 17, 18, 25
INIT, OPENDIR, READDIR, RELEASEDIR = 26, 27, 28, 29
INTERRUPT, DESTROY, BATCH_FORGET = 36, 38, 42
NO_REPLY = {FORGET, BATCH_FORGET, INTERRUPT}

IN_HEADER = struct.Struct("<IIQQIIII")  # len, opcode, unique, nodeid, uid, gid, pid, pad
OUT_HEADER = struct.Struct("<IiQ")  # len, error, unique
ROOT = 1


def attr(ino, mode, size):
    # fuse_attr: ino size blocks atime mtime ctime, *nsec, mode nlink uid gid rdev
    # blksize flags
    return struct.pack(
        "<QQQQQQIIIIIIIIII",
        ino, size, (size + 511) // 512, 0, 0, 0, 0, 0, 0,
        mode, 1, 65534, 65534, 0, 4096, 0,
    )


def main():
    mountpoint = sys.argv[1]
    # name -> (mode, content or link target)
    files = {"x.py": (0o100644, b"print('ran from fuse')\n")}
    stalling = [True]
    args = sys.argv[2:]
    while args:
        if args[0] == "--answer-root-until-signal":
            stalling[0] = False
            signal.signal(signal.SIGUSR1, lambda *_: stalling.__setitem__(0, True))
            args = args[1:]
            continue
        if args[0] == "--dir" and len(args) >= 2:
            files[args[1]] = (0o40755, b"")
            args = args[2:]
            continue
        kind = {"--file": 0o100644, "--link": 0o120777}.get(args[0])
        if kind is None or len(args) < 2 or "=" not in args[1]:
            sys.exit("usage: stalling_fuse.py MOUNTPOINT [--file NAME=TEXT] [--link NAME=TARGET] "
                     "[--dir NAME] [--answer-root-until-signal]")
        name, text = args[1].split("=", 1)
        files[name] = (kind, text.encode())
        args = args[2:]
    names = sorted(files)
    inode = {name: ROOT + 1 + i for i, name in enumerate(names)}
    by_inode = {i: files[name] for name, i in inode.items()}

    dev = os.open("/dev/fuse", os.O_RDWR)
    libc = ctypes.CDLL(None, use_errno=True)
    opts = f"fd={dev},rootmode=40000,user_id=65534,group_id=65534,allow_other".encode()
    ms_nosuid, ms_nodev = 2, 4
    if libc.mount(b"stallfs", mountpoint.encode(), b"fuse.stallfs",
                  ms_nosuid | ms_nodev, opts) != 0:
        e = ctypes.get_errno()
        sys.exit(f"mount {mountpoint}: {os.strerror(e)}")
    print("mounted", flush=True)

    def reply(unique, error=0, body=b""):
        os.write(dev, OUT_HEADER.pack(OUT_HEADER.size + len(body), -error, unique) + body)

    stalled = 0
    while True:
        try:
            req = os.read(dev, 1 << 20 | 4096)
        except OSError as e:
            if e.errno in (errno.ENODEV, errno.ECONNABORTED):
                break  # unmounted or aborted
            if e.errno == errno.EINTR:
                continue
            raise
        length, op, unique, node, uid, _gid, pid, _ = IN_HEADER.unpack_from(req)
        body = req[IN_HEADER.size:length]
        if op in NO_REPLY:
            continue
        if op == INIT:
            major, minor, readahead, _flags = struct.unpack_from("<IIII", body)
            out = struct.pack("<IIIIHHIIHHI", 7, 31, readahead, 0, 16, 12, 65536, 1, 0, 0, 0)
            reply(unique, body=out + bytes(28))
            continue
        if op == DESTROY:
            reply(unique)
            break
        if uid == 0 and pid != 0 and stalling[0]:
            stalled += 1
            print(f"stalled request {op} from pid {pid} ({stalled})", flush=True)
            continue
        if op == LOOKUP:
            name = body.split(b"\0", 1)[0].decode(errors="replace")
            if node != ROOT or name not in inode:
                reply(unique, errno.ENOENT)
                continue
            ino = inode[name]
            mode, data = by_inode[ino]
            entry = struct.pack("<QQQQII", ino, 0, 1, 1, 0, 0)
            reply(unique, body=entry + attr(ino, mode, len(data)))
        elif op == GETATTR:
            if node == ROOT:
                a = attr(ROOT, 0o40755, 0)
            elif node in by_inode:
                mode, data = by_inode[node]
                a = attr(node, mode, len(data))
            else:
                reply(unique, errno.ENOENT)
                continue
            reply(unique, body=struct.pack("<QII", 1, 0, 0) + a)
        elif op in (OPEN, OPENDIR):
            reply(unique, body=struct.pack("<QII", 1, 0, 0))
        elif op == READ:
            offset, size = struct.unpack_from("<QI", body, 8)
            reply(unique, body=by_inode.get(node, (0, b""))[1][offset:offset + size])
        elif op == READLINK:
            reply(unique, body=by_inode.get(node, (0, b""))[1])
        elif op == READDIR:
            offset = struct.unpack_from("<Q", body, 8)[0]
            out = b""
            for i, name in enumerate(names[offset:], start=offset + 1):
                raw = name.encode()
                # DT_LNK, DT_DIR, DT_REG
                kind = {0o120777: 10, 0o40755: 4}.get(by_inode[inode[name]][0], 8)
                ent = struct.pack("<QQII", inode[name], i, len(raw), kind) + raw
                out += ent + bytes(-len(ent) % 8)
            reply(unique, body=out)
        elif op in (RELEASE, RELEASEDIR, FLUSH):
            reply(unique)
        elif op == STATFS:
            reply(unique, body=struct.pack("<QQQQQIIII", 0, 0, 0, 0, 0, 4096, 255, 4096, 0)
                  + bytes(24))
        else:
            reply(unique, errno.ENOSYS)


if __name__ == "__main__":
    main()
