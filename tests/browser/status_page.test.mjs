// The status page /admin/ui in a real browser: Debian's Chromium, headless,
// driven by playwright-core, against the real canaryd with two real mock
// upstreams and traffic on both arms.
//
//   1. no token: only the prompt; a wrong token: an error, still only the prompt
//   2. the right token: state, weight, step progress, verdict, window figures and
//      the charts' latest values match the admin API
//   3. a cancelled confirmation changes nothing; "Set weight" and "Abort",
//      confirmed, act (checked through GET /admin/rollout)
//   4. screenshots in CANARYD_ARTIFACT_DIR; with CANARYD_UPDATE_SCREENSHOT=1 also
//      docs/img/status-page.png (then the traffic runs CANARYD_SCREENSHOT_SECONDS,
//      default 100, so the charts fill)
import assert from 'node:assert/strict';
import { copyFileSync, existsSync, mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { fileURLToPath } from 'node:url';

import { chromium } from 'playwright-core';

import { eventually, makeTempDir, sleep, startCanaryd, startMock } from './harness.mjs';

const HERE = path.dirname(fileURLToPath(import.meta.url));
const CHROMIUM = process.env.CANARYD_CHROMIUM || '/usr/bin/chromium';
const ARTIFACT_DIR = process.env.CANARYD_ARTIFACT_DIR || path.join(tmpdir(), 'canaryd-browser-artifacts');
const UPDATE_SCREENSHOT = process.env.CANARYD_UPDATE_SCREENSHOT === '1';
const DOCS_SCREENSHOT = path.resolve(HERE, '../../docs/img/status-page.png');
const TOKEN = 'ui-test-admin-token-0123456789';
const STEPS = [{ weight: 10, pause: '10m' }, { weight: 25, pause: '15m' }, { weight: 50, pause: '30m' }, { weight: 100 }];

let temp;
let control;
let canary;
let canaryd;
let context;
let page;
const pageErrors = [];
const cspViolations = [];
const adminAnswers = [];  // [url, status] of every /admin/* answer the page got

function config({ admin = true } = {}) {
  return {
    server: {
      listen: '127.0.0.1:0',
      threads: 2,
      drain_delay: '0s',
      shutdown_grace: '5s',
      access_log: false,
      ...(admin ? { admin_token_env: 'CANARYD_UI_TEST_TOKEN' } : {}),
    },
    upstreams: {
      openai: { base_url: control.baseURL, timeout: '10s' },
      holysheep: { base_url: canary.baseURL, timeout: '10s', models: { 'gpt-4.1': 'deepseek-v3.2' } },
    },
    split: { control: 'openai', canary: 'holysheep', pin_ttl: '0' },
    rollout: {
      steps: STEPS,
      analysis: {
        interval: '1s', window: '5m', min_requests: 20, max_error_rate: 0.2, max_p99_latency: '5s',
        relative_to_control: true,
      },
      on_failure: 'rollback',
      auto_promote: true,
    },
    // Mirrors a share of control's requests to the canary: the page's "Shadow comparison".
    shadow: { enabled: true, percent: 30, max_per_second: 5, max_in_flight: 4 },
    pricing: {
      'gpt-4.1': { input: 8.0, output: 32.0 },
      'deepseek-v3.2': { input: 0.42, output: 1.2 },
    },
  };
}

async function admin(method, urlPath, body, token = TOKEN) {
  const res = await fetch(`${canaryd.origin}${urlPath}`, {
    method,
    headers: { Authorization: `Bearer ${token}`, ...(body ? { 'Content-Type': 'application/json' } : {}) },
    body: body ? JSON.stringify(body) : undefined,
    signal: AbortSignal.timeout(10_000),
  });
  const text = await res.text();
  let json = null;
  try { json = JSON.parse(text); } catch { /* not JSON */ }
  return { status: res.status, json, text, headers: res.headers };
}

async function chat(user) {
  const res = await fetch(`${canaryd.origin}/v1/chat/completions`, {
    method: 'POST',
    headers: { 'Content-Type': 'application/json', 'X-User-ID': user },
    body: JSON.stringify({ model: 'gpt-4.1', messages: [{ role: 'user', content: 'hello' }] }),
    signal: AbortSignal.timeout(10_000),
  });
  await res.arrayBuffer();
  return res.headers.get('x-canaryd-arm');
}

// Requests at `rate(seconds since start)` per second from 500 users, until stop().
function startTraffic(rate) {
  const counts = { control: 0, canary: 0, failed: 0 };
  const inflight = new Set();
  let stopped = false;
  let n = 0;
  const loop = (async () => {
    const t0 = Date.now();
    while (!stopped) {
      const p = chat(`user-${n++ % 500}`)
        .then((arm) => { counts[arm === 'canary' ? 'canary' : arm === 'control' ? 'control' : 'failed'] += 1; })
        .catch(() => { counts.failed += 1; });
      inflight.add(p);
      p.finally(() => inflight.delete(p));
      await sleep(1000 / rate((Date.now() - t0) / 1000));
    }
    await Promise.all(inflight);
  })();
  return { counts, async stop() { stopped = true; await loop; } };
}

const latestValued = (samples, arm, key) => {
  for (let i = samples.length - 1; i >= 0; i -= 1) {
    const v = samples[i].arms?.[arm]?.[key];
    if (typeof v === 'number') return v;
  }
  return null;
};

const near = (a, b) => Math.abs(a - b) <= 1e-9 * Math.max(1, Math.abs(a), Math.abs(b));

async function shot(name) {
  mkdirSync(ARTIFACT_DIR, { recursive: true });
  const file = path.join(ARTIFACT_DIR, name);
  await page.screenshot({ path: file, fullPage: true });
  assert.ok(existsSync(file), `screenshot ${file} was not written`);
  return file;
}

describe('status page /admin/ui in Chromium', () => {
  before(async () => {
    if (!existsSync(CHROMIUM)) {
      throw new Error(`Chromium is not installed at ${CHROMIUM}: the browser test needs Debian's chromium ` +
        'package (scripts/install-deps.sh installs it: apt-get install chromium)');
    }
    temp = makeTempDir();
    const mockArgs = ['--prompt-tokens', '400', '--completion-tokens', '250'];
    control = await startMock({ name: 'openai', tempDir: temp.dir,
      args: [...mockArgs, '--latency', '40', '--error-rate', '0.005', '--error-seed', '7'] });
    canary = await startMock({ name: 'holysheep', tempDir: temp.dir,
      args: [...mockArgs, '--latency', '25', '--error-rate', '0.02', '--error-seed', '11'] });
    canaryd = await startCanaryd({ config: config(), env: { CANARYD_UI_TEST_TOKEN: TOKEN }, tempDir: temp.dir });

    // A non-trivial step for the picture: 25%.
    const promoted = await admin('POST', '/admin/rollout/promote');
    assert.equal(promoted.status, 200, promoted.text);
    assert.equal(promoted.json.weight, 25);

    // Traffic on both arms until a history sample (every 10 s) has counted it.
    const traffic = startTraffic(UPDATE_SCREENSHOT ? (t) => 7 + 5 * Math.sin(t / 14) : () => 40);
    const minMs = UPDATE_SCREENSHOT ? Number(process.env.CANARYD_SCREENSHOT_SECONDS || 100) * 1000 : 0;
    const t0 = Date.now();
    await eventually('a history sample with requests on both arms', async () => {
      if (Date.now() - t0 < minMs) return false;
      const h = await admin('GET', '/admin/history');
      const last = h.json?.samples?.at(-1);
      return last && last.arms.control.requests_per_second > 0 && last.arms.canary.requests_per_second > 0;
    }, { deadlineMs: minMs + 40_000, everyMs: 500 });
    if (!UPDATE_SCREENSHOT) await traffic.stop();
    assert.ok(traffic.counts.control > 0 && traffic.counts.canary > 0, JSON.stringify(traffic.counts));

    const userDataDir = mkdtempSync(path.join(temp.dir, 'chromium-profile-'));
    context = await chromium.launchPersistentContext(userDataDir, {
      executablePath: CHROMIUM,
      headless: true,
      args: ['--headless=new', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
        '--disable-background-networking', '--disable-component-update', '--disable-sync'],
      viewport: { width: 1280, height: 900 },
      timeout: 30_000,
    });
    page = context.pages()[0] || await context.newPage();
    page.setDefaultTimeout(15_000);
    page.on('pageerror', (e) => pageErrors.push(e.message));
    page.on('console', (m) => { if (/Content.Security.Policy/i.test(m.text())) cspViolations.push(m.text()); });
    page.on('response', (r) => { if (new URL(r.url()).pathname.startsWith('/admin/')) adminAnswers.push([r.url(), r.status()]); });

    if (UPDATE_SCREENSHOT) {
      // The README's picture: live traffic, ~10 samples per chart.
      await page.goto(`${canaryd.origin}/admin/ui`);
      await page.fill('#token', TOKEN);
      await page.click('#login-button');
      await page.waitForSelector('#chart-cost path.canary', { state: 'attached' });
      await sleep(3500);  // one more refresh, so every figure is the latest
      mkdirSync(path.dirname(DOCS_SCREENSHOT), { recursive: true });
      copyFileSync(await shot('status-page-docs.png'), DOCS_SCREENSHOT);
      await page.click('#signout');
      await traffic.stop();
    }
  });

  after(async () => {
    const errors = [];
    if (context) await context.close().catch((e) => errors.push(e));
    if (canaryd) await canaryd.stop().catch((e) => errors.push(e));
    for (const m of [control, canary]) if (m) await m.stop().catch((e) => errors.push(e));
    if (temp) temp.remove();
    if (errors.length) throw errors[0];
  });

  test('GET /admin/ui: HTML with a strict CSP, served without the token; the data routes need it', async () => {
    const res = await fetch(`${canaryd.origin}/admin/ui`);
    assert.equal(res.status, 200);
    assert.equal(res.headers.get('content-type'), 'text/html; charset=utf-8');
    const csp = res.headers.get('content-security-policy');
    assert.match(csp, /default-src 'none'/);
    assert.match(csp, /script-src 'sha256-[A-Za-z0-9+/]+=*';/);
    assert.match(csp, /style-src 'sha256-[A-Za-z0-9+/]+=*';/);
    assert.match(csp, /connect-src 'self'/);
    assert.doesNotMatch(csp, /unsafe-inline|unsafe-eval|\*/);
    assert.equal(res.headers.get('x-frame-options'), 'DENY');
    assert.match(res.headers.get('cache-control'), /no-store/);
    const html = await res.text();
    assert.doesNotMatch(html, /(src|href)\s*=\s*["']?(https?:)?\/\//i, 'the page must not load anything from elsewhere');
    assert.doesNotMatch(html.replaceAll('http://www.w3.org/2000/svg', ''), /https?:\/\//, 'no URL but the SVG namespace');
    assert.doesNotMatch(html, /holysheep|openai|deepseek/, 'the page itself carries no rollout data');

    for (const route of ['/admin/history', '/admin/rollout', '/admin/report']) {
      const anon = await fetch(`${canaryd.origin}${route}`);
      assert.equal(anon.status, 401, `${route} without a token`);
      assert.equal((await admin('GET', route, undefined, 'wrong')).status, 401, `${route} with a wrong token`);
    }
    const h = await admin('GET', '/admin/history');
    assert.equal(h.status, 200);
    assert.equal(h.json.interval_seconds, 10);
    assert.equal(h.json.span_seconds, 900);
    assert.equal(h.json.capacity, 90);
    const s = h.json.samples.at(-1);
    const samples = h.json.samples;
    for (const arm of ['control', 'canary']) {
      for (const key of ['requests_per_second', 'cost_per_1k_requests_usd', 'error_rate', 'p99_seconds', 'window_requests']) {
        assert.ok(key in s.arms[arm], `history sample lacks arms.${arm}.${key}: ${JSON.stringify(s)}`);
      }
    }
    const cost = (arm) => latestValued(samples, arm, 'cost_per_1k_requests_usd');
    assert.ok(cost('canary') > 0 && cost('control') > cost('canary') * 5,
      `the canary's renamed model is much cheaper: ${JSON.stringify(samples)}`);
  });

  test('without a valid token only the prompt shows', async () => {
    adminAnswers.length = 0;
    await page.goto(`${canaryd.origin}/admin/ui`);
    assert.ok(await page.isVisible('#login'), 'the token prompt is visible');
    assert.ok(await page.isHidden('#dashboard'), 'the dashboard is hidden');
    let body = await page.innerText('body');
    assert.doesNotMatch(body, /progressing|25%|\bcontrol\b|\bcanary\b/i, `no state before a token: ${body}`);
    assert.equal(adminAnswers.filter(([u]) => !u.endsWith('/admin/ui')).length, 0, 'no API call without a token');

    await page.fill('#token', 'not-the-admin-token');
    await page.click('#login-button');
    await page.waitForFunction(() => /refused/.test(document.getElementById('login-error').textContent));
    assert.ok(await page.isHidden('#dashboard'), 'still no dashboard after a wrong token');
    body = await page.innerText('body');
    assert.doesNotMatch(body, /progressing|25%/, `no state after a wrong token: ${body}`);
    assert.equal(await page.evaluate(() => sessionStorage.getItem('canaryd.admin_token')), null,
      'a refused token is not kept');
    // The page's first call is the experiments list (issue 17).
    assert.ok(adminAnswers.some(([u, st]) => u.endsWith('/admin/experiments') && st === 401), JSON.stringify(adminAnswers));
  });

  test('with the token: state, weight, steps, verdict, window figures and charts match the API', async () => {
    await page.fill('#token', TOKEN);
    await page.click('#login-button');
    await page.waitForSelector('#dashboard', { state: 'visible' });
    // One card per experiment (issue 17): a config with only a top-level split has "default", selected.
    await page.waitForSelector('#experiments .card.selected[data-experiment="default"]');
    assert.ok(await page.isHidden('#login'), 'the prompt goes away');
    assert.equal(await page.evaluate(() => sessionStorage.getItem('canaryd.admin_token')), TOKEN);

    await eventually('the page to show what GET /admin/rollout says', async () => {
      const st = (await admin('GET', '/admin/rollout')).json;
      const shown = await page.evaluate(() => {
        const v = (id) => document.getElementById(id).dataset.value;
        return {
          state: v('state'),
          weight: v('weight'),
          step: v('step'),
          verdict: v('verdict-kind'),
          chips: [...document.querySelectorAll('#steps .chip')].map((c) => ({
            weight: Number(c.dataset.weight), current: c.classList.contains('current'), done: c.classList.contains('done'),
          })),
          requests: {
            control: document.querySelector('#arm-control .requests').dataset.value,
            canary: document.querySelector('#arm-canary .requests').dataset.value,
          },
          errors: {
            control: document.querySelector('#arm-control .errors').dataset.value,
            canary: document.querySelector('#arm-canary .errors').dataset.value,
          },
          weightText: document.getElementById('weight').textContent,
          stateText: document.getElementById('state').textContent,
        };
      });
      assert.equal(shown.state, st.state);
      assert.equal(shown.stateText, st.state);
      assert.equal(Number(shown.weight), st.weight);
      assert.equal(shown.weightText, `${st.weight}%`);
      assert.equal(Number(shown.step), st.step);
      assert.equal(shown.verdict, st.verdict ? st.verdict.kind : '');
      assert.deepEqual(shown.chips.map((c) => c.weight), st.steps.map((s) => s.weight));
      assert.deepEqual(shown.chips.map((c) => c.current), st.steps.map((_, i) => i === st.step));
      assert.deepEqual(shown.chips.map((c) => c.done), st.steps.map((_, i) => i < st.step));
      for (const arm of ['control', 'canary']) {
        assert.equal(Number(shown.requests[arm]), st.arms[arm].requests, `${arm} window requests`);
        assert.equal(Number(shown.errors[arm]), st.arms[arm].errors, `${arm} window errors`);
      }
      return true;
    }, { deadlineMs: 15_000, everyMs: 500 });
    const st = (await admin('GET', '/admin/rollout')).json;
    assert.equal(st.state, 'progressing');
    assert.equal(st.weight, 25);
    assert.equal(st.verdict?.kind, 'pass', JSON.stringify(st.verdict));
    assert.ok(st.arms.control.requests > 0 && st.arms.canary.requests > 0, JSON.stringify(st.arms));
    assert.match(await page.innerText('#verdict-reason'), /\S/, 'the verdict reason is shown');

    const charts = {
      'chart-requests': 'requests_per_second',
      'chart-errors': 'error_rate',
      'chart-p99': 'p99_seconds',
      'chart-cost': 'cost_per_1k_requests_usd',
    };
    await eventually('every chart to show both arms with the latest values of GET /admin/history', async () => {
      const samples = (await admin('GET', '/admin/history')).json.samples;
      for (const [id, key] of Object.entries(charts)) {
        for (const arm of ['control', 'canary']) {
          const drawn = await page.$(`#${id} svg path.${arm}`);
          assert.ok(drawn, `#${id} has a ${arm} line`);
          assert.ok(await page.$(`#${id} svg circle.${arm}`), `#${id} has ${arm} points`);
          const shown = await page.getAttribute(`#${id} .last span[data-arm=${arm}]`, 'data-value');
          const want = latestValued(samples, arm, key);
          assert.notEqual(want, null, `history has a ${arm} ${key}`);
          assert.ok(near(Number(shown), want), `#${id} ${arm}: page ${shown}, history ${want}`);
        }
      }
      return true;
    }, { deadlineMs: 20_000, everyMs: 500 });
    await eventually('the shadow comparison of GET /admin/report', async () => {
      const sh = (await admin('GET', '/admin/report')).json.shadow;
      assert.equal(sh?.enabled, true, JSON.stringify(sh));
      assert.ok(sh.pairs > 0, `shadow pairs: ${JSON.stringify(sh)}`);
      assert.ok(await page.isVisible('#shadow-on'), 'the shadow table is shown');
      assert.ok(await page.isHidden('#shadow-off'));
      assert.equal(await page.getAttribute('#shadow-pairs', 'data-value'), String(sh.pairs));
      return true;
    }, { deadlineMs: 15_000, everyMs: 500 });

    await shot('status-page.png');
  });

  test('a cancelled confirmation changes nothing; a confirmed weight is set', async () => {
    let asked = '';
    page.once('dialog', (d) => { asked = d.message(); d.dismiss(); });
    await page.click('#btn-pause');
    await page.waitForFunction(() => /cancelled/.test(document.getElementById('action-result').textContent));
    assert.match(asked, /Pause/);
    assert.equal((await admin('GET', '/admin/rollout')).json.state, 'progressing');

    page.once('dialog', (d) => { asked = d.message(); d.accept(); });
    await page.fill('#weight-input', '30');
    await page.click('#btn-weight');
    await eventually('weight 30 through the API', async () => {
      const st = (await admin('GET', '/admin/rollout')).json;
      return st.weight === 30 && st.state === 'paused';
    }, { deadlineMs: 10_000 });
    assert.match(asked, /30%/);
    await page.waitForFunction(() => document.getElementById('weight').dataset.value === '30' &&
      document.getElementById('state').dataset.value === 'paused');
  });

  test('Abort, confirmed, rolls the canary back', async () => {
    let asked = '';
    page.once('dialog', (d) => { asked = d.message(); d.accept(); });
    await page.click('#btn-abort');
    const st = await eventually('state aborted through the API', async () => {
      const s = (await admin('GET', '/admin/rollout')).json;
      return s.state === 'aborted' ? s : null;
    }, { deadlineMs: 10_000 });
    assert.match(asked, /Abort/);
    assert.equal(st.weight, 0);
    await page.waitForFunction(() => document.getElementById('state').dataset.value === 'aborted');
    assert.equal(await page.getAttribute('#weight', 'data-value'), '0');
    assert.ok(await page.isEnabled('#btn-retry'), 'retry is offered after an abort');
    assert.ok(await page.isDisabled('#btn-abort'), 'abort is not offered twice');
    for (let i = 0; i < 20; i += 1) assert.equal(await chat(`user-${i}`), 'control', 'no canary traffic after abort');
    await shot('status-page-aborted.png');
    assert.deepEqual(pageErrors, [], 'no script errors in the page');
    assert.deepEqual(cspViolations, [], 'nothing in the page breaks its CSP');
  });

  test('with the admin API off, /admin/ui is 403 like every /admin route', async () => {
    const off = await startCanaryd({ config: config({ admin: false }), tempDir: temp.dir, name: 'canaryd-no-admin' });
    try {
      for (const route of ['/admin/ui', '/admin/history', '/admin/rollout']) {
        const res = await fetch(`${off.origin}${route}`);
        assert.equal(res.status, 403, route);
        const body = await res.json();
        assert.match(body.error.message, /admin API is off/);
      }
    } finally {
      await off.stop();
    }
  });
});
