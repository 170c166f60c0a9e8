/**
 * A fake Azure WireServer for the real guest agent (agent-protocol.md §9.2), started as its own
 * process in a world's network namespace (agent-vm.ts) and listening there on
 * 127.0.0.16:80 (the WireServer) and 127.0.0.16:32526 (the HostGAPlugin, which answers 404 to
 * everything, so that the agent uploads its status straight to the status blob URL).
 *
 * It knows nothing about scenarios: it serves the documents the test wrote into its folder,
 * re-reading them on every request, so a test changes the goal state by rewriting a file:
 *
 *   <dir>/documents/goalState.xml                GET /machine/?comp=goalstate
 *   <dir>/documents/hostingEnvironmentConfig.xml GET /machine/…?comp=config&type=hostingEnvironmentConfig
 *   <dir>/documents/sharedConfig.xml             GET /machine/…?comp=config&type=sharedConfig
 *   <dir>/documents/extensionsConfig.xml         GET /machine/…?comp=config&type=extensionsConfig
 *   <dir>/documents/manifest.xml                 GET /manifest.xml (the handler's version manifest)
 *   <dir>/packages/<name>                        GET /packages/<name> (the handler zips)
 *
 * and records what the agent sends:
 *
 *   <dir>/requests.jsonl      one JSON line per request: time, port, method, URL, status answered
 *   <dir>/status/<n>.json     the body of the n-th status blob PUT (n from 1), answered 201
 *   <dir>/telemetry/<n>.xml   the body of the n-th telemetry POST, answered 200
 *
 * Usage: `node --import tsx wire-server.ts <dir> <address>`; prints `{"ready":true}` when both
 * ports listen, and exits on SIGTERM or when its stdin closes (the test process is gone).
 */
import { createReadStream, promises as fs } from 'node:fs';
import http from 'node:http';
import path from 'node:path';

/** The WireServer's port is 80 (the agent builds `http://<endpoint>/…`); the HostGAPlugin's 32526. */
const WIRE_PORT = 80;
const HOST_PLUGIN_PORT = 32526;

/** Which document answers a `comp=config` request, by its `type` parameter. */
const CONFIG_DOCUMENTS: Readonly<Record<string, string>> = {
  hostingEnvironmentConfig: 'hostingEnvironmentConfig.xml',
  sharedConfig: 'sharedConfig.xml',
  extensionsConfig: 'extensionsConfig.xml',
};

interface Answer {
  status: number;
  /** A file to stream, or a body. */
  file?: string;
  body?: string;
  contentType?: string;
}

function notFound(): Answer {
  return { status: 404, body: 'Not Found', contentType: 'text/plain' };
}

/** Writes `body` as the next numbered file of `folder` (1.json, 2.json, …) and returns its number. */
async function saveNumbered(folder: string, extension: string, body: Buffer): Promise<number> {
  await fs.mkdir(folder, { recursive: true });
  const numbers = (await fs.readdir(folder))
    .map((name) => Number.parseInt(name, 10))
    .filter((n) => Number.isFinite(n));
  const next = Math.max(0, ...numbers) + 1;
  // Written under a temporary name first: a reader never sees half a status.
  const file = path.join(folder, `${next}.${extension}`);
  await fs.writeFile(`${file}.tmp`, body);
  await fs.rename(`${file}.tmp`, file);
  return next;
}

function readBody(request: http.IncomingMessage): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    request.on('data', (chunk: Buffer) => chunks.push(chunk));
    request.on('end', () => resolve(Buffer.concat(chunks)));
    request.on('error', reject);
  });
}

/** A file of `folder` named by the last part of a URL path, or undefined (no path tricks). */
async function fileIn(folder: string, name: string): Promise<string | undefined> {
  if (name === '' || name.includes('/') || name.startsWith('.')) return undefined;
  const file = path.join(folder, name);
  const stat = await fs.stat(file).catch(() => undefined);
  return stat?.isFile() ? file : undefined;
}

/** What the WireServer answers (see the file comment). */
async function answerWire(
  dir: string,
  request: http.IncomingMessage,
  body: Buffer,
): Promise<Answer> {
  const url = new URL(request.url ?? '/', 'http://wireserver');
  const documents = path.join(dir, 'documents');
  const xml = async (name: string): Promise<Answer> => {
    const file = await fileIn(documents, name);
    return file ? { status: 200, file, contentType: 'text/xml; charset=utf-8' } : notFound();
  };
  const comp = url.searchParams.get('comp');
  if (request.method === 'GET') {
    if (url.pathname.startsWith('/machine') && comp === 'goalstate') return xml('goalState.xml');
    if (url.pathname.startsWith('/machine') && comp === 'config') {
      const document = CONFIG_DOCUMENTS[url.searchParams.get('type') ?? ''];
      return document ? xml(document) : notFound();
    }
    if (url.pathname === '/manifest.xml') return xml('manifest.xml');
    if (url.pathname.startsWith('/packages/')) {
      const file = await fileIn(
        path.join(dir, 'packages'),
        url.pathname.slice('/packages/'.length),
      );
      return file ? { status: 200, file, contentType: 'application/octet-stream' } : notFound();
    }
    return notFound();
  }
  if (request.method === 'PUT' && url.pathname === '/statusblob') {
    // put_block_blob accepts only 201 Created.
    await saveNumbered(path.join(dir, 'status'), 'json', body);
    return { status: 201, body: '' };
  }
  if (request.method === 'POST') {
    if (comp === 'telemetrydata') await saveNumbered(path.join(dir, 'telemetry'), 'xml', body);
    // Telemetry, health reports: accepted and otherwise ignored.
    return { status: 200, body: '' };
  }
  return notFound();
}

async function send(response: http.ServerResponse, answer: Answer): Promise<void> {
  const headers: Record<string, string | number> = {};
  if (answer.contentType) headers['Content-Type'] = answer.contentType;
  if (answer.file) {
    headers['Content-Length'] = (await fs.stat(answer.file)).size;
    response.writeHead(answer.status, headers);
    createReadStream(answer.file).pipe(response);
    return;
  }
  response.writeHead(answer.status, headers);
  response.end(answer.body ?? '');
}

/** One server per port; every request is recorded with what it was answered. */
function server(dir: string, port: number): http.Server {
  return http.createServer((request, response) => {
    void (async () => {
      let status = 500;
      try {
        const body = await readBody(request);
        const answer = port === WIRE_PORT ? await answerWire(dir, request, body) : notFound();
        status = answer.status;
        await send(response, answer);
      } catch (error) {
        if (!response.headersSent) response.writeHead(500);
        response.end(String(error));
      }
      const entry = {
        at: new Date().toISOString(),
        port,
        method: request.method,
        url: request.url,
        status,
      };
      await fs.appendFile(path.join(dir, 'requests.jsonl'), `${JSON.stringify(entry)}\n`);
    })();
  });
}

function listen(target: http.Server, port: number, address: string): Promise<void> {
  return new Promise((resolve, reject) => {
    target.once('error', reject);
    target.listen(port, address, () => resolve());
  });
}

const [dir, address] = process.argv.slice(2);
if (!dir || !address) throw new Error('usage: wire-server.ts <dir> <address>');
await listen(server(dir, WIRE_PORT), WIRE_PORT, address);
await listen(server(dir, HOST_PLUGIN_PORT), HOST_PLUGIN_PORT, address);
const stop = () => process.exit(0);
process.on('SIGTERM', stop);
process.stdin.on('end', stop);
process.stdin.on('error', stop);
process.stdin.resume();
process.stdout.write(`${JSON.stringify({ ready: true })}\n`);
