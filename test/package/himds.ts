/**
 * A mock of the Azure Connected Machine agent's HIMDS (Hybrid Instance Metadata Service) for the
 * Arc package tests: a process listening on 127.0.0.1:40342 inside a world's network namespace
 * (started through `world.wrapOutside`, as repos.ts starts the repository), answering as Arc's
 * documentation describes it:
 *
 * - every request needs `Metadata: true` (else 400);
 * - the token endpoint answers a request without `Authorization` with 401 and
 *   `WWW-Authenticate: Basic realm=<realm>` (or, scripted, with no such header), and gives a token
 *   only for `Authorization: Basic <key>`, the key being what the test wrote into the realm file;
 * - `/metadata/instance` answers the instance metadata with `compute.azEnvironment`.
 *
 * Every request is recorded (path, query, headers), so a test sees what the handler sent.
 *
 *   const himds = await startHimds(vm.world, { realm, key, token });
 *   // … run the handler …  (await himds.requests()), await himds.close()
 */
import { spawn } from 'node:child_process';
import { appendFileSync, promises as fs, readFileSync } from 'node:fs';
import http from 'node:http';
import { createRequire } from 'node:module';
import os from 'node:os';
import path from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { AGENT_PATH, type Launcher, stopChild } from './agent-driver.js';

export const HIMDS_PORT = 40342;
export const TOKENS_FOLDER = '/var/opt/azcmagent/tokens';

export interface HimdsOptions {
  /** The key file named in `WWW-Authenticate`; `null`: a 401 without the header. */
  realm: string | null;
  /** The content the key file holds: the only accepted `Authorization: Basic <key>`. */
  key: string;
  /** The access token given for the right key. */
  token: string;
  /** `compute.azEnvironment` of the instance metadata. */
  azEnvironment?: string;
}

export interface HimdsRequest {
  at: string;
  method: string;
  /** Path and query. */
  url: string;
  headers: Record<string, string | string[] | undefined>;
  status: number;
}

export interface MockHimds {
  requests(): Promise<HimdsRequest[]>;
  close(): Promise<void>;
}

interface HimdsProcessConfig extends HimdsOptions {
  recordFile: string;
}

const THIS_FILE = fileURLToPath(import.meta.url);
const TSX_LOADER = pathToFileURL(createRequire(import.meta.url).resolve('tsx')).href;

/** Starts the mock inside a world (`launcher`: `world.wrapOutside`) and waits until it listens. */
export async function startHimds(
  world: { wrapOutside: Launcher },
  options: HimdsOptions,
): Promise<MockHimds> {
  const dir = await fs.mkdtemp(path.join(os.tmpdir(), 'aad-himds-'));
  const config: HimdsProcessConfig = { ...options, recordFile: path.join(dir, 'requests.jsonl') };
  const configFile = path.join(dir, 'himds.json');
  await fs.writeFile(configFile, JSON.stringify(config));
  const [file, ...args] = world.wrapOutside(
    [process.execPath, '--import', TSX_LOADER, THIS_FILE, 'serve', configFile],
    path.dirname(THIS_FILE),
  );
  const child = spawn(file ?? 'false', args, {
    cwd: dir,
    env: { PATH: AGENT_PATH, LANG: 'C' },
    stdio: ['pipe', 'pipe', 'pipe'],
  });
  let stderr = '';
  child.stderr.setEncoding('utf8');
  child.stderr.on('data', (chunk: string) => {
    stderr += chunk;
  });
  const stop = async () => {
    await stopChild(child);
    await fs.rm(dir, { recursive: true, force: true });
  };
  try {
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`HIMDS did not start: ${stderr}`)), 30_000);
      child.once('exit', (code) => {
        clearTimeout(timer);
        reject(new Error(`HIMDS exited (${code}) before listening: ${stderr}`));
      });
      createInterface({ input: child.stdout }).once('line', () => {
        clearTimeout(timer);
        resolve();
      });
    });
  } catch (error) {
    await stop();
    throw error;
  }
  return {
    async requests() {
      const text = await fs.readFile(config.recordFile, 'utf8').catch(() => '');
      return text
        .split('\n')
        .filter((line) => line !== '')
        .map((line) => JSON.parse(line) as HimdsRequest);
    },
    close: stop,
  };
}

/** `node --import tsx himds.ts serve <config.json>`: the mock as a process. */
function serve(configFile: string): void {
  const config = JSON.parse(readFileSync(configFile, 'utf8')) as HimdsProcessConfig;
  const server = http.createServer((request, response) => {
    const url = request.url ?? '/';
    const pathname = new URL(url, 'http://127.0.0.1').pathname;
    const send = (status: number, body: unknown, headers: Record<string, string> = {}) => {
      appendFileSync(
        config.recordFile,
        `${JSON.stringify({ at: new Date().toISOString(), method: request.method, url, headers: request.headers, status })}\n`,
      );
      response.writeHead(status, { 'Content-Type': 'application/json', ...headers });
      response.end(JSON.stringify(body));
    };
    if (request.headers.metadata?.toString().toLowerCase() !== 'true') {
      return send(400, { error: 'invalid_request', error_description: 'Metadata header missing' });
    }
    if (pathname === '/metadata/identity/oauth2/token') {
      const authorization = request.headers.authorization;
      if (authorization === `Basic ${config.key}`) {
        return send(200, {
          access_token: config.token,
          expires_in: '86399',
          resource: new URL(url, 'http://127.0.0.1').searchParams.get('resource'),
          token_type: 'Bearer',
        });
      }
      return send(
        401,
        { error: 'unauthorized_client' },
        config.realm === null || authorization !== undefined
          ? {}
          : { 'WWW-Authenticate': `Basic realm=${config.realm}` },
      );
    }
    if (pathname === '/metadata/instance') {
      return send(200, {
        compute: {
          azEnvironment: config.azEnvironment ?? 'AzurePublicCloud',
          location: 'westeurope',
          resourceId:
            '/subscriptions/0/resourceGroups/rg/providers/Microsoft.HybridCompute/machines/arc-test',
        },
      });
    }
    return send(404, { error: 'not_found' });
  });
  server.listen(HIMDS_PORT, '127.0.0.1', () => process.stdout.write('{"ready":true}\n'));
  process.on('SIGTERM', () => process.exit(0));
  process.stdin.on('end', () => process.exit(0));
  process.stdin.resume();
}

if (process.argv[1] && path.resolve(process.argv[1]) === THIS_FILE && process.argv[2] === 'serve') {
  const configFile = process.argv[3];
  if (!configFile) throw new Error('usage: himds.ts serve <config.json>');
  serve(configFile);
}
