/**
 * Hundreds of real handler processes at once: the built AADSSHLoginForLinux zip's x64 executable,
 * started through its entry script as the agent starts it, each in a handler folder of its own,
 * running `install --dry-run`. That is the install's checks (operating system, memory, the
 * AADLoginForLinux package query, and IMDS: the identity token with its retries, then the cloud)
 * and the preparation of the install (the package query, the keys fetched from the repository),
 * stopped before anything changes: the dry run takes no lock and writes no status, state or file.
 * So it runs on this machine itself (a Debian 12, as the handler sees it), against:
 *
 * - one mock mirror (repos.ts) limited per client address, each process pointed at a folder of
 *   its own (`repository.baseUrl` in its settings) so that the mirror's records tell them apart;
 * - one mock IMDS on 169.254.169.254:80, limited to 5 requests/s for all of them together: one
 *   VM's limit, as if every handler ran on it (the worst case); 429 without Retry-After, as IMDS
 *   sends it.
 *
 * Both need the network namespace of their own that the command line below makes (`unshare
 * --net`, as root): IMDS's address on its loopback, nothing else reachable.
 *
 *   node --import tsx test/package/handler-scale.ts [processes]
 *
 * The executable is hard-linked into every folder (the handler finds its folder from its own
 * path), so 200 folders cost no more disk than one. The processes wait in a `read` of their shell
 * until all are started, then all are let go at once.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { promises as fs } from 'node:fs';
import http from 'node:http';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import {
  AGENT_PATH,
  extensionVersionOf,
  LINUX_HANDLER_NAME,
  PythonFloat,
  pythonJsonDumps,
  requireZip,
  runTool,
  settingsFileText,
} from './agent-driver.js';
import { SCALED_PMC_RATE_LIMIT } from './mirror-simulation.js';
import { pmcRepository, type RateLimit, serveRepository, tokenBuckets } from './repos.js';
import { AZ_ENVIRONMENT_PATH, IMDS_ADDRESS, imdsToken } from './world.js';

/** IMDS's documented limit per VM: 5 requests per second. */
export const IMDS_RATE_LIMIT: RateLimit = { perSecond: 5, burst: 5 };

export interface HandlerScaleOptions {
  /** Default 200. */
  processes?: number;
  /** The mirror's limit per client address. Default {@link SCALED_PMC_RATE_LIMIT}. */
  rateLimit?: RateLimit;
  /** IMDS's limit for all processes together. Default {@link IMDS_RATE_LIMIT}. */
  imds?: RateLimit;
  /** Processes still running then are killed (and count as failed). Default 600 s. */
  timeoutMs?: number;
}

export interface ScaledHandler {
  index: number;
  exitCode: number | null;
  /** Milliseconds from letting all go to this one's exit. */
  finishedMs: number;
  /** Identity requests IMDS answered with a transient failure (the handler's logged retries). */
  imdsRetries: number;
  /** Whether it went on without the cloud (its azEnvironment request failed: a warning). */
  cloudUnknown: boolean;
  /** Requests the mirror got from it, and how many it answered 429. */
  mirrorRequests: number;
  mirrorThrottled: number;
  /** The end of what it printed, for a failure. */
  output: string;
}

export interface HandlerScaleResult {
  handlers: ScaledHandler[];
  rateLimit: RateLimit;
  imdsLimit: RateLimit;
  wallMs: number;
  imds: { requests: number; throttled: number };
  mirror: { requests: number; throttled: number };
}

