// Helpers for canaryd's end-to-end tests: the real mock-upstream and canaryd
// binaries (started and stopped by tests/node-harness/harness.mjs, which these
// suites share), the two-arm config, and OpenAI SDK clients pointed at canaryd.
import OpenAI from 'openai';

import { createHarness } from '../node-harness/harness.mjs';

export {
  MOCK_CONTROL_DEADLINE_MS, START_DEADLINE_MS, STOP_DEADLINE_MS, sleep, toYaml,
} from '../node-harness/harness.mjs';

// The mock's fixed answer (tools/mock-upstream/responses.cpp): 8 stream deltas spell it.
export const MOCK_CONTENT = 'This is a mock response from mock-upstream.';
export const MOCK_EMBEDDING = [0.125, -0.25, 0.5, 0.0625, -0.75, 0.375, 1.0, -0.5];

export const { makeTempDir, startMock, startCanaryd } = createHarness({
  tempPrefix: 'canaryd-e2e-',
  binHint: 'run through ctest, or ' +
    'CANARYD_BIN=build/canaryd MOCK_BIN=build/tools/mock-upstream/mock-upstream node --test tests/e2e/',
  tailChars: 4000,
});

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
