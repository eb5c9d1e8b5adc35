# guard's audit hook (PEP 578): reports the code a program makes at run time (exec, eval,
# compile of strings, marshal.loads, code objects built by hand), ctypes, pickle and
# program launches to the guard agent, which records them and, where the policy says
# dynamic_code = "deny", refuses them. Written by `guard python-hook install`; loaded at
# start-up by the `.pth` file beside it, before any of the program's own code. Sign it
# like the rest of the interpreter's library: unsigned, the interpreter may not load it.


def _guard_install():
    import sys
    import _socket
    import _thread

    path = __SOCKET__
    events = frozenset(__EVENTS__)
    makes_code = frozenset(__MAKES_CODE__)
    # What one message carries of a source, and how many messages may wait unread.
    payload_max = 16384

    def connect():
        sock = _socket.socket(_socket.AF_UNIX, _socket.SOCK_SEQPACKET)
        try:
            sock.settimeout(5.0)
            sock.connect(path)
            sock.send(b"hello")
            mode = sock.recv(64)
            sock.settimeout(0.0)
        except BaseException:
            sock.close()
            raise
        return sock, mode

    try:
        sock, mode = connect()
    except OSError:
        # No agent can be asked: none runs, or this process cannot reach it (a mount or
        # network namespace can hide the socket). What it would allow is not known, so
        # the setting given at install decides: refuse (the default) the code that is not
        # made by the files guard's default policy expects, or allow.
        sock, mode = None, __UNREACHABLE__
    if mode == b"allow":
        if sock is not None:
            sock.close()
        return
    deny = mode != b"audit"
    fallback_callers = __FALLBACK_CALLERS__

    def matches(part, want):
        # `*` alone among glob's signs (the default patterns use no other), matched
        # without importing anything: the hook may run inside any import.
        pieces = want.split("*")
        if len(pieces) == 1:
            return part == want
        if not (part.startswith(pieces[0]) and part.endswith(pieces[-1])):
            return False
        at = len(pieces[0])
        end = len(part) - len(pieces[-1])
        for piece in pieces[1:-1]:
            found = part.find(piece, at, end)
            if found < 0:
                return False
            at = found + len(piece)
        return at <= end

    def fallback_listed(caller):
        # The default dynamic_code_callers, a `*` matching within one path component.
        parts = caller.split("/")
        for pattern in fallback_callers:
            wanted = pattern.split("/")
            if len(wanted) == len(parts) and all(
                matches(part, want) for part, want in zip(parts, wanted)
            ):
                return True
        return False

    modules = sys.modules
    getframe = sys._getframe
    lock = _thread.allocate_lock()
    # Per (event, calling file): b"a" allowed and not to be reported again, b"r" allowed
    # and reported each time, b"d" refused. Only asked for what makes code under deny.
    answers = {}
    state = {"sock": sock, "dropped": 0}

    # The import system runs code read from files the interpreter opened as code, which
    # guard judged when they were opened, and so does `site` at start-up with the import
    # lines of `.pth` files (code by name to guard); once the main program starts,
    # `site.addpackage` is one more function that runs lines of any file it is handed.
    # The import system is known by its functions' own code objects, each called by the
    # one that reads the file with the loaders' own `get_data` (a private function called
    # directly, or a loader whose `get_data` hands over other bytes, makes dynamic code),
    # never by a name a frame could be given.
    bootstrap = modules["_frozen_importlib"]
    external = modules["_frozen_importlib_external"]
    site = modules.get("site")
    site_globals = site.__dict__ if site is not None else None
    source_suffixes = tuple(external.SOURCE_SUFFIXES)
    frames_removed = bootstrap._call_with_frames_removed.__code__
    source_to_code = external.SourceLoader.source_to_code.__code__
    compile_bytecode = external._compile_bytecode.__code__
    exec_module = external._LoaderBasics.exec_module.__code__
    get_code = (
        external.SourceLoader.get_code.__code__,
        external.SourcelessFileLoader.get_code.__code__,
    )
    stock_get_data = external.FileLoader.get_data
    zipimport = modules.get("zipimport")
    zip_code = (
        (
            zipimport._compile_source.__code__,
            zipimport._unmarshal_code.__code__,
            zipimport._get_module_code.__code__,
        )
        if zipimport is not None
        else None
    )

    def read_by_a_stock_loader(frame):
        # `frame` runs the import system's get_code: its loader reads files itself.
        if frame is None or frame.f_code not in get_code:
            return False
        loader = frame.f_locals.get("self")
        return getattr(type(loader), "get_data", None) is stock_get_data

    starting = [True]
    main_program = frozenset(
        (
            "cpython.run_file",
            "cpython.run_module",
            "cpython.run_command",
            "cpython.run_stdin",
            "cpython.run_interactivehook",
            "cpython.run_startup",
        )
    )

    def from_a_code_file(event, args, frame):
        code = frame.f_code
        if frame.f_globals is site_globals:
            return starting[0] and event in ("compile", "exec")
        caller = frame.f_back
        if code is frames_removed and caller is not None:
            if event == "exec":
                return caller.f_code is exec_module
            if event == "compile" and caller.f_code is source_to_code:
                # Compiled what a stock loader read, and only under a code name, which
                # guard judged at the open: a loader pointed at `data.txt` makes
                # dynamic code.
                name = args[1]
                return (
                    isinstance(name, str)
                    and name.endswith(source_suffixes)
                    and read_by_a_stock_loader(caller.f_back)
                )
            return False
        if code is compile_bytecode:
            # Bytecode a stock loader read: code by content to guard (pyc sniffing).
            return event == "marshal.loads" and read_by_a_stock_loader(caller)
        if zip_code is not None and code in zip_code[:2]:
            # zipimport reads the archive (code by name and content to guard) itself.
            return caller is not None and caller.f_code is zip_code[2]
        return False

    def text(value):
        if isinstance(value, bytes):
            return value
        if isinstance(value, (bytearray, memoryview)):
            return bytes(value)
        if isinstance(value, str):
            return value.encode("utf-8", "surrogatepass")
        return repr(type(value)).encode()

    def describe(event, args):
        # (detail, payload): what the record shows of the event.
        try:
            if event == "compile":
                return text(args[1]), text(args[0])
            if event == "exec":
                code = args[0]
                return text(getattr(code, "co_filename", "")), text(getattr(code, "co_name", ""))
            if event == "code.__new__":
                return text(args[1]) + b":" + text(args[2]), b""
            if event == "marshal.loads":
                return b"", text(args[0])
            if event == "pickle.find_class":
                return text(args[0]) + b"." + text(args[1]), b""
            if event in ("os.system",):
                return b"", text(args[0])
            if event in ("os.exec", "os.posix_spawn", "subprocess.Popen"):
                return text(args[0]), text(repr(args[1]))
            if event == "os.spawn":
                return text(args[1]), text(repr(args[2]))
            return text(" ".join(repr(a) for a in args)[:512]), b""
        except Exception:
            return b"?", b""

    def send(message, ask, caller):
        sock = state["sock"]
        if sock is None:
            if not ask:
                return None
            return b"a" if fallback_listed(caller) else b"d"
        if not ask:
            try:
                sock.send(message)
            except BlockingIOError:
                # The agent is behind: the event is counted, never waited for.
                state["dropped"] += 1
            except OSError:
                # The agent restarted: ask the new one.
                state["dropped"] += 1
                reconnect()
            return None
        with lock:
            try:
                sock.settimeout(5.0)
                sock.send(message)
                answer = sock.recv(16)
            except OSError:
                answer = b"d"
            finally:
                try:
                    sock.settimeout(0.0)
                except OSError:
                    pass
        return answer[:1] or b"d"

    def examine(event, args):
        # The answer for this event: b"d" refused, anything else allowed.
        try:
            frame = getframe(2)
        except ValueError:
            # No Python code called it: the interpreter compiling its own main program
            # at start-up, a file guard judged when it was opened.
            return None, ""
        if from_a_code_file(event, args, frame):
            return None, ""
        caller = frame.f_code.co_filename
        where = "%s by %s line %d" % (event, caller, frame.f_lineno)
        key = (event, caller)
        answer = answers.get(key)
        if answer == b"a":
            return answer, where
        ask = deny and answer is None and event in makes_code
        detail, payload = describe(event, args)
        size = len(payload)
        digest = b""
        if size > payload_max:
            try:
                import _sha256

                digest = _sha256.sha256(payload).hexdigest().encode()
            except Exception:
                digest = b"?"
            payload = payload[:payload_max]
        dropped, state["dropped"] = state["dropped"], 0
        message = b"\0".join(
            (
                event.encode(),
                text(caller),
                str(frame.f_lineno).encode(),
                b"1" if ask else b"0",
                str(dropped).encode(),
                str(size).encode(),
                digest,
                detail[:1024],
                payload,
            )
        )
        reply = send(message, ask, caller)
        if ask:
            answer = reply
            answers[key] = answer
        return answer, where

    def hook(event, args):
        if event not in events:
            if event in main_program:
                starting[0] = False
            return
        try:
            answer, where = examine(event, args)
        except Exception:
            # The hook itself failed: under deny, what it could not look at is refused.
            answer, where = (b"d" if deny else None), event
        if answer == b"d" and event in makes_code:
            raise PermissionError("guard: dynamic code refused (%s): rule dynamic-code" % where)

    def reconnect():
        old = state["sock"]
        try:
            state["sock"], _ = connect()
        except OSError:
            state["sock"] = None
        if old is not None:
            old.close()

    def flush():
        # What could not be sent is counted by the agent, never lost without a count.
        dropped = state["dropped"]
        sock = state["sock"]
        if dropped and sock is not None:
            try:
                sock.settimeout(1.0)
                sock.send(b"\0".join((b"dropped", b"", b"0", b"0", str(dropped).encode())))
            except OSError:
                pass

    import atexit
    import os

    atexit.register(flush)
    # A child asks on its own connection: two processes reading one socket would take
    # each other's answers.
    os.register_at_fork(after_in_child=reconnect)
    sys.addaudithook(hook)


_guard_install()
del _guard_install
