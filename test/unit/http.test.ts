import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { writeFile } from 'node:fs/promises';
import http from 'node:http';
import { createRequire } from 'node:module';
import net, { type AddressInfo } from 'node:net';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { promisify } from 'node:util';
import { systemClock } from '../../src/io/clock.js';
import { fetchText } from '../../src/io/http.js';
import { fakeClock, temporaryFolder } from '../fakes.js';

const execFileAsync = promisify(execFile);
const HTTP_MODULE = path.resolve(
  path.dirname(fileURLToPath(import.meta.url)),
  '../../src/io/http.ts',
);
const TSX = pathToFileURL(createRequire(import.meta.url).resolve('tsx')).href;

/** A repository that answers 429 (Retry-After: 1) to the first request for each path. */
let origin: http.Server;
let originUrl = '';
const originRequests: string[] = [];
/** A forward proxy that records what passed through it. */
let proxy: http.Server;
let proxyUrl = '';
const proxied: string[] = [];

before(async () => {
  const seen = new Set<string>();
  origin = http.createServer((request, response) => {
    originRequests.push(request.url ?? '');
    if (!seen.has(request.url ?? '')) {
      seen.add(request.url ?? '');
      response.writeHead(429, { 'Retry-After': '1' }).end('slow down');
      return;
    }
    if (request.url === '/missing') return void response.writeHead(404).end('no');
    response.writeHead(200).end(`key at ${request.url}`);
  });
  proxy = http.createServer((request, response) => {
    proxied.push(request.url ?? '');
    const target = new URL(request.url ?? '');
    const upstream = http.request(
      target,
      { method: request.method, headers: request.headers },
      (answer) => {
        response.writeHead(answer.statusCode ?? 502, answer.headers);
        answer.pipe(response);
      },
    );
    request.pipe(upstream);
  });
  // undici tunnels through a proxy with CONNECT, also for http:// targets.
  proxy.on('connect', (request, client, head) => {
    proxied.push(`CONNECT ${request.url}`);
    const [host, port] = (request.url ?? '').split(':');
    const upstream = net.connect(Number(port), host ?? '127.0.0.1', () => {
      client.write('HTTP/1.1 200 Connection Established\r\n\r\n');
      upstream.write(head);
      upstream.pipe(client);
      client.pipe(upstream);
    });
    upstream.on('error', () => client.destroy());
    client.on('error', () => upstream.destroy());
  });
  for (const server of [origin, proxy])
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  originUrl = `http://127.0.0.1:${(origin.address() as AddressInfo).port}`;
  proxyUrl = `http://127.0.0.1:${(proxy.address() as AddressInfo).port}`;
});
after(() => {
  origin.close();
  proxy.close();
});

/** Fetches in a child process with `env` (the proxy settings come from the environment). */
async function fetchInChild(url: string, env: Record<string, string>): Promise<unknown> {
  const { dir, cleanup } = await temporaryFolder();
  try {
    const script = path.join(dir, 'fetch.mts');
    await writeFile(
      script,
      `import { systemClock } from ${JSON.stringify(path.join(path.dirname(HTTP_MODULE), 'clock.ts'))};\nimport { fetchText } from ${JSON.stringify(HTTP_MODULE)};\nconsole.log(JSON.stringify(await fetchText(${JSON.stringify(url)}, { clock: systemClock, budgetMs: 20000 })));\n`,
    );
    const { stdout } = await execFileAsync(process.execPath, ['--import', TSX, script], {
      env: { PATH: process.env.PATH ?? '/usr/bin:/bin', ...env },
    });
    return JSON.parse(stdout);
  } finally {
    await cleanup();
  }
}

