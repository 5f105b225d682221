// Client keys (server.client_keys_env): the SDK's apiKey is checked by
// canaryd; a good one is served, a bad one gets canaryd's own OpenAI-shaped 401,
// which the SDK raises as AuthenticationError, and never reaches an upstream.
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';

import OpenAI from 'openai';

import { MOCK_CONTENT, catchError, sdkClient, startStack } from './helpers.mjs';

const T = { timeout: 60_000 };
const UPSTREAM_KEY = 'sk-e2e-upstream';

describe('client keys', { timeout: 240_000 }, () => {
  let stack;

  before(async () => {
    stack = await startStack({
      controlArgs: ['--require-key', UPSTREAM_KEY],
      env: { CANARYD_CLIENT_KEYS: 'k1,k2', E2E_OPENAI_KEY: UPSTREAM_KEY },
      patch: (c) => {
        c.server.client_keys_env = 'CANARYD_CLIENT_KEYS';
        c.upstreams.openai.api_key_env = 'E2E_OPENAI_KEY';
      },
    });
  });

  after(async () => {
    if (stack) await stack.stop();
  });

  test('apiKey "k2" is accepted and replaced by the upstream key', T, async () => {
    await stack.control.reset();
    const client = sdkClient(stack.canaryd, { apiKey: 'k2' });
    const { data, response } = await client.chat.completions
      .create({ model: 'gpt-4.1', messages: [{ role: 'user', content: 'hi' }] })
      .withResponse();
    assert.equal(response.status, 200);
    assert.equal(data.choices[0].message.content, MOCK_CONTENT);
    assert.equal(response.headers.get('x-canaryd-arm'), 'control');
    const stats = await stack.control.stats();
    assert.equal(stats.requests, 1);
    assert.equal(stats.last_headers.authorization, `Bearer ${UPSTREAM_KEY}`);
  });

  test('apiKey "k1" works for embeddings too', T, async () => {
    const client = sdkClient(stack.canaryd, { apiKey: 'k1' });
    const res = await client.embeddings.create({ model: 'text-embedding-3-small', input: ['x', 'y'] });
    assert.equal(res.data.length, 2);
  });

  for (const badKey of ['bad', 'k3', 'k1,k2', 'K2', 'sk-e2e-unknown-7f3a']) {
    test(`apiKey ${JSON.stringify(badKey)} -> AuthenticationError from canaryd itself`, T, async () => {
      await stack.control.reset();
      await stack.canary.reset();
      const client = sdkClient(stack.canaryd, { apiKey: badKey });
      const err = await catchError(client.chat.completions.create({
        model: 'gpt-4.1', messages: [{ role: 'user', content: 'hi' }],
      }));
      assert.ok(err instanceof OpenAI.AuthenticationError, `got ${err?.constructor?.name}: ${err?.message}`);
      assert.equal(err.status, 401);
      // canaryd's OpenAI-shaped body: {"error":{"message","type","param","code"}}.
      assert.equal(typeof err.error?.message, 'string');
      assert.ok(err.error.message.length > 0);
      assert.equal(typeof err.error.type, 'string');
      assert.ok('param' in err.error && 'code' in err.error, `body: ${JSON.stringify(err.error)}`);
      assert.notEqual(err.error.message, 'Incorrect API key provided', 'canaryd answered, not a mock');
      assert.equal(err.message, `401 ${err.error.message}`);
      if (badKey.startsWith('sk-')) {
        assert.ok(!err.error.message.includes(badKey), 'the rejected key is not echoed back');
      }
      assert.equal((await stack.control.stats()).requests, 0, 'control was not called');
      assert.equal((await stack.canary.stats()).requests, 0, 'canary was not called');
    });
  }

  test('a bad key is rejected on the Responses API and streams as well', T, async () => {
    const client = sdkClient(stack.canaryd, { apiKey: 'bad' });
    const e1 = await catchError(client.responses.create({ model: 'gpt-4.1', input: 'hi' }));
    assert.ok(e1 instanceof OpenAI.AuthenticationError, `got ${e1?.constructor?.name}: ${e1?.message}`);
    const e2 = await catchError(client.chat.completions.create({
      model: 'gpt-4.1', messages: [{ role: 'user', content: 'hi' }], stream: true,
    }));
    assert.ok(e2 instanceof OpenAI.AuthenticationError, `got ${e2?.constructor?.name}: ${e2?.message}`);
  });
});
