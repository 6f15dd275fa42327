# Lambda Microservice Python worker: runs ONE user script for its whole
# life, speaking the frame protocol of runtimes/PROTOCOL.md.
#   fd 3: request frames in, fd 4: response frames out,
#   fd 1/2: diagnostics only (never results, never user logs).
# Dependency-free on purpose: it is embedded in the service binary.
import ast
import builtins
import errno
import json
import linecache
import os
import signal
import site  # under -S this runs none of site's start-up
import sys
import threading
import time
import traceback

IN_FD = 3
OUT_FD = 4
PROTOCOL = 1

_worker_pid = os.getpid()
_out_lock = threading.Lock()

filename = "handler.py"
style = None
handler = None
module_globals = None
toplevel_code = None
# The request in flight; output outside a request (a thread left running
# after returning) has nowhere to go and is dropped.
current = None


def _after_fork_in_child():
    # A forked child must never answer on the worker's channel (a fork bomb
    # would interleave frames); it keeps running the user's code only.
    global current
    current = None
    for fd in (IN_FD, OUT_FD):
        try:
            os.close(fd)
        except OSError:
            pass


os.register_at_fork(after_in_child=_after_fork_in_child)
for _fd in (IN_FD, OUT_FD):
    # Children started with subprocess must not inherit the channel.
    os.set_inheritable(_fd, False)


# ------------------------------------------------------------------ frames

# Bytes read past the end of a frame: the service sends one frame per
# request and waits, so this is almost always empty, but a read may end
# anywhere.
_inbox = bytearray()


def read_frame():
    # One read usually brings the whole frame: a frame costs one system
    # call, not two.
    while True:
        if len(_inbox) >= 4:
            length = int.from_bytes(_inbox[:4], "big")
            end = 4 + length
            if len(_inbox) >= end:
                with memoryview(_inbox) as view:
                    payload = bytes(view[4:end])
                del _inbox[:end]
                return payload
            want = end - len(_inbox)
        else:
            want = 4 - len(_inbox)
        chunk = os.read(IN_FD, min(max(want, 65536), 1 << 20))
        if not chunk:
            return None
        _inbox.extend(chunk)


def send_raw(payload):
    if os.getpid() != _worker_pid:
        os._exit(1)
    frame = len(payload).to_bytes(4, "big") + payload
    view = memoryview(frame)
    with _out_lock:
        while view:
            written = os.write(OUT_FD, view)
            view = view[written:]


# Built once: json.dumps with any argument other than the defaults builds
# a new encoder on every call.
_encode = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode
_encode_result = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode


def send(obj):
    send_raw(_encode(obj).encode("utf-8"))


# ------------------------------------------------------------------ log capture

class Request:
    __slots__ = ("logs", "log_bytes", "truncated", "max_log_bytes", "max_result_bytes", "pending")

    def __init__(self, max_log_bytes, max_result_bytes):
        self.logs = []
        self.log_bytes = 0
        self.truncated = False
        self.max_log_bytes = max_log_bytes
        self.max_result_bytes = max_result_bytes
        self.pending = ""

    def add_line(self, line):
        if self.truncated:
            return
        n = len(line.encode("utf-8", "replace"))
        room = self.max_log_bytes - self.log_bytes
        if n > room:
            keep = line.encode("utf-8", "replace")[: max(room, 0)].decode("utf-8", "ignore")
            if keep:
                self.logs.append(keep)
            self.log_bytes = self.max_log_bytes
            self.truncated = True
            return
        self.logs.append(line)
        self.log_bytes += n

    def write(self, text):
        if self.truncated:
            return
        room = self.max_log_bytes - self.log_bytes - len(self.pending)
        if room <= 0:
            self.flush_pending()
            self.truncated = True
            return
        # A 100 MB print must not be split or encoded in full: a character
        # is at least one byte, so cutting at `room` characters bounds work.
        cut = len(text) > room
        if cut:
            text = text[:room]
        parts = (self.pending + text).split("\n")
        self.pending = parts.pop()
        for part in parts:
            self.add_line(part)
        if cut:
            self.flush_pending()
            self.truncated = True

    def flush_pending(self):
        if self.pending:
            pending, self.pending = self.pending, ""
            self.add_line(pending)


