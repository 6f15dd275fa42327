// Lambda Microservice Node.js worker: runs ONE user script for its whole
// life, speaking the frame protocol of runtimes/PROTOCOL.md.
//   fd 3: request frames in, fd 4: response frames out,
//   fd 1/2: diagnostics only (never results, never user logs).
// Dependency-free on purpose: it is embedded in the service binary.
'use strict';

const fs = require('fs');
const net = require('net');
const vm = require('vm');
const util = require('util');
const v8 = require('v8');
// Loaded here, at start: `performance` is a lazy global whose first use
// loads perf_hooks, about 3 ms that the first execute's stray reap paid
// after its answer was sent, so the next request waited for it.
const { performance } = require('perf_hooks');
const { createRequire } = require('module');

const IN_FD = 3;
const OUT_FD = 4;
const PROTOCOL = 1;

let filename = 'handler.js';
let handler = null;
let style = null;
// The request being run; console output outside a request (a timer left
// running after returning) has nowhere to go and is dropped.
let current = null;

// ---------------------------------------------------------------- frames out

function encodeFrame(json) {
  const payload = Buffer.from(json, 'utf8');
  const frame = Buffer.allocUnsafe(4 + payload.length);
  frame.writeUInt32BE(payload.length, 0);
  payload.copy(frame, 4);
  return frame;
}

// The service may write the next request before this one is answered
// (PROTOCOL.md): requests run one at a time, in order, so a frame that
// arrives while one is in flight waits here.
let inFlight = false;
const queued = [];

function sendRaw(json) {
  const frame = encodeFrame(json);
  let off = 0;
  while (off < frame.length) {
    off += fs.writeSync(OUT_FD, frame, off, frame.length - off);
  }
  // Every request gets exactly one answer, so an answer ends the request.
  // The next one starts from the event loop, after whatever follows this
  // send (the stray reap) has run.
  inFlight = false;
  if (queued.length > 0) setImmediate(runQueued);
}

function runQueued() {
  if (inFlight || queued.length === 0) return;
  inFlight = true;
  dispatch(queued.shift());
}

function accept(payload) {
  queued.push(payload);
  runQueued();
}

function send(obj) {
  sendRaw(JSON.stringify(obj));
}

// ---------------------------------------------------------------- log capture

function appendLog(text) {
  const req = current;
  if (req === null || req.done) return;
  if (req.truncated) return;
  const remaining = req.maxLogBytes - req.logBytes;
  if (remaining <= 0) {
    req.truncated = true;
    return;
  }
  // A 100 MB string must not be split into lines or measured in full:
  // characters are at least one byte, so cutting at `remaining` chars first
  // bounds the work.
  let s = text.length > remaining ? text.slice(0, remaining) : text;
  const cut = s.length < text.length;
  for (const line of s.split('\n')) {
    const n = Buffer.byteLength(line, 'utf8');
    if (req.logBytes + n > req.maxLogBytes) {
      let keep = line.slice(0, Math.max(0, req.maxLogBytes - req.logBytes));
      while (Buffer.byteLength(keep, 'utf8') > req.maxLogBytes - req.logBytes) {
        keep = keep.slice(0, -1);
      }
      if (keep.length > 0) req.logs.push(keep);
      req.logBytes = req.maxLogBytes;
      req.truncated = true;
      return;
    }
    req.logs.push(line);
    req.logBytes += n;
  }
  if (cut) req.truncated = true;
}

function installConsole() {
  const fmt = (...args) => appendLog(util.format(...args));
  for (const name of ['log', 'info', 'debug', 'warn', 'error']) {
    console[name] = fmt;
  }
  console.trace = (...args) => {
    const err = new Error(util.format(...args));
    appendLog('Trace: ' + filterStack(err.stack || '', false));
  };
  console.dir = (obj, options) => appendLog(util.inspect(obj, options));
  // process.stdout/stderr would reach fd 1/2 (diagnostics); users expect
  // them to behave like console output, so they are replaced by capturing
  // streams. Replacing the getters (rather than patching .write) also keeps
  // libuv from switching fd 1/2 to non-blocking mode, which would make a
  // script's own fs.writeSync(1, ...) fail with EAGAIN.
  const { Writable } = require('stream');
  const capturing = () => {
    let partial = '';
    const stream = new Writable({
      decodeStrings: false,
      write(chunk, encoding, cb) {
        const text = typeof chunk === 'string' ? chunk : Buffer.from(chunk).toString('utf8');
        const parts = (partial + text).split('\n');
        partial = parts.pop();
        if (partial.length > 65536) {
          parts.push(partial);
          partial = '';
        }
        for (const p of parts) appendLog(p);
        cb();
      },
    });
    stream.isTTY = false;
    return stream;
  };
  const stdout = capturing();
  const stderr = capturing();
  Object.defineProperty(process, 'stdout', { configurable: true, enumerable: false, get: () => stdout });
  Object.defineProperty(process, 'stderr', { configurable: true, enumerable: false, get: () => stderr });
}

