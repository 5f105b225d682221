// The process harness shared by canaryd's node test suites (tests/e2e,
// tests/browser): start the real mock-upstream and canaryd binaries on free
// loopback ports (port 0, ports read back from what they announce), in a temp
// dir, and stop them by PID. Node builtins only, so a suite that imports it
// needs no npm package for it. Every wait has a deadline so a broken binary
// fails a test with its own output instead of hanging the suite.
//
// Each suite calls createHarness() with its own temp-dir prefix, "how to run
// me" hint and output-tail length, and re-exports what it needs.
import { spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';

export const START_DEADLINE_MS = 30_000;
export const STOP_DEADLINE_MS = 15_000;
export const MOCK_CONTROL_DEADLINE_MS = 20_000;
export const DEFAULT_TAIL_CHARS = 4000;

const kDefaultBinHint = 'run through ctest, or CANARYD_BIN=build/canaryd ' +
  'MOCK_BIN=build/tools/mock-upstream/mock-upstream node --test <suite dir>';

export function requireBin(envName, hint = kDefaultBinHint) {
  const bin = process.env[envName];
  if (!bin) throw new Error(`${envName} is not set: ${hint}`);
  return bin;
}

// Every child we start, so a crashing test process does not leave them behind.
const children = new Set();
process.on('exit', () => {
  for (const child of children) {
    try { process.kill(child.pid, 'SIGKILL'); } catch { /* already gone */ }
  }
});

// A spawned binary with its output kept (the tail) for failure messages.
// `tailChars` is how much of that output describe() shows.
export class Proc {
  constructor(label, bin, args, env = {}, { tailChars = DEFAULT_TAIL_CHARS } = {}) {
    this.label = label;
    this.tailChars = tailChars;
    this.output = '';
    this.exit = null;  // {code, signal} once exited
    this.child = spawn(bin, args, { env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
    this.pid = this.child.pid;
    children.add(this.child);
    this.exited = new Promise((resolve) => {
      this.child.on('exit', (code, signal) => {
        this.exit = { code, signal };
        children.delete(this.child);
        resolve(this.exit);
      });
      this.child.on('error', (err) => {
        this.output += `\n[spawn error: ${err.message}]`;
        this.exit = { code: null, signal: null, error: err };
        children.delete(this.child);
        resolve(this.exit);
      });
    });
    this.lineListeners = [];
    let partial = '';
    const onData = (chunk) => {
      const text = chunk.toString('utf8');
      this.output = (this.output + text).slice(-64 * 1024);
      partial += text;
      let nl;
      while ((nl = partial.indexOf('\n')) >= 0) {
        const line = partial.slice(0, nl);
        partial = partial.slice(nl + 1);
        for (const listener of this.lineListeners) listener(line);
      }
    };
    this.child.stdout.on('data', onData);
    this.child.stderr.on('data', onData);
  }

  describe() {
    const status = this.exit ? `exited code=${this.exit.code} signal=${this.exit.signal}` : `running pid=${this.pid}`;
    return `${this.label} (${status}); output tail:\n${this.output.slice(-this.tailChars)}`;
  }

  // Resolves with match(line)'s first truthy result; rejects on exit or deadline.
  waitForLine(match, what, deadlineMs = START_DEADLINE_MS) {
    return new Promise((resolve, reject) => {
      const done = (fn, value) => {
        clearTimeout(timer);
        this.lineListeners = this.lineListeners.filter((l) => l !== listener);
        fn(value);
      };
      const listener = (line) => {
        const found = match(line);
        if (found) done(resolve, found);
      };
      const timer = setTimeout(
        () => done(reject, new Error(`${this.label}: no ${what} within ${deadlineMs} ms; ${this.describe()}`)),
        deadlineMs);
      this.lineListeners.push(listener);
      this.exited.then(() => done(reject, new Error(`${this.label} exited before ${what}; ${this.describe()}`)));
    });
  }

  // SIGTERM by PID, wait for the exit with a deadline, SIGKILL if it does not come.
  async stop(deadlineMs = STOP_DEADLINE_MS) {
    if (this.exit) return this.exit;
    try { process.kill(this.pid, 'SIGTERM'); } catch { /* raced with its exit */ }
    let timer;
    const timeout = new Promise((resolve) => { timer = setTimeout(() => resolve(null), deadlineMs); });
    const result = await Promise.race([this.exited, timeout]);
    clearTimeout(timer);
    if (result) return result;
    try { process.kill(this.pid, 'SIGKILL'); } catch { /* gone */ }
    await this.exited;
    throw new Error(`${this.label} did not exit within ${deadlineMs} ms of SIGTERM (killed); ${this.describe()}`);
  }
}

// A process that did not come up is stopped at once (its pipes would keep node alive).
async function stopOnError(proc, promise) {
  try {
    return await promise;
  } catch (e) {
    await proc.stop().catch(() => {});
    throw e;
  }
}

export function makeTempDir(prefix = 'canaryd-test-') {
  const dir = mkdtempSync(path.join(tmpdir(), prefix));
  return { dir, remove: () => rmSync(dir, { recursive: true, force: true }) };
}

// GET /mock/stats or POST /mock/reset, with a deadline and an error that says
// which mock and which call (a bare AbortSignal timeout prints as "{}").
async function mockControl(url, method, name) {
  let res;
  try {
    res = await fetch(url, { method, signal: AbortSignal.timeout(MOCK_CONTROL_DEADLINE_MS) });
  } catch (e) {
    throw new Error(`mock ${name}: ${method} ${url} failed: ${e?.name}: ${e?.message}`);
  }
  if (!res.ok) throw new Error(`mock ${name}: ${method} ${url}: HTTP ${res.status} ${await res.text()}`);
  return res.json();
}

// Starts mock-upstream on a free port. `args` are extra flags (e.g. ['--require-key', 'k']).
// `bin` defaults to $MOCK_BIN.
export async function startMock({ name, args = [], tempDir, bin, tailChars } = {}) {
  const portFile = path.join(tempDir, `mock-${name}.port`);
  const proc = new Proc(`mock-upstream ${name}`, bin ?? requireBin('MOCK_BIN'),
    ['--host', '127.0.0.1', '--port', '0', '--port-file', portFile, '--name', name, ...args], {}, { tailChars });
  const port = await stopOnError(proc, proc.waitForLine((line) => {
    const m = /^mock-upstream listening on \S+:(\d+)\s*$/.exec(line);
    return m ? Number(m[1]) : null;
  }, 'listening line'));
  // The port file is written before the line; read it as a cross-check of the documented contract.
  const filePort = Number(readFileSync(portFile, 'utf8').trim());
  if (filePort !== port) {
    await proc.stop().catch(() => {});
    throw new Error(`mock-upstream ${name}: --port-file says ${filePort}, stdout says ${port}`);
  }
  const origin = `http://127.0.0.1:${port}`;
  return {
    name,
    port,
    pid: proc.pid,
    proc,
    baseURL: `${origin}/v1`,
    stats: () => mockControl(`${origin}/mock/stats`, 'GET', name),
    reset: () => mockControl(`${origin}/mock/reset`, 'POST', name),
    stop: () => proc.stop(),
  };
}

// Minimal YAML emitter for the config objects the tests build (maps, lists,
// strings, numbers, booleans); strings are always double-quoted JSON strings,
// which YAML reads verbatim.
export function toYaml(value, indent = 0) {
  const pad = ' '.repeat(indent);
  const scalar = (v) => (typeof v === 'string' ? JSON.stringify(v) : String(v));
  if (Array.isArray(value)) {
    if (value.length === 0) return '[]';
    return value.map((v) => {
      if (v !== null && typeof v === 'object') {
        return `${pad}- ${JSON.stringify(v)}`;  // flow style: JSON is valid YAML
      }
      return `${pad}- ${scalar(v)}`;
    }).join('\n');
  }
  const lines = [];
  for (const [k, v] of Object.entries(value)) {
    const key = JSON.stringify(k);
    if (v !== null && typeof v === 'object') {
      if (Object.keys(v).length === 0) {
        lines.push(`${pad}${key}: ${Array.isArray(v) ? '[]' : '{}'}`);
      } else {
        lines.push(`${pad}${key}:`);
        lines.push(toYaml(v, indent + 2));
      }
    } else {
      lines.push(`${pad}${key}: ${scalar(v)}`);
    }
  }
  return lines.join('\n');
}

// Starts canaryd with `config` (an object) and extra env vars. `name` labels the
// process and names its config file (<tempDir>/<name>.yaml), so one temp dir can
// hold several instances. `bin` defaults to $CANARYD_BIN.
export async function startCanaryd({ config, env = {}, tempDir, name = 'canaryd', bin, tailChars } = {}) {
  const file = path.join(tempDir, `${name}.yaml`);
  writeFileSync(file, `${toYaml(config)}\n`);
  const proc = new Proc(name, bin ?? requireBin('CANARYD_BIN'), ['-c', file], env, { tailChars });
  const port = await stopOnError(proc, proc.waitForLine((line) => {
    if (!line.startsWith('{')) return null;
    try {
      const j = JSON.parse(line);
      return j.msg === 'canaryd listening' && Number.isInteger(j.port) && j.port > 0 ? j.port : null;
    } catch {
      return null;
    }
  }, '{"msg":"canaryd listening","port":N} line'));
  return {
    port,
    pid: proc.pid,
    proc,
    configFile: file,
    baseURL: `http://127.0.0.1:${port}/v1`,
    origin: `http://127.0.0.1:${port}`,
    // SIGTERM; canaryd must exit 0 (nothing in flight when the tests stop it).
    async stop() {
      const exit = await proc.stop();
      if (exit.code !== 0) {
        throw new Error(`${name} exited with code=${exit.code} signal=${exit.signal} on SIGTERM, want 0; ` +
          proc.describe());
      }
      return exit;
    },
  };
}

// One suite's view of the harness: its temp-dir prefix, the hint printed when
// CANARYD_BIN / MOCK_BIN are missing, and how much output a failure shows.
// The binaries are looked up per call, so importing a suite's helpers never throws.
export function createHarness({ tempPrefix = 'canaryd-test-', binHint = kDefaultBinHint,
  tailChars = DEFAULT_TAIL_CHARS } = {}) {
  const bin = (envName) => requireBin(envName, binHint);
  return {
    requireBin: bin,
    makeTempDir: (prefix = tempPrefix) => makeTempDir(prefix),
    startMock: (options = {}) => startMock({ tailChars, ...options, bin: options.bin ?? bin('MOCK_BIN') }),
    startCanaryd: (options = {}) =>
      startCanaryd({ tailChars, ...options, bin: options.bin ?? bin('CANARYD_BIN') }),
  };
}

export { sleep };
