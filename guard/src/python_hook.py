# guard's audit hook (PEP 578): reports the code a program makes at run time (exec, eval,
# compile of strings, marshal.loads, code objects built by hand), ctypes, pickle and
# program launches to the guard agent, which records them and, where the policy says
# dynamic_code = "deny", refuses them. Written by `guard python-hook install`; loaded at
# start-up by the `.pth` file beside it, before any of the program's own code. Sign it
# like the rest of the interpreter's library: unsigned, the interpreter may not load it.
#
# It lives in the process it watches: code already running there can undo it (ctypes,
# gc, frames). It is a tripwire for data turned into code, not a sandbox. The builtins it
# uses are bound when it is installed, so a program rebinding them later changes nothing.


def _guard_install():
    import sys
    import _socket
    import _thread

    # Bound now: looked up at call time, a program could replace them.
    len_, isinstance_, str_, bytes_, repr_, type_, getattr_, tuple_ = (
        len,
        isinstance,
        str,
        bytes,
        repr,
        type,
        getattr,
        tuple,
    )
    bytearray_, memoryview_, zip_, all_, frozenset_ = (
        bytearray,
        memoryview,
        zip,
        all,
        frozenset,
    )
    oserror, blocking, valueerror, exception = (
        OSError,
        BlockingIOError,
        ValueError,
        Exception,
    )
    permission_error = PermissionError
    get_ident = _thread.get_ident

    path = __SOCKET__
    events = frozenset_(__EVENTS__)
    makes_code = frozenset_(__MAKES_CODE__)
    fallback_callers = __FALLBACK_CALLERS__
    # What one message carries of a source.
    payload_max = 16384

    def connect():
        sock = _socket.socket(_socket.AF_UNIX, _socket.SOCK_SEQPACKET)
        try:
            sock.settimeout(5.0)
            sock.connect(path)
            sock.send(b"hello")
            mode = sock.recv(65536)
            sock.settimeout(0.0)
        except BaseException:
            sock.close()
            raise
        return sock, mode

    try:
        sock, mode = connect()
    except oserror:
        # No agent can be asked: none runs, or this process cannot reach it (a mount or
        # network namespace can hide the socket, a user can fill the agent's table).
        # What it would allow is not known, so the setting given at install decides:
        # refuse (the default) the code not made by the default policy's stdlib
        # functions, or allow.
        sock, mode = None, __UNREACHABLE__
    # The answer: the mode, then the profile's expected makers, one a line.
    lines = mode.split(b"\n")
    mode = lines[0]
    if mode == b"allow":
        if sock is not None:
            sock.close()
        return
    deny = mode != b"audit"
    expected = []
    for line in lines[1:]:
        pattern, _, function = line.decode("utf-8", "surrogateescape").partition("\t")
        # Only `*` is matched here: a pattern with another sign of glob's is left to the
        # agent (asked, or reported), never taken as matched.
        if not any(sign in pattern for sign in "?[]{}\\"):
            expected.append((pattern, function))

    def matches(part, want):
        # `*` alone among glob's signs (the default patterns use no other), matched
        # without importing anything: the hook may run inside any import.
        pieces = want.split("*")
        if len_(pieces) == 1:
            return part == want
        if not (part.startswith(pieces[0]) and part.endswith(pieces[-1])):
            return False
        at = len_(pieces[0])
        end = len_(part) - len_(pieces[-1])
        for piece in pieces[1:-1]:
            found = part.find(piece, at, end)
            if found < 0:
                return False
            at = found + len_(piece)
        return at <= end

    def listed(caller, function, makers):
        # One of `makers`: a file (`*` within one path component) and the function in it
        # (`*`: any).
        parts = caller.split("/")
        for pattern, wanted_function in makers:
            wanted = pattern.split("/")
            if (
                (wanted_function == "*" or function == wanted_function)
                and len_(wanted) == len_(parts)
                and all_(matches(part, want) for part, want in zip_(parts, wanted))
            ):
                return True
        return False

    def fallback_listed(caller, function):
        return listed(caller, function, fallback_callers)

    modules = sys.modules
    getframe = sys._getframe
    # Per (event, file, function) that made it: b"a" allowed and not to be reported
    # again, b"r" allowed and reported each time, b"d" refused. Asked only for what makes
    # code under deny.
    answers = {}
    state = {"sock": sock, "dropped": 0, "lock": _thread.allocate_lock()}
    # Threads in an ask: a signal handler making code while its thread waits for an
    # answer must not wait for the lock that thread holds.
    asking = set()

    # The import system runs code read from files the interpreter opened as code, which
    # guard judged when they were opened, and so does `site` at start-up with the import
    # lines of `.pth` files (code by name to guard); once the main program starts,
    # `site.addpackage` is one more function that runs lines of any file it is handed.
    # The import system is known by its functions' own code objects, each called by the
    # one that reads the file with the loaders' own `get_data` under a plain `str` path (a
    # private function called directly, a loader whose `get_data` hands over other bytes,
    # a path object whose str() and fspath() differ, make dynamic code), never by a name
    # a frame could be given. Archives (zipimport) are not exempt: what a zipimporter reads
    # cannot be tied to a file guard judged.
    bootstrap = modules["_frozen_importlib"]
    external = modules["_frozen_importlib_external"]
    site = modules.get("site")
    site_globals = site.__dict__ if site is not None else None
    source_suffixes = tuple_(external.SOURCE_SUFFIXES)
    frames_removed = bootstrap._call_with_frames_removed.__code__
    frozen_exec = bootstrap.FrozenImporter.exec_module.__code__

    def wrapped(method):
        # `_requires_frozen` wraps FrozenImporter.get_code; the function it wraps, whose
        # frame makes the call, is in the wrapper's closure.
        function = getattr_(method, "__func__", method)
        for cell in function.__closure__ or ():
            inner = cell.cell_contents
            if type_(inner) is type_(function):
                return inner.__code__
        return function.__code__

    frozen_get_code = wrapped(bootstrap.FrozenImporter.get_code)
    source_to_code = external.SourceLoader.source_to_code.__code__
    compile_bytecode = external._compile_bytecode.__code__
    exec_module = external._LoaderBasics.exec_module.__code__
    source_get_code = external.SourceLoader.get_code.__code__
    sourceless_get_code = external.SourcelessFileLoader.get_code.__code__
    stock_get_data = external.FileLoader.get_data

    def stock_read(frame, path_name):
        # `frame` runs the import system's get_code, whose loader reads files with the
        # stock get_data, from the path in its local `path_name`: the path returned.
        if frame is None or frame.f_code not in (source_get_code, sourceless_get_code):
            return None
        local = frame.f_locals
        loader = local.get("self")
        if getattr_(type_(loader), "get_data", None) is not stock_get_data:
            return None
        path = local.get(path_name)
        return path if type_(path) is str_ else None

    starting = [True]
    main = {"file": None, "compiled": False, "executed": False}
    main_program = frozenset_(
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
        if code is frozen_exec:
            # A module frozen into the interpreter itself.
            return event == "exec"
        if code is frozen_get_code:
            # Its code, unmarshalled from the interpreter's own table (3.13 raises the
            # event for it).
            return event == "marshal.loads"
        if code is frames_removed and caller is not None:
            if event == "exec":
                return caller.f_code is exec_module
            if event == "marshal.loads":
                return caller.f_code is frozen_exec
            if event == "compile" and caller.f_code is source_to_code:
                # What a stock loader read, under a code name guard judged at the open:
                # a loader pointed at `data.txt` makes dynamic code.
                name = args[1]
                read = stock_read(caller.f_back, "source_path")
                return (
                    read is not None
                    and type_(name) is str_
                    and name == read
                    and name.endswith(source_suffixes)
                )
            return False
        if code is compile_bytecode and event == "marshal.loads":
            # Bytecode a stock loader read: code by content to guard (pyc sniffing).
            if caller is None:
                return False
            name = "bytecode_path" if caller.f_code is source_get_code else "path"
            return stock_read(caller, name) is not None
        return False

    def text(value):
        if isinstance_(value, bytes_):
            return value
        if isinstance_(value, (bytearray_, memoryview_)):
            return bytes_(value)
        if isinstance_(value, str_):
            return value.encode("utf-8", "surrogatepass")
        return repr_(type_(value)).encode()

    def describe(event, args):
        # (detail, payload): what the record shows of the event.
        try:
            if event == "compile":
                return text(args[1]), text(args[0])
            if event == "exec":
                code = args[0]
                return text(getattr_(code, "co_filename", "")), text(
                    getattr_(code, "co_name", "")
                )
            if event == "code.__new__":
                return text(args[1]) + b":" + text(args[2]), b""
            if event == "marshal.loads":
                return b"", text(args[0])
            if event == "pickle.find_class":
                return text(args[0]) + b"." + text(args[1]), b""
            if event == "os.system":
                return b"", text(args[0])
            if event in ("os.exec", "os.posix_spawn", "subprocess.Popen"):
                return text(args[0]), text(repr_(args[1]))
            if event == "os.spawn":
                return text(args[1]), text(repr_(args[2]))
            return text(" ".join(repr_(a) for a in args)[:512]), b""
        except exception:
            return b"?", b""

    def reconnect():
        old = state["sock"]
        try:
            state["sock"], _ = connect()
        except oserror:
            state["sock"] = None
        if old is not None:
            old.close()

    def ask_agent(message):
        # One answer per question, or none: a reply that comes after its ask timed out
        # must not answer the next ask, so the connection is dropped with it.
        sock = state["sock"]
        if sock is None:
            return None
        with state["lock"]:
            try:
                sock.settimeout(5.0)
                sock.send(message)
                answer = sock.recv(16)
                sock.settimeout(0.0)
            except oserror:
                answer = None
        if not answer:
            reconnect()
            return None
        return answer[:1]

    def report(message):
        sock = state["sock"]
        if sock is None:
            return
        try:
            sock.send(message)
        except blocking:
            # The agent is behind: the event is counted, never waited for.
            state["dropped"] += 1
        except oserror:
            # The agent restarted: ask the new one.
            state["dropped"] += 1
            reconnect()

    def examine(event, args):
        # (answer, where, code): b"d" refused, anything else allowed; b"a" allowed for good
        # for this event from `code`, the code object of the frame that raised it.
        try:
            frame = getframe(2)
        except valueerror:
            frame = None
        if frame is None:
            # No Python code called it. The interpreter compiling its own main program
            # (the file `cpython.run_file` named, once) is a file guard judged; anything
            # else (a thread or atexit callback that is `exec` itself, a
            # sub-interpreter's string) is made by nobody the policy can list.
            if event == "compile" and not main["compiled"] and args[1] == main["file"]:
                main["compiled"] = True
                return None, "", None
            if (
                event == "exec"
                and not main["executed"]
                and main["file"] is not None
                and getattr_(args[0], "co_filename", None) == main["file"]
            ):
                main["executed"] = True
                return None, "", None
            caller, function, line, code = "<no frame>", "", 0, None
        else:
            if from_a_code_file(event, args, frame):
                return None, "", None
            code = frame.f_code
            # co_qualname from 3.11 on; before, the function's own name.
            function = getattr_(code, "co_qualname", code.co_name)
            caller, line = code.co_filename, frame.f_lineno
        where = "%s by %s line %d" % (event, caller, line)
        key = (event, caller, function)
        answer = answers.get(key)
        if answer == b"a":
            return answer, where, code
        if answer is None and listed(caller, function, expected):
            # An expected maker's event: not refused, not recorded one by one; the agent
            # need not hear of it (each message wakes it).
            answers[key] = b"a"
            return b"a", where, code
        ask = deny and answer is None and event in makes_code
        detail, payload = describe(event, args)
        size = len_(payload)
        digest = b""
        if size > payload_max:
            try:
                import _sha256

                digest = _sha256.sha256(payload).hexdigest().encode()
            except exception:
                digest = b"?"
            payload = payload[:payload_max]
        dropped, state["dropped"] = state["dropped"], 0
        message = b"\0".join(
            (
                event.encode(),
                text(caller),
                text(function),
                str_(line).encode(),
                b"1" if ask else b"0",
                str_(dropped).encode(),
                str_(size).encode(),
                digest,
                detail[:1024],
                payload,
            )
        )
        if not ask:
            report(message)
            return answer, where, code
        me = get_ident()
        if me in asking or state["sock"] is None:
            # Re-entered while this thread waits for an answer (a signal handler), or no
            # agent to ask: the fallback decides, this time only (the agent may be asked
            # next time).
            return (None if fallback_listed(caller, function) else b"d"), where, code
        else:
            asking.add(me)
            try:
                reply = ask_agent(message)
            finally:
                asking.discard(me)
            if reply is None:
                reply = b"a" if fallback_listed(caller, function) else b"d"
            answers[key] = reply
        return reply, where, code

    # One lookup for every event the interpreter raises (an import raises several): None
    # for the many the hook ignores.
    watched = dict.fromkeys(events, True)
    watched.update(dict.fromkeys(main_program, False))
    lookup = watched.get

    def hook(event, args):
        # A code object: the event is allowed, and so is this event from that code from now
        # on (`answers` holds b"a" for it); the native front then need not ask again.
        reported = lookup(event)
        if reported is None:
            return None
        if not reported:
            starting[0] = False
            if event == "cpython.run_file":
                main["file"] = args[0]
            return None
        try:
            answer, where, code = examine(event, args)
        except exception:
            # The hook itself failed: under deny, what it could not look at is refused.
            answer, where, code = (b"d" if deny else None), event, None
        if answer == b"d" and event in makes_code:
            raise permission_error("guard: dynamic code refused (%s): rule dynamic-code" % where)
        return code if answer == b"a" else None

    def flush():
        # What could not be sent is counted by the agent, never lost without a count.
        dropped = state["dropped"]
        sock = state["sock"]
        if dropped and sock is not None:
            try:
                sock.settimeout(5.0)
                sock.send(b"\0".join((b"dropped", b"", b"", b"0", b"0", str_(dropped).encode())))
            except oserror:
                pass

    def after_fork():
        # A child asks on its own connection (two processes reading one socket would take
        # each other's answers), with a lock no thread of its parent holds.
        state["lock"] = _thread.allocate_lock()
        asking.clear()
        reconnect()

    import atexit
    import os

    atexit.register(flush)
    os.register_at_fork(after_in_child=after_fork)

    def native_front():
        # guard's extension module, written beside this file: a hook the interpreter
        # calls without running Python for the events this one ignores and for the import
        # system's own `exec` and `marshal.loads`, which it decides by the identities
        # `from_a_code_file` checks, nor for an event from calling code `hook` settled
        # (returned that code for); everything else it hands to `hook`. Loaded from this
        # file's directory by path, never searched for. Where it cannot load (an
        # interpreter older than 3.9, a file guard refuses), `hook` alone decides the same
        # events, more slowly.
        name = "guard_audit_fast"
        path = __file__.rpartition("/")[0] + "/" + name + ".abi3.so"
        # 1: exec, 2: marshal.loads, 3: watched, for `hook` to decide.
        kinds = dict.fromkeys(events, 3)
        kinds.update(dict.fromkeys(main_program, 3))
        kinds["exec"] = 1
        kinds["marshal.loads"] = 2
        try:
            loader = external.ExtensionFileLoader(name, path)
            module = loader.create_module(bootstrap.spec_from_loader(name, loader, origin=path))
            loader.exec_module(module)
            return module.hook_for(
                hook,
                kinds,
                {},
                frozen_exec,
                frozen_get_code,
                frames_removed,
                exec_module,
                compile_bytecode,
                source_get_code,
                sourceless_get_code,
                stock_get_data,
                "self",
                "bytecode_path",
                "path",
            )
        except exception:
            # Whatever keeps the front from standing (a file guard refuses, an interpreter
            # older than 3.9, a front from another release of guard): never the process
            # without a hook; `hook` stands alone.
            return None

    sys.addaudithook(native_front() or hook)


_guard_install()
del _guard_install