// ---------------------------------------------------------------- errors

function escapeRegExp(s) {
  return s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
}

// Keeps the message lines and only the frames that point into the user's
// script: wrapper and node-internal frames mean nothing to the user.
function filterStack(stack, keepMessage = true) {
  const lines = String(stack).split('\n');
  const out = [];
  let inFrames = false;
  for (const line of lines) {
    if (/^\s+at /.test(line)) {
      inFrames = true;
      if (line.includes(filename + ':')) out.push(line);
    } else if (!inFrames && keepMessage) {
      out.push(line);
    } else if (!inFrames) {
      out.push(line);
    }
  }
  return out.join('\n');
}

function userPosition(stack) {
  const re = new RegExp(escapeRegExp(filename) + ':(\\d+):(\\d+)');
  const m = re.exec(String(stack));
  if (!m) return { line: null, column: null };
  return { line: Number(m[1]), column: Number(m[2]) };
}

function describe(err) {
  if (err instanceof Error) {
    const name = err.name || 'Error';
    return err.message ? `${name}: ${err.message}` : name;
  }
  if (typeof err === 'string') return err;
  try {
    const json = JSON.stringify(err);
    return json === undefined ? String(err) : json;
  } catch (_) {
    return String(err);
  }
}

function errorKind(err) {
  if (err instanceof RangeError && /allocation failed|out of memory/i.test(err.message)) {
    return 'memory';
  }
  if (err && (err.code === 'EAGAIN' || err.errno === -11) && /spawn|fork/i.test(String(err.syscall || err.message))) {
    return 'processes';
  }
  return 'script';
}

function scriptError(err) {
  const stack = err instanceof Error && err.stack ? filterStack(err.stack) : describe(err);
  const pos = err instanceof Error ? userPosition(err.stack || '') : { line: null, column: null };
  return {
    type: 'error',
    kind: errorKind(err),
    message: describe(err),
    line: pos.line,
    column: pos.column,
    stack,
  };
}

// V8 reports a syntax error's position in the "file:line\ncode\n   ^^^"
// header of the stack, not as properties.
function syntaxPosition(err) {
  const lines = String(err.stack || '').split('\n');
  const m = new RegExp('^' + escapeRegExp(filename) + ':(\\d+)$').exec(lines[0] || '');
  if (!m) return userPosition(err.stack || '');
  const caret = (lines[2] || '').indexOf('^');
  return { line: Number(m[1]), column: caret >= 0 ? caret + 1 : null };
}

function initError(message, err) {
  const pos = err ? (err instanceof SyntaxError ? syntaxPosition(err) : userPosition(err.stack || '')) : { line: null, column: null };
  return {
    type: 'error',
    kind: 'initialization',
    message,
    line: pos.line,
    column: pos.column,
    stack: err && err.stack ? filterStack(err.stack) : null,
  };
}

// ---------------------------------------------------------------- load

