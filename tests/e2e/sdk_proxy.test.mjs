// The official openai SDK talking to canaryd as if it were OpenAI: chat
// (plain, streamed, tool calls), embeddings, the Responses API and the canary
// override, each checked on what the SDK hands back and on what the mocks saw.
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';

import { MOCK_CONTENT, MOCK_EMBEDDING, sdkClient, startStack } from './helpers.mjs';

const CONTROL_KEY = 'sk-e2e-control-upstream';
const CANARY_KEY = 'sk-e2e-canary-upstream';
const T = { timeout: 60_000 };

describe('canaryd with the openai SDK', { timeout: 240_000 }, () => {
  let stack;
  let client;

  before(async () => {
    stack = await startStack({
      // The mocks answer 401 unless canaryd swaps the client's key for theirs.
      controlArgs: ['--require-key', CONTROL_KEY, '--stream-chunks', '8'],
      canaryArgs: ['--require-key', CANARY_KEY, '--stream-chunks', '8'],
      env: { E2E_OPENAI_KEY: CONTROL_KEY, E2E_HOLYSHEEP_KEY: CANARY_KEY },
      patch: (c) => {
        c.upstreams.openai.api_key_env = 'E2E_OPENAI_KEY';
        c.upstreams.holysheep.api_key_env = 'E2E_HOLYSHEEP_KEY';
        c.upstreams.holysheep.models = { 'gpt-4.1': 'deepseek-v3.2' };
        c.pricing = { 'gpt-4.1': { input: 8, output: 32 }, 'deepseek-v3.2': { input: 0.42, output: 1.2 } };
      },
    });
    client = sdkClient(stack.canaryd);
  });

  after(async () => {
    if (stack) await stack.stop();
  });

  test('chat.completions.create: content, usage, model, canaryd headers', T, async () => {
    await stack.control.reset();
    const { data, response } = await client.chat.completions
      .create({ model: 'gpt-4.1', messages: [{ role: 'user', content: 'Hello' }] })
      .withResponse();

    assert.equal(response.status, 200);
    assert.equal(data.object, 'chat.completion');
    assert.equal(data.model, 'gpt-4.1');
    assert.equal(data.choices.length, 1);
    assert.equal(data.choices[0].message.role, 'assistant');
    assert.equal(data.choices[0].message.content, MOCK_CONTENT);
    assert.equal(data.choices[0].finish_reason, 'stop');
    assert.deepEqual(data.usage, { prompt_tokens: 10, completion_tokens: 20, total_tokens: 30 });

    // No rollout steps: weight 0, so everything goes to control.
    assert.equal(response.headers.get('x-canaryd-arm'), 'control');
    assert.equal(response.headers.get('x-canaryd-provider'), 'openai');
    assert.ok(response.headers.get('x-request-id'), 'X-Request-ID is sent back to the client');

    const stats = await stack.control.stats();
    assert.equal(stats.requests, 1);
    assert.equal(stats.requests_by_path['/v1/chat/completions'], 1);
    // The client's key never reaches the upstream; the upstream's own key does.
    assert.equal(stats.last_headers.authorization, `Bearer ${CONTROL_KEY}`);
    assert.equal(JSON.parse(stats.last_body).model, 'gpt-4.1');
  });

  test('streaming with include_usage: every chunk, assembled content, final usage chunk', T, async () => {
    const stream = await client.chat.completions.create({
      model: 'gpt-4.1',
      messages: [{ role: 'user', content: 'Stream please' }],
      stream: true,
      stream_options: { include_usage: true },
    });

    let content = '';
    let contentChunks = 0;
    let usageChunk = null;
    let finishReason = null;
    let chunksAfterUsage = 0;
    for await (const chunk of stream) {
      assert.equal(chunk.object, 'chat.completion.chunk');
      assert.equal(chunk.model, 'gpt-4.1');
      if (usageChunk) chunksAfterUsage += 1;
      if (chunk.choices.length > 0) {
        const choice = chunk.choices[0];
        if (choice.delta?.content) {
          content += choice.delta.content;
          contentChunks += 1;
        }
        if (choice.finish_reason) finishReason = choice.finish_reason;
      }
      if (chunk.usage) usageChunk = chunk;
    }

    assert.equal(contentChunks, 8);
    assert.equal(content, MOCK_CONTENT);
    assert.equal(finishReason, 'stop');
    assert.ok(usageChunk, 'the final usage chunk reached the SDK');
    assert.deepEqual(usageChunk.choices, []);
    assert.deepEqual(usageChunk.usage, { prompt_tokens: 10, completion_tokens: 20, total_tokens: 30 });
    assert.equal(chunksAfterUsage, 0, 'the usage chunk is the last one');
  });

  test('streaming is relayed event by event, not buffered', T, async () => {
    // 8 deltas 300 ms apart: the first must reach the SDK long before the mock
    // writes the last (2.1 s later). Both timestamps are CLOCK_REALTIME here.
    const { data: stream, response } = await client.chat.completions
      .create({ model: 'gpt-4.1', messages: [{ role: 'user', content: 'slowly' }], stream: true },
        { headers: { 'X-Mock-Stream-Delay-Ms': '300' } })
      .withResponse();
    assert.equal(response.headers.get('x-canaryd-arm'), 'control');
    assert.match(response.headers.get('content-type') ?? '', /^text\/event-stream/);

    let firstArrivalUs = null;
    let firstMockTsUs = null;
    let lastMockTsUs = null;
    let content = '';
    for await (const chunk of stream) {
      if (firstArrivalUs === null) {
        firstArrivalUs = Date.now() * 1000;
        firstMockTsUs = chunk.mock_ts_us;
      }
      lastMockTsUs = chunk.mock_ts_us;
      content += chunk.choices[0]?.delta?.content ?? '';
    }
    assert.equal(content, MOCK_CONTENT);
    assert.ok(Number.isInteger(lastMockTsUs), 'the mock stamps each event with mock_ts_us');
    assert.ok(lastMockTsUs - firstMockTsUs >= 2_000_000,
      'the mock did not pace the stream: X-Mock-Stream-Delay-Ms did not reach it through canaryd');
    assert.ok(firstArrivalUs < lastMockTsUs - 1_000_000,
      `first chunk arrived at ${firstArrivalUs}, the last was written at ${lastMockTsUs}: ` +
      'canaryd held the stream back');
  });

  test('tool calls: the function name and JSON arguments come back', T, async () => {
    const { data, response } = await client.chat.completions.create({
      model: 'gpt-4.1',
      messages: [{ role: 'user', content: 'Where is my order 42?' }],
      tools: [{
        type: 'function',
        function: {
          name: 'get_order_status',
          description: 'Look up an order',
          parameters: {
            type: 'object',
            properties: { order_id: { type: 'string' } },
            required: ['order_id'],
          },
        },
      }],
    }).withResponse();

    assert.equal(response.headers.get('x-canaryd-arm'), 'control');
    const choice = data.choices[0];
    assert.equal(choice.finish_reason, 'tool_calls');
    assert.ok(Array.isArray(choice.message.tool_calls) && choice.message.tool_calls.length === 1);
    const call = choice.message.tool_calls[0];
    assert.equal(call.type, 'function');
    assert.ok(call.id);
    assert.equal(call.function.name, 'get_order_status');
    const args = JSON.parse(call.function.arguments);
    assert.equal(typeof args, 'object');
  });

  test('streamed tool call: the SDK assembles name and arguments', T, async () => {
    const stream = await client.chat.completions.create({
      model: 'gpt-4.1',
      messages: [{ role: 'user', content: 'Where is my order 42?' }],
      tools: [{ type: 'function', function: { name: 'get_order_status', parameters: { type: 'object' } } }],
      stream: true,
    });
    let name = '';
    let args = '';
    let finishReason = null;
    for await (const chunk of stream) {
      const delta = chunk.choices[0]?.delta;
      for (const tc of delta?.tool_calls ?? []) {
        name += tc.function?.name ?? '';
        args += tc.function?.arguments ?? '';
      }
      finishReason = chunk.choices[0]?.finish_reason ?? finishReason;
    }
    assert.equal(name, 'get_order_status');
    assert.deepEqual(JSON.parse(args), {});
    assert.equal(finishReason, 'tool_calls');
  });

  test('embeddings.create with two inputs returns two embeddings', T, async () => {
    // The SDK asks for base64 by default and decodes it; both directions go through canaryd.
    const { data, response } = await client.embeddings
      .create({ model: 'text-embedding-3-small', input: ['first text', 'second text'] })
      .withResponse();
    assert.equal(response.headers.get('x-canaryd-arm'), 'control');
    assert.equal(response.headers.get('x-canaryd-provider'), 'openai');
    assert.equal(data.object, 'list');
    assert.equal(data.data.length, 2);
    assert.deepEqual(data.data.map((d) => d.index), [0, 1]);
    for (const d of data.data) assert.deepEqual(Array.from(d.embedding), MOCK_EMBEDDING);
    assert.equal(data.usage.prompt_tokens, 10);

    const floats = await client.embeddings.create({
      model: 'text-embedding-3-small', input: ['a', 'b'], encoding_format: 'float',
    });
    assert.equal(floats.data.length, 2);
    assert.deepEqual(floats.data[1].embedding, MOCK_EMBEDDING);
  });

  test('X-Canary: canary forces the canary, which gets the renamed model', T, async () => {
    await stack.canary.reset();
    await stack.control.reset();
    const { data, response } = await client.chat.completions
      .create({ model: 'gpt-4.1', messages: [{ role: 'user', content: 'canary?' }] },
        { headers: { 'X-Canary': 'canary' } })
      .withResponse();

    assert.equal(response.status, 200);
    assert.equal(response.headers.get('x-canaryd-arm'), 'canary');
    assert.equal(response.headers.get('x-canaryd-provider'), 'holysheep');
    assert.equal(response.headers.get('x-canaryd-fallback'), null);
    assert.equal(data.choices[0].message.content, MOCK_CONTENT);
    assert.equal(data.mock_name, 'holysheep', 'the body came from the canary mock');

    const canaryStats = await stack.canary.stats();
    assert.equal(canaryStats.requests, 1);
    assert.equal(JSON.parse(canaryStats.last_body).model, 'deepseek-v3.2',
      'upstreams.holysheep.models renamed gpt-4.1 on the way to the canary');
    assert.equal(canaryStats.last_headers.authorization, `Bearer ${CANARY_KEY}`);
    assert.equal((await stack.control.stats()).requests, 0, 'control was not called');

    // The same client with the override set once for every request.
    const forced = sdkClient(stack.canaryd, { defaultHeaders: { 'X-Canary': 'canary' } });
    const stream = await forced.chat.completions.create({
      model: 'gpt-4.1', messages: [{ role: 'user', content: 'canary stream' }], stream: true,
    });
    let content = '';
    const models = new Set();
    for await (const chunk of stream) {
      content += chunk.choices[0]?.delta?.content ?? '';
      models.add(chunk.model);
    }
    assert.equal(content, MOCK_CONTENT);
    assert.deepEqual([...models], ['deepseek-v3.2'], 'the canary mock echoed the renamed model');
    assert.equal((await stack.canary.stats()).requests, 2);
  });

  test('X-Canary: control forces control, model not renamed', T, async () => {
    await stack.control.reset();
    const { data, response } = await client.chat.completions
      .create({ model: 'gpt-4.1', messages: [{ role: 'user', content: 'control?' }] },
        { headers: { 'X-Canary': 'control' } })
      .withResponse();
    assert.equal(response.headers.get('x-canaryd-arm'), 'control');
    assert.equal(response.headers.get('x-canaryd-provider'), 'openai');
    assert.equal(data.model, 'gpt-4.1');
    assert.equal(data.mock_name, 'openai');
    assert.equal(JSON.parse((await stack.control.stats()).last_body).model, 'gpt-4.1');
  });

  test('responses.create returns output_text', T, async () => {
    const { data, response } = await client.responses
      .create({ model: 'gpt-4.1', input: 'Say something' })
      .withResponse();
    assert.equal(response.status, 200);
    assert.equal(response.headers.get('x-canaryd-arm'), 'control');
    assert.equal(response.headers.get('x-canaryd-provider'), 'openai');
    assert.equal(data.object, 'response');
    assert.equal(data.status, 'completed');
    assert.equal(data.output_text, MOCK_CONTENT);
    assert.equal(data.usage.input_tokens, 10);
    assert.equal(data.usage.output_tokens, 20);
  });

  test('responses.create streamed: delta events and response.completed', T, async () => {
    const stream = await client.responses.create({ model: 'gpt-4.1', input: 'Say it slowly', stream: true });
    let text = '';
    let completed = null;
    for await (const event of stream) {
      if (event.type === 'response.output_text.delta') text += event.delta;
      if (event.type === 'response.completed') completed = event.response;
    }
    assert.equal(text, MOCK_CONTENT);
    assert.ok(completed, 'response.completed arrived');
    assert.equal(completed.status, 'completed');
  });

  test('models.list goes to control', T, async () => {
    const { data, response } = await client.models.list().withResponse();
    assert.equal(response.headers.get('x-canaryd-provider'), 'openai');
    const ids = data.data.map((m) => m.id);
    assert.ok(ids.includes('gpt-4.1'), `models: ${ids.join(', ')}`);
  });
});