class BinaryCapture:
    """`sys.stdout.buffer`: bytes written there are logs too."""

    def __init__(self, text):
        self._text = text

    def write(self, data):
        self._text.write(bytes(data).decode("utf-8", "replace"))
        return len(data)

    def flush(self):
        pass


class Capture:
    """sys.stdout / sys.stderr replacement: text goes to the request's logs."""

    encoding = "utf-8"
    errors = "replace"

    def __init__(self):
        self.buffer = BinaryCapture(self)

    def write(self, text):
        if not isinstance(text, str):
            text = str(text)
        req = current
        if req is not None:
            req.write(text)
        return len(text)

    def writelines(self, lines):
        for line in lines:
            self.write(line)

    def flush(self):
        pass

    def isatty(self):
        return False

    def writable(self):
        return True

    def readable(self):
        return False

    def fileno(self):
        raise OSError(errno.EBADF, "captured stream has no file descriptor")


# ------------------------------------------------------------------ errors

def _user_frames(tb):
    return [f for f in traceback.extract_tb(tb) if f.filename == filename]


def describe(exc):
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def error_kind(exc):
    if isinstance(exc, MemoryError):
        return "memory"
    if isinstance(exc, OSError) and exc.errno == errno.EAGAIN:
        return "processes"
    if isinstance(exc, RuntimeError) and "can't start new thread" in str(exc):
        return "processes"
    return "script"


def script_error(exc, kind=None):
    frames = _user_frames(exc.__traceback__)
    line = column = None
    if frames:
        last = frames[-1]
        line = last.lineno
        colno = getattr(last, "colno", None)
        column = colno + 1 if colno is not None else None
    stack = ""
    if frames:
        stack = "Traceback (most recent call last):\n" + "".join(traceback.format_list(frames))
    stack += "".join(traceback.format_exception_only(type(exc), exc))
    return {
        "type": "error",
        "kind": kind or error_kind(exc),
        "message": describe(exc),
        "line": line,
        "column": column,
        "stack": stack,
    }


def init_error(message, line=None, column=None, stack=None):
    return {
        "type": "error",
        "kind": "initialization",
        "message": message,
        "line": line,
        "column": column,
        "stack": stack,
    }


# ------------------------------------------------------------------ load

def _defines(tree, names):
    found = set()
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.name in names:
            found.add(node.name)
        elif isinstance(node, ast.Assign):
            for target in node.targets:
                if isinstance(target, ast.Name) and target.id in names:
                    found.add(target.id)
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            for alias in node.names:
                if (alias.asname or alias.name) in names:
                    found.add(alias.asname or alias.name)
    return found


def _assigns_result(tree):
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda, ast.ClassDef)):
            continue
        if isinstance(node, ast.Name) and node.id == "result" and isinstance(node.ctx, ast.Store):
            return True
    return False


def load(msg):
    global filename, style, handler, module_globals, toplevel_code
    filename = msg.get("filename") or "handler.py"
    source = msg.get("source") or ""
    # Lets tracebacks show the user's source lines.
    linecache.cache[filename] = (len(source), None, source.splitlines(True), filename)
    try:
        tree = ast.parse(source, filename)
        code = compile(tree, filename, "exec")
    except SyntaxError as exc:
        message = f"SyntaxError: {exc.msg}"
        return init_error(message, exc.lineno, exc.offset, "".join(traceback.format_exception_only(type(exc), exc)))
    except (ValueError, TypeError) as exc:
        return init_error(describe(exc))

    defined = _defines(tree, {"handler", "handle"})
    if defined:
        module_globals = {"__name__": "__handler__", "__file__": filename, "__builtins__": builtins}
        req = Request(65536, 0)
        try:
            _run_with(req, lambda: exec(code, module_globals))
        except BaseException as exc:  # noqa: BLE001 - the user's top-level code may raise anything
            err = script_error(exc)
            return init_error(err["message"], err["line"], err["column"], err["stack"])
        for name, kind in (("handler", "handler"), ("handle", "handle")):
            fn = module_globals.get(name)
            if callable(fn):
                handler = fn
                style = kind
                return {"type": "loaded", "style": style}
        return init_error("handler/handle is defined but is not callable")

    if _assigns_result(tree):
        toplevel_code = code
        style = "toplevel"
        return {"type": "loaded", "style": style}
    return init_error(
        "the script defines no handler: define `def handler(event)`, `def handle(params)` "
        "or top-level code that assigns `result`"
    )


