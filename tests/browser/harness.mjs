// Processes for the browser test: the real mock-upstream and canaryd binaries
// on free loopback ports (port 0, read back from what they print), in a temp
// dir, stopped by PID. The same contract as tests/e2e/helpers.mjs, without its
// openai SDK dependency, so this suite needs nothing but playwright-core.
// Every wait has a deadline.
import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';

export const START_DEADLINE_MS = 30_000;
export const STOP_DEADLINE_MS = 15_000;

export function requireBin(envName) {
  const bin = process.env[envName];
  if (!bin) {
    throw new Error(`${envName} is not set: run through ctest (ctest -L browser), or CANARYD_BIN=build/canaryd ` +
      'MOCK_BIN=build/tools/mock-upstream/mock-upstream node --test tests/browser/');
  }
  return bin;
}

const children = new Set();
process.on('exit', () => {
  for (const child of children) {
    try { process.kill(child.pid, 'SIGKILL'); } catch { /* gone */ }
  }
});

export class Proc {
  constructor(label, bin, args, env = {}) {
    this.label = label;
    this.output = '';
    this.exit = null;
    this.child = spawn(bin, args, { env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
    this.pid = this.child.pid;
    children.add(this.child);
    this.exited = new Promise((resolve) => {
      const done = (exit) => { this.exit = exit; children.delete(this.child); resolve(exit); };
      this.child.on('exit', (code, signal) => done({ code, signal }));
      this.child.on('error', (err) => { this.output += `\n[spawn error: ${err.message}]`; done({ code: null, signal: null }); });
    });
    this.listeners = [];
    let partial = '';
    const onData = (chunk) => {
      const s = chunk.toString('utf8');
      this.output = (this.output + s).slice(-64 * 1024);
      partial += s;
      let nl;
      while ((nl = partial.indexOf('\n')) >= 0) {
        const line = partial.slice(0, nl);
        partial = partial.slice(nl + 1);
        for (const l of this.listeners) l(line);
      }
    };
    this.child.stdout.on('data', onData);
    this.child.stderr.on('data', onData);
  }

  describe() {
    const st = this.exit ? `exited code=${this.exit.code} signal=${this.exit.signal}` : `running pid=${this.pid}`;
    return `${this.label} (${st}); output tail:\n${this.output.slice(-3000)}`;
  }

  waitForLine(match, what, deadlineMs = START_DEADLINE_MS) {
    return new Promise((resolve, reject) => {
      let timer;
      const listener = (line) => { const v = match(line); if (v) finish(resolve, v); };
      const finish = (fn, v) => {
        clearTimeout(timer);
        this.listeners = this.listeners.filter((l) => l !== listener);
        fn(v);
      };
      timer = setTimeout(() => finish(reject, new Error(`${this.label}: no ${what} within ${deadlineMs} ms; ${this.describe()}`)),
        deadlineMs);
      this.listeners.push(listener);
      this.exited.then(() => finish(reject, new Error(`${this.label} exited before ${what}; ${this.describe()}`)));
    });
  }

  // SIGTERM by PID; SIGKILL if it does not exit by the deadline.
  async stop(deadlineMs = STOP_DEADLINE_MS) {
    if (this.exit) return this.exit;
    try { process.kill(this.pid, 'SIGTERM'); } catch { /* raced with its exit */ }
    let timer;
    const timeout = new Promise((resolve) => { timer = setTimeout(() => resolve(null), deadlineMs); });
    const exit = await Promise.race([this.exited, timeout]);
    clearTimeout(timer);
    if (exit) return exit;
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

export function makeTempDir(prefix = 'canaryd-browser-') {
  const dir = mkdtempSync(path.join(tmpdir(), prefix));
  return { dir, remove: () => rmSync(dir, { recursive: true, force: true }) };
}

export async function startMock({ name, args = [], tempDir }) {
  const proc = new Proc(`mock-upstream ${name}`, requireBin('MOCK_BIN'),
    ['--host', '127.0.0.1', '--port', '0', '--port-file', path.join(tempDir, `mock-${name}.port`), '--name', name, ...args]);
  const port = await stopOnError(proc, proc.waitForLine((line) => {
    const m = /^mock-upstream listening on \S+:(\d+)\s*$/.exec(line);
    return m ? Number(m[1]) : null;
  }, 'listening line'));
  return { name, port, proc, baseURL: `http://127.0.0.1:${port}/v1`, stop: () => proc.stop() };
}

// Config objects as YAML: strings as JSON strings (valid YAML), lists of maps in flow style.
export function toYaml(value, indent = 0) {
  const pad = ' '.repeat(indent);
  const scalar = (v) => (typeof v === 'string' ? JSON.stringify(v) : String(v));
  if (Array.isArray(value)) {
    return value.map((v) => `${pad}- ${v !== null && typeof v === 'object' ? JSON.stringify(v) : scalar(v)}`).join('\n');
  }
  const lines = [];
  for (const [k, v] of Object.entries(value)) {
    if (v !== null && typeof v === 'object' && Object.keys(v).length) {
      lines.push(`${pad}${JSON.stringify(k)}:`, toYaml(v, indent + 2));
    } else if (v !== null && typeof v === 'object') {
      lines.push(`${pad}${JSON.stringify(k)}: ${Array.isArray(v) ? '[]' : '{}'}`);
    } else {
      lines.push(`${pad}${JSON.stringify(k)}: ${scalar(v)}`);
    }
  }
  return lines.join('\n');
}

export async function startCanaryd({ config, env = {}, tempDir, name = 'canaryd' }) {
  const file = path.join(tempDir, `${name}.yaml`);
  writeFileSync(file, `${toYaml(config)}\n`);
  const proc = new Proc(name, requireBin('CANARYD_BIN'), ['-c', file], env);
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
    proc,
    origin: `http://127.0.0.1:${port}`,
    async stop() {
      const exit = await proc.stop();
      if (exit.code !== 0) throw new Error(`${name} exited code=${exit.code} signal=${exit.signal} on SIGTERM; ${proc.describe()}`);
    },
  };
}

// Polls `probe` until it returns a truthy value or the deadline passes; the
// error names what was awaited and the last value or exception seen.
export async function eventually(what, probe, { deadlineMs = 20_000, everyMs = 200 } = {}) {
  const end = Date.now() + deadlineMs;
  let last;
  for (;;) {
    try {
      const v = await probe();
      if (v) return v;
      last = v;
    } catch (e) {
      last = e;
    }
    if (Date.now() > end) {
      const detail = last instanceof Error ? last.stack || last.message : JSON.stringify(last);
      throw new Error(`timed out after ${deadlineMs} ms waiting for ${what}; last: ${detail}`);
    }
    await sleep(everyMs);
  }
}

export { sleep };
