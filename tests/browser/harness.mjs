// Processes for the browser test: the real mock-upstream and canaryd binaries,
// started and stopped by tests/node-harness/harness.mjs (shared with
// tests/e2e, node builtins only, so this suite needs nothing but
// playwright-core), plus eventually() for polling the page. Every wait has a deadline.
import { createHarness, sleep } from '../node-harness/harness.mjs';

export { Proc, START_DEADLINE_MS, STOP_DEADLINE_MS, sleep, toYaml } from '../node-harness/harness.mjs';

export const { requireBin, makeTempDir, startMock, startCanaryd } = createHarness({
  tempPrefix: 'canaryd-browser-',
  binHint: 'run through ctest (ctest -L browser), or CANARYD_BIN=build/canaryd ' +
    'MOCK_BIN=build/tools/mock-upstream/mock-upstream node --test tests/browser/',
  tailChars: 3000,
});

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