describe('HTTP to the repository', () => {
  test('a 429 with Retry-After is waited out and retried; a 404 is an answer, not a failure', async () => {
    const result = await fetchText(`${originUrl}/keys/microsoft.asc`, {
      clock: systemClock,
      budgetMs: 20_000,
    });
    assert.deepEqual(result, {
      ok: true,
      answer: { status: 200, body: 'key at /keys/microsoft.asc' },
    });
    const missing = await fetchText(`${originUrl}/missing`, {
      clock: systemClock,
      budgetMs: 20_000,
    });
    assert.deepEqual(missing, { ok: true, answer: { status: 404, body: 'no' } });
  });

  test('a repository that never answers usefully fails inside the budget, saying why', async () => {
    const result = await fetchText('http://127.0.0.1:9/keys/microsoft.asc', {
      clock: systemClock,
      budgetMs: 2_500,
    });
    assert.equal(result.ok, false);
    assert.match(!result.ok ? result.problem : '', /127\.0\.0\.1:9.*ECONNREFUSED/);
  });

  test('429 is retried for the longer throttled budget; 503 only for the budget', async () => {
    const answers: number[] = [];
    const limited = http.createServer((request, response) => {
      const status = request.url === '/throttled' ? 429 : 503;
      answers.push(status);
      response.writeHead(status, { 'Retry-After': '1' }).end('busy');
    });
    await new Promise<void>((resolve) => limited.listen(0, '127.0.0.1', resolve));
    const url = `http://127.0.0.1:${(limited.address() as AddressInfo).port}`;
    try {
      // Waits (Retry-After 1 s, backoff × 0.75): 1, 1.5, 3, 6, 12 s, on a clock that does not wait.
      const options = { budgetMs: 2_000, throttledBudgetMs: 20_000, random: () => 0.5 };
      const throttled = await fetchText(`${url}/throttled`, { ...options, clock: fakeClock() });
      assert.equal(throttled.ok, false);
      assert.equal(answers.length, 5, 'retried until the next wait would pass 20 s');
      answers.length = 0;
      const failing = await fetchText(`${url}/failing`, { ...options, clock: fakeClock() });
      assert.equal(failing.ok, false);
      assert.match(!failing.ok ? failing.problem : '', /\/failing answered HTTP 503/);
      assert.equal(answers.length, 2, 'retried until the next wait would pass 2 s');
      answers.length = 0;
      const { throttledBudgetMs: _, ...only } = options;
      await fetchText(`${url}/throttled`, { ...only, clock: fakeClock() });
      assert.equal(answers.length, 2, 'without a throttled budget, 429 gets the budget');
    } finally {
      limited.close();
    }
  });

  test('http_proxy from the environment is used, and no_proxy bypasses it', async () => {
    const through = await fetchInChild(`${originUrl}/keys/through-proxy.asc`, {
      http_proxy: proxyUrl,
    });
    assert.deepEqual(through, {
      ok: true,
      answer: { status: 200, body: 'key at /keys/through-proxy.asc' },
    });
    const port = new URL(originUrl).port;
    assert.ok(
      proxied.some(
        (url) => url === `CONNECT 127.0.0.1:${port}` || url.endsWith('/keys/through-proxy.asc'),
      ),
      `the proxy saw the request: ${proxied.join(', ')}`,
    );
    const seenBefore = proxied.length;
    const direct = await fetchInChild(`${originUrl}/keys/direct.asc`, {
      HTTP_PROXY: proxyUrl,
      NO_PROXY: '127.0.0.1',
    });
    assert.deepEqual(direct, {
      ok: true,
      answer: { status: 200, body: 'key at /keys/direct.asc' },
    });
    assert.equal(proxied.length, seenBefore, 'no_proxy was honoured');
  });
});

describe('proxy variables for package managers', () => {
  test('either case in, both cases out; lower case wins; empty values are dropped', async () => {
    const { proxyEnvironment } = await import('../../src/io/proxy-environment.js');
    assert.deepEqual(proxyEnvironment({ HTTP_PROXY: 'http://p:3128', no_proxy: '' }), {
      http_proxy: 'http://p:3128',
      HTTP_PROXY: 'http://p:3128',
    });
    assert.deepEqual(
      proxyEnvironment({ https_proxy: 'http://lower:1', HTTPS_PROXY: 'http://upper:2' }),
      { https_proxy: 'http://lower:1', HTTPS_PROXY: 'http://lower:1' },
    );
    assert.deepEqual(proxyEnvironment({}), {});
  });
});