function usesExports(source) {
  return /\bmodule\s*\.\s*exports\b|\bexports\s*\.\s*[A-Za-z_$]|\bexports\s*\[/.test(source);
}

// The wrapper opens on its own line and lineOffset -1 shifts it away, so
// V8's positions are already the user's own lines and columns.
//
// V8 compiles a function's body only when it is first called: for a module
// that exports its handler, that is the first execute (hundreds of
// microseconds for a modest handler). Compiling this one script eagerly
// moves that cost to load; everything else (node's own modules, code the
// script creates at run time) stays lazy.
function compile(prefix, source) {
  v8.setFlagsFromString('--no-lazy');
  try {
    const script = new vm.Script(prefix + '\n' + source + '\n})', {
      filename,
      lineOffset: -1,
    });
    return script.runInThisContext();
  } finally {
    v8.setFlagsFromString('--lazy');
  }
}

function load(msg) {
  filename = typeof msg.filename === 'string' && msg.filename ? msg.filename : 'handler.js';
  const source = String(msg.source || '');
  const userRequire = createRequire('/tmp/' + filename);
  globalThis.require = userRequire;
  let fn;
  try {
    if (usesExports(source)) {
      fn = compile('(function (exports, require, module, __filename, __dirname) {', source);
    } else {
      fn = compile('(async function (event) {', source);
    }
  } catch (err) {
    return initError(describe(err), err);
  }

  if (!usesExports(source)) {
    handler = fn;
    style = 'body';
    return { type: 'loaded', style };
  }

  const module = { exports: {} };
  try {
    fn.call(module.exports, module.exports, userRequire, module, '/tmp/' + filename, '/tmp');
  } catch (err) {
    return initError(describe(err), err);
  }
  const exported = module.exports;
  if (typeof exported === 'function') {
    handler = exported;
  } else if (exported && typeof exported.handler === 'function') {
    handler = exported.handler.bind(exported);
    handler.declaredLength = exported.handler.length;
  } else {
    return initError(
      'the script defines no handler: use module.exports = async (event) => ..., exports.handler = ... or a function body that returns the result',
      null,
    );
  }
  const arity = handler.declaredLength !== undefined ? handler.declaredLength : handler.length;
  style = arity >= 2 ? 'callback' : 'module';
  return { type: 'loaded', style };
}

// ---------------------------------------------------------------- execute

function invoke(event) {
  if (style !== 'callback') {
    return Promise.resolve().then(() => handler(event));
  }
  // Callback style: callback(err, value) decides; a promise the function
  // returns only decides when it rejects or resolves to a value before the
  // callback is called (the seeded calculator is `async (ctx, cb)`).
  return new Promise((resolve, reject) => {
    let settled = false;
    const callback = (err, value) => {
      if (settled) return;
      settled = true;
      if (err !== null && err !== undefined) reject(err);
      else resolve(value);
    };
    let returned;
    try {
      returned = handler(event, callback);
    } catch (err) {
      callback(err);
      return;
    }
    if (returned && typeof returned.then === 'function') {
      returned.then(
        (value) => {
          if (value !== undefined) callback(null, value);
        },
        (err) => callback(err === undefined || err === null ? new Error(String(err)) : err),
      );
    }
  });
}

// Inside the sandbox the worker is alone in its pid namespace: after a
// request, anything it started (a fork bomb, a forgotten child) is killed
// so nothing keeps running between requests. kill(-1) never signals the
// caller itself nor pid 1 (bwrap). Never done outside the sandbox, where
// kill(-1) would reach the host.
const SANDBOXED = process.env.LAMBDA_SANDBOX === 'bwrap';
// kill(-1) walks every process on the host, not just the sandbox's: about
// 5 us with 85 host processes and 14 us with 384, on every request. The
// namespace hands out pids in order, so when its last pid has not moved
// since the last reap, nothing was started (threads included) and there is
// nothing to kill. Once a second the kill runs anyway, so a pid counter
// wrapped on purpose to the same value buys a stray no more than that.
const LAST_PID_FD = (() => {
  if (!SANDBOXED) return -1;
  try {
    return fs.openSync('/proc/sys/kernel/ns_last_pid', 'r');
  } catch (_) {
    return -1; // unreadable: kill after every request
  }
})();
const REAP_AT_LEAST_EVERY_MS = 1000;
const lastPidBuf = Buffer.alloc(16);
let reapedAtPid = null;
let reapedAtMs = 0;
function lastPid() {
  if (LAST_PID_FD < 0) return null;
  try {
    const n = fs.readSync(LAST_PID_FD, lastPidBuf, 0, lastPidBuf.length, 0);
    return lastPidBuf.toString('latin1', 0, n);
  } catch (_) {
    return null;
  }
}
function reapStrays() {
  if (!SANDBOXED) return;
  const now = performance.now(); // monotonic: a clock set back must not postpone the periodic kill
  const pid = lastPid();
  if (pid !== null && pid === reapedAtPid && now - reapedAtMs < REAP_AT_LEAST_EVERY_MS) return;
  try {
    process.kill(-1, 'SIGKILL');
  } catch (_) {
    // ESRCH: nothing else was running
  }
  // Read after the kill: no killed process can fork any more, so a pid
  // handed out from here on is a new process (or one of our threads).
  reapedAtPid = lastPid();
  reapedAtMs = now;
}

function finish(req, response) {
  if (req.done) return;
  req.done = true;
  current = null;
  response.logs = req.logs;
  response.logs_truncated = req.truncated;
  req.deliver(JSON.stringify(response));
}

function execute(msg, deliver) {
  const req = {
    deliver,
    logs: [],
    logBytes: 0,
    truncated: false,
    done: false,
    maxLogBytes: Number(msg.max_log_bytes) || 65536,
    maxResultBytes: Number(msg.max_result_bytes) || 6 * 1024 * 1024,
  };
  current = req;
  invoke(msg.event).then(
    (value) => {
      if (req.done) return;
      let json;
      try {
        json = JSON.stringify(value === undefined ? null : value);
        if (json === undefined) json = 'null';
      } catch (err) {
        finish(req, {
          type: 'error',
          kind: errorKind(err) === 'memory' ? 'memory' : 'script',
          message: 'the result is not JSON-serializable: ' + describe(err),
          line: null,
          column: null,
          stack: null,
        });
        return;
      }
      // Byte length equals string length for ASCII; only measure precisely
      // when it could matter.
      if (json.length > req.maxResultBytes / 3 && Buffer.byteLength(json, 'utf8') > req.maxResultBytes) {
        finish(req, {
          type: 'error',
          kind: 'result_size',
          message: `the result is ${Buffer.byteLength(json, 'utf8')} bytes, over the limit of ${req.maxResultBytes}`,
          line: null,
          column: null,
          stack: null,
        });
        return;
      }
      req.done = true;
      current = null;
      req.deliver(
        '{"type":"result","logs_truncated":' +
          (req.truncated ? 'true' : 'false') +
          ',"logs":' +
          JSON.stringify(req.logs) +
          ',"result":' +
          json +
          '}',
      );
    },
    (err) => finish(req, scriptError(err)),
  );
}

function deliverResponse(json) {
  sendRaw(json);
  reapStrays();
}

// The first run of the execute path pays for V8 compiling and tiering the
// worker's own functions (about 1-3 ms). Running that path a few times with
// a stand-in handler before reporting ready, with output discarded, makes
// the first real execute as fast as the following ones.
function warmUp(rounds) {
  const savedHandler = handler;
  const savedStyle = style;
  // One stand-in per handler shape a script can have (plain, async, a
  // compiled body, callback), so every path of invoke() is warm.
  const body = compile('(async function (event) {', 'return event.params.n + 1;');
  const standIns = [
    ['module', (event) => ({ n: event.params.n, s: 'x' })],
    ['module', async (event) => {
      console.log('warm', event.params.n);
      return { n: event.params.n };
    }],
    ['body', body],
    ['callback', (event, callback) => callback(null, event.params.n)],
    ['module', () => {
      throw new Error('warm');
    }],
  ];
  let chain = Promise.resolve();
  for (let n = 0; n < rounds; n++) {
    chain = chain.then(
      () =>
        new Promise((resolve) => {
          [style, handler] = standIns[n % standIns.length];
          const payload = encodeFrame(
            JSON.stringify({ type: 'execute', max_log_bytes: 1024, max_result_bytes: 1024, event: { params: { n } } }),
          ).subarray(4);
          execute(JSON.parse(payload.toString('utf8')), (json) => {
            // What deliverResponse does, without effects: a zero-length
            // write to the response channel and signal 0 to ourselves, so
            // the bindings behind the real write and the stray reaping are
            // loaded before the first request.
            try {
              fs.writeSync(OUT_FD, encodeFrame(json), 0, 0);
              process.kill(process.pid, 0);
              lastPid();
              performance.now();
              // The reap's kill(-1) finds nothing to signal and throws
              // ESRCH; building that first error took 0.3 ms after the
              // first answer. Signal 0 only checks, it never delivers.
              if (SANDBOXED) process.kill(-1, 0);
            } catch (_) {
              // A broken channel shows up on the first real write.
            }
            resolve();
          });
        }),
    );
  }
  const restore = () => {
    handler = savedHandler;
    style = savedStyle;
  };
  return chain.then(restore, restore);
}

// An exception escaping a timer or an un-awaited promise belongs to the
// request in flight, if any; between requests it is dropped so a stray timer
// cannot kill a warm worker.
process.on('uncaughtException', (err) => {
  if (current !== null) finish(current, scriptError(err));
});
process.on('unhandledRejection', (err) => {
  if (current !== null) finish(current, scriptError(err));
});

// ---------------------------------------------------------------- frames in

function dispatch(payload) {
  let msg;
  try {
    msg = JSON.parse(payload.toString('utf8'));
  } catch (err) {
    fs.writeSync(2, 'worker: malformed frame: ' + describe(err) + '\n');
    process.exit(70);
  }
  switch (msg.type) {
    case 'load': {
      if (handler !== null) {
        send(initError('this worker already holds a script', null));
        return;
      }
      // Answered at once: the execute path was warmed while blank. Running
      // the stand-ins again after a load (as this worker once did) made
      // every new script's initialize 0.5-0.8 ms slower, for first and
      // second executes 0.1-0.2 ms faster (medians): a new script's
      // initialize plus its first execute is faster without.
      send(load(msg));
      return;
    }
    case 'execute':
      if (handler === null) {
        send({ type: 'error', kind: 'script', message: 'no script loaded', line: null, column: null, stack: null });
        return;
      }
      execute(msg, deliverResponse);
      return;
    default:
      fs.writeSync(2, 'worker: unknown frame type ' + String(msg.type) + '\n');
      process.exit(70);
  }
}

// Frame assembly for one byte stream. Chunks are kept until a whole frame is
// there and joined once: joining on every chunk would copy a multi-megabyte
// event over and over.
function frameReader(onFrame) {
  let chunks = [];
  let total = 0;
  return (chunk) => {
    chunks.push(chunk);
    total += chunk.length;
    for (;;) {
      const head = chunks[0];
      if (total < 4) return;
      const first = head.length >= 4 ? head : Buffer.concat(chunks);
      const len = first.readUInt32BE(0);
      if (total < 4 + len) return;
      const buffered = chunks.length === 1 ? head : Buffer.concat(chunks, total);
      const payload = buffered.subarray(4, 4 + len);
      const rest = buffered.subarray(4 + len);
      chunks = rest.length > 0 ? [rest] : [];
      total = rest.length;
      onFrame(payload);
    }
  };
}

// The first frame read from fd 3 runs node's stream-reading code (the read
// callback, the Readable push, the 'data' emit) and the frame reader for the
// first time, and a new script's initialize waited for it: from the
// service's write to the 'data' event took 0.95 ms for that first frame,
// 0.45 ms once this had run (medians of 12). One frame sent to ourselves
// over a Unix socket runs the same code while blank. Its address is
// abstract (no file), and inside the sandbox it is private to the worker's
// own network namespace. Best effort: any failure only leaves that first
// read slower.
function warmInput() {
  return new Promise((resolve) => {
    let server = null;
    // A socket that never answers must not keep the worker from being ready.
    const timer = setTimeout(() => done(), 200);
    const done = () => {
      clearTimeout(timer);
      if (server !== null) server.close();
      server = null;
      resolve();
    };
    const address = `\0lambda-worker-warm-${process.pid}-${Math.random().toString(36).slice(2)}`;
    server = net.createServer((conn) => {
      conn.on('error', done);
      conn.on(
        'data',
        frameReader((payload) => {
          JSON.parse(payload.toString('utf8'));
          conn.destroy();
          done();
        }),
      );
    });
    server.on('error', done);
    server.listen(address, () => {
      const client = net.connect(address);
      client.on('error', done);
      client.end(encodeFrame(JSON.stringify({ type: 'execute', event: { params: { n: 0 } } })));
    });
  });
}

function main() {
  installConsole();
  const input = new net.Socket({ fd: IN_FD, readable: true, writable: false });
  input.on('data', frameReader(accept));
  input.on('end', () => process.exit(0));
  input.on('error', () => process.exit(0));
  // Warm up while blank, long before any request: the background work it
  // leaves (tier-up compilation, GC) is done by the time a script arrives.
  // createRequire is the first step of every load.
  createRequire('/tmp/' + filename);
  const ready = () => send({ type: 'ready', protocol: PROTOCOL, runtime: 'node ' + process.version });
  const warmed = () => warmUp(20);
  warmInput().then(warmed, warmed).then(ready, ready);
}

main();
