// Helpers for canaryd's end-to-end tests: start the real mock-upstream and the
// real canaryd binaries on free loopback ports (port 0, ports read back from
// what they announce), in a temp dir, stop them by PID, and build OpenAI SDK
// clients pointed at canaryd. Every wait has a deadline so a broken binary
// fails a test with its own output instead of hanging the suite.
import { spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';

import OpenAI from 'openai';

export const START_DEADLINE_MS = 30_000;
export const STOP_DEADLINE_MS = 15_000;
export const MOCK_CONTROL_DEADLINE_MS = 20_000;
// The mock's fixed answer (tools/mock-upstream/responses.cpp): 8 stream deltas spell it.
export const MOCK_CONTENT = 'This is a mock response from mock-upstream.';
export const MOCK_EMBEDDING = [0.125, -0.25, 0.5, 0.0625, -0.75, 0.375, 1.0, -0.5];

function requireBin(envName) {
  const bin = process.env[envName];
  if (!bin) {
    throw new Error(`${envName} is not set: run through ctest, or ` +
      `CANARYD_BIN=build/canaryd MOCK_BIN=build/tools/mock-upstream/mock-upstream node --test tests/e2e/`);
  }
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
class Proc {
  constructor(label, bin, args, env) {
    this.label = label;
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
    return `${this.label} (${status}); output tail:\n${this.output.slice(-4000)}`;
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

export function makeTempDir(prefix = 'canaryd-e2e-') {
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
export async function startMock({ name, args = [], tempDir }) {
  const bin = requireBin('MOCK_BIN');
  const portFile = path.join(tempDir, `mock-${name}.port`);
  const proc = new Proc(`mock-upstream ${name}`, bin,
    ['--host', '127.0.0.1', '--port', '0', '--port-file', portFile, '--name', name, ...args], {});
  const port = await proc.waitForLine((line) => {
    const m = /^mock-upstream listening on \S+:(\d+)\s*$/.exec(line);
    return m ? Number(m[1]) : null;
  }, 'listening line');
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

// A config with `control` and `canary` upstreams pointing at the two mocks.
// `patch(config)` may edit the object before it is written.
export function twoArmConfig({ control, canary, patch } = {}) {
  const config = {
    server: {
      listen: '127.0.0.1:0',
      threads: 2,
      drain_delay: '0s',
      shutdown_grace: '5s',
    },
    upstreams: {
      [control.name]: { base_url: control.baseURL, timeout: '10s' },
      [canary.name]: { base_url: canary.baseURL, timeout: '10s' },
    },
    split: {
      control: control.name,
      canary: canary.name,
      pin_ttl: '0',
    },
  };
  if (patch) patch(config);
  return config;
}

// Starts canaryd with `config` (an object, see twoArmConfig) and extra env vars.
export async function startCanaryd({ config, env = {}, tempDir }) {
  const bin = requireBin('CANARYD_BIN');
  const file = path.join(tempDir, 'canaryd.yaml');
  writeFileSync(file, `${toYaml(config)}\n`);
  const proc = new Proc('canaryd', bin, ['-c', file], env);
  const port = await proc.waitForLine((line) => {
    if (!line.startsWith('{')) return null;
    try {
      const j = JSON.parse(line);
      return j.msg === 'canaryd listening' && Number.isInteger(j.port) && j.port > 0 ? j.port : null;
    } catch {
      return null;
    }
  }, '{"msg":"canaryd listening","port":N} line');
  return {
    port,
    pid: proc.pid,
    proc,
    configFile: file,
    baseURL: `http://127.0.0.1:${port}/v1`,
    origin: `http://127.0.0.1:${port}`,
    // SIGTERM; canaryd must exit 0 (drain_delay 0s, nothing in flight).
    async stop() {
      const exit = await proc.stop();
      if (exit.code !== 0) {
        throw new Error(`canaryd exited with code=${exit.code} signal=${exit.signal} on SIGTERM, want 0; ` +
          proc.describe());
      }
      return exit;
    },
  };
}

// An OpenAI SDK client pointed at canaryd. maxRetries 0: a retry would hide
// the first answer, and the tests want to see exactly that.
export function sdkClient(canaryd, options = {}) {
  return new OpenAI({
    baseURL: canaryd.baseURL,
    apiKey: 'sk-e2e-client',
    maxRetries: 0,
    timeout: 30_000,
    ...options,
  });
}

// Starts two mocks and canaryd; returns everything plus one stop() that stops
// canaryd first (and reports its exit code) and always stops the mocks.
export async function startStack({ controlArgs = [], canaryArgs = [], env = {}, patch,
  controlName = 'openai', canaryName = 'holysheep' } = {}) {
  const temp = makeTempDir();
  const started = [];
  try {
    const control = await startMock({ name: controlName, args: controlArgs, tempDir: temp.dir });
    started.push(control);
    const canary = await startMock({ name: canaryName, args: canaryArgs, tempDir: temp.dir });
    started.push(canary);
    const config = twoArmConfig({ control, canary, patch });
    const canaryd = await startCanaryd({ config, env, tempDir: temp.dir });
    return {
      control, canary, canaryd, config, tempDir: temp.dir,
      async stop() {
        let error;
        try { await canaryd.stop(); } catch (e) { error = e; }
        for (const m of [control, canary]) await m.stop().catch(() => {});
        temp.remove();
        if (error) throw error;
      },
    };
  } catch (e) {
    for (const m of started) await m.stop().catch(() => {});
    temp.remove();
    throw e;
  }
}

// Asserts a thrown value against a predicate, returning it (node's assert.rejects
// cannot hand the error back for further checks).
export async function catchError(promise) {
  try {
    await promise;
  } catch (e) {
    return e;
  }
  throw new Error('expected the call to throw, it succeeded');
}

export { sleep };