/** Runs the handlers (see the file comment); everything it made is removed. */
export async function runHandlerScale(
  options: HandlerScaleOptions = {},
): Promise<HandlerScaleResult> {
  const count = options.processes ?? 200;
  const rateLimit = options.rateLimit ?? SCALED_PMC_RATE_LIMIT;
  const imdsLimit = options.imds ?? IMDS_RATE_LIMIT;
  const timeoutMs = options.timeoutMs ?? 600_000;
  const zip = await requireZip(LINUX_HANDLER_NAME);
  const version = extensionVersionOf();
  const work = await fs.mkdtemp(path.join(os.tmpdir(), 'aad-handler-scale-'));
  const repository = await pmcRepository();
  const children = new Set<ChildProcess>();
  try {
    const unpacked = path.join(work, 'unpacked');
    const unzip = await runTool('unzip', ['-q', zip, '-d', unpacked]);
    if (unzip.exitCode !== 0) throw new Error(`unzip ${zip}: ${unzip.stderr}`);
    const served = path.join(work, 'served');
    await fs.mkdir(served);
    // The mock IMDS first: it fails at once, naming the cause, outside the namespace.
    const imds = await serveImds(imdsLimit);
    const server = await serveRepository(served, { rateLimit, launcher: (argv) => argv });
    try {
      const scripts: string[] = [];
      for (let index = 0; index < count; index++) {
        const name = `vm-${String(index).padStart(3, '0')}`;
        await fs.symlink(repository.root, path.join(served, name));
        scripts.push(
          await handlerFolder(path.join(work, name), unpacked, version, {
            repository: {
              baseUrl: `${server.url}/${name}`,
              keyFingerprints: [repository.signingKey.fingerprint],
            },
          }),
        );
      }
      const started = scripts.map((script, index) => {
        const child = spawn('/bin/sh', ['-c', 'read go && exec "$0" install --dry-run', script], {
          cwd: path.dirname(path.dirname(script)),
          env: { PATH: AGENT_PATH, ConfigSequenceNumber: '0' },
          stdio: ['pipe', 'pipe', 'pipe'],
        });
        children.add(child);
        child.stdin?.on('error', () => undefined);
        let output = '';
        child.stdout?.setEncoding('utf8').on('data', (chunk: string) => {
          output += chunk;
        });
        child.stderr?.setEncoding('utf8').on('data', (chunk: string) => {
          output += chunk;
        });
        const kill = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
        const done = new Promise<ScaledHandler>((resolve) => {
          child.once('close', (exitCode) => {
            clearTimeout(kill);
            children.delete(child);
            resolve({
              index,
              exitCode,
              finishedMs: Date.now() - goAt,
              imdsRetries: output.split('IMDS identity request failed; retrying').length - 1,
              cloudUnknown: /azEnvironment\) is unknown; assuming/.test(output),
              mirrorRequests: 0,
              mirrorThrottled: 0,
              output: output.slice(-2000),
            });
          });
        });
        return { child, done };
      });
      const goAt = Date.now();
      for (const { child } of started) child.stdin?.end('go\n');
      const handlers = await Promise.all(started.map((one) => one.done));
      const requests = await server.requests();
      for (const request of requests) {
        const owner = handlers[Number(/^\/vm-(\d+)\//.exec(request.path)?.[1] ?? -1)];
        if (!owner) continue;
        owner.mirrorRequests += 1;
        if (request.throttled) owner.mirrorThrottled += 1;
      }
      return {
        handlers,
        rateLimit,
        imdsLimit,
        wallMs: Math.max(...handlers.map((h) => h.finishedMs)),
        imds: { ...imds.counts },
        mirror: {
          requests: requests.length,
          throttled: requests.filter((request) => request.throttled).length,
        },
      };
    } finally {
      await imds.close();
      await server.close();
    }
  } finally {
    for (const child of children) child.kill('SIGKILL');
    await fs.rm(work, { recursive: true, force: true });
    await repository.remove();
  }
}

/**
 * The mock IMDS on 169.254.169.254:80: a token for the identity request, the cloud for
 * azEnvironment, 429 when the limit is used up. Fails at once, naming the cause, where the address
 * is not on a local interface.
 */
async function serveImds(
  rateLimit: RateLimit,
): Promise<{ counts: { requests: number; throttled: number }; close(): Promise<void> }> {
  const take = tokenBuckets(rateLimit);
  const counts = { requests: 0, throttled: 0 };
  const token = imdsToken('handler-scale');
  const server = http.createServer((request, response) => {
    counts.requests += 1;
    if (take('vm') !== undefined) {
      counts.throttled += 1;
      response.writeHead(429, { 'Content-Type': 'application/json; charset=utf-8' });
      response.end('{"error":"Too many requests"}');
      return;
    }
    const pathname = new URL(request.url ?? '/', `http://${IMDS_ADDRESS}`).pathname;
    if (pathname === AZ_ENVIRONMENT_PATH) {
      response.writeHead(200, { 'Content-Type': 'text/plain' });
      response.end('AzurePublicCloud');
    } else if ('body' in token) {
      response.writeHead(token.status, token.headers);
      response.end(token.body);
    }
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', (error: NodeJS.ErrnoException) =>
      reject(
        error.code === 'EADDRNOTAVAIL'
          ? new Error(
              `the mock IMDS needs ${IMDS_ADDRESS} on a local interface: run handler-scale.ts from its command line (it makes a network namespace)`,
            )
          : error,
      ),
    );
    server.listen(80, IMDS_ADDRESS, resolve);
  });
  return {
    counts,
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}

/**
 * A handler folder as the agent leaves it before `install` (HandlerEnvironment.json, config/
 * 0.settings, status/), with the entry script copied and the executable hard-linked from
 * `unpacked`. Returns the entry script's path.
 */
async function handlerFolder(
  parent: string,
  unpacked: string,
  version: string,
  publicSettings: Record<string, unknown>,
): Promise<string> {
  const dir = path.join(parent, `${LINUX_HANDLER_NAME}-${version}`);
  const folders = {
    logFolder: path.join(parent, 'log'),
    configFolder: path.join(dir, 'config'),
    statusFolder: path.join(dir, 'status'),
    heartbeatFile: path.join(dir, 'heartbeat.log'),
    eventsFolder: path.join(parent, 'log', 'events'),
  };
  for (const folder of [folders.logFolder, folders.configFolder, folders.statusFolder]) {
    await fs.mkdir(folder, { recursive: true, mode: 0o700 });
  }
  for (const file of ['HandlerManifest.json', 'handler/aadsshlogin-handler.sh']) {
    await fs.mkdir(path.dirname(path.join(dir, file)), { recursive: true });
    await fs.copyFile(path.join(unpacked, file), path.join(dir, file));
  }
  await fs.chmod(path.join(dir, 'handler/aadsshlogin-handler.sh'), 0o755);
  const executable = 'bin/linux-x64/aadsshlogin-handler';
  await fs.mkdir(path.dirname(path.join(dir, executable)), { recursive: true });
  await fs.link(path.join(unpacked, executable), path.join(dir, executable));
  await fs.writeFile(
    path.join(dir, 'HandlerEnvironment.json'),
    pythonJsonDumps([
      { name: LINUX_HANDLER_NAME, version: new PythonFloat(1.0), handlerEnvironment: folders },
    ]),
  );
  await fs.writeFile(
    path.join(folders.configFolder, '0.settings'),
    settingsFileText({ publicSettings }),
  );
  return path.join(dir, 'handler', 'aadsshlogin-handler.sh');
}

function median(values: readonly number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.floor(sorted.length / 2)] ?? 0;
}

