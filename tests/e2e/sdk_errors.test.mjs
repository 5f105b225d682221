// Upstream errors as the openai SDK sees them through canaryd: they pass
// through unchanged, so the SDK raises the same typed errors (and messages) it
// would raise against OpenAI itself; and a failing canary falls back to control.
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';

import OpenAI from 'openai';

import { MOCK_CONTENT, catchError, sdkClient, startStack } from './helpers.mjs';

const T = { timeout: 60_000 };

describe('upstream errors through canaryd', { timeout: 240_000 }, () => {
  let stack;
  let client;

  before(async () => {
    stack = await startStack({
      // control: canaryd sends it the wrong key -> 401; canary: always 429.
      controlArgs: ['--require-key', 'sk-the-right-key'],
      canaryArgs: ['--status', '429'],
      env: { E2E_OPENAI_KEY: 'sk-a-wrong-key' },
      patch: (c) => {
        c.upstreams.openai.api_key_env = 'E2E_OPENAI_KEY';
      },
    });
    client = sdkClient(stack.canaryd);
  });

  after(async () => {
    if (stack) await stack.stop();
  });

  test('upstream 401 -> AuthenticationError with the upstream message', T, async () => {
    const err = await catchError(client.chat.completions.create({
      model: 'gpt-4.1', messages: [{ role: 'user', content: 'hi' }],
    }));
    assert.ok(err instanceof OpenAI.AuthenticationError, `got ${err?.constructor?.name}: ${err?.message}`);
    assert.equal(err.status, 401);
    assert.equal(err.error?.message, 'Incorrect API key provided');
    assert.equal(err.code, 'invalid_api_key');
    assert.equal(err.message, '401 Incorrect API key provided');
    assert.equal(err.headers.get('x-canaryd-arm'), 'control');
    assert.equal(err.headers.get('x-canaryd-provider'), 'openai');
  });

  test('upstream 429 on a forced canary -> RateLimitError, no fallback', T, async () => {
    await stack.control.reset();
    const err = await catchError(client.chat.completions.create(
      { model: 'gpt-4.1', messages: [{ role: 'user', content: 'hi' }] },
      { headers: { 'X-Canary': 'canary' } }));
    assert.ok(err instanceof OpenAI.RateLimitError, `got ${err?.constructor?.name}: ${err?.message}`);
    assert.equal(err.status, 429);
    assert.equal(err.error?.message, 'Rate limit reached');
    assert.equal(err.code, 'rate_limit_exceeded');
    assert.equal(err.message, '429 Rate limit reached');
    assert.equal(err.headers.get('x-canaryd-arm'), 'canary');
    assert.equal(err.headers.get('x-canaryd-provider'), 'holysheep');
    assert.equal(err.headers.get('x-canaryd-fallback'), null);
    // A forced arm is never retried on the other one.
    assert.equal((await stack.control.stats()).requests, 0);
  });

  test('upstream 429 on a stream request -> RateLimitError before any chunk', T, async () => {
    const err = await catchError((async () => {
      const stream = await client.chat.completions.create(
        { model: 'gpt-4.1', messages: [{ role: 'user', content: 'hi' }], stream: true },
        { headers: { 'X-Canary': 'canary' } });
      for await (const chunk of stream) assert.fail(`unexpected chunk ${JSON.stringify(chunk)}`);
    })());
    assert.ok(err instanceof OpenAI.RateLimitError, `got ${err?.constructor?.name}: ${err?.message}`);
    assert.equal(err.message, '429 Rate limit reached');
  });
});

describe('canary failure falls back to control', { timeout: 240_000 }, () => {
  let stack;
  let client;

  before(async () => {
    stack = await startStack({
      canaryArgs: ['--status', '503'],
      patch: (c) => {
        c.rollout = { steps: [{ weight: 100 }] };  // every user on the canary
        c.fallback = { enabled: true, budget: 1 };
      },
    });
    client = sdkClient(stack.canaryd);
  });

  after(async () => {
    if (stack) await stack.stop();
  });

  test('canary 503 -> the SDK gets control\'s answer with X-Canaryd-Fallback', T, async () => {
    const { data, response } = await client.chat.completions
      .create({ model: 'gpt-4.1', messages: [{ role: 'user', content: 'hi' }] },
        { headers: { 'X-User-ID': 'user-fallback-1' } })
      .withResponse();
    assert.equal(response.status, 200);
    assert.equal(data.choices[0].message.content, MOCK_CONTENT);
    assert.equal(data.mock_name, 'openai');
    // SPEC §3 leaves open whether X-Canaryd-Arm names the assigned or the serving arm; the provider is exact.
    assert.ok(['control', 'canary'].includes(response.headers.get('x-canaryd-arm')));
    assert.equal(response.headers.get('x-canaryd-provider'), 'openai');
    assert.ok(response.headers.get('x-canaryd-fallback'), 'X-Canaryd-Fallback names the reason');
    assert.equal((await stack.canary.stats()).requests, 1, 'the canary was tried first');
  });
});