# ------------------------------------------------------------------ execute

def _run_with(req, fn):
    global current
    current = req
    try:
        return fn()
    finally:
        current = None
        req.flush_pending()


def _await_if_needed(value):
    if hasattr(value, "__await__"):
        import asyncio

        return asyncio.run(value)
    return value


def _call(event):
    if style == "handler":
        return _await_if_needed(handler(event))
    if style == "handle":
        params = event.get("params") if isinstance(event, dict) else None
        return _await_if_needed(handler(params if params is not None else {}))
    params = event.get("params", {}) if isinstance(event, dict) else {}
    context = event.get("context", {}) if isinstance(event, dict) else {}
    scope = {
        "__name__": "__handler__",
        "__file__": filename,
        "__builtins__": builtins,
        "params": params,
        "context": context,
        "event": event,
    }
    exec(toplevel_code, scope)
    return scope.get("result")


def execute(msg, deliver):
    req = Request(int(msg.get("max_log_bytes") or 65536), int(msg.get("max_result_bytes") or 6 * 1024 * 1024))
    try:
        value = _run_with(req, lambda: _call(msg.get("event")))
    except SystemExit as exc:
        response = {
            "type": "error",
            "kind": "script",
            "message": f"the script called sys.exit({exc.code!r})",
            "line": None,
            "column": None,
            "stack": None,
        }
        frames = _user_frames(exc.__traceback__)
        if frames:
            response["line"] = frames[-1].lineno
        return finish(req, response, deliver)
    except BaseException as exc:  # noqa: BLE001 - anything the user raises is a script error
        return finish(req, script_error(exc), deliver)
    try:
        result = _encode_result(value).encode("utf-8")
    except MemoryError as exc:
        return finish(req, script_error(exc, "memory"), deliver)
    except (TypeError, ValueError, RecursionError) as exc:
        return finish(
            req,
            {
                "type": "error",
                "kind": "script",
                "message": f"the result is not JSON-serializable: {describe(exc)}",
                "line": None,
                "column": None,
                "stack": None,
            },
            deliver,
        )
    if len(result) > req.max_result_bytes:
        return finish(
            req,
            {
                "type": "error",
                "kind": "result_size",
                "message": f"the result is {len(result)} bytes, over the limit of {req.max_result_bytes}",
                "line": None,
                "column": None,
                "stack": None,
            },
            deliver,
        )
    head = '{"type":"result","logs_truncated":%s,"logs":%s,"result":' % (
        "true" if req.truncated else "false",
        _encode(req.logs) if req.logs else "[]",
    )
    deliver(head.encode("utf-8") + result + b"}")


def finish(req, response, deliver):
    response["logs"] = req.logs
    response["logs_truncated"] = req.truncated
    deliver(_encode(response).encode("utf-8"))