/** The figures, one per line. */
export function describeHandlerScale(result: HandlerScaleResult): string[] {
  const seconds = (ms: number) => `${(ms / 1000).toFixed(1)} s`;
  const ok = result.handlers.filter((h) => h.exitCode === 0).length;
  const mirror = result.handlers.map((h) => h.mirrorRequests);
  const retries = result.handlers.map((h) => h.imdsRetries);
  return [
    `${result.handlers.length} handler processes (install --dry-run of the built zip) let go at once, against one mirror limited to ${result.rateLimit.perSecond} requests/s (burst ${result.rateLimit.burst}) per client address and one IMDS limited to ${result.imdsLimit.perSecond} requests/s (burst ${result.imdsLimit.burst}) for all of them`,
    `all finished after ${seconds(result.wallMs)}; ${ok} succeeded; per process ${seconds(median(result.handlers.map((h) => h.finishedMs)))} median`,
    `IMDS: ${result.imds.requests} requests (${(result.imds.requests / result.handlers.length).toFixed(1)} per process), 429s received: ${result.imds.throttled}; identity retries per process ${median(retries)} median, ${Math.max(...retries)} max; ${result.handlers.filter((h) => h.cloudUnknown).length} went on without the cloud`,
    `mirror: ${result.mirror.requests} requests, per process ${median(mirror)} median, ${Math.max(...mirror)} max; 429s received: ${result.mirror.throttled}`,
  ];
}

const THIS_FILE = fileURLToPath(import.meta.url);

/** This file's command line in a process of its own (which enters its own network namespace). */
export function runHandlerScaleCommand(
  processes: number,
  timeoutMs: number,
): ReturnType<typeof runTool> {
  return runTool(process.execPath, ['--import', 'tsx', THIS_FILE, String(processes)], {
    cwd: path.dirname(THIS_FILE),
    env: { ...process.env } as Record<string, string>,
    timeoutMs,
  });
}

if (process.argv[1] && path.resolve(process.argv[1]) === THIS_FILE) {
  const args = process.argv.slice(2);
  if (!args.includes('--in-namespace')) {
    const again = spawn(
      'unshare',
      [
        '--net',
        'sh',
        '-c',
        `ip link set lo up && ip addr add ${IMDS_ADDRESS}/32 dev lo && exec "$0" "$@"`,
        process.execPath,
        ...process.execArgv,
        THIS_FILE,
        ...args,
        '--in-namespace',
      ],
      { stdio: 'inherit' },
    );
    process.exitCode = await new Promise<number>((resolve) =>
      again.once('close', (code) => resolve(code ?? 1)),
    );
  } else {
    const processes = Number(args.find((arg) => /^\d+$/.test(arg)) ?? 200);
    const result = await runHandlerScale({ processes });
    for (const line of describeHandlerScale(result)) process.stdout.write(`${line}\n`);
    const failed = result.handlers.filter((h) => h.exitCode !== 0);
    for (const h of failed.slice(0, 3)) {
      process.stdout.write(`process ${h.index} failed (exit ${h.exitCode}): ${h.output}\n`);
    }
    process.exitCode = failed.length > 0 ? 1 : 0;
  }
}
