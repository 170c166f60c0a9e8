/**
 * The process that holds a world (see world.ts): started by `unshare --mount --net` with the path
 * of its JSON config, it runs the set-up commands, then serves the mock IMDS on
 * 169.254.169.254:80 and, when asked, a recording forward proxy on 127.0.0.1, appending every
 * request to the record file as one JSON line. It prints `{"ready":true,…}` when listening, and
 * exits on SIGTERM or when its stdin closes (the test process is gone).
 */
import { execFileSync } from 'node:child_process';
import { appendFileSync, readFileSync } from 'node:fs';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import net from 'node:net';
import type { ImdsReply, KeeperConfig, RecordedRequest } from './world.js';

const IMDS_ADDRESS = '169.254.169.254';
const AZ_ENVIRONMENT_PATH = '/metadata/instance/compute/azEnvironment';

const configFile = process.argv[2];
if (!configFile) throw new Error('usage: world-keeper.ts <config.json>');
const config = JSON.parse(readFileSync(configFile, 'utf8')) as KeeperConfig;

function record(entry: Omit<RecordedRequest, 'at'>): void {
  appendFileSync(
    config.recordFile,
    `${JSON.stringify({ at: new Date().toISOString(), ...entry })}\n`,
  );
}

for (const command of config.setup) {
  const [file, ...args] = command;
  try {
    execFileSync(file ?? 'false', args, { stdio: ['ignore', 'ignore', 'pipe'] });
  } catch (error) {
    const stderr = (error as { stderr?: Buffer }).stderr?.toString() ?? '';
    process.stderr.write(`world set-up failed: ${command.join(' ')}: ${stderr || error}\n`);
    process.exit(1);
  }
}

// ---------------------------------------------------------------------------------------------
// The mock IMDS
// ---------------------------------------------------------------------------------------------

const served = new Map<string, number>();

function defaultReply(pathname: string): ImdsReply {
  if (pathname === AZ_ENVIRONMENT_PATH) {
    return { status: 200, headers: { 'Content-Type': 'text/plain' }, body: 'AzurePublicCloud' };
  }
  return {
    status: 404,
    headers: { 'Content-Type': 'application/json; charset=utf-8' },
    body: '{"error":"Not found"}',
  };
}

function nextReply(pathname: string): ImdsReply {
  const script = config.imds === 'refused' ? undefined : config.imds[pathname];
  if (!script || script.length === 0) return defaultReply(pathname);
  const count = served.get(pathname) ?? 0;
  served.set(pathname, count + 1);
  return script[Math.min(count, script.length - 1)] ?? defaultReply(pathname);
}

const imds = http.createServer((request, response) => {
  const url = request.url ?? '/';
  const pathname = new URL(url, `http://${IMDS_ADDRESS}`).pathname;
  const base = {
    server: 'imds' as const,
    method: request.method ?? '',
    url,
    headers: request.headers,
  };
  // What the real IMDS checks before anything else (IMDS-DOC). The value's case does not matter:
  // the guest agent sends `Metadata: True` and IMDS answers it.
  const metadata = request.headers.metadata;
  const rejection =
    typeof metadata !== 'string' || metadata.toLowerCase() !== 'true'
      ? 'Required metadata header not specified'
      : request.headers['x-forwarded-for'] !== undefined
        ? 'X-Forwarded-For header is not allowed'
        : undefined;
  if (rejection) {
    record({ ...base, reply: `rejected 400: ${rejection}` });
    response.writeHead(400, { 'Content-Type': 'application/json; charset=utf-8' });
    response.end(JSON.stringify({ error: 'bad_request', error_description: rejection }));
    return;
  }
  const reply = nextReply(pathname);
  if ('hang' in reply) {
    record({ ...base, reply: 'hang' });
    return;
  }
  if ('raw' in reply) {
    record({ ...base, reply: 'raw' });
    request.socket.end(reply.raw);
    return;
  }
  if ('endless' in reply) {
    record({ ...base, reply: `${reply.status}, endless` });
    response.writeHead(reply.status, reply.headers ?? {});
    const { chunk, intervalMs } = reply.endless;
    // Until the client goes away: every chunk as soon as the last one was taken, or on a timer.
    const more = () => {
      if (response.destroyed) return;
      if (intervalMs > 0) {
        response.write(chunk);
        setTimeout(more, intervalMs);
      } else if (response.write(chunk)) setImmediate(more);
      else response.once('drain', more);
    };
    response.on('error', () => undefined);
    more();
    return;
  }
  record({ ...base, reply: `${reply.delayMs ? `after ${reply.delayMs} ms ` : ''}${reply.status}` });
  const send = () => {
    response.writeHead(reply.status, reply.headers ?? {});
    response.end(reply.body ?? '');
  };
  if (reply.delayMs) setTimeout(send, reply.delayMs);
  else send();
});

// ---------------------------------------------------------------------------------------------
// The recording forward proxy
// ---------------------------------------------------------------------------------------------

const proxy = http.createServer((request, response) => {
  const url = request.url ?? '';
  let target: URL;
  try {
    target = new URL(url);
  } catch {
    record({
      server: 'proxy',
      method: request.method ?? '',
      url,
      headers: request.headers,
      reply: '400',
    });
    response.writeHead(400).end('a forward proxy needs an absolute URI');
    return;
  }
  record({
    server: 'proxy',
    method: request.method ?? '',
    url,
    headers: request.headers,
    reply: 'forwarded',
  });
  const headers = { ...request.headers };
  delete headers['proxy-connection'];
  delete headers['proxy-authorization'];
  const upstream = http.request(
    {
      host: target.hostname,
      port: target.port || 80,
      method: request.method,
      path: `${target.pathname}${target.search}`,
      headers,
    },
    (answer) => {
      response.writeHead(answer.statusCode ?? 502, answer.headers);
      answer.pipe(response);
    },
  );
  upstream.on('error', (error) => {
    if (!response.headersSent) response.writeHead(502);
    response.end(`proxy: ${error.message}`);
  });
  request.pipe(upstream);
});

proxy.on('connect', (request, client, head) => {
  const url = request.url ?? '';
  record({ server: 'proxy', method: 'CONNECT', url, headers: request.headers, reply: 'tunnel' });
  const separator = url.lastIndexOf(':');
  const host = url.slice(0, separator).replace(/^\[|\]$/g, '');
  const port = Number(url.slice(separator + 1)) || 443;
  const upstream = net.connect(port, host, () => {
    client.write('HTTP/1.1 200 Connection Established\r\n\r\n');
    upstream.write(head);
    upstream.pipe(client);
    client.pipe(upstream);
  });
  upstream.on('error', () => client.end('HTTP/1.1 502 Bad Gateway\r\n\r\n'));
  client.on('error', () => upstream.destroy());
});

// ---------------------------------------------------------------------------------------------

function listen(server: http.Server, port: number, host: string): Promise<number> {
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, () => resolve((server.address() as AddressInfo).port));
  });
}

if (config.imds !== 'refused') await listen(imds, 80, IMDS_ADDRESS);
const proxyPort = config.proxy ? await listen(proxy, 0, '127.0.0.1') : null;

const stop = () => process.exit(0);
process.on('SIGTERM', stop);
process.stdin.on('end', stop);
process.stdin.on('error', stop);
process.stdin.resume();
process.stdout.write(`${JSON.stringify({ ready: true, pid: process.pid, proxyPort })}\n`);