def warm_up(rounds=5):
    """Runs the execute path a few times with stand-in handlers (output
    discarded, never the user's code), so the first real execute does not
    pay for first-use costs: before `ready`, and again after a load, whose
    parsing and compiling leave the interpreter's caches cold."""
    global handler, style, toplevel_code
    saved = handler, style, toplevel_code

    def stand_in(event):
        print("warm", event["params"]["n"])
        return {"n": event["params"]["n"], "s": "x"}

    stand_ins = [
        (stand_in, "handler", None),
        (lambda params: params["n"], "handle", None),
        (None, "toplevel", compile("result = params['n']", "<warm-up>", "exec")),
    ]
    try:
        for n in range(rounds):
            handler, style, toplevel_code = stand_ins[n % len(stand_ins)]
            payload = json.dumps({"type": "execute", "max_log_bytes": 1024, "max_result_bytes": 1024,
                                  "event": {"params": {"n": n}}}).encode()
            execute(json.loads(payload), lambda _data: None)
    finally:
        handler, style, toplevel_code = saved


# Inside the sandbox the worker is alone in its pid namespace: after a
# request, anything it started (a fork bomb, a forgotten child) is killed so
# nothing keeps running between requests. kill(-1) never signals the caller
# itself nor pid 1 (bwrap). Never done outside the sandbox, where kill(-1)
# would reach the host.
SANDBOXED = os.environ.get("LAMBDA_SANDBOX") == "bwrap"

# kill(-1) walks every process on the host, not just the sandbox's: about
# 5 us with 85 host processes and 14 us with 384, on every request. The
# namespace hands out pids in order, so when its last pid has not moved
# since the last reap, nothing was started (threads included) and there is
# nothing to kill. Once a second the kill runs anyway, so a pid counter
# wrapped on purpose to the same value buys a stray no more than that.
REAP_AT_LEAST_EVERY_S = 1.0
_last_pid_fd = -1
if SANDBOXED:
    try:
        _last_pid_fd = os.open("/proc/sys/kernel/ns_last_pid", os.O_RDONLY)
    except OSError:
        pass  # unreadable: kill after every request
_reaped_at_pid = None
_reaped_at = 0.0


def _last_pid():
    if _last_pid_fd < 0:
        return None
    try:
        return os.pread(_last_pid_fd, 16, 0)
    except OSError:
        return None


def reap_strays():
    global _reaped_at_pid, _reaped_at
    if not SANDBOXED or os.getpid() != _worker_pid:
        return
    now = time.monotonic()
    pid = _last_pid()
    if pid is not None and pid == _reaped_at_pid and now - _reaped_at < REAP_AT_LEAST_EVERY_S:
        return
    try:
        os.kill(-1, signal.SIGKILL)
    except OSError:
        pass
    # Read after the kill: no killed process can fork any more, so a pid
    # handed out from here on is a new process (or one of our threads).
    _reaped_at_pid = _last_pid()
    _reaped_at = now


def use_site_packages():
    # The service starts workers with -S, so no .pth hook of the host runs
    # (python.rs says why), and passes the interpreter's site-packages as
    # arguments: installed packages stay importable, as without -S.
    sys.path.extend(path for path in sys.argv[1:] if path not in sys.path)
    del sys.argv[1:]
    site.setquit()  # exit() and quit()


def main():
    use_site_packages()
    sys.stdout = Capture()
    sys.stderr = Capture()
    # Warm up while blank, long before any request arrives.
    warm_up(6)
    send({"type": "ready", "protocol": PROTOCOL, "runtime": "python " + sys.version.split()[0]})
    while True:
        payload = read_frame()
        if payload is None:
            os._exit(0)
        try:
            msg = json.loads(payload)
        except ValueError as exc:
            os.write(2, f"worker: malformed frame: {exc}\n".encode())
            os._exit(70)
        kind = msg.get("type")
        if kind == "load":
            if style is not None:
                send(init_error("this worker already holds a script"))
            else:
                reply = load(msg)
                if reply.get("type") == "loaded":
                    warm_up()
                send(reply)
        elif kind == "execute":
            if style is None:
                send({"type": "error", "kind": "script", "message": "no script loaded", "line": None, "column": None, "stack": None})
            else:
                execute(msg, send_raw)
                reap_strays()
        else:
            os.write(2, f"worker: unknown frame type {kind!r}\n".encode())
            os._exit(70)


if __name__ == "__main__":
    main()
